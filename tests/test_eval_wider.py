"""WIDER Face AP (tinydet.eval.wider) on hand-worked cases, .mat ground truth and the height rule."""
import os

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from tinydet.data.records import ImageRecord
from tinydet.errors import TinydetError
from tinydet.eval.wider import (WiderGroundTruth, eval_wider, eval_wider_detections, find_wider_mats,
                                image_pr, load_wider_mat, normalise_scores, wider_gt_from_records, wider_iou)

F0, F1, F2 = [10, 10, 40, 40], [100, 100, 40, 40], [200, 10, 30, 30]
FAR = [300, 300, 20, 20]


def one_image_gt(keep_easy=(0, 2), keep_hard=(0, 1, 2), extra_images=()):
    """Event 'e' with image 'img1' holding faces F0, F1, F2 (+ extra (stem, boxes, keep) images)."""
    files = ["img1"] + [x[0] for x in extra_images]
    boxes = [np.array([F0, F1, F2], float)] + [np.asarray(x[1], float).reshape(-1, 4) for x in extra_images]
    easy = [np.array(keep_easy, int)] + [np.asarray(x[2], int) for x in extra_images]
    hard = [np.array(keep_hard, int)] + [np.asarray(x[2], int) for x in extra_images]
    keep = {"easy": [easy], "medium": [easy], "hard": [hard]}
    return WiderGroundTruth(["e"], [files], [boxes], keep, "official_mat", "test")


# P0 on F0 (0.9), P1 on F1 (0.8), P2 far away (0.7), P3 on F2 (0.6)
PRED = {"e": {"img1": np.array([F0 + [0.9], F1 + [0.8], FAR + [0.7], F2 + [0.6]])}}


def test_ignored_face_is_neither_tp_nor_fp():
    # easy/medium count F0, F2 (F1 ignored -> P1 ignored): proposals 1,1,2,3 recalled 1,1,1,2 of 2
    # curve (rec, prec): (.5, 1) ... (.5, .5), (1, 2/3) -> AP = .5 * 1 + .5 * 2/3 = 5/6
    # hard counts all three: proposals 1,2,3,4 recalled 1,2,2,3 of 3 -> 2/3 * 1 + 1/3 * 3/4 = 11/12
    r = eval_wider(PRED, gt=one_image_gt())
    assert r["easy"] == pytest.approx(5 / 6) and r["medium"] == pytest.approx(5 / 6)
    assert r["hard"] == pytest.approx(11 / 12)
    assert r["n_faces"] == {"easy": 2, "medium": 2, "hard": 3} and r["n_images"] == 1
    assert r["difficulty_source"] == "official_mat"


def test_faces_of_images_without_predictions_count_and_faceless_images_add_no_fp():
    # img2: one counted face, no predictions -> easy: recall denominator 3:
    # (1/3, 1), (1/3, 1/2), (2/3, 2/3) -> 1/3 * 1 + 1/3 * 2/3 = 5/9
    gt = one_image_gt(extra_images=[("img2", [F0], [0]), ("img3", np.zeros((0, 4)), [])])
    pred = {"e": dict(PRED["e"], img3=np.array([F0 + [0.85]]))}  # inside the score range: no renormalisation
    r = eval_wider(pred, gt=gt)
    assert r["easy"] == pytest.approx(5 / 9)
    assert r["n_images_without_predictions"] == 1 and r["n_unmatched_predictions"] == 0


def test_duplicate_prediction_is_a_false_positive_and_scores_are_normalised():
    gt = one_image_gt(keep_easy=(0,), keep_hard=(0,))
    dup = {"e": {"img1": np.array([F0 + [0.9], [11, 10, 40, 40, 0.5]])}}
    # proposals 1, 2; recalled 1, 1: (1, 1), (1, 1/2) -> envelope 1 -> AP 1; the duplicate lowers
    # the precision only after full recall, so check the curve directly
    r = eval_wider(dup, gt=gt)
    assert r["easy"] == pytest.approx(1.0)
    pr = image_pr(normalise_scores(dup)["e"]["img1"], gt.boxes[0][0], np.array([True, False, False]))
    assert pr[0].tolist() == [1, 1] and pr[-1].tolist() == [2, 1]
    # an affine change of all scores leaves AP unchanged (global min/max normalisation)
    shifted = {"e": {"img1": PRED["e"]["img1"] * np.array([1, 1, 1, 1, 10]) + np.array([0, 0, 0, 0, 3])}}
    assert eval_wider(shifted, gt=one_image_gt())["hard"] == pytest.approx(11 / 12)


