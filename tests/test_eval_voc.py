"""VOC AP (tinydet.eval.voc) on hand-worked cases, and against a literal devkit-style reference."""
import numpy as np
import pytest

from tinydet.data.records import ImageRecord
from tinydet.errors import TinydetError
from tinydet.eval import eval_voc, voc_ap

CLASSES = ["cat", "dog"]


def rec(image_id, boxes=(), labels=None, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else labels
    difficult = np.zeros(len(boxes), bool) if difficult is None else difficult
    return ImageRecord(image_id, f"/img/{image_id}.jpg", 100, 100, boxes, labels, difficult)


def dets(*rows):
    """rows of (image_id, score, box, label) in the given order -> Detections."""
    out = {}
    for image_id, score, box, label in rows:
        b, s, lab = out.get(image_id, ([], [], []))
        out[image_id] = (b + [box], s + [score], lab + [label])
    return {k: (np.asarray(b, float).reshape(-1, 4), np.asarray(s, float), np.asarray(lab)) for k, (b, s, lab) in
            out.items()}


G1 = [10, 10, 50, 50]
G2 = [60, 60, 90, 95]
FAR = [0, 70, 20, 90]


def cat(result):
    return result["per_class"]["cat"]


def test_perfect_detections_give_one():
    records = [rec("a", [G1]), rec("b", [G2])]
    r = eval_voc(dets(("a", 0.9, G1, 0), ("b", 0.8, G2, 0)), records, ["cat"])
    assert r["map50"] == pytest.approx(1.0) and r["map50_area"] == pytest.approx(1.0)
    assert cat(r) == {"ap50": pytest.approx(1.0), "ap50_area": pytest.approx(1.0), "n_gt": 2,
                      "n_difficult": 0, "n_det": 2}
    assert r["n_images"] == 2


def test_one_false_positive_above_the_true_positive():
    # tp = [0, 1], fp = [1, 0] -> rec = [0, 1], prec = [0, 1/2]: both metrics 1/2
    r = eval_voc(dets(("a", 0.9, FAR, 0), ("a", 0.8, G1, 0)), [rec("a", [G1])], ["cat"])
    assert r["map50"] == pytest.approx(0.5) and r["map50_area"] == pytest.approx(0.5)


def test_eleven_point_and_area_differ_on_a_hand_case():
    # tp = [1, 0, 1] -> rec = [.5, .5, 1], prec = [1, .5, 2/3]
    # 11-point: t = 0..0.5 (6 points) -> 1, t = 0.6..1 (5 points) -> 2/3: (6 + 10/3) / 11 = 28/33
    # area: 0.5 * 1 + 0.5 * 2/3 = 5/6
    records = [rec("a", [G1, G2])]
    r = eval_voc(dets(("a", 0.9, G1, 0), ("a", 0.8, FAR, 0), ("a", 0.7, G2, 0)), records, ["cat"])
    assert r["map50"] == pytest.approx(28 / 33)
    assert r["map50_area"] == pytest.approx(5 / 6)


def test_duplicate_detection_on_one_box_is_a_false_positive():
    # the second detection on G1 is a duplicate (FP): same curve as above
    near_g1 = [11, 10, 50, 51]
    records = [rec("a", [G1]), rec("b", [G2])]
    r = eval_voc(dets(("a", 0.9, G1, 0), ("a", 0.8, near_g1, 0), ("b", 0.7, G2, 0)), records, ["cat"])
    assert r["map50"] == pytest.approx(28 / 33)
    assert r["map50_area"] == pytest.approx(5 / 6)
    assert cat(r)["n_det"] == 3


def test_ties_keep_their_given_order():
    records = [rec("a", [G1]), rec("b")]
    fp_first = eval_voc(dets(("b", 0.5, G1, 0), ("a", 0.5, G1, 0)), records, ["cat"])
    tp_first = eval_voc(dets(("a", 0.5, G1, 0), ("b", 0.5, G1, 0)), records, ["cat"])
    # FP then TP: rec [0, 1], prec [0, .5] -> 0.5; TP then FP: rec [1, 1], prec [1, .5] -> 1
    assert fp_first["map50"] == pytest.approx(0.5) and fp_first["map50_area"] == pytest.approx(0.5)
    assert tp_first["map50"] == pytest.approx(1.0) and tp_first["map50_area"] == pytest.approx(1.0)


def test_image_without_ground_truth_but_with_detections():
    records = [rec("a", [G1]), rec("empty")]
    r = eval_voc(dets(("empty", 0.95, G1, 0), ("a", 0.9, G1, 0)), records, ["cat"])
    assert r["map50"] == pytest.approx(0.5)


def test_difficult_boxes_are_neither_tp_nor_fp_and_difficult_only_class_is_null():
    # cat: a difficult box and a normal one; dog: only a difficult box
    records = [rec("a", [G1, G2, FAR], labels=np.array([0, 0, 1]), difficult=np.array([True, False, True]))]
    d = dets(("a", 0.95, G1, 0), ("a", 0.9, G2, 0), ("a", 0.8, FAR, 1))
    r = eval_voc(d, records, CLASSES)
    assert cat(r)["ap50"] == pytest.approx(1.0)  # the detection on the difficult box is ignored
    assert cat(r)["n_gt"] == 1 and cat(r)["n_difficult"] == 1
    assert r["per_class"]["dog"]["ap50"] is None and r["per_class"]["dog"]["ap50_area"] is None
    assert r["per_class"]["dog"]["n_det"] == 1
    assert r["map50"] == pytest.approx(1.0)  # the null class is not averaged


def test_no_detections_give_zero_and_no_scoreable_class_gives_null():
    records = [rec("a", [G1, G2], labels=np.array([0, 1]))]
    r = eval_voc({}, records, CLASSES)
    assert r["map50"] == 0.0 and r["map50_area"] == 0.0
    assert cat(r)["ap50"] == 0.0 and cat(r)["n_det"] == 0
    assert eval_voc({}, [rec("a")], CLASSES)["map50"] is None


def test_mean_over_classes():
    records = [rec("a", [G1, G2], labels=np.array([0, 1]))]
    d = dets(("a", 0.9, G1, 0), ("a", 0.9, FAR, 1), ("a", 0.8, G2, 1))
    r = eval_voc(d, records, CLASSES)
    assert cat(r)["ap50"] == pytest.approx(1.0) and r["per_class"]["dog"]["ap50"] == pytest.approx(0.5)
    assert r["map50"] == pytest.approx(0.75)


def test_iou_of_exactly_half_matches_as_in_the_devkit():
    # devkit boxes (1,1,10,10) and (1,1,10,5): IoU = 50 / 100 with its +1 rule; ours after x1 = xmin - 1
    records = [rec("a", [[0, 0, 10, 10]])]
    r = eval_voc(dets(("a", 0.9, [0, 0, 10, 5], 0)), records, ["cat"])
    assert r["map50"] == pytest.approx(1.0)
    r = eval_voc(dets(("a", 0.9, [0, 0, 10, 4.99], 0)), records, ["cat"])
    assert r["map50"] == 0.0


def test_bad_inputs_are_one_line_errors():
    records = [rec("a", [G1])]
    with pytest.raises(TinydetError, match="'zzz'"):
        eval_voc(dets(("zzz", 0.9, G1, 0)), records, ["cat"])
    with pytest.raises(TinydetError, match="label 3"):
        eval_voc(dets(("a", 0.9, G1, 3)), records, ["cat"])
    with pytest.raises(TinydetError, match=r"expected \[N, 4\]"):
        eval_voc({"a": (np.zeros((1, 3)), np.ones(1), np.zeros(1, int))}, records, ["cat"])


def test_voc_ap_basics():
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0
    # recall exactly 3/10 reaches the 0.3 threshold (exact tenths): 4 of 11 points at precision 1
    assert voc_ap(np.array([0.1, 0.2, 0.3]), np.ones(3), True) == pytest.approx(4 / 11)
    assert voc_ap(np.array([0.1, 0.2, 0.3]), np.ones(3), False) == pytest.approx(0.3)


def devkit_reference(d, records, n_classes, minoverlap=0.5):
    """The devkit's VOCevaldet loop, literally: 1-based inclusive boxes, +1 areas, stable sort."""
    gt = {r.image_id: r for r in records}
    aps = []
    for c in range(n_classes):
        entries = [(i, s, b) for i, (bb, ss, ll) in d.items() for b, s, lab in zip(bb, ss, ll) if lab == c]
        npos = sum(int(((r.labels == c) & ~r.difficult).sum()) for r in records)
        if npos == 0:
            aps.append(None)
            continue
        order = sorted(range(len(entries)), key=lambda k: -entries[k][1])  # Python's sort is stable
        seen = {r.image_id: np.zeros(len(r.boxes), bool) for r in records}
        tp, fp = np.zeros(len(entries)), np.zeros(len(entries))
        for n, k in enumerate(order):
            image_id, _, box = entries[k]
            bb = [box[0] + 1, box[1] + 1, box[2], box[3]]  # back to devkit pixel indices
            r = gt[image_id]
            ovmax, jmax = -np.inf, -1
            for j, (g, lab) in enumerate(zip(r.boxes, r.labels)):
                if lab != c:
                    continue
                g = [g[0] + 1, g[1] + 1, g[2], g[3]]
                iw = min(bb[2], g[2]) - max(bb[0], g[0]) + 1
                ih = min(bb[3], g[3]) - max(bb[1], g[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih
                    if iw * ih / ua > ovmax:
                        ovmax, jmax = iw * ih / ua, j
            if ovmax >= minoverlap:
                if not r.difficult[jmax]:
                    if not seen[image_id][jmax]:
                        tp[n] = 1
                        seen[image_id][jmax] = True
                    else:
                        fp[n] = 1
            else:
                fp[n] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec_, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(float).eps)
        ap = 0.0
        for t in np.arange(11) / 10:
            p = prec[rec_ >= t]
            ap += (p.max() if p.size else 0.0) / 11
        aps.append(ap)
    return aps


def test_matches_a_literal_devkit_loop_on_random_cases():
    rng = np.random.default_rng(0)
    for trial in range(15):
        records, d = [], {}
        for i in range(6):
            n = int(rng.integers(0, 5))
            xy = rng.integers(0, 60, (n, 2))
            wh = rng.integers(5, 40, (n, 2))
            boxes = np.concatenate([xy, xy + wh], 1).astype(float)
            records.append(rec(f"im{i}", boxes, rng.integers(0, 2, n), rng.random(n) < 0.2))
            m = int(rng.integers(0, 8))
            jitter = rng.integers(-6, 7, (m, 4))
            base = boxes[rng.integers(0, n, m)] if n else np.tile([10.0, 10, 30, 30], (m, 1))
            dboxes = base + jitter
            dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 1)
            # scores on a coarse grid so that ties across and within images happen
            d[f"im{i}"] = (dboxes, rng.integers(1, 5, m) / 4, rng.integers(0, 2, m))
        ref = devkit_reference(d, records, 2)
        got = eval_voc(d, records, CLASSES)
        for c, name in enumerate(CLASSES):
            if ref[c] is None:
                assert got["per_class"][name]["ap50"] is None
            else:
                assert got["per_class"][name]["ap50"] == pytest.approx(ref[c], abs=1e-12), (trial, name)
