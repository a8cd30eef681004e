"""`tinydet quantize` (calibration on the config's data) and `tinydet validate` end to end."""
import json

import numpy as np
import pytest
import yaml

from tinydet.export import load_export
from tinydet.pipeline import validate as validate_pipeline

from fixtures import make_export, run_cli
from train_helpers import make_voc, tiny_config

KEYS = ("float_stitched_max_abs_diff", "int8_stitched_mismatches", "int8_layer_max_lsb_vs_ort",
        "int8_output_mismatch_fraction_vs_ort", "detections_match_fraction", "peak_sram_patch",
        "peak_sram_per_layer", "mac_overhead")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate")
    data = make_voc(tmp / "voc")
    cfg = tiny_config(tmp, data, tmp / "runs")
    out = tmp / "out"
    make_export(out)
    return tmp, cfg, out


def test_validate_before_quantize_says_so(setup, capsys):
    _, _, out = setup
    rc, stdout, err = run_cli(capsys, ["validate", str(out), "--images", "1", "--json"])
    assert rc == 2 and stdout == ""
    assert "no full.int8.onnx" in err and "tinydet quantize" in err


def test_quantize_cli_calibrates_on_the_config_train_split(setup, capsys):
    _, cfg, out = setup
    rc, stdout, err = run_cli(capsys, ["quantize", str(out), "--calib", "3", "--method", "percentile",
                                     "-c", str(cfg), "--other-data", "--json"])
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["source"]["images"] == 3 and result["source"]["method"] == "percentile"
    assert result["files"] == ["full.int8.onnx", "quant.json", "stage1_patch.int8.onnx", "stage2.int8.onnx"]
    assert load_export(out).has("stage2.int8.onnx")
    assert "calibrating" in err


def test_validate_json_reports_every_check_within_bounds(setup, capsys):
    _, cfg, out = setup
    rc, stdout, err = run_cli(capsys, ["validate", str(out), "--images", "2", "-c", str(cfg), "--conf", "0.1", "--json"])
    assert rc == 0, err
    assert stdout.count("\n") == 1
    report = json.loads(stdout)
    for key in KEYS:
        assert key in report and report[key] is not None, key
    assert report["float_stitched_max_abs_diff"] <= 1e-4
    assert report["int8_stitched_mismatches"] == 0
    assert report["int8_layer_max_lsb_vs_ort"] <= 1
    assert "blocks.4.project" in report["int8_layer_lsb_vs_ort"]  # stage-2 residual on the split tensor
    # the end-to-end share of differing int8 outputs, recounted from the two runs on the same images
    from tinydet.export import onnx_runner
    from tinydet.pipeline.validate import validation_images
    from tinydet.quant.reference import Int8Reference

    images, _ = validation_images(out, 2, str(cfg))
    ref = Int8Reference(out, load_export(out).schedule).run_full(images)
    ort = onnx_runner(out, int8=True)(images)
    differ = sum(int((a != np.asarray(b)).sum()) for a, b in zip(ref, ort))
    assert report["int8_output_mismatch_fraction_vs_ort"] == differ / sum(a.size for a in ref)
    assert (differ == 0) == (report["int8_output_max_lsb_vs_ort"] == 0)
    assert report["image_source"].endswith("val") and report["images"] == 2
    schedule = load_export(out).schedule
    assert report["peak_sram_patch"] == schedule["memory"]["peak_sram_patch"]
    assert report["mac_overhead"] == pytest.approx(schedule["macs"]["mac_overhead"])


def test_validate_exits_non_zero_when_a_bound_fails(setup, capsys, monkeypatch):
    _, _, out = setup
    monkeypatch.setattr(validate_pipeline, "LAYER_LSB_BOUND", -1)  # nothing can meet it
    rc, stdout, err = run_cli(capsys, ["validate", str(out), "--images", "1", "--json"])
    assert rc == 1
    report = json.loads(stdout)
    assert report["ok"] is False and "int8_layer_max_lsb_vs_ort" in report["failed"][0]
    assert "FAILED" in err and report["image_source"].startswith("random")


def test_empty_calibration_split_is_a_clear_error(setup, capsys):
    tmp, cfg, out = setup
    data = yaml.safe_load(cfg.read_text())
    sets = tmp / "voc" / "VOC2007" / "ImageSets" / "Main"
    (sets / "empty.txt").write_text("")
    data["data"]["train"] = [[2007, "empty"]]
    bad = tmp / "empty.yaml"
    bad.write_text(yaml.safe_dump(data))
    before = (out / "schedule.json").read_text()
    rc, stdout, err = run_cli(capsys, ["quantize", str(out), "--calib", "2", "-c", str(bad), "--other-data"])
    assert rc == 2 and stdout == ""
    assert "empty" in err and err.count("\n") == 1
    assert (out / "schedule.json").read_text() == before  # nothing written


def test_quantize_without_a_config_says_how_to_give_one(setup, capsys):
    _, _, out = setup
    rc, stdout, err = run_cli(capsys, ["quantize", str(out), "--calib", "2"])
    assert rc == 2 and stdout == ""
    assert "no config.yaml recorded" in err and "-c X.yaml" in err
