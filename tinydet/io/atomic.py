"""Atomic file and folder writes: the one way tinydet writes a file or folder that others read.

Files. Every write goes to a hidden temporary name in the destination's own folder (so the
rename never crosses a file system), is flushed and ``fsync``-ed, renamed over the destination
with ``os.replace``, and then the folder itself is ``fsync``-ed so that the rename survives a
power cut. A reader, or a SIGKILL at any moment, sees either the old complete file or the new
complete file, never a half one; a failed write leaves the destination untouched and removes its
temporary file.

Folders (an export folder, a firmware build, search results, a generated data set) are built in
a hidden temporary sibling (:func:`staged_dir`; :func:`update_dir` starts it as a hard-linked
copy of the current folder, for commands that change a few files of it), every file in it is
synced, and the finished folder is swapped in by :func:`replace_dir` with one atomic
exchange of the two names: Linux ``renameat2(RENAME_EXCHANGE)`` (kernel 3.15+, ext4, xfs,
btrfs, tmpfs ...), macOS ``renamex_np(RENAME_SWAP)`` (APFS). At every instant the path holds
either the complete old folder or the complete new one. Where the file system cannot exchange
(``EINVAL``/``ENOSYS``: some network and FUSE file systems, Windows) the fallback is two renames
(old folder aside as ``.NAME.<pid>.<id>.old``, new folder in): between them the path is missing
for an instant, and a run killed right there is repaired by the next run, which moves the old
folder back (:func:`clean_leftovers`).

Leftovers. Temporary names carry the writer's process id (``.NAME.<pid>.<id>.tmp`` /
``.old``). The first write of a process into a folder removes the leftovers of dead writers
there (and restores an ``.old`` folder whose destination is missing), so a killed run never leaves
junk for longer than the next run; a concurrent writer's files (its pid alive) are left alone.

Full disk. An ``ENOSPC``/``EDQUOT`` anywhere in a write raises :class:`DiskFullError` (a
TinydetError: ``no space left on device writing PATH``, PATH the destination the user asked
for, not the temporary name), after the temporary file or folder was removed.

Fault injection (tests). ``TINYDET_FAULT=KIND:N[,KIND:N...]`` makes the N-th event of a kind in
this process fail deterministically: ``write:N`` and ``rename:N`` end the process with
``os._exit(137)`` (as a SIGKILL would: no cleanup) right before the N-th file write or rename
(of a file or a folder), ``swap:N`` right before the N-th folder swap (the commit of
:func:`staged_dir`); ``enospc:N`` makes the N-th file write raise ``ENOSPC`` after half its bytes
are on disk. Counts start at the process start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import os
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from tinydet.errors import TinydetError

FAULT_ENV = "TINYDET_FAULT"
FAULT_KINDS = ("write", "rename", "swap", "enospc")
KILLED_STATUS = 137  # what a shell reports for SIGKILL
DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

# a temporary name: .<destination name>.<pid>.<random id>.<tmp|old>
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<id>[0-9a-f]{8})\.(?P<kind>tmp|old)$")
# the names of tinydet versions before the pid was recorded (mkstemp / mkdtemp ids)
_LEGACY_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_OLD_RE = re.compile(r"^\.(?P<name>.+)\.old\.[A-Za-z0-9_]{8}$")


class DiskFullError(TinydetError):
    """The file system ran out of space (or quota) while writing ``path``; nothing was half-written."""

    def __init__(self, path: "str | Path"):
        self.path = Path(path)
        super().__init__(f"no space left on device writing {self.path}")


# ----------------------------------------------------------------------------------------------
# fault injection

_fault_counts: dict[str, int] = {}


def _fault_plan() -> dict[str, int]:
    spec = os.environ.get(FAULT_ENV, "").strip()
    plan: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, n = part.partition(":")
        if kind not in FAULT_KINDS or not n.isdigit() or int(n) < 1:
            raise TinydetError(f"{FAULT_ENV}={spec!r}: expected KIND:N with KIND one of {', '.join(FAULT_KINDS)} "
                               f"and N >= 1, got {part!r}")
        plan[kind] = int(n)
    return plan


def _fault_due(kind: str) -> bool:
    """Count one ``kind`` event; True when it is the one ``TINYDET_FAULT`` asks to fail."""
    plan = _fault_plan()
    if kind not in plan:
        return False
    _fault_counts[kind] = _fault_counts.get(kind, 0) + 1
    return _fault_counts[kind] == plan[kind]


def _before_write(path: Path) -> None:
    if _fault_due("write"):
        print(f"tinydet: {FAULT_ENV}: killed before writing {path}", file=sys.stderr, flush=True)
        os._exit(KILLED_STATUS)


def _before_rename(src: Path, dst: Path, swap: bool = False) -> None:
    if _fault_due("rename") or (swap and _fault_due("swap")):
        print(f"tinydet: {FAULT_ENV}: killed before renaming {src.name} to {dst}", file=sys.stderr, flush=True)
        os._exit(KILLED_STATUS)


# ----------------------------------------------------------------------------------------------
# names, leftovers, disk-full mapping

# staged folder -> the folder it will become (so errors name the destination, not the temp name)
_staged: dict[Path, Path] = {}


def _temp_name(path: Path, kind: str = "tmp") -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def user_path(path: "str | Path") -> Path:
    """The destination the user asked for: a temporary name (or a file in a staged folder)
    mapped to the final path."""
    path = Path(path)
    for stage, final in _staged.items():
        if path == stage or stage in path.parents:
            return final / path.relative_to(stage)
    m = _TEMP_RE.match(path.name)
    return path.parent / m.group("name") if m else path


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the file system running out of space or quota."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def clean_leftovers(folder: "str | Path") -> list[Path]:
    """Remove the temporary files and folders that killed tinydet runs left in ``folder``
    (their writer's pid is not running); an ``.old`` folder whose destination is missing (a
    run killed inside the fallback swap) is moved back instead. Returns what was removed."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _TEMP_RE.match(name)
        legacy_old = _LEGACY_OLD_RE.match(name)
        if m:
            if _pid_alive(int(m.group("pid"))):
                continue
            dest, old, inner = m.group("name"), m.group("kind") == "old", False
        elif legacy_old:
            dest, old, inner = legacy_old.group("name"), True, True
        elif _LEGACY_TMP_RE.match(name):
            dest, old, inner = "", False, False
        else:
            continue
        path = folder / name
        if old and _restore_old(path, folder / dest, inner):
            continue
        _remove(path)
        removed.append(path)
    return removed