def test_sorting_and_equal_scores():
    # file order need not be sorted; equal scores all normalise to 1 (the official code divides by 0)
    unsorted = {"e": {"img1": PRED["e"]["img1"][::-1].copy()}}
    assert eval_wider(unsorted, gt=one_image_gt())["hard"] == pytest.approx(11 / 12)
    same = {"e": {"img1": np.array([F0 + [0.5], F2 + [0.5]])}}
    assert normalise_scores(same)["e"]["img1"][:, 4].tolist() == [1.0, 1.0]
    assert eval_wider(same, gt=one_image_gt())["easy"] == pytest.approx(1.0)


def test_no_predictions_and_empty_subset():
    r = eval_wider({}, gt=one_image_gt())
    assert r["easy"] == 0.0 and r["hard"] == 0.0 and r["n_images_without_predictions"] == 1
    assert eval_wider(PRED, gt=one_image_gt(keep_easy=(), keep_hard=(0,)))["easy"] is None


def test_wider_iou_uses_the_plus_one_rule():
    # x2 = x + w inclusive: a 10x10 box covers 11x11 pixels; shifted by 1 px: 10*11 / (2*121 - 110)
    assert wider_iou(np.array([[0, 0, 10, 10]]), np.array([[1, 0, 10, 10]]))[0, 0] == pytest.approx(110 / 132)


def test_wider_iou_areas_come_from_the_corners_like_boxoverlap():
    # mathematically IoU = 0.5 exactly (same 117 x 200 px box shifted 39 px). boxoverlap.m takes
    # every length from the corners x2 = x + w: (91.4 + 199) - 91.4 + 1 = 200.00000000000003 in
    # both the intersection and the areas, so the ratio is >= 0.5 and the face is found;
    # (h + 1) * (w + 1) areas (200 exactly) against that intersection give 0.49999999999999994.
    gt_face, pred_face = [158.0, 91.4, 116.0, 199.0], [197.0, 91.4, 116.0, 199.0]
    assert wider_iou(np.array([pred_face]), np.array([gt_face]))[0, 0] >= 0.5
    gt = WiderGroundTruth(["e"], [["a"]], [[np.array([gt_face])]],
                          {s: [[np.array([0])]] for s in ("easy", "medium", "hard")}, "official_mat", "t")
    assert eval_wider({"e": {"a": np.array([pred_face + [0.9]])}}, gt=gt)["hard"] == pytest.approx(1.0)


def test_score_normalisation_starts_from_the_official_extremes():
    # norm_score.m starts max at realmin('single') and min at realmax('single'): scores 1000, 1000.5,
    # 1001 map to 0, .5, 1. TP (1001), FP (1000.5), TP (1000) on two faces: (1/2, 1), (1/2, 1/2),
    # (1, 2/3) -> AP 1/2 + 1/2 * 2/3 = 5/6. A min starting at 1 would squeeze all three into the top
    # threshold bin: one point (1, 2/3) -> AP 2/3.
    gt = WiderGroundTruth(["e"], [["a"]], [[np.array([F0, F1], float)]],
                          {s: [[np.array([0, 1])]] for s in ("easy", "medium", "hard")}, "official_mat", "t")
    pred = {"e": {"a": np.array([F0 + [1001.0], FAR + [1000.5], F1 + [1000.0]])}}
    assert normalise_scores(pred)["e"]["a"][:, 4].tolist() == [1.0, 0.5, 0.0]
    assert eval_wider(pred, gt=gt)["easy"] == pytest.approx(5 / 6)


def test_empty_prediction_file_is_an_image_without_predictions(tmp_path):
    from tinydet.eval.formats import read_wider_dets

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "img1.txt").write_text("img1\n1\n10 10 40 40 0.9\n")
    (tmp_path / "e" / "img2.txt").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"img2.txt: empty prediction file"):
        pred = read_wider_dets(str(tmp_path))
    assert pred["e"]["img2"].shape == (0, 5)
    gt = one_image_gt(extra_images=[("img2", [F0], [0])])
    r = eval_wider(pred, gt=gt)
    assert r["n_images_without_predictions"] == 1 and r["n_faces"]["hard"] == 4


