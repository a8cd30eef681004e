"""``manifest.json``: the sha256 and size of every file of a folder, itself hashed.

A folder tinydet writes as a unit (an export folder) lists each of its files in
``manifest.json`` = ``{"manifest_version": 1, "files": {name: {"sha256", "bytes"}}, "sha256"}``,
where the last ``sha256`` is the digest of the canonical JSON of ``files`` (sorted keys, no
spaces), so an edit of the manifest itself is caught as well as an edit of any file it lists.
The manifest is written last into the folder being built (:func:`tinydet.io.atomic.staged_dir`),
so the folder and its manifest always appear together, in one rename.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from tinydet.errors import TinydetError
from tinydet.io.atomic import write_file
from tinydet.io.jsonfile import read_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: "str | Path") -> str:
    """Hex sha256 of the file ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One listed file: its content hash and size."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}


def _digest(files: Mapping[str, FileEntry]) -> str:
    canon = json.dumps({k: v.to_dict() for k, v in sorted(files.items())}, sort_keys=True, separators=(",", ":"))
    return sha256_bytes(canon.encode())


@dataclass
class Manifest:
    """The files of a folder (``name -> FileEntry``)."""

    files: dict[str, FileEntry] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"manifest_version": MANIFEST_VERSION, "files": {k: v.to_dict() for k, v in sorted(self.files.items())},
                "sha256": _digest(self.files)}

    def problem(self, folder: "str | Path", name: str) -> str | None:
        """Why ``folder/name`` is not the listed file (``missing``, ``not listed``, ``checksum
        mismatch``), or None when it is."""
        entry = self.files.get(name)
        if entry is None:
            return "not listed"
        path = Path(folder) / name
        if not path.is_file():
            return "missing"
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            return "checksum mismatch"
        return None


def folder_files(folder: "str | Path") -> list[str]:
    """The names a manifest of ``folder`` lists: its regular, non-hidden files but the manifest."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)


def build_manifest(folder: "str | Path", names: Iterable[str] | None = None) -> Manifest:
    """Hash ``names`` (default :func:`folder_files`) of ``folder``."""
    folder = Path(folder)
    names = folder_files(folder) if names is None else list(names)
    return Manifest({n: FileEntry(sha256_file(folder / n), (folder / n).stat().st_size) for n in names})


def write_manifest(folder: "str | Path") -> Manifest:
    """Hash every file of ``folder`` (a folder being staged) and write its ``manifest.json``."""
    manifest = build_manifest(folder)
    write_file(Path(folder) / MANIFEST, (json.dumps(manifest.to_dict(), indent=1) + "\n").encode())
    return manifest


def read_manifest(folder: "str | Path", hint: str = "") -> Manifest | None:
    """The folder's manifest, or None when it has none (written before manifests existed). A
    manifest that is malformed or whose own digest does not match raises a one-line TinydetError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    suffix = f"; {hint}" if hint else ""
    data = read_json(path, MANIFEST, hint=hint)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION or not isinstance(files, dict):
        raise TinydetError(f"{path}: expected {{manifest_version: {MANIFEST_VERSION}, files, sha256}}{suffix}")
    try:
        entries = {str(k): FileEntry(str(v["sha256"]), int(v["bytes"])) for k, v in files.items()}
    except (KeyError, TypeError, ValueError):
        raise TinydetError(f"{path}: files: expected {{name: {{sha256, bytes}}}}{suffix}") from None
    if data.get("sha256") != _digest(entries):
        raise TinydetError(f"{path}: sha256: the manifest was modified (its digest does not match its files){suffix}")
    return Manifest(entries)
