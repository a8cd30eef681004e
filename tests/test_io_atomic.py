"""tinydet.io.atomic: all-or-nothing writes, synced file and folder, staged folder replacement."""
import os

import pytest

from tinydet.errors import TinydetError
from tinydet.io import atomic
from tinydet.io.atomic import (atomic_open, atomic_path, atomic_torch_save, atomic_write_bytes, atomic_write_json,
                               atomic_write_text, replace_dir, staged_dir)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the folder is created
    atomic_write_json(path, {"b": [1, 2]})
    assert path.read_text() == '{\n "b": [\n  1,\n  2\n ]\n}\n'
    atomic_write_text(path, "é")
    assert path.read_bytes() == "é".encode("utf-8")
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _entries(path.parent) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert _entries(tmp_path) == ["f.txt"]
    with pytest.raises(ValueError):
        with atomic_open(path, "a"):
            pass


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", None))
        real_replace(a, b)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    kinds = [e[0] for e in events]
    assert "fsync" in kinds[:kinds.index("replace")]  # the data is durable before it becomes visible
    assert kinds[-1] == "fsync"  # then the folder entry
    if events[-1][1] is not None:
        assert events[-1][1] is True and events[0][1] is False


def test_atomic_path_for_writers_that_need_a_path(tmp_path):
    out = tmp_path / "prog.elf"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and not out.exists()
        tmp.write_bytes(b"ELF")
    assert out.read_bytes() == b"ELF" and _entries(tmp_path) == ["prog.elf"]
    with pytest.raises(OSError):
        with atomic_path(out) as tmp:
            raise OSError("compiler failed")
    assert out.read_bytes() == b"ELF" and _entries(tmp_path) == ["prog.elf"]


def test_torch_save_round_trip(tmp_path):
    import torch

    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt")["w"].tolist() == [0, 1, 2]


def test_staged_dir_replaces_the_folder_only_on_success(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("check failed")
    assert _entries(out) == ["old.txt"] and _entries(tmp_path) == ["export"]
    with staged_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _entries(out) == ["new.txt"] and _entries(tmp_path) == ["export"]


def test_replace_dir_refuses_a_file_and_keeps_it(tmp_path):
    (tmp_path / "out").write_text("a file")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(TinydetError, match="out: exists and is not a folder"):
        replace_dir(src, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file" and src.is_dir()
