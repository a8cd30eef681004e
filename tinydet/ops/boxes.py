"""Box operations, the one definition for the whole package (in the style of ``torchvision.ops``).

Boxes are ``[N, 4]`` arrays in ``xyxy`` (``x1, y1, x2, y2``, continuous pixel coordinates: a box's
width is ``x2 - x1``) unless a function says ``xywh``. Every function is pure.

The 0/0 rule. The IoU of a pair whose intersection is empty is 0 — also when both boxes have zero
area, where the plain formula would give 0/0 (``torchvision.ops.box_iou`` returns NaN there; this is
pycocotools' rule). A pair with a non-positive union (only possible with inverted boxes) is 0 as
well. For NMS the two rules agree for every threshold >= 0 (NaN > t and 0 > t are both false), which
is why the torch path may call torchvision while the numpy path uses :func:`box_iou`.

Precision. numpy inputs are computed in their own float type (float32 boxes stay float32, as the
detector's decode and the C runtime's NMS do; integer or float64 boxes compute in float64), so the
same boxes give the same bits wherever they are compared.

Evaluation protocols with their own rules (the WIDER Face ``+1`` inclusive-pixel IoU) keep them in
their protocol module (:mod:`tinydet.eval.wider`); everything shared lives here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: (boxes [N, 4] xyxy, scores [N], labels [N]): one image's detections, numpy or torch.
DetectionSet = tuple[Any, Any, Any]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _float_array(x: Any) -> np.ndarray:
    """``x`` as an ``[N, 4]`` float numpy array, float32/float64 kept, anything else float64."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a.reshape(-1, 4)


def box_area(boxes: Any) -> Any:
    """Area ``(x2 - x1) * (y2 - y1)`` of xyxy boxes [N, 4] -> [N] (numpy or torch)."""
    if not _is_torch(boxes):
        boxes = _float_array(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU matrix [N, M] of xyxy boxes ``a`` [N, 4] and ``b`` [M, 4] (numpy).

    An empty intersection (including two zero-area boxes) gives 0, never NaN; see the module
    docstring for the rule and the precision.
    """
    a, b = _float_array(a), _float_array(b)
    dtype = np.result_type(a.dtype, b.dtype)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    ok = (inter > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, 1), 0).astype(dtype, copy=False)


def box_xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``x1, y1, x2, y2`` -> ``x, y, w, h`` (``w = x2 - x1``; numpy, float type kept)."""
    b = _float_array(boxes)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def box_xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """``x, y, w, h`` -> ``x1, y1, x2, y2`` (``x2 = x + w``; numpy, float type kept)."""
    b = _float_array(boxes)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def nms(boxes: Any, scores: Any, iou_thresh: float) -> Any:
    """Greedy NMS: indices kept, by decreasing score (ties: the earlier index first).

    A box is dropped when its IoU with a kept, higher-scoring box is > ``iou_thresh``
    (``torchvision.ops.nms`` semantics; torch tensors go to torchvision itself). numpy boxes are
    compared in float32, the precision of the detector's outputs and of the C runtime.
    """
    if _is_torch(boxes):
        from torchvision.ops import nms as tv_nms

        return tv_nms(boxes.float(), scores.float(), iou_thresh)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    suppressed = np.zeros(len(order), dtype=bool)
    for pos, idx in enumerate(order):
        if suppressed[pos]:
            continue
        keep.append(idx)
        rest = order[pos + 1:]
        if len(rest):
            suppressed[pos + 1:] |= box_iou(boxes[idx:idx + 1], boxes[rest])[0] > iou_thresh
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: Any, scores: Any, labels: Any, iou_thresh: float) -> Any:
    """Per-class NMS: boxes of different labels never suppress each other.

    torch tensors go to ``torchvision.ops.batched_nms``; numpy arrays use the same trick (each class
    offset by ``label * (max coordinate + 1)`` so that classes never overlap) with :func:`nms`.
    """
    if _is_torch(boxes):
        from torchvision.ops import batched_nms as tv_batched_nms

        return tv_batched_nms(boxes.float(), scores.float(), labels, iou_thresh)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offset = labels.astype(np.float32)[:, None] * (boxes.max() + 1)
    return nms(boxes + offset, scores, iou_thresh)


def match_detections(a: DetectionSet, b: DetectionSet, iou: float = 0.9) -> bool:
    """Whether two detection sets are the same detections: same count, same classes, and a
    one-to-one pairing of equal labels with IoU >= ``iou`` (identical boxes always pair, zero-area
    ones included).

    Used to compare two implementations of one detector (int8 reference vs onnxruntime, firmware vs
    Python decode). Greedy on the best pairs first, which is exact for ``iou > 0.5``: a box then
    overlaps at most one partner that much.
    """
    boxes_a, _, labels_a = (np.asarray(v) for v in a)
    boxes_b, _, labels_b = (np.asarray(v) for v in b)
    if len(boxes_a) != len(boxes_b) or sorted(labels_a.tolist()) != sorted(labels_b.tolist()):
        return False
    if len(boxes_a) == 0:
        return True
    boxes_a = boxes_a.astype(np.float32).reshape(-1, 4)
    boxes_b = boxes_b.astype(np.float32).reshape(-1, 4)
    same = np.all(boxes_a[:, None, :] == boxes_b[None, :, :], axis=-1)
    ious = np.where(same, np.float32(1), box_iou(boxes_a, boxes_b))
    ious = np.where(labels_a[:, None] == labels_b[None, :], ious, -1.0)
    used_a, used_b = set(), set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, ious.shape)
        if ious[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(int(i))
            used_b.add(int(j))
    return len(used_a) == len(boxes_a)