def write_official_mats(folder, gt):
    """The official file layout: n x 1 cells of cells, 1-based gt_list indices (an integer class)."""
    def cells(items):
        out = np.empty((len(items), 1), dtype=object)
        for n, item in enumerate(items):
            out[n, 0] = item
        return out

    os.makedirs(folder, exist_ok=True)
    common = {"event_list": cells(gt.events), "file_list": cells([cells(f) for f in gt.files]),
              "face_bbx_list": cells([cells(list(b)) for b in gt.boxes])}
    savemat(os.path.join(folder, "wider_face_val.mat"), common)
    for s in ("easy", "medium", "hard"):
        lists = cells([cells([(np.asarray(k) + 1).astype(np.uint8).reshape(-1, 1) for k in per]) for per in gt.keep[s]])
        savemat(os.path.join(folder, f"wider_{s}_val.mat"), dict(common, gt_list=lists))


def test_mat_files_read_as_the_official_code_indexes_them(tmp_path):
    gt = one_image_gt(extra_images=[("img2", [F0], [0]), ("img3", np.zeros((0, 4)), [])])
    folder = tmp_path / "eval_tools" / "ground_truth"
    write_official_mats(str(folder), gt)
    # the official evaluation.py indexing on these files
    m = loadmat(str(folder / "wider_face_val.mat"))
    assert str(m["event_list"][0][0][0]) == "e" and str(m["file_list"][0][0][1][0][0]) == "img2"
    assert m["face_bbx_list"][0][0][0][0].shape == (3, 4)
    assert find_wider_mats(str(tmp_path)) is not None
    loaded = load_wider_mat(str(tmp_path))
    assert loaded.files == gt.files and [k.tolist() for k in loaded.keep["easy"][0]] == [[0, 2], [0], []]
    pred = {"e": dict(PRED["e"], img3=np.array([F0 + [0.85]]))}
    assert eval_wider(pred, str(tmp_path)) == {**eval_wider(pred, gt=gt), "difficulty_rule": loaded.rule}


def test_missing_mats_without_records_is_an_error(tmp_path):
    with pytest.raises(TinydetError, match="wider_face_val.mat"):
        eval_wider(PRED, str(tmp_path))
    with pytest.raises(TinydetError, match="wider_face_val.mat"):
        load_wider_mat(str(tmp_path))


