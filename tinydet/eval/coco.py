"""COCO-style AP@[.5:.95] through pycocotools, with the ground truth built in memory.

Boxes go to pycocotools as ``[x1, y1, x2 - x1, y2 - y1]`` (continuous coordinates, no ``+1``, as
pycocotools computes IoU). ``difficult`` VOC boxes become ``iscrowd=1``: pycocotools then ignores
the detections that fall on them (neither TP nor FP) and never counts them as missed, the nearest
equivalent of the devkit's rule (for a crowd box pycocotools measures the overlap as intersection
over the *detection's* area). Image ids are mapped to consecutive integers, classes to
``category_id = label + 1``. pycocotools prints progress on stdout: it is sent to stderr so that
``--json`` keeps stdout to one JSON object.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.eval.boxes import Detections, GroundTruthRecord, as_detection_arrays, check_image_ids
from tinydet.ops.boxes import box_xyxy_to_xywh

#: pycocotools ``COCOeval.stats`` index -> result key (-1 in stats, "no such box", becomes None).
COCO_STATS = {
    0: "map_coco", 1: "map_coco_50", 2: "map_coco_75",
    3: "map_coco_small", 4: "map_coco_medium", 5: "map_coco_large",
    6: "ar_coco_1", 7: "ar_coco_10", 8: "ar_coco_100",
}


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return box_xyxy_to_xywh(np.asarray(boxes, dtype=np.float64))


def coco_ground_truth(records: Sequence[GroundTruthRecord], class_names: Sequence[str]) -> dict:
    """The COCO-format ground-truth dict of ``records`` (image ids 1..N in record order)."""
    images, annotations = [], []
    for n, r in enumerate(records, 1):
        images.append({"id": n, "width": int(r.width), "height": int(r.height), "file_name": str(r.path)})
        labels = np.asarray(r.labels).reshape(-1)
        difficult = np.asarray(r.difficult, dtype=bool).reshape(-1)
        for box, label, diff in zip(_xywh(r.boxes), labels, difficult):
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": int(label) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                                "iscrowd": int(diff)})
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def eval_coco(detections: Detections, records: Sequence[GroundTruthRecord], class_names: Sequence[str],
              where: str = "detections") -> dict:
    """COCO AP (``map_coco`` = AP@[.5:.95], ``map_coco_50``, ``map_coco_75``, by size, AR@1/10/100).

    pycocotools keeps the 100 best detections per image. Values pycocotools reports as -1 (no
    ground truth of that size) are None. With no detections every AP is 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    check_image_ids(detections, records, where)
    index = {r.image_id: n for n, r in enumerate(records, 1)}
    dt_anns = []
    for image_id, item in detections.items():
        boxes, scores, labels = as_detection_arrays(image_id, item, where)
        bad = (labels < 0) | (labels >= len(class_names))
        if bad.any():
            raise TinydetError(f"{where}: image '{image_id}' has label {int(labels[bad][0])}, "
                               f"expected 0..{len(class_names) - 1}")
        for box, score, label in zip(_xywh(boxes), scores, labels):
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": index[image_id], "category_id": int(label) + 1,
                            "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                            "score": float(score), "iscrowd": 0})
    gt_dict = coco_ground_truth(records, class_names)
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        # built directly rather than with loadRes, which fails on an empty result list
        dt = COCO()
        dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"], "annotations": dt_anns}
        dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {key: (None if stats[i] < 0 else float(stats[i])) for i, key in COCO_STATS.items()}
