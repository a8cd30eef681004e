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


def test_replace_dir_exchanges_and_the_fallback_keeps_the_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for exchange in (True, False):
        if not exchange:  # a file system without an atomic exchange: two renames
            monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
        with staged_dir(out) as tmp:
            (tmp / "v.txt").write_text(str(exchange))
        assert (out / "v.txt").read_text() == str(exchange) and _entries(tmp_path) == ["out"]


def test_leftovers_of_dead_writers_are_removed_and_an_old_folder_is_restored(tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".a.json.{dead}.0123abcd.tmp").write_text("half")
    (tmp_path / f".b.json.{os.getpid()}.0123abcd.tmp").write_text("mine, in progress")
    (tmp_path / ".c.ckpt.k3j_x9zq.tmp").write_text("tinydet before pids")
    old = tmp_path / f".exp.{dead}.89abcdef.old"  # killed between the fallback's two renames
    old.mkdir()
    (old / "schedule.json").write_text("{}")
    legacy = tmp_path / ".exp2.old.abcd1234"  # the layout before pids: the folder inside
    (legacy / "exp2").mkdir(parents=True)
    (legacy / "exp2" / "f").write_text("x")
    removed = atomic.clean_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".a.json.{dead}.0123abcd.tmp", ".c.ckpt.k3j_x9zq.tmp"])
    assert _entries(tmp_path) == sorted([f".b.json.{os.getpid()}.0123abcd.tmp", "exp", "exp2"])
    assert (tmp_path / "exp" / "schedule.json").read_text() == "{}" and (tmp_path / "exp2" / "f").read_text() == "x"
    (tmp_path / f".q.{dead}.00000000.tmp").mkdir()
    atomic_write_bytes(tmp_path / "z", b"1")  # a process's first write into a folder cleans it
    assert not (tmp_path / f".q.{dead}.00000000.tmp").exists()


def test_update_dir_never_writes_into_the_linked_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.bin").write_bytes(b"keep")
    (out / "change.bin").write_bytes(b"old")
    (out / "drop.bin").write_bytes(b"drop")
    linked_elsewhere = tmp_path / "other-link"
    os.link(out / "change.bin", linked_elsewhere)
    with atomic.update_dir(out, drop=["drop.bin"]) as stage:
        atomic.write_file(stage / "change.bin", b"new")
    assert _entries(out) == ["change.bin", "keep.bin"] and (out / "change.bin").read_bytes() == b"new"
    assert linked_elsewhere.read_bytes() == b"old"  # the old inode was never written into


def test_disk_full_names_the_destination_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_fault_counts", {})
    monkeypatch.setenv(atomic.FAULT_ENV, "enospc:1")
    with pytest.raises(atomic.DiskFullError, match=f"no space left on device writing {tmp_path / 'a.bin'}$"):
        atomic_write_bytes(tmp_path / "a.bin", b"x" * 100)
    assert _entries(tmp_path) == []
    monkeypatch.setattr(atomic, "_fault_counts", {})
    with pytest.raises(atomic.DiskFullError, match=f"writing {tmp_path / 'set' / 'f.txt'}$"):
        with staged_dir(tmp_path / "set") as tmp:
            atomic.write_file(tmp / "f.txt", b"abc")
    assert _entries(tmp_path) == []
    monkeypatch.setenv(atomic.FAULT_ENV, "kill:1")
    with pytest.raises(TinydetError, match="TINYDET_FAULT='kill:1': expected KIND:N"):
        atomic_write_bytes(tmp_path / "a.bin", b"")
