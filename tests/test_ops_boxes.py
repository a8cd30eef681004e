"""tinydet.ops.boxes: the one IoU / NMS / matching, against torchvision and hand-computed cases."""
import numpy as np
import pytest
import torch

from tinydet.ops.boxes import (batched_nms, box_area, box_iou, box_xywh_to_xyxy, box_xyxy_to_xywh, match_detections,
                               nms)


def test_box_iou_hand_computed_and_the_zero_over_zero_rule():
    m = box_iou(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[5, 0, 15, 10], [0, 0, 0, 0]]))
    assert m.dtype == np.float64
    assert m[0, 0] == pytest.approx(50 / 150) and m[1, 0] == 0 and m[0, 1] == 0 and m[1, 1] == 0
    # two identical zero-area boxes: 0/0 in the plain formula, 0 here (pycocotools), NaN in torchvision
    point = np.array([[3.0, 3.0, 3.0, 3.0]], np.float32)
    assert box_iou(point, point)[0, 0] == 0.0
    assert torch.isnan(__import__("torchvision").ops.box_iou(torch.from_numpy(point), torch.from_numpy(point)))[0, 0]
    # touching edges: empty intersection, 0
    assert box_iou([[0, 0, 1, 1]], [[1, 0, 2, 1]])[0, 0] == 0.0


def test_box_iou_keeps_float32_and_matches_torchvision_bits():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (40, 2))], 1).astype(np.float32)
    ours = box_iou(boxes, boxes[::-1])
    assert ours.dtype == np.float32
    from torchvision.ops import box_iou as tv_box_iou
    ref = tv_box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes[::-1].copy())).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_area_and_conversions_round_trip():
    xyxy = np.array([[1.5, 2.0, 4.0, 8.0]])
    np.testing.assert_array_equal(box_area(xyxy), [15.0])
    np.testing.assert_array_equal(box_xyxy_to_xywh(xyxy), [[1.5, 2.0, 2.5, 6.0]])
    np.testing.assert_array_equal(box_xywh_to_xyxy(box_xyxy_to_xywh(xyxy)), xyxy)


def test_numpy_nms_matches_torchvision_on_random_boxes():
    from torchvision.ops import batched_nms as tv_nms
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 80, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    for thr in (0.3, 0.5, 0.7):
        ref = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), thr).numpy()
        np.testing.assert_array_equal(batched_nms(boxes, scores, labels, thr), ref)
        # torch in, torch out (torchvision itself)
        np.testing.assert_array_equal(batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                                  torch.from_numpy(labels), thr).numpy(), ref)
    # two heavily overlapping boxes of one class: the weaker one goes
    assert nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32), np.array([0.5, 0.9], np.float32), 0.5).tolist() == [1]


def test_nms_keeps_zero_area_boxes_and_breaks_ties_by_index():
    # a zero-area box never suppresses nor is suppressed (IoU 0 by the rule)
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist() == [0, 1, 2]
    # equal scores: the earlier index is kept (stable order), the later one suppressed
    same = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert nms(same, np.array([0.5, 0.5], np.float32), 0.5).tolist() == [0]


def test_match_detections_rules():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    labels = np.array([0, 1])
    assert match_detections((boxes, scores, labels), (boxes[::-1] + 0.2, scores[::-1], labels[::-1]))
    assert not match_detections((boxes, scores, labels), (boxes[:1], scores[:1], labels[:1]))  # count
    assert not match_detections((boxes, scores, labels), (boxes, scores, np.array([1, 0])))  # classes
    shifted = boxes + np.array([3, 0, 3, 0], np.float32)  # IoU 0.54 for the small box
    assert not match_detections((boxes, scores, labels), (shifted, scores, labels))
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert match_detections(empty, empty)


def test_match_detections_pairs_identical_zero_area_boxes_only():
    # a box clipped to the image border can have zero area: the same box on both sides is a match,
    # two different zero-area boxes are not (IoU 0)
    flat = (np.array([[64, 3, 64, 9]], np.float32), np.array([0.5], np.float32), np.array([0]))
    assert match_detections(flat, flat)
    other = (np.array([[64, 4, 64, 9]], np.float32), np.array([0.5], np.float32), np.array([0]))
    assert not match_detections(flat, other)
