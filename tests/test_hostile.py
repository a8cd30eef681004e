"""Runs the hostile-input suite (the table is ``tests/hostile_cases.py``; add cases there).

Each case runs ``tinydet ARGV`` in its own scratch folder (the working directory, so default
output folders land there too) and checks: the exit status, the one-line error (no traceback),
and that no file was created or changed except those the case declares it may write.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hostile_cases import CASES, Assets, Case, Outcome, Workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hostile_assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("hostile_assets"))


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha1 of every file under ``root`` (folders count by their files)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "link"
        elif path.is_dir() and not any(path.iterdir()):
            out[str(path.relative_to(root)) + "/"] = "empty dir"
    return out


def run_in_process(argv: list[str], capsys) -> Outcome:
    from tinydet.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusals
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def run_subprocess(argv: list[str], cwd: Path, stdout_closed: bool) -> Outcome:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "tinydet", *argv]
    if not stdout_closed:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the child's first flush meets a closed pipe
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    finally:
        os.close(write_end)
    return Outcome(proc.returncode, "", proc.stderr)


def check_error(case: Case, outcome: Outcome) -> None:
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert lines, f"no error printed (exit {outcome.code}, stdout {outcome.stdout[-300:]!r})"
    last = lines[-1]
    assert re.match(r"^tinydet( \w+)?: error: ", last), outcome.stderr
    message = last.split(": error: ", 1)[1]
    assert re.search(case.error, message), f"{message!r} does not match {case.error!r}"
    if case.one_line:
        assert len(lines) == 1, outcome.stderr
    assert outcome.code == case.code, (outcome.code, outcome.stderr)


def changed_files(before: dict, after: dict, allowed: tuple) -> list[str]:
    names = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, pat) for pat in allowed))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, hostile_assets: Assets, tmp_path, capsys, monkeypatch):
    ws = Workspace(tmp_path, hostile_assets)
    if case.prepare is not None:
        case.prepare(ws)
    argv = [ws.fill(a) for a in case.argv]
    before = snapshot(tmp_path)
    if case.subprocess:
        outcome = run_subprocess(argv, tmp_path, case.stdout_closed)
    else:
        monkeypatch.chdir(tmp_path)
        outcome = run_in_process(argv, capsys)
    if case.error is not None:
        check_error(case, outcome)
    else:
        assert case.accept is not None, f"case {case.id}: give an error regex or an accept check"
        case.accept(outcome, ws)
    assert changed_files(before, snapshot(tmp_path), case.writes) == [], f"[{case.issue}] files written"


def test_cases_are_unique_and_complete():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for c in CASES:
        assert (c.error is None) != (c.accept is None), c.id
        assert c.issue, c.id


def test_missing_config_rejected_before_torch_is_imported(tmp_path):
    """``tinydet train -c missing.yaml`` fails before importing torch or Lightning (it is instant)."""
    code = ("import sys; from tinydet.cli import main; rc = main(['train', '-c', 'missing.yaml']); "
            "heavy = sorted(m for m in ('torch', 'lightning', 'onnx', 'onnxruntime') if m in sys.modules); "
            "print(rc, heavy)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == "2 []", (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == "tinydet: error: --config missing.yaml: no such file"
