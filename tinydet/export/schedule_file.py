"""``schedule.json`` of an export folder: writing, loading with version + checksum checks, and
adding files (the quantizer's ``*.int8.onnx``) with the checksums updated atomically.

Every write goes through :mod:`tinydet.io.atomic` (temp file, fsync, ``os.replace``), so a reader
never sees a half-written file; ``schedule.json`` is always written last, after the files it describes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1
SCHEDULE = "schedule.json"
REQUIRED = ("full.onnx", "stage1_patch.onnx", "stage2.onnx")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_schedule(folder: Path, schedule: Mapping[str, Any]) -> None:
    """Write ``schedule.json`` atomically (sorted nothing: key order is the documented order)."""
    atomic_write_json(Path(folder) / SCHEDULE, schedule)


def checksum_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {sha256, bytes}}`` of every ``*.onnx`` file in ``folder``."""
    folder = Path(folder)
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(folder.glob("*.onnx"))}


@dataclass
class ExportFolder:
    """A verified export folder: ``schedule`` is the parsed schedule.json."""

    root: Path
    schedule: dict

    def path(self, name: str) -> Path:
        """Path of a listed file; a file the folder does not list is a TinydetError naming it."""
        if name not in self.schedule["files"]:
            have = ", ".join(sorted(self.schedule["files"]))
            hint = " (run `tinydet quantize` on the folder first)" if name.endswith(".int8.onnx") else ""
            raise TinydetError(f"{self.root}: no {name} in the export folder{hint}; it has {have}")
        return self.root / name

    def has(self, name: str) -> bool:
        return name in self.schedule["files"]

    @property
    def split(self) -> int:
        return int(self.schedule["split"])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.schedule["grid"])

    @property
    def outputs(self) -> list[str]:
        return list(self.schedule["outputs"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.schedule["input"]["shape"])


def load_export(folder: "str | Path", verify: bool = True) -> ExportFolder:
    """Read ``folder/schedule.json``; check its format version and, with ``verify``, that every
    listed file exists with its recorded sha256 and that no unlisted ONNX file is present."""
    root = Path(folder)
    if not root.is_dir():
        raise TinydetError(f"{root}: export folder does not exist (expected the --out folder of `tinydet export`)")
    sched_path = root / SCHEDULE
    if not sched_path.is_file():
        raise TinydetError(f"{root}: schedule.json is missing; expected an export folder written by `tinydet export`")
    try:
        schedule = json.loads(sched_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TinydetError(f"{sched_path}: malformed JSON ({exc}); the file was modified after export") from None
    if not isinstance(schedule, dict):
        raise TinydetError(f"{sched_path}: expected a JSON object, got {type(schedule).__name__}")
    version = schedule.get("format_version")
    if version != FORMAT_VERSION:
        raise TinydetError(f"{sched_path}: format_version: expected {FORMAT_VERSION}, got {version!r}; "
                           f"re-export the model with this tinydet")
    files = schedule.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise TinydetError(f"{sched_path}: files: expected {{name: {{sha256, bytes}}}}, got {files!r}")
    for name in REQUIRED:
        if name not in files:
            raise TinydetError(f"{sched_path}: files: {name} is not listed; expected {', '.join(REQUIRED)}")
    if verify:
        for name, entry in files.items():
            path = root / name
            if not path.is_file():
                raise TinydetError(f"{root}: {name} is missing (listed in schedule.json); re-export the folder")
            if sha256_file(path) != entry["sha256"]:
                raise TinydetError(f"{root}: checksum mismatch: {name} was modified after export")
        extra = sorted(p.name for p in root.glob("*.onnx") if p.name not in files)
        if extra:
            raise TinydetError(f"{root}: {extra[0]} is not listed in schedule.json; add files with "
                               f"tinydet.export.add_files so their checksums are recorded")
    return ExportFolder(root, schedule)


def add_files(folder: "str | Path", files: Mapping[str, bytes]) -> ExportFolder:
    """Add (or replace) files in a verified export folder and record their checksums.

    Each file is written atomically, then schedule.json (last) with the new ``files`` entries, so
    an interrupted call leaves either the old folder or one whose checks name the stale file.
    """
    export = load_export(folder)
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or name in (SCHEDULE, "") or name.startswith("."):
            raise TinydetError(f"add_files: file name {name!r}: expected a plain file name other than schedule.json")
        if name in REQUIRED:
            raise TinydetError(f"add_files: {name} is written by `tinydet export` and cannot be replaced")
    entries = dict(export.schedule["files"])
    for name, data in files.items():
        atomic_write_bytes(export.root / name, bytes(data))
        entries[name] = {"sha256": sha256_bytes(bytes(data)), "bytes": len(data)}
    export.schedule["files"] = entries
    write_schedule(export.root, export.schedule)
    return export
