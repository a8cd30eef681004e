"""``tinydet eval`` end to end: detections files on generated VOC / WIDER layouts, and models.

Data sets are generated here with the synthetic generator (tiny: 96 px images).
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinydet.data.records import load_records
from tinydet.eval import eval_coco, eval_voc
from tinydet.eval.formats import write_coco_results, write_voc_dets, write_wider_dets
from tinydet.eval.wider import detections_to_wider
from fixtures import run_cli
from train_helpers import make_voc, tiny_config

# the devkit per-class files list these, sorted (they are not VOC's classes)
SORTED = ["circle", "cross", "square", "star", "triangle"]
TINYDET = [sys.executable, "-m", "tinydet.cli"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """A tiny synthetic VOC set, its test records, and imperfect detections (one FP, one miss)."""
    root = make_voc(tmp_path_factory.mktemp("voc"))
    records, _, _ = load_records({"format": "voc", "root": str(root), "test": [[2007, "test"]],
                                  "classes": SORTED}, "test")
    dets = {}
    for n, r in enumerate(records):
        boxes, labels = r.boxes[1:] if n == 0 else r.boxes, r.labels[1:] if n == 0 else r.labels  # a miss
        scores = np.linspace(0.9, 0.2, len(boxes))
        if n == 1:  # a confident false positive
            boxes = np.vstack([[0, 0, 3, 3], boxes])
            scores, labels = np.r_[0.95, scores], np.r_[labels[:1], labels]
        dets[r.image_id] = (boxes, scores, labels)
    return root, records, dets


def test_voc_comp4_folder_subprocess_prints_one_json_object(voc, tmp_path):
    root, records, dets = voc
    write_voc_dets(str(tmp_path / "dets"), dets, SORTED)
    proc = subprocess.run(TINYDET + ["eval", "--dets", str(tmp_path / "dets"), "--data", str(root), "--json"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    result = json.loads(proc.stdout)
    direct = eval_voc(dets, records, SORTED)
    assert 0 < result["map50"] < 1
    assert result["map50"] == pytest.approx(direct["map50"]) and result["per_class"] == direct["per_class"]
    assert result["map_coco"] == pytest.approx(eval_coco(dets, records, SORTED)["map_coco"])
    assert result["n_images"] == len(records) and result["split"] == "test" and result["format"] == "voc"


def test_voc_coco_json_with_class_order_and_table(voc, tmp_path, capsys):
    root, records, dets = voc
    write_coco_results(str(tmp_path / "res.json"), dets)
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "res.json"), "--data", str(root / "VOC2007"),
                                  "--classes", ",".join(SORTED), "--json"])
    assert rc == 0
    assert json.loads(out)["map50"] == pytest.approx(eval_voc(dets, records, SORTED)["map50"])
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "res.json"), "--data", str(root)])
    assert rc == 0 and "mAP50 (VOC07 11-point)" in out and "triangle" in out


def test_empty_detection_files_score_zero(voc, tmp_path, capsys):
    root, _, _ = voc
    write_voc_dets(str(tmp_path / "dets"), {}, SORTED)
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "dets"), "--data", str(root), "--json"])
    result = json.loads(out)
    assert rc == 0 and result["map50"] == 0.0 and result["map_coco"] == 0.0


@pytest.mark.parametrize("make, args, match", [
    (lambda d: (d / "comp4_det_test_star.txt").write_text("000001 0.5 1 1\n"), [],
     r"comp4_det_test_star.txt:1: expected 'image_id score"),
    (lambda d: (d / "comp4_det_test_stra.txt").write_text(""), [], r"class 'stra' .*did you mean 'star'"),
    (lambda d: (d / "comp4_det_test_star.txt").write_text("424242 0.5 1 1 5 5\n"), [],
     "image id '424242' is not in the evaluated set"),
    (lambda d: (d / "comp4_det_test_star.txt").write_text(""), ["--split", "nosuchset"],
     r"no VOC<year>/ImageSets/Main/nosuchset.txt"),
    (lambda d: (d / "comp4_det_test_star.txt").write_text(""), ["--ckpt", os.devnull], "cannot be combined"),
])
def test_bad_inputs_exit_2_with_one_line(voc, tmp_path, capsys, make, args, match):
    root, _, _ = voc
    (tmp_path / "dets").mkdir()
    make(tmp_path / "dets")
    rc, out, err = run_cli(capsys, ["eval", "--dets", str(tmp_path / "dets"), "--data", str(root), "--json"] + args)
    assert rc == 2 and out == ""
    error = [line for line in err.splitlines() if line.startswith("tinydet: error:")]
    assert len(error) == 1 and re.search(match, error[0]), err


def test_usage_errors(voc, tmp_path, capsys):
    root, _, _ = voc
    rc, _, err = run_cli(capsys, ["eval"])
    assert rc == 2 and "--dets" in err
    rc, _, err = run_cli(capsys, ["eval", "--dets", str(tmp_path)])
    assert rc == 2 and "needs --data" in err
    (tmp_path / "x.json").write_text("[]")
    rc, _, err = run_cli(capsys, ["eval", "--dets", str(tmp_path / "x.json"), "--data", str(tmp_path)])
    assert rc == 2 and "expected a VOC devkit folder" in err


@pytest.fixture(scope="module")
def wider(tmp_path_factory):
    from tinydet.data.synth import synth_wider

    root = tmp_path_factory.mktemp("wider") / "w"
    synth_wider(str(root), images=8, seed=3, size=96)
    records, _, _ = load_records({"format": "wider", "root": str(root), "test": ["val"]}, "test")
    dets = {r.image_id: (r.boxes, np.linspace(0.9, 0.3, len(r.boxes)), r.labels) for r in records}
    return root, records, dets


def test_wider_submission_official_mats_and_height_rule_fallback(wider, tmp_path, capsys):
    root, records, dets = wider
    write_wider_dets(str(tmp_path / "sub"), detections_to_wider(dets, records))
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "sub"), "--data", str(root), "--json"])
    result = json.loads(out)
    assert rc == 0 and result["difficulty_source"] == "official_mat"
    assert result["hard"] == pytest.approx(1.0) and result["n_images"] == len(records)
    # a custom set without the .mat files: subsets from the face-height rule, said in the result
    plain = tmp_path / "plain"
    shutil.copytree(root, plain, ignore=shutil.ignore_patterns("eval_tools"))
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "sub"), "--data", str(plain), "--json"])
    result = json.loads(out)
    assert rc == 0 and result["difficulty_source"] == "height_rule" and result["hard"] == pytest.approx(1.0)
    # a COCO results file scored on the WIDER set goes through the same conversion
    write_coco_results(str(tmp_path / "res.json"), dets)
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp_path / "res.json"), "--data", str(root), "--json"])
    assert rc == 0 and json.loads(out)["hard"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tinydet.config import load_config
    from tinydet.train.run import train

    tmp = tmp_path_factory.mktemp("trained")
    root = make_voc(tmp / "data")
    cfg_path = tiny_config(tmp, root, tmp / "run")
    result = train(load_config(cfg_path))
    return cfg_path, result["last_ckpt"], tmp


def test_model_eval_checkpoint_export_and_saved_dets_agree(trained, capsys):
    cfg_path, ckpt, tmp = trained
    common = ["-c", str(cfg_path), "--set", "eval.conf_thresh=0.001", "--json"]
    rc, out, _ = run_cli(capsys, ["eval", "--ckpt", ckpt, "--save-dets", str(tmp / "saved")] + common)
    assert rc == 0
    by_ckpt = json.loads(out)
    assert by_ckpt["source"] == f"checkpoint:{ckpt}" and by_ckpt["split"] == "val"
    assert {"map50", "map50_area", "map_coco", "per_class", "n_images"} <= set(by_ckpt)
    assert sum(c["n_det"] for c in by_ckpt["per_class"].values()) > 0
    # the saved comp4 files score exactly like the model run
    rc, out, _ = run_cli(capsys, ["eval", "--dets", str(tmp / "saved"), "-c", str(cfg_path), "--split", "val",
                                  "--json"])
    assert rc == 0
    by_file = json.loads(out)
    for key in ("map50", "map50_area", "map_coco", "per_class", "n_images"):
        assert by_file[key] == by_ckpt[key], key
    # the float ONNX export (full and patch-based) finds the same detections per class
    rc, _, err = run_cli(capsys, ["export", "-c", str(cfg_path), "--ckpt", ckpt, "--out", str(tmp / "exp"),
                                  "--patches", "2", "--split", "3", "--json"])
    assert rc == 0, err
    for extra in ([], ["--patched"]):
        rc, out, err = run_cli(capsys, ["eval", "--export", str(tmp / "exp")] + extra + common)
        assert rc == 0, err
        by_onnx = json.loads(out)
        assert {k: v["n_det"] for k, v in by_onnx["per_class"].items()} == \
            {k: v["n_det"] for k, v in by_ckpt["per_class"].items()}
        assert by_onnx["map50"] == pytest.approx(by_ckpt["map50"], abs=0.02)
    # int8 QDQ models: full and patch-based runs find the same detections
    rc, _, err = run_cli(capsys, ["quantize", str(tmp / "exp"), "-c", str(cfg_path), "--calib", "4", "--json"])
    assert rc == 0, err
    int8 = []
    for extra in ([], ["--patched"]):
        rc, out, err = run_cli(capsys, ["eval", "--export", str(tmp / "exp"), "--int8"] + extra + common)
        assert rc == 0, err
        int8.append(json.loads(out))
    assert int8[0]["source"].endswith("(int8, full)") and int8[1]["source"].endswith("(int8, patched)")
    assert {k: v["n_det"] for k, v in int8[0]["per_class"].items()} == \
        {k: v["n_det"] for k, v in int8[1]["per_class"].items()}
    rc, _, err = run_cli(capsys, ["eval", "--onnx", str(tmp / "exp" / "full.onnx"), "--int8"] + common)
    assert rc == 2 and "--int8 and --patched need --export" in err


def test_wider_model_eval_and_saved_submission_agree(wider, tmp_path, capsys):
    """A face detector trained one epoch on the WIDER layout: model run == its saved submission."""
    import yaml

    from tinydet.config import load_config
    from tinydet.train.run import train

    root, records, _ = wider
    cfg_path = tiny_config(tmp_path, root, tmp_path / "run")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"] = {"format": "wider", "root": str(root), "train": ["train"], "val": ["val"], "test": ["val"]}
    cfg["train"]["check_val_every_n_epoch"] = 2  # no validation pass inside training: this tests eval only
    cfg_path.write_text(yaml.safe_dump(cfg))
    ckpt = train(load_config(cfg_path))["last_ckpt"]
    common = ["-c", str(cfg_path), "--set", "eval.conf_thresh=0.001", "--json"]
    rc, out, err = run_cli(capsys, ["eval", "--ckpt", ckpt, "--save-dets", str(tmp_path / "sub")] + common)
    assert rc == 0, err
    by_model = json.loads(out)
    assert by_model["difficulty_source"] == "official_mat" and by_model["n_images"] == len(records)
    assert set(by_model) >= {"easy", "medium", "hard", "n_faces", "source"}
    rc, out, err = run_cli(capsys, ["eval", "--dets", str(tmp_path / "sub"), "--data", str(root), "--json"])
    assert rc == 0, err
    by_file = json.loads(out)
    for key in ("easy", "medium", "hard", "n_faces", "n_images"):
        assert by_file[key] == pytest.approx(by_model[key]), key