_cleaned: set[str] = set()


def _clean_once(folder: Path) -> None:
    """:func:`clean_leftovers` of ``folder``, once per process (a stream of writes into one
    folder does not list it each time; leftovers are a previous run's)."""
    key = os.path.abspath(folder)
    if key not in _cleaned:
        _cleaned.add(key)
        clean_leftovers(folder)


def _restore_old(old: Path, dest: Path, inner: bool) -> bool:
    """A fallback swap's ``.old`` folder moved back to ``dest`` when ``dest`` is missing (the
    run was killed between its two renames). ``inner``: the layout of tinydet before pids were
    recorded, which moved the folder into a hidden folder (``.NAME.old.ID/NAME``)."""
    src = old / dest.name if inner else old
    if dest.exists() or dest.is_symlink() or not src.is_dir():
        return False
    os.replace(src, dest)
    if inner:
        _remove(old)
    fsync_dir(dest.parent)
    print(f"tinydet: restored {dest} from an interrupted run's {old.name}", file=sys.stderr)
    return True


# ----------------------------------------------------------------------------------------------
# files

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


def _write_data(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` and sync it (the fault-injection point of writes)."""
    _before_write(user_path(path))
    with open(path, "xb") as fh:
        if _fault_due("enospc"):
            fh.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_file(path: "str | Path", data: bytes) -> Path:
    """Write one file of a folder being built by :func:`staged_dir` / :func:`update_dir` (not
    atomic by itself: the folder swap is). An existing file is unlinked first, never written
    into, so a file hard-linked from the current folder stays as it was. A full disk raises
    :class:`DiskFullError` naming the final path."""
    path = Path(path)
    try:
        if path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_data(path, bytes(data))
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(user_path(path)) from None
        raise
    return path


def _commit_file(tmp: Path, path: Path) -> None:
    _before_rename(tmp, path)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: "str | Path") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally the file written there
    is synced and renamed to ``path``. For writers that need a path, not a handle (a compiler)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(user_path(path)) from None
        raise
    _clean_once(path.parent)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        _commit_file(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(user_path(path)) from None
        raise
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: "str | Path", data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_data(tmp, bytes(data))


@contextmanager
def atomic_open(path: "str | Path", mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` when the block ends without an exception.
    The content is collected in memory and written by :func:`atomic_write_bytes`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    buffer = io.BytesIO()
    fh: IO = buffer if mode == "wb" else io.TextIOWrapper(buffer, encoding=encoding or "utf-8", newline="")
    yield fh
    fh.flush()
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: "str | Path", text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: "str | Path", data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON (``indent``, a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory (checkpoints are small next to RAM; the file write is then
    one :func:`atomic_write_bytes` or :func:`write_file`, with its disk-full handling)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(obj: Any, path: "str | Path") -> None:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints, supernet weights)."""
    atomic_write_bytes(path, torch_bytes(obj))


# ----------------------------------------------------------------------------------------------
# folders

def _fsync_tree(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            _fsync_file(os.path.join(root, name))
        fsync_dir(root)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


_LIBC = _libc()
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_SWAP = 2      # macOS stdio.h
AT_FDCWD = -100


def exchange(a: "str | Path", b: "str | Path") -> bool:
    """Atomically swap the names ``a`` and ``b`` (both must exist, same file system). Returns
    False (nothing changed) where the OS or file system has no atomic exchange."""
    if _LIBC is None:
        return False
    fa, fb = os.fsencode(str(a)), os.fsencode(str(b))
    if sys.platform.startswith("linux"):
        fn = getattr(_LIBC, "renameat2", None)
        if fn is None:
            return False
        rc = fn(AT_FDCWD, fa, AT_FDCWD, fb, ctypes.c_uint(RENAME_EXCHANGE))
    elif sys.platform == "darwin":
        fn = getattr(_LIBC, "renamex_np", None)
        if fn is None:
            return False
        rc = fn(fa, fb, ctypes.c_uint(RENAME_SWAP))
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: "str | Path", out: "str | Path") -> None:
    """Make the finished folder ``tmp`` (same file system) the folder ``out``: every file in
    ``tmp`` is synced, then the two are exchanged in one atomic rename (see the module
    docstring for the fallback) and the old folder is removed. ``out`` must be a folder or
    absent (else a TinydetError, ``out`` untouched)."""
    tmp, out = Path(tmp), Path(out)
    if out.exists() and not out.is_dir():
        raise TinydetError(f"{out}: exists and is not a folder; expected a folder path")
    try:
        _fsync_tree(tmp)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(out) from None
        raise
    _before_rename(tmp, out, swap=True)
    if not out.exists():
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return
    if exchange(tmp, out):
        fsync_dir(out.parent)
        _remove(tmp)  # now the old folder
        return
    old = _temp_name(out, "old")
    os.replace(out, old)
    try:
        _before_rename(tmp, out)  # the fallback's window: a kill here is repaired by the next run
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    fsync_dir(out.parent)
    _remove(old)


@contextmanager
def staged_dir(out: "str | Path") -> Iterator[Path]:
    """Yield a fresh hidden folder next to ``out``; when the block ends normally it replaces
    ``out`` (:func:`replace_dir`), on an exception it is removed and ``out`` is left untouched."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(out) from None
        raise
    if out.exists() and not out.is_dir():
        raise TinydetError(f"{out}: exists and is not a folder; expected a folder path")
    _clean_once(out.parent)
    tmp = _temp_name(out)
    tmp.mkdir()
    _staged[tmp] = out
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        _staged.pop(tmp, None)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _link_tree(src: Path, dst: Path, skip: "set[str]") -> None:
    for entry in os.scandir(src):
        if entry.name in skip or entry.name.startswith("."):
            continue
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            target.mkdir()
            _link_tree(Path(entry.path), target, set())
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        else:
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)  # no hard links here (e.g. FAT, some FUSE)


@contextmanager
def update_dir(out: "str | Path", drop: "tuple[str, ...] | list[str]" = ()) -> Iterator[Path]:
    """:func:`staged_dir` that starts as a copy of the current ``out`` (hard links, so it is
    cheap; files are replaced with :func:`write_file`, which never writes into a linked file),
    leaving out the entries named in ``drop``: for commands that change part of a folder
    (quantize, search results). The whole new folder replaces the old one in one exchange."""
    out = Path(out)
    with staged_dir(out) as tmp:
        if out.is_dir():
            try:
                _link_tree(out, tmp, set(drop))
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFullError(out) from None
                raise
        yield tmp
