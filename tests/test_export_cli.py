"""`tinydet export` end to end through tinydet.cli.main with a tiny checkpoint."""
import json

import numpy as np
import pytest
import torch
import yaml

from tinydet.arch.spec import save_spec
from tinydet.cli import main
from tinydet.export import load_export, onnx_runner
from tinydet.models.detector import detector_from_config
from tinydet.config import load_config

from test_export_utils import tiny_spec

ANCHORS = [[[8, 8], [16, 12]], [[24, 24], [40, 32]]]


def _write_config(tmp_path, name="tiny.yaml", width=1.0, **export):
    save_spec(tiny_spec(width=width), tmp_path / f"arch_{width}.yaml")
    cfg = {"name": "tiny", "model": {"arch": f"arch_{width}.yaml", "resolution": [40, 56],
                                     "head": {"channels": 16, "num_anchors": 2, "kernel": 3}, "anchors": ANCHORS},
           "eval": {"conf_thresh": 0.05, "nms_iou": 0.5, "max_det": 20}}
    if export:
        cfg["export"] = export
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config and a checkpoint in the training engineer's format (random weights, random BN stats)."""
    tmp_path = tmp_path_factory.mktemp("cli")
    cfg_path = _write_config(tmp_path)
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    model = detector_from_config(cfg, 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "tinydet": {"config": cfg.to_dict(), "arch": tiny_spec().to_dict(),
                                                 "class_names": ["cat", "dog"], "format_version": 1}}, ckpt)
    return tmp_path, cfg_path, ckpt, model.eval()


def _run_json(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_export_fixed_grid_json(setup, capsys):
    tmp_path, cfg_path, ckpt, model = setup
    out = tmp_path / "out" / "fixed"
    rc, stdout, err = _run_json(capsys, ["export", "-c", str(cfg_path), "--ckpt", str(ckpt), "--out", str(out),
                                         "--grid", "3x2", "--split", "3", "--json", "--check-images", "1"])
    assert rc == 0, err
    result = json.loads(stdout)  # exactly one JSON object on stdout
    assert result["grid"] == [3, 2] and result["split"] == 3 and result["plan"] == "fixed"
    assert result["float_stitched_max_abs_diff"] <= 1e-4
    assert result["files"]["stage1_patch.onnx"] == str(out / "stage1_patch.onnx")
    from tinydet.schedule import plan_patches

    plan = plan_patches(model.graph((40, 56)), (3, 2), 3)
    assert result["peak_sram_patch"] == plan.peak_sram_patch and result["mac_overhead"] == plan.mac_overhead
    export = load_export(out)
    det = export.schedule["detector"]
    assert det["class_names"] == ["cat", "dog"] and det["anchors"] == ANCHORS and det["strides"] == [4, 8]
    assert det["conf_thresh"] == 0.05 and det["max_det"] == 20
    images = np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32)
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(images))]
    for r, s in zip(ref, onnx_runner(out, patched=True)(images)):
        assert np.abs(r - s).max() <= 1e-4


def test_export_auto_plan(setup, capsys):
    tmp_path, cfg_path, ckpt, _ = setup
    cfg_auto = _write_config(tmp_path, "auto.yaml", max_overhead=0.5)
    out = tmp_path / "out" / "auto"
    rc, stdout, err = _run_json(capsys, ["export", "-c", str(cfg_auto), "--ckpt", str(ckpt), "--out", str(out),
                                         "--json", "--check-images", "1"])
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["plan"] == "auto" and result["mac_overhead"] <= 0.5 + 1e-9
    from tinydet.pipeline.export import exportable_splits
    from tinydet.schedule import search_plans

    graph = setup[3].graph((40, 56))
    assert exportable_splits(graph) == [1, 2, 3, 4]  # heads read block 3: at most 4 blocks per patch
    best, _ = search_plans(graph, splits=[1, 2, 3, 4], max_overhead=0.5)
    assert best.split > 0 and (result["grid"], result["split"]) == (list(best.grid), best.split)
    # human-readable output without --json
    rc = main(["export", "-c", str(cfg_auto), "--ckpt", str(ckpt), "--out", str(out), "--check-images", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and "float stitched vs full max abs diff" in text


def test_export_errors(setup, capsys, tmp_path):
    root, cfg_path, ckpt, _ = setup
    out = tmp_path / "never"
    cases = [
        (["--plan", "magic"], "--plan: unknown plan 'magic'"),
        (["--grid", "3x2"], "--split: a fixed grid needs the split"),
        (["--grid", "3x2", "--split", "9"], "split: expected a block count"),
        (["--grid", "30x2", "--split", "3"], "grid: 30x2 is larger than the split feature map"),
    ]
    for extra, message in cases:
        rc = main(["export", "-c", str(cfg_path), "--ckpt", str(ckpt), "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, (extra, err)
    wide = _write_config(root, "wide.yaml", width=2.0)
    rc = main(["export", "-c", str(wide), "--ckpt", str(ckpt), "--out", str(out), "--patches", "2", "--split", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not match" in err
    assert not out.exists()


def test_auto_plan_per_layer_winner_exports_one_tile(setup, capsys):
    """With a budget the whole network fits and no overhead allowed, per-layer execution wins the
    search; the folder then keeps its two stages with a single 1x1 tile (no MAC overhead)."""
    tmp_path, _, ckpt, _ = setup
    cfg = _write_config(tmp_path, "roomy.yaml", sram_budget=10**9, max_overhead=0.0)
    rc, stdout, err = _run_json(capsys, ["export", "-c", str(cfg), "--ckpt", str(ckpt), "--out",
                                         str(tmp_path / "out" / "roomy"), "--json", "--check-images", "1"])
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["grid"] == [1, 1] and result["tiles"] == 1 and result["mac_overhead"] == 0.0
    assert result["float_stitched_max_abs_diff"] <= 1e-4
