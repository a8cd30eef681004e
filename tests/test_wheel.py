"""`pip install .` gives a working tinydet: the wheel carries the C runtime, the targets, the demo
firmware and the configs as package data, and `tinydet deploy` runs from it outside the checkout."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_deploy import folder  # noqa: F401  (the session's quantized tiny export)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built as a wheel from a copy of the sources and installed into its own folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "requirements.txt", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("tinydet", "deploy", "configs"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("tinydet-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, cwd=tmp)
    return wheel, site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_wheel_carries_the_runtime_targets_and_configs(installed):
    import zipfile

    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("tinydet/_share/runtime/src/executor.c", "tinydet/_share/runtime/src/detect.c",
                 "tinydet/_share/runtime/include/tinydet_executor.h", "tinydet/_share/targets/stm32f746/target.json",
                 "tinydet/_share/targets/common/startup_cm7.c", "tinydet/_share/demo/main.c",
                 "tinydet/_share/configs/synth_face.yaml"):
        assert want in names, want


def test_installed_wheel_deploys_on_qemu_outside_the_checkout(installed, folder, tmp_path):  # noqa: F811
    _, site = installed
    where = _run(site, tmp_path, "-c", "import tinydet, tinydet.deploy.toolchain as t; "
                 "print(tinydet.__file__); print(t.RUNTIME_DIR)")
    assert where.returncode == 0, where.stderr
    module, runtime = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(runtime).is_relative_to(site)
    proc = _run(site, tmp_path, "-m", "tinydet", "deploy", str(folder), "--target", "qemu-mps2-an500", "--out",
                str(tmp_path / "b"), "--mode", "layer", "--validate", "--images", "1", "--conf", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["outputs_bit_exact_vs_reference"] is True and r["sram_arena_bytes"] == r["planned_peak_bytes"]
    assert r["instructions_per_inference"] > 0