def face_record(event, stem, xywh):
    xywh = np.asarray(xywh, np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return ImageRecord(f"{event}/{stem}", f"/w/WIDER_val/images/{event}/{stem}.jpg", 640, 480, boxes,
                       np.zeros(len(boxes), np.int64), np.zeros(len(boxes), bool))


def test_height_rule_fallback_from_records(tmp_path):
    # heights 60, 30, 12, 5 px: easy (>= 50) {0}, medium (>= 25) {0, 1}, hard (>= 10) {0, 1, 2}
    faces = [[0, 0, 60, 60], [100, 0, 30, 30], [200, 0, 12, 12], [300, 0, 5, 5]]
    records = [face_record("0--Parade", "a", faces)]
    gt = wider_gt_from_records(records)
    assert [gt.keep[s][0][0].tolist() for s in ("easy", "medium", "hard")] == [[0], [0, 1], [0, 1, 2]]
    assert gt.source == "height_rule" and "easy >= 50 px" in gt.rule
    # perfect detections (xyxy) of all four faces: every subset 1.0, the 5 px face ignored everywhere
    dets = {"0--Parade/a": (records[0].boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.zeros(4, int))}
    r = eval_wider_detections(dets, records, gt_dir=str(tmp_path))
    assert (r["easy"], r["medium"], r["hard"]) == (1.0, 1.0, 1.0)
    assert r["difficulty_source"] == "height_rule"
    # only the 60 px face detected: easy 1, medium 1/2 recall, hard 1/3
    one = {"0--Parade/a": (records[0].boxes[:1], np.array([0.9]), np.zeros(1, int))}
    r = eval_wider_detections(one, records)
    assert r["easy"] == pytest.approx(1.0) and r["medium"] == pytest.approx(0.5) and r["hard"] == pytest.approx(1 / 3)


def port_read_gt(gt_dir):
    """The reading and indexing of the widely used Python port (WiderFace-Evaluation's
    ``evaluation.py``: ``get_gt_boxes`` and the loop of ``evaluation``), reproduced: per setting,
    event and image the float boxes and the ``ignore`` vector it builds from ``gt_list``."""
    gt_mat = loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    out = {}
    for s in ("easy", "medium", "hard"):
        gt_list = loadmat(os.path.join(gt_dir, f"wider_{s}_val.mat"))["gt_list"]
        for i in range(len(gt_mat["event_list"])):
            event_name = str(gt_mat["event_list"][i][0][0])
            img_list = gt_mat["file_list"][i][0]
            sub_gt_list = gt_list[i][0]
            gt_bbx_list = gt_mat["face_bbx_list"][i][0]
            for j in range(len(img_list)):
                gt_boxes = gt_bbx_list[j][0].astype("float")
                keep_index = sub_gt_list[j][0]
                ignore = np.zeros(gt_boxes.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index - 1] = 1  # IndexError on float indices
                out[(s, event_name, str(img_list[j][0][0]))] = (gt_boxes, ignore)
    return out


def test_synthetic_mats_are_readable_by_the_python_port(tmp_path):
    from tinydet.data.synth import synth_wider

    synth_wider(str(tmp_path / "w"), images=8, seed=2, size=96)
    gt_dir = str(tmp_path / "w" / "eval_tools" / "ground_truth")
    read = port_read_gt(gt_dir)
    ours = load_wider_mat(str(tmp_path / "w"))
    for i, event in enumerate(ours.events):
        for j, stem in enumerate(ours.files[i]):
            for s in ("easy", "medium", "hard"):
                boxes, ignore = read[(s, event, stem)]
                assert boxes.tolist() == ours.boxes[i][j].tolist()
                assert np.flatnonzero(ignore).tolist() == ours.keep[s][i][j].tolist()
    m = loadmat(os.path.join(gt_dir, "wider_hard_val.mat"))
    assert all(np.issubdtype(np.asarray(k[0]).dtype, np.integer) for ev in m["gt_list"][:, 0] for k in ev[:, 0])


def test_synthetic_wider_set_with_official_mats(tmp_path):
    """The data generator's .mat files (eval_tools/ground_truth) give AP 1 for the ground truth itself."""
    from tinydet.data.synth import synth_wider
    from tinydet.data.wider import gt_path, parse_wider_gt

    synth_wider(str(tmp_path / "w"), images=6, seed=1, size=96)
    gt = load_wider_mat(str(tmp_path / "w"))
    assert gt.source == "official_mat"
    entries = parse_wider_gt(gt_path(str(tmp_path / "w"), "val"), lambda *a: pytest.fail(str(a)))
    pred: dict = {}
    for name, _, faces in entries:
        event, stem = name.split("/")[0], os.path.splitext(os.path.basename(name))[0]
        valid = faces[faces[:, 7] == 0, :4]
        pred.setdefault(event, {})[stem] = np.column_stack([valid, np.linspace(1, 0.5, len(valid))])
    r = eval_wider(pred, str(tmp_path / "w"))
    for s in ("easy", "medium", "hard"):
        assert r[s] is None or r[s] == pytest.approx(1.0), s
    assert r["hard"] == pytest.approx(1.0) and r["n_images_without_predictions"] <= r["n_images"]


def test_records_only_scores_a_held_out_subset_of_the_official_ground_truth():
    # img2's face has no prediction: over the whole gt it lowers recall, over img1 alone it does not
    gt = one_image_gt(extra_images=[("img2", [F0], [0])])
    whole = eval_wider(PRED, gt=gt)
    rec = ImageRecord("e/img1", "WIDER_val/images/e/img1.jpg", 400, 400, np.zeros((0, 4), np.float32),
                      np.zeros(0, np.int64), np.zeros(0, bool), {})
    subset = eval_wider(PRED, gt=gt, records=[rec], records_only=True)
    assert subset["easy"] == pytest.approx(5 / 6) and subset["n_images"] == 1
    assert whole["easy"] < subset["easy"] and whole["n_images"] == 2
