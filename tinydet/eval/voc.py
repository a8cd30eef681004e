"""Pascal VOC detection AP, as the official devkit (``VOCevaldet.m`` / ``VOCap.m``) computes it.

Per class, over the whole evaluated set:

1. detections are sorted by score, descending, with a *stable* sort: equal scores keep their given
   order (the devkit's MATLAB ``sort`` is stable too). The given order is the order of the
   ``Detections`` mapping (images in insertion order, then boxes in array order), or, for
   ``comp4`` files read with :func:`tinydet.eval.formats.read_voc_dets`, the line order of the file;
2. each detection takes the ground-truth box of its image and class with the largest IoU (the
   first such box on a tie); if that IoU is ``>= iou`` (the devkit's ``ovmax >= minoverlap``):
   a ``difficult`` box makes the detection neither TP nor FP, an unmatched box makes it a TP (the
   box is now matched), an already matched box makes it an FP (duplicate detection); otherwise FP;
3. recall = TP / #non-difficult boxes, precision = TP / (TP + FP);
4. AP is the VOC2007 11-point interpolated AP (``map50``) and the VOC2010+ all-point area under
   the monotone precision envelope (``map50_area``).

IoU uses continuous coordinates (see :mod:`tinydet.eval.boxes`), which equals the devkit's
``+1`` pixel IoU on devkit boxes converted as ``x1 = xmin - 1, x2 = xmax``. Classes without any
non-difficult box have an undefined AP: reported as ``None`` (JSON null) and left out of the mean.
The 11 recall thresholds are the exact tenths ``k / 10``, the intent of the devkit's ``0:0.1:1``:
floating-point ranges can overshoot a tenth by one ulp (``np.arange(0, 1.1, 0.1)``, used by some
Python ports, gives 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001), which would
make a recall of exactly 3/10 miss the 0.3 point.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.eval.boxes import Detections, GroundTruthRecord, as_detection_arrays, check_image_ids
from tinydet.ops.boxes import box_iou

#: One class's detections in their given order: image ids [K], scores [K], boxes [K, 4] xyxy.
ClassDetections = tuple[list[str], np.ndarray, np.ndarray]

_ELEVEN_POINTS = np.arange(11) / 10.0


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve (points in detection order, recall non-decreasing).

    ``use_07_metric``: mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t (0 when
    no point reaches t). Otherwise the area under the precision envelope (the running max from the
    right), summed over the recall steps. An empty curve gives 0.
    """
    rec = np.asarray(rec, dtype=np.float64).reshape(-1)
    prec = np.asarray(prec, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall has {rec.size} points but precision {prec.size}")
    if use_07_metric:
        # summed first, divided once: eleven precisions of 1 give exactly 1.0
        total = sum(float(prec[rec >= t].max()) if (rec >= t).any() else 0.0 for t in _ELEVEN_POINTS)
        return total / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: max over higher recalls
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def split_by_class(detections: Detections, n_classes: int, where: str = "detections") -> list[ClassDetections]:
    """Regroup ``Detections`` per class, keeping the given order (images, then boxes)."""
    ids: list[list[str]] = [[] for _ in range(n_classes)]
    scores: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    boxes: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    for image_id, item in detections.items():
        b, s, lab = as_detection_arrays(image_id, item, where)
        bad = (lab < 0) | (lab >= n_classes)
        if bad.any():
            raise TinydetError(f"{where}: image '{image_id}' has label {int(lab[bad][0])}, expected 0..{n_classes - 1}")
        for c in np.unique(lab):
            keep = lab == c
            ids[c].extend([image_id] * int(keep.sum()))
            scores[c].append(s[keep])
            boxes[c].append(b[keep])
    return [(ids[c],
             np.concatenate(scores[c]) if scores[c] else np.zeros(0),
             np.concatenate(boxes[c]) if boxes[c] else np.zeros((0, 4)))
            for c in range(n_classes)]


def match_class(class_dets: ClassDetections, gt: dict[str, tuple[np.ndarray, np.ndarray]], iou: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP flags (float [K], in score order) of one class's detections against ``gt``.

    ``gt`` maps image id -> (boxes [M, 4], difficult [M]) of this class. Detections matching a
    difficult box get 0 in both arrays.
    """
    image_ids, scores, boxes = class_dets
    k = len(image_ids)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ovmax = np.full(k, -np.inf)
    jmax = np.full(k, -1, dtype=np.int64)  # index into the concatenated gt boxes below
    gt_difficult: list[np.ndarray] = []
    offset = 0
    by_image: dict[str, list[int]] = {}
    for pos, d in enumerate(order):
        by_image.setdefault(image_ids[d], []).append(pos)
    for image_id, positions in by_image.items():
        g_boxes, g_diff = gt.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(g_boxes) == 0:
            continue
        pos = np.asarray(positions)
        ov = box_iou(np.asarray(boxes[order[pos]], np.float64), np.asarray(g_boxes, np.float64))
        ovmax[pos] = ov.max(axis=1)
        jmax[pos] = ov.argmax(axis=1) + offset  # argmax: the first box on a tie, as the devkit
        gt_difficult.append(np.asarray(g_diff, dtype=bool))
        offset += len(g_boxes)
    difficult = np.concatenate(gt_difficult) if gt_difficult else np.zeros(0, bool)
    hit = ovmax >= iou
    ignored = np.zeros(k, bool)
    ignored[hit] = difficult[jmax[hit]]
    tp = np.zeros(k)
    candidates = np.nonzero(hit & ~ignored)[0]
    # the first detection (in score order) on each box is the TP; later ones are duplicates
    _, first = np.unique(jmax[candidates], return_index=True)
    tp[candidates[first]] = 1.0
    fp = np.where(ignored, 0.0, 1.0 - tp)
    return tp, fp


def _class_ap(tp: np.ndarray, fp: np.ndarray, npos: int) -> tuple[float | None, float | None]:
    if npos == 0:
        return None, None
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    rec = tp_c / npos
    prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, True), voc_ap(rec, prec, False)


def _mean(values: list[float | None]) -> float | None:
    valid = [v for v in values if v is not None]
    return float(np.mean(valid)) if valid else None


def eval_voc_per_class(per_class: Sequence[ClassDetections], records: Sequence[GroundTruthRecord],
                       class_names: Sequence[str], iou: float = 0.5, where: str = "detections") -> dict:
    """VOC AP from detections already grouped per class (``per_class[c]`` for ``class_names[c]``).

    Returns ``map50`` (11-point), ``map50_area`` (all-point), ``per_class`` {name: {ap50,
    ap50_area, n_gt, n_difficult, n_det}}, ``n_images``; a class with no non-difficult box has null
    APs and is not averaged; the means are null when no class has one.
    """
    if not 0.0 < iou <= 1.0:
        raise TinydetError(f"{where}: IoU threshold {iou} must be in (0, 1]")
    if len(per_class) != len(class_names):
        raise ValueError(f"{len(per_class)} detection groups for {len(class_names)} classes")
    known = {r.image_id for r in records}
    if len(known) != len(records):
        raise TinydetError(f"{where}: the ground truth repeats an image id; ids must be unique")
    result: dict = {"per_class": {}}
    aps07: list[float | None] = []
    aps_area: list[float | None] = []
    for c, name in enumerate(class_names):
        ids = per_class[c][0]
        missing = next((i for i in ids if i not in known), None)
        if missing is not None:
            raise TinydetError(f"{where}: class '{name}' has a detection on image '{missing}', "
                               "which is not in the evaluated set")
        gt: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        npos = n_difficult = 0
        for r in records:
            mine = np.asarray(r.labels).reshape(-1) == c
            if mine.any():
                diff = np.asarray(r.difficult, dtype=bool).reshape(-1)[mine]
                gt[r.image_id] = (np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)[mine], diff)
                npos += int((~diff).sum())
                n_difficult += int(diff.sum())
        tp, fp = match_class(per_class[c], gt, iou)
        ap07, ap_area = _class_ap(tp, fp, npos)
        aps07.append(ap07)
        aps_area.append(ap_area)
        result["per_class"][name] = {"ap50": ap07, "ap50_area": ap_area, "n_gt": npos,
                                     "n_difficult": n_difficult, "n_det": len(ids)}
    result["map50"] = _mean(aps07)
    result["map50_area"] = _mean(aps_area)
    result["n_images"] = len(records)
    return {k: result[k] for k in ("map50", "map50_area", "per_class", "n_images")}


def eval_voc(detections: Detections, records: Sequence[GroundTruthRecord], class_names: Sequence[str],
             iou: float = 0.5, where: str = "detections") -> dict:
    """VOC AP of ``Detections`` (image_id -> (boxes xyxy, scores, labels)) against ``records``.

    Detections on an image id that is not in ``records`` are an error. See
    :func:`eval_voc_per_class` for the result keys.
    """
    check_image_ids(detections, records, where)
    return eval_voc_per_class(split_by_class(detections, len(class_names), where), records,
                              class_names, iou, where)
