"""COCO AP through pycocotools (tinydet.eval.coco): perfect, shifted, difficult-as-crowd, empty."""
import numpy as np
import pytest

from tinydet.data.records import ImageRecord
from tinydet.eval import eval_coco

BOX = [0, 0, 100, 100]


def rec(image_id, boxes, labels=None, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult)
    return ImageRecord(image_id, f"/img/{image_id}.jpg", 200, 200, boxes, labels, difficult)


def test_perfect_detections_give_one_and_stdout_stays_clean(capsys):
    records = [rec("000001", [BOX, [120, 120, 180, 190]], [0, 1]), rec("000002", [[10, 20, 60, 90]], [1])]
    dets = {r.image_id: (r.boxes, np.linspace(0.9, 0.5, len(r.boxes)), r.labels) for r in records}
    r = eval_coco(dets, records, ["a", "b"])
    assert r["map_coco"] == pytest.approx(1.0) and r["map_coco_50"] == pytest.approx(1.0)
    assert r["map_coco_75"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""  # pycocotools' prints go to stderr


def test_shifted_box_matches_only_the_low_iou_thresholds():
    # shifted by 20 px: IoU = 80*100 / (120*100) = 2/3 -> TP at 0.50, 0.55, 0.60, 0.65 of the 10
    # thresholds -> AP@[.5:.95] = 0.4, AP50 = 1, AP75 = 0
    r = eval_coco({"a": (np.array([[20, 0, 120, 100]]), np.array([0.9]), np.array([0]))}, [rec("a", [BOX])], ["a"])
    assert r["map_coco"] == pytest.approx(0.4)
    assert r["map_coco_50"] == pytest.approx(1.0) and r["map_coco_75"] == pytest.approx(0.0)
    # a 100x100 box is "large" (> 96^2) in COCO's size ranges: small and medium have no box
    assert r["map_coco_small"] is None and r["map_coco_medium"] is None
    assert r["map_coco_large"] == pytest.approx(0.4)


def test_difficult_box_is_ignored_not_penalised():
    records = [rec("a", [BOX, [120, 120, 180, 180]], [0, 0], [False, True])]
    dets = {"a": (np.array([[120, 120, 180, 180], BOX], float), np.array([0.95, 0.9]), np.array([0, 0]))}
    assert eval_coco(dets, records, ["a"])["map_coco"] == pytest.approx(1.0)
    # without the difficult flag the same detections find both boxes, and missing it costs recall
    plain = [rec("a", [BOX, [120, 120, 180, 180]], [0, 0])]
    only_one = {"a": (np.array([BOX], float), np.array([0.9]), np.array([0]))}
    assert eval_coco(only_one, plain, ["a"])["map_coco"] < 0.6
    assert eval_coco(only_one, records, ["a"])["map_coco"] == pytest.approx(1.0)


def test_no_detections_give_zero():
    r = eval_coco({}, [rec("a", [BOX])], ["a"])
    assert r["map_coco"] == 0.0 and r["map_coco_50"] == 0.0 and r["ar_coco_100"] == 0.0
