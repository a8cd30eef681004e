"""Pure operations shared by every package (box arithmetic, NMS, detection matching)."""
from tinydet.ops.boxes import (DetectionSet, batched_nms, box_area, box_iou, box_xywh_to_xyxy, box_xyxy_to_xywh,
                               match_detections, nms)

__all__ = ["DetectionSet", "box_area", "box_iou", "box_xyxy_to_xywh", "box_xywh_to_xyxy", "nms", "batched_nms",
           "match_detections"]
