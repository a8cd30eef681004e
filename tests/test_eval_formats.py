"""Detection file formats (tinydet.eval.formats): round trips score exactly, bad files name file and line."""
import json
import os

import numpy as np
import pytest

from tinydet.data.records import ImageRecord
from tinydet.errors import TinydetError
from tinydet.eval import eval_coco, eval_voc, eval_voc_per_class, eval_wider
from tinydet.eval.formats import (class_detections_to_detections, detect_format, read_coco_results,
                                  read_voc_dets, read_wider_dets, write_coco_results, write_voc_dets,
                                  write_wider_dets)
from tinydet.eval.wider import WiderGroundTruth

CLASSES = ["cat", "dog"]


def make_case(seed=0):
    """Random records and detections (float32 boxes and scores, with score ties)."""
    rng = np.random.default_rng(seed)
    records, dets = [], {}
    for i in range(5):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 40, (n, 2))], 1)
        image_id = f"{i + 1:06d}"
        records.append(ImageRecord(image_id, f"/img/{image_id}.jpg", 120, 120, boxes, rng.integers(0, 2, n),
                                   rng.random(n) < 0.2))
        m = int(rng.integers(0, 5))
        base = boxes[rng.integers(0, n, m)] + rng.normal(0, 3, (m, 4))
        dets[image_id] = (base.astype(np.float32), (rng.integers(1, 6, m) / 5).astype(np.float32),
                          rng.integers(0, 2, m))
    return records, dets


def test_voc_comp4_round_trip_scores_exactly(tmp_path):
    records, dets = make_case()
    paths = write_voc_dets(str(tmp_path), dets, CLASSES)
    assert [os.path.basename(p) for p in paths] == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    per_class = read_voc_dets(str(tmp_path), CLASSES, [r.image_id for r in records])
    direct = eval_voc(dets, records, CLASSES)
    assert eval_voc_per_class(per_class, records, CLASSES) == direct
    back = class_detections_to_detections(per_class)
    assert eval_voc(back, records, CLASSES) == direct
    assert eval_coco(back, records, CLASSES) == pytest.approx(eval_coco(dets, records, CLASSES))


def test_voc_lines_are_devkit_1_based(tmp_path):
    d = {"000007": (np.array([[0.0, 0.0, 10.0, 5.0]]), np.array([0.5]), np.array([1]))}
    write_voc_dets(str(tmp_path), d, CLASSES, image_set="val")
    assert (tmp_path / "comp4_det_val_dog.txt").read_text() == "000007 0.5 1 1 10 5\n"
    assert (tmp_path / "comp4_det_val_cat.txt").read_text() == ""
    ids, scores, boxes = read_voc_dets(str(tmp_path), CLASSES)[1]
    assert ids == ["000007"] and scores.tolist() == [0.5] and boxes.tolist() == [[0, 0, 10, 5]]


@pytest.mark.parametrize("line, match", [
    ("000001 0.5 1 1 10\n", r"comp4_det_test_cat.txt:2: expected 'image_id score xmin ymin xmax ymax'"),
    ("000001 high 1 1 10 10\n", r"comp4_det_test_cat.txt:2: expected score xmin"),
    ("000001 0.5 1 1 10 nan\n", r"comp4_det_test_cat.txt:2: expected finite"),
    ("000001 0.5 20 1 10 10\n", r"comp4_det_test_cat.txt:2: box"),
    ("999999 0.5 1 1 10 10\n", r"comp4_det_test_cat.txt:2: image id '999999' is not in the evaluated set"),
])
def test_bad_voc_lines_name_file_and_line(tmp_path, line, match):
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 0.9 1 1 10 10\n" + line)
    with pytest.raises(TinydetError, match=match):
        read_voc_dets(str(tmp_path), CLASSES, ["000001"])


def test_voc_unknown_class_file_and_mixed_sets(tmp_path):
    (tmp_path / "comp4_det_test_cta.txt").write_text("")
    with pytest.raises(TinydetError, match=r"comp4_det_test_cta.txt: class 'cta' .*did you mean 'cat'"):
        read_voc_dets(str(tmp_path), CLASSES)
    os.remove(tmp_path / "comp4_det_test_cta.txt")
    (tmp_path / "comp4_det_test_cat.txt").write_text("")
    (tmp_path / "comp4_det_val_cat.txt").write_text("")
    with pytest.raises(TinydetError, match="several image sets"):
        read_voc_dets(str(tmp_path), CLASSES)
    assert read_voc_dets(str(tmp_path), CLASSES, image_set="val")[0][0] == []


