"""Shared types and checks of the evaluation package (numpy only).

Coordinates. Internal boxes are float xyxy in *continuous* 0-based pixel coordinates of the
original image: pixel ``i`` (1-based, as the VOC devkit counts) covers ``[i - 1, i]``. A devkit box
``xmin..xmax`` (1-based, inclusive) is therefore ``x1 = xmin - 1, x2 = xmax`` (this is what
``tinydet.data.voc`` does) and the devkit's ``xmax - xmin + 1`` width is simply ``x2 - x1``. With
that conversion the plain continuous IoU (:func:`tinydet.ops.boxes.box_iou`, the package's one
IoU) equals the devkit's ``+1`` IoU exactly, so VOC and COCO (pycocotools, no ``+1``) share one box
convention. WIDER Face keeps its own ``+1`` rule on
``x, y, w, h`` boxes (see :mod:`tinydet.eval.wider`) because its official evaluation does.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from tinydet.errors import TinydetError

#: image_id -> (boxes float [N, 4] xyxy original-image pixels, scores [N], labels int [N]).
Detections = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


class GroundTruthRecord(Protocol):
    """What evaluation reads from a ground-truth record (``tinydet.data.records.ImageRecord``)."""

    image_id: str
    path: str
    width: int
    height: int
    boxes: np.ndarray  # float [M, 4] xyxy, continuous 0-based pixels
    labels: np.ndarray  # int [M]
    difficult: np.ndarray  # bool [M]


def as_detection_arrays(image_id: str, item: Sequence, where: str = "detections"
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check one ``Detections`` entry and return (boxes float64 [N,4], scores [N], labels int64 [N])."""
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        raise TinydetError(f"{where}: image '{image_id}' must map to (boxes, scores, labels)")
    boxes = np.asarray(item[0], dtype=np.float64)
    scores = np.asarray(item[1], dtype=np.float64).reshape(-1)
    labels = np.asarray(item[2])
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise TinydetError(f"{where}: image '{image_id}' boxes have shape {boxes.shape}, expected [N, 4]")
    labels = labels.reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise TinydetError(f"{where}: image '{image_id}' labels must be integers, got {labels[:3]}")
    labels = labels.astype(np.int64)
    if not (len(boxes) == len(scores) == len(labels)):
        raise TinydetError(f"{where}: image '{image_id}' has {len(boxes)} boxes, {len(scores)} scores and "
                           f"{len(labels)} labels, expected equal counts")
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise TinydetError(f"{where}: image '{image_id}' has a non-finite box or score")
    return boxes, scores, labels


def check_image_ids(detections: Detections, records: Sequence[GroundTruthRecord],
                    where: str = "detections") -> None:
    """Raise a one-line error when a detection names an image that is not in the ground truth."""
    known = {r.image_id for r in records}
    unknown = [i for i in detections if i not in known]
    if unknown:
        raise TinydetError(f"{where}: {len(unknown)} image id(s) are not in the evaluated set, "
                           f"e.g. '{unknown[0]}' (expected ids such as '{next(iter(known), '')}')")
