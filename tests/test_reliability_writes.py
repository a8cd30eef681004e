"""Issue 17 points 1-5 and 12 (recorded config): nothing is lost or half-written when a command
is killed (deterministically, right before its N-th write / folder swap: TINYDET_FAULT), runs
out of disk space, or is re-run over earlier results; re-running repairs the folder.

Kills run ``python -m tinydet`` in a child process (``os._exit(137)``: no cleanup, as SIGKILL);
full-disk cases run in process (the ENOSPC is raised, nothing exits).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinydet.errors import TinydetError
from tinydet.export import load_export
from tinydet.io import atomic

from fixtures import run_cli
from train_helpers import make_voc, tiny_config

ROOT = Path(__file__).resolve().parents[1]
KILLED = 137


def tinydet_child(args, fault, cwd=None):
    """``python -m tinydet ARGS`` in a child process with ``TINYDET_FAULT=fault``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), atomic.FAULT_ENV: fault}
    proc = subprocess.run([sys.executable, "-m", "tinydet", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    atomic._cleaned.clear()  # the next in-process command is the next run: it cleans up after this one
    return proc


def snapshot(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith("."))


@pytest.fixture
def fault(monkeypatch):
    """Set ``TINYDET_FAULT`` for in-process commands, with fresh event counts."""
    def set_fault(spec):
        monkeypatch.setattr(atomic, "_fault_counts", {})
        monkeypatch.setenv(atomic.FAULT_ENV, spec)
    yield set_fault


def _fake_checkpoint(cfg_path, path):
    """A tinydet checkpoint of the tiny config's detector (random weights) without training."""
    import torch

    from tinydet.config import load_config, to_dict
    from tinydet.models.detector import detector_from_config

    cfg = load_config(cfg_path)
    names = list(cfg["data"]["classes"])
    model = detector_from_config(cfg, len(names))
    meta = {"config": to_dict(cfg), "arch": model.spec.to_dict(), "class_names": names, "format_version": 1}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "tinydet": meta}, path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny VOC set, its config, a checkpoint and its export (2x2 patches, split 3, config recorded)."""
    tmp = tmp_path_factory.mktemp("reliability")
    cfg = tiny_config(tmp, make_voc(tmp / "voc"), tmp / "runs")
    ckpt = tmp / "model.ckpt"
    _fake_checkpoint(cfg, ckpt)
    out = tmp / "exp"
    from tinydet.cli import main

    assert main(["export", "-c", str(cfg), "--ckpt", str(ckpt), "--out", str(out), "--patches", "2", "--split", "3",
                 "--check-images", "1", "--json"]) == 0
    return tmp, cfg, ckpt, out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# export records its config; quantize uses it and refuses another data set's config (17.9, 17.12)

def test_export_records_its_config_and_quantize_uses_it(setup, tmp_path, capsys):
    tmp, cfg, _, out = setup
    folder = _copy(out, tmp_path / "q")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"schedule.json", "config.yaml", "full.onnx"} <= set(manifest["files"])
    assert yaml.safe_load((folder / "config.yaml").read_text())["data"]["classes"] == \
        yaml.safe_load(cfg.read_text())["data"]["classes"]
    rc, stdout, err = run_cli(capsys, ["quantize", str(folder), "--calib", "2", "--json"])  # no -c
    assert rc == 0, err
    assert json.loads(stdout)["source"]["config"] == str(folder / "config.yaml")
    assert load_export(folder).has("full.int8.onnx")
    for extra in ([], ["--int8"]):  # eval without -c too
        rc, stdout, err = run_cli(capsys, ["eval", "--export", str(folder), *extra, "--json"])
        assert rc == 0, err
        assert "map50" in json.loads(stdout)


@pytest.mark.parametrize("change, field", [({"data": {"classes": ["circle", "square", "triangle", "star", "plus"]}},
                                            "data classes"),
                                           ({"model": {"resolution": 96}}, "model.resolution")])
def test_quantize_refuses_another_data_sets_config(setup, tmp_path, capsys, change, field):
    tmp, cfg, _, out = setup
    data = yaml.safe_load(cfg.read_text())
    for section, values in change.items():
        data[section].update(values)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    if "classes" in field:  # the same images, labelled with other names: another data set
        voc = _copy(Path(data["data"]["root"]), tmp_path / "voc")
        for xml in (voc / "VOC2007" / "Annotations").glob("*.xml"):
            xml.write_text(xml.read_text().replace("<name>cross</name>", "<name>plus</name>"))
        data["data"]["root"] = str(voc)
        other.write_text(yaml.safe_dump(data))
    before = snapshot(out)
    rc, stdout, err = run_cli(capsys, ["quantize", str(out), "--calib", "2", "-c", str(other)])
    assert rc == 2 and stdout == "" and err.count("\n") == 1, err
    assert field in err and "--other-data" in err and "config.yaml" in err
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------
# export: old or new folder at every instant, leftovers cleaned (17.3), full disk (17.5)

def test_export_killed_while_replacing_keeps_the_old_folder_and_the_rerun_cleans_up(setup, tmp_path):
    tmp, cfg, ckpt, out = setup
    folder = _copy(out, tmp_path / "exp")
    before = snapshot(folder)
    args = ["export", "-c", cfg, "--ckpt", ckpt, "--out", folder, "--patches", "3", "--split", "2",
            "--check-images", "1"]
    proc = tinydet_child(args, "swap:1")  # right before the new folder takes the old one's place
    assert proc.returncode == KILLED, proc.stderr[-2000:]
    assert snapshot(folder) == before and load_export(folder).grid == (2, 2)
    assert len(leftovers(tmp_path)) == 1  # the killed run's staged folder
    from tinydet.cli import main

    assert main([str(a) for a in args]) == 0
    assert load_export(folder).grid == (3, 3) and leftovers(tmp_path) == []


def test_export_on_a_full_disk_is_one_line_and_writes_nothing(setup, tmp_path, capsys, fault):
    tmp, cfg, ckpt, out = setup
    folder = _copy(out, tmp_path / "exp")
    before = snapshot(folder)
    fault("enospc:2")
    rc, stdout, err = run_cli(capsys, ["export", "-c", str(cfg), "--ckpt", str(ckpt), "--out", str(folder),
                                       "--patches", "3", "--split", "2", "--check-images", "1"])
    assert rc == 2 and stdout == ""
    assert err.splitlines()[-1] == f"tinydet: error: no space left on device writing {folder / 'stage1_patch.onnx'}"
    assert snapshot(folder) == before and leftovers(tmp_path) == []


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(setup, tmp_path, capsys):
    tmp, cfg, ckpt, _ = setup
    (tmp_path / "notes.txt").write_text("mine")
    rc, _, err = run_cli(capsys, ["export", "-c", str(cfg), "--ckpt", str(ckpt), "--out", str(tmp_path)])
    assert rc == 2 and "a folder with other files (no schedule.json)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------------------------
# quantize: one atomic commit, re-running repairs (17.2), full disk (17.5)

@pytest.mark.parametrize("kill", ["write:1", "write:4", "swap:1"])
def test_quantize_killed_leaves_the_folder_consistent_and_the_rerun_repairs(setup, tmp_path, capsys, kill):
    tmp, cfg, _, out = setup
    folder = _copy(out, tmp_path / "q")
    assert run_cli(capsys, ["quantize", str(folder), "--calib", "2", "--method", "minmax"])[0] == 0
    before = snapshot(folder)
    proc = tinydet_child(["quantize", folder, "--calib", "3", "--method", "percentile"], kill)
    assert proc.returncode == KILLED, proc.stderr[-2000:]
    assert snapshot(folder) == before  # the old int8 models, checksums and manifest, all consistent
    load_export(folder)
    assert json.loads((folder / "quant.json").read_text())["source"]["method"] == "minmax"
    rc, _, err = run_cli(capsys, ["quantize", str(folder), "--calib", "3", "--method", "percentile"])
    assert rc == 0, err
    assert json.loads((folder / "quant.json").read_text())["source"]["method"] == "percentile"
    assert leftovers(tmp_path) == [] and leftovers(folder) == []


def test_quantize_on_a_full_disk_is_one_line_and_writes_nothing(setup, tmp_path, capsys, fault):
    tmp, cfg, _, out = setup
    folder = _copy(out, tmp_path / "q")
    before = snapshot(folder)
    fault("enospc:3")  # the third file: stage2.int8.onnx
    rc, stdout, err = run_cli(capsys, ["quantize", str(folder), "--calib", "2"])
    assert rc == 2 and stdout == ""
    assert err.splitlines()[-1] == f"tinydet: error: no space left on device writing {folder / 'stage2.int8.onnx'}"
    assert snapshot(folder) == before and leftovers(tmp_path) == []


def _make_legacy(folder):
    """The folder as tinydet wrote it before manifest.json: checksums of the model files in
    schedule.json (which nothing checksummed)."""
    from tinydet.io.manifest import build_manifest

    sched = json.loads((folder / "schedule.json").read_text())
    models = sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".tflite"))
    sched["files"] = {k: v.to_dict() for k, v in build_manifest(folder, models).files.items()}
    (folder / "schedule.json").write_text(json.dumps(sched))
    (folder / "manifest.json").unlink()
    (folder / "config.yaml").unlink()


def test_a_broken_int8_part_allows_float_runs_and_quantize_repairs_it(setup, tmp_path, capsys):
    """What an interrupted quantize of earlier tinydet versions left: int8 files that disagree
    with the checksums. Only the int8 part is refused (naming the command that fixes it)."""
    from tinydet.export import onnx_runner
    import numpy as np

    tmp, cfg, _, out = setup
    folder = _copy(out, tmp_path / "q")
    assert run_cli(capsys, ["quantize", str(folder), "--calib", "2"])[0] == 0
    _make_legacy(folder)
    data = (folder / "stage2.int8.onnx").read_bytes()
    (folder / "stage2.int8.onnx").write_bytes(data[: len(data) // 2])
    rc, stdout, err = run_cli(capsys, ["validate", str(folder), "--images", "1", "-c", str(cfg)])
    assert rc == 2 and "stage2.int8.onnx" in err and f"tinydet quantize {folder}" in err
    assert "no manifest.json" in err  # an old folder is read, and says so
    assert "add_files" not in err and "tinydet." not in err.split("error:")[1]
    images = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    assert onnx_runner(folder)(images)[0].shape[1] == 30  # float eval still runs
    with pytest.raises(TinydetError, match="stage2.int8.onnx.*tinydet quantize"):
        onnx_runner(folder, int8=True)
    rc, _, err = run_cli(capsys, ["quantize", str(folder), "--calib", "2", "-c", str(cfg)])
    assert rc == 0, err
    export = load_export(folder)
    assert export.has_manifest and export.has("stage2.int8.onnx")
    assert "files" not in json.loads((folder / "schedule.json").read_text())


# ----------------------------------------------------------------------------------------------
# deploy: staged build folder swapped in whole (17.4), full disk (17.5)

@pytest.fixture(scope="module")
def int8_folder(setup):
    tmp, cfg, _, out = setup
    folder = _copy(out, tmp / "int8")
    from tinydet.cli import main

    assert main(["quantize", str(folder), "--calib", "2"]) == 0
    return folder


def test_deploy_refused_or_killed_keeps_the_previous_build(int8_folder, tmp_path, capsys, fault):
    build = tmp_path / "build"
    rc, _, err = run_cli(capsys, ["deploy", str(int8_folder), "--target", "host", "--out", str(build), "--mode",
                                  "layer"])
    assert rc == 0, err
    before = snapshot(build)
    # over budget: refused before compiling, the previous build untouched (not its model.c either)
    rc, _, err = run_cli(capsys, ["deploy", str(int8_folder), "--target", "host", "--out", str(build),
                                  "--sram", "1k"])
    assert rc == 2 and err.count("tinydet: error:") == 1
    assert snapshot(build) == before and leftovers(tmp_path) == []
    proc = tinydet_child(["deploy", int8_folder, "--target", "host", "--out", build, "--mode", "patch"], "swap:1")
    assert proc.returncode == KILLED, proc.stderr[-2000:]
    assert snapshot(build) == before
    fault("enospc:1")
    rc, _, err = run_cli(capsys, ["deploy", str(int8_folder), "--target", "host", "--out", str(build),
                                  "--mode", "patch"])
    assert rc == 2 and err.splitlines()[-1] == f"tinydet: error: no space left on device writing {build / 'model.h'}"
    assert snapshot(build) == before
    fault("")
    rc, _, err = run_cli(capsys, ["deploy", str(int8_folder), "--target", "host", "--out", str(build),
                                  "--mode", "patch", "--json"])
    assert rc == 0, err
    assert json.loads((build / "build.json").read_text())["mode"] == "patch"
    assert leftovers(tmp_path) == []  # the killed run's staged build was cleaned by this one


def test_deploy_refuses_to_replace_a_folder_that_is_not_a_build(int8_folder, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    rc, _, err = run_cli(capsys, ["deploy", str(int8_folder), "--target", "host", "--out", str(tmp_path)])
    assert rc == 2 and "a folder with other files (no build.json" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# train: never overwrite a run (17.1), full disk (17.5)

def test_train_refuses_a_run_folder_with_checkpoints(setup, tmp_path, capsys):
    tmp, cfg, ckpt, _ = setup
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "best.ckpt")
    shutil.copy(ckpt, run / "last.ckpt")
    before = snapshot(run)
    rc, stdout, err = run_cli(capsys, ["train", "-c", str(cfg), "--set", f"train.out_dir={run}"])
    assert rc == 2 and stdout == "" and err.count("\n") == 1
    assert "--resume auto" in err and "--new" in err and "train.out_dir" in err
    (run / "last.ckpt").unlink()  # a best model but nothing to resume: --resume auto would start afresh
    rc, _, err = run_cli(capsys, ["train", "-c", str(cfg), "--set", f"train.out_dir={run}", "--resume", "auto"])
    assert rc == 2 and f"--resume {run / 'best.ckpt'}" in err
    rc, _, err = run_cli(capsys, ["train", "-c", str(cfg), "--set", f"train.out_dir={run}", "--ckpt", str(ckpt)])
    assert rc == 2 and "with --ckpt" in err
    assert snapshot(run) == {k: v for k, v in before.items() if k != "last.ckpt"}


def test_train_new_writes_a_numbered_sibling(setup, tmp_path, capsys):
    tmp, cfg, ckpt, _ = setup
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "best.ckpt")
    before = snapshot(run)
    rc, stdout, err = run_cli(capsys, ["train", "-c", str(cfg), "--set", f"train.out_dir={run}", "train.max_steps=1",
                                       "train.loggers=[]", "--new", "--json"])
    assert rc == 0, err
    assert json.loads(stdout)["out_dir"] == str(tmp_path / "run-2") and f"writing to {tmp_path / 'run-2'}" in err
    assert (tmp_path / "run-2" / "last.ckpt").is_file() and snapshot(run) == before


def test_train_on_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(setup, tmp_path, capsys, fault):
    tmp, cfg, _, _ = setup
    run = tmp_path / "run"
    fault("enospc:1")  # the first checkpoint write
    rc, stdout, err = run_cli(capsys, ["train", "-c", str(cfg), "--set", f"train.out_dir={run}", "train.max_steps=1",
                                       "train.loggers=[]"])
    assert rc == 2 and stdout == ""
    assert err.splitlines()[-1] == f"tinydet: error: no space left on device writing {run / 'last.ckpt'}"
    assert not list(run.glob("*.ckpt")) and leftovers(run) == []


# ----------------------------------------------------------------------------------------------
# search: the result files appear together (17.4)

SEARCH_CONFIG = """
name: tiny-search
model:
  resolution: 64
  head: {{channels: 8, num_anchors: 2, kernel: 3}}
  anchors: [[[12, 12], [24, 24]], [[32, 32], [56, 56]]]
data: {{format: voc, root: {root}, train: [[2007, train]], val: [[2007, val]], test: [[2007, test]],
        classes: [circle, square, triangle, star, cross]}}
train: {{batch_size: 4, num_workers: 0}}
search: {{population: 2, generations: 1, supernet_epochs: 1, supernet_max_steps: 1, kernels: [3], expands: [3],
          widths: [0.25], resolutions: [64], grids: [1, 2], depths: [[1], [1], [1], [1], [1], [1], [1]],
          recal_batches: 1, max_val_images: 2}}
"""


def test_search_killed_while_writing_results_keeps_the_previous_ones(setup, tmp_path, capsys):
    from tinydet.pipeline.search import RESULT_FILES

    tmp = setup[0]
    cfg = tmp_path / "search.yaml"
    cfg.write_text(SEARCH_CONFIG.format(root=tmp / "voc"))
    out = tmp_path / "s"
    args = ["search", "-c", cfg, "--sram", "64kB", "--flash", "1MB", "--out", out]
    rc, _, err = run_cli(capsys, [str(a) for a in args])
    assert rc == 0, err
    for name in RESULT_FILES:  # mark the previous results
        (out / name).write_bytes(b"previous " + name.encode())
    before = snapshot(out)
    proc = tinydet_child(args + ["--resume"], "swap:1")
    assert proc.returncode == KILLED, proc.stderr[-2000:]
    assert snapshot(out) == before  # no new best_arch.yaml beside the old schedule.json / pareto.json
    rc, _, err = run_cli(capsys, [str(a) for a in args] + ["--resume"])
    assert rc == 0, err
    assert not any((out / n).read_bytes().startswith(b"previous") for n in RESULT_FILES)
    assert json.loads((out / "schedule.json").read_text())["arch"] == str(out / "best_arch.yaml")
    assert leftovers(tmp_path) == []