def test_coco_json_round_trip_and_ids(tmp_path):
    records, dets = make_case(1)
    path = str(tmp_path / "res.json")
    write_coco_results(path, dets)
    entries = json.loads(open(path).read())
    assert entries and all(set(e) == {"image_id", "category_id", "bbox", "score"} for e in entries)
    assert {type(e["image_id"]) for e in entries} == {str}  # zero-padded VOC ids stay strings
    back = read_coco_results(path, [r.image_id for r in records], len(CLASSES))
    assert eval_voc(back, records, CLASSES) == eval_voc(dets, records, CLASSES)
    assert eval_coco(back, records, CLASSES) == pytest.approx(eval_coco(dets, records, CLASSES))
    # integer image ids (as COCO tools write them) match canonical and zero-padded ids
    (tmp_path / "int.json").write_text(json.dumps([{"image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4],
                                                    "score": 0.5}]))
    got = read_coco_results(str(tmp_path / "int.json"), ["000007"], 2)
    assert list(got) == ["000007"] and got["000007"][0].tolist() == [[1, 2, 4, 6]]
    assert got["000007"][2].tolist() == [1]


@pytest.mark.parametrize("content, match", [
    ("{}", "expected a JSON list"),
    ("[{\"image_id\": 1}]", "entry 0: expected an object with image_id"),
    ("[{\"image_id\": 1, \"category_id\": 3, \"bbox\": [0, 0, 1, 1], \"score\": 1}]", r"entry 0: category_id 3"),
    ("[{\"image_id\": 5, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}]", "entry 0: image_id 5 is not"),
    ("[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, -1, 1], \"score\": 1}]", "entry 0: bbox"),
    ("[{\"image_id\": 1, ", r"res.json:1: not valid JSON"),
])
def test_bad_coco_results(tmp_path, content, match):
    (tmp_path / "res.json").write_text(content)
    with pytest.raises(TinydetError, match=match):
        read_coco_results(str(tmp_path / "res.json"), ["000001"], 2)


def test_wider_submission_round_trip_and_bad_files(tmp_path):
    gt = WiderGroundTruth(["0--Parade"], [["a", "b"]],
                          [[np.array([[10, 10, 40, 40], [80, 80, 20, 30]], float), np.array([[5, 5, 9, 9]], float)]],
                          {s: [[np.array([0, 1]), np.array([0])]] for s in ("easy", "medium", "hard")},
                          "official_mat", "test")
    pred = {"0--Parade": {"a": np.array([[10, 10, 40, 41, 0.8], [0, 0, 5, 5, 0.3]], np.float32),
                          "b": np.zeros((0, 5))}}
    write_wider_dets(str(tmp_path / "sub"), pred)
    assert (tmp_path / "sub" / "0--Parade" / "b.txt").read_text() == "b\n0\n"
    assert (tmp_path / "sub" / "0--Parade" / "a.txt").read_text().splitlines()[:3] == ["a", "2", "10 10 40 41 0.8"]
    back = read_wider_dets(str(tmp_path / "sub"))
    assert eval_wider(back, gt=gt) == eval_wider(pred, gt=gt)
    assert detect_format(str(tmp_path / "sub")) == "wider"
    (tmp_path / "sub" / "0--Parade" / "a.txt").write_text("a\n3\n1 2 3 4 0.5\n")
    with pytest.raises(TinydetError, match=r"a.txt:2: the box count says 3 but 1 box line"):
        read_wider_dets(str(tmp_path / "sub"))
    (tmp_path / "sub" / "0--Parade" / "a.txt").write_text("a\n1\n1 2 3 0.5\n")
    with pytest.raises(TinydetError, match=r"a.txt:3: expected 'x y w h score'"):
        read_wider_dets(str(tmp_path / "sub"))


def test_detect_format(tmp_path):
    (tmp_path / "r.json").write_text("[]")
    assert detect_format(str(tmp_path / "r.json")) == "coco"
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "comp4_det_test_cat.txt").write_text("")
    assert detect_format(str(voc)) == "voc"
    (voc / "ev").mkdir()
    (voc / "ev" / "x.txt").write_text("x\n0\n")
    with pytest.raises(TinydetError, match="both VOC"):
        detect_format(str(voc))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinydetError, match="found neither"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(TinydetError, match="does not exist"):
        detect_format(str(tmp_path / "nope"))
