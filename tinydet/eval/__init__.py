"""Detection metrics and detection file formats; boxes and files only (no model, no torch).

- :func:`eval_voc` / :func:`voc_ap`: Pascal VOC AP as the official devkit (11-point and area);
- :func:`eval_coco`: AP@[.5:.95] through pycocotools;
- :func:`eval_wider`: WIDER Face easy / medium / hard AP as the official evaluation;
- :mod:`tinydet.eval.formats`: VOC comp4 files, COCO results JSON, WIDER submission folders.

``Detections`` (shared with training and export): image_id -> (boxes float [N, 4] xyxy in
original-image pixels, scores [N], labels int [N]).
"""
from tinydet.eval.boxes import Detections, GroundTruthRecord
from tinydet.eval.coco import eval_coco
from tinydet.eval.voc import eval_voc, eval_voc_per_class, voc_ap
from tinydet.eval.wider import WiderGroundTruth, detections_to_wider, eval_wider, eval_wider_detections

__all__ = ["Detections", "GroundTruthRecord", "eval_coco", "eval_voc", "eval_voc_per_class",
           "voc_ap", "WiderGroundTruth", "detections_to_wider", "eval_wider",
           "eval_wider_detections"]
