"""Atomic file and folder writes: the one way tinydet writes a file that others read.

Every write goes to a temporary name in the destination's own folder (so the rename never crosses
a file system), is flushed and ``fsync``-ed, renamed over the destination with ``os.replace``, and
then the folder itself is ``fsync``-ed so that the rename survives a power cut. A reader, or a
SIGKILL at any moment, sees either the old complete file or the new complete file, never a half
one; a failed write leaves the destination untouched and removes its temporary file.

Folders (an export folder, a generated data set) are built under a temporary folder next to the
destination (:func:`staged_dir`), every file in it is synced, and the finished folder is swapped
in by :func:`replace_dir`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from tinydet.errors import TinydetError


def fsync_dir(folder: "str | Path") -> None:
    """``fsync`` a folder so that renames and new entries in it are durable (no-op where the OS
    cannot open folders, e.g. Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: "str | Path") -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: "str | Path") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally the file written there
    is synced and renamed to ``path``. For writers that need a path, not a handle (a compiler)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: "str | Path", mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` when the block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh  # closed here; atomic_path then syncs and renames it


def atomic_write_bytes(path: "str | Path", data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: "str | Path", text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: "str | Path", data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON (``indent``, a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_torch_save(obj: Any, path: "str | Path") -> None:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints, supernet weights)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def _fsync_tree(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            _fsync_file(os.path.join(root, name))
        fsync_dir(root)


def replace_dir(tmp: "str | Path", out: "str | Path") -> None:
    """Move the finished folder ``tmp`` to ``out`` (same parent folder). Every file in ``tmp`` is
    synced first; an existing ``out`` is swapped aside, replaced, then removed, and put back if the
    rename fails. ``out`` must be a folder or absent (else a TinydetError, ``out`` untouched)."""
    tmp, out = Path(tmp), Path(out)
    _fsync_tree(tmp)
    old = None
    if out.exists():
        if not out.is_dir():
            raise TinydetError(f"{out}: exists and is not a folder; expected a folder path")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)


@contextmanager
def staged_dir(out: "str | Path") -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; when the block ends normally it replaces
    ``out`` (:func:`replace_dir`), on an exception it is removed and ``out`` is left untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
