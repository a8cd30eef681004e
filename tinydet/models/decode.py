"""Decode raw head maps into boxes, and batched NMS — plain functions for numpy and torch.

This is the one definition of the detector's output semantics (docs/CONTRACTS.md): training
validation calls it on torch tensors, export validation and the deploy checks call it on numpy
arrays from onnxruntime, and the C runtime mirrors it line by line (NMS itself is
:func:`tinydet.ops.boxes.batched_nms`). YOLOv5-style, with no ``exp``
so the box size is bounded (at most 4x the anchor):

    cx = (2*sig(tx) - 0.5 + gx) * stride        w = anchor_w * (2*sig(tw))**2
    cy = (2*sig(ty) - 0.5 + gy) * stride        h = anchor_h * (2*sig(th))**2
    score = sig(obj) * sig(cls)   (the best class of each anchor)

Boxes are xyxy in network-input pixels, clipped to the input.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tinydet.ops.boxes import batched_nms

Detections = tuple[Any, Any, Any]  # boxes [N,4] xyxy, scores [N], labels [N] (int64)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _sigmoid(x: Any) -> Any:
    if _is_torch(x):
        return x.sigmoid()
    # the float32 logistic, split by sign so large |x| never overflows exp
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def _as_float_array(x: Any, like: Any) -> Any:
    """``x`` (list, numpy or torch) as a float32 array of ``like``'s library (and device)."""
    if _is_torch(like):
        import torch

        return torch.as_tensor(np.asarray(x.detach().cpu() if _is_torch(x) else x, dtype=np.float32),
                               device=like.device)
    return np.asarray(x.detach().cpu().numpy() if _is_torch(x) else x, dtype=np.float32)


def decode(outputs: Sequence[Any], anchors: Any, strides: Sequence[float], input_size: Sequence[int],
           conf_thresh: float = 0.001, max_candidates: int | None = None) -> list[Detections]:
    """Decode per-scale maps ``[B, A*(5+C), H_s, W_s]`` into per-image (boxes, scores, labels).

    ``anchors`` is ``[S][A][2]`` (w, h in input pixels), ``strides`` one per scale, ``input_size``
    (H, W) of the network input. Candidates with score <= ``conf_thresh`` are dropped; with
    ``max_candidates`` only the best that many per image are kept (before NMS). The result has the
    array type of ``outputs`` (numpy in, numpy out; torch in, torch out on the same device).
    """
    first = outputs[0]
    torch_mode = _is_torch(first)
    if torch_mode:
        import torch
    xp_cat = (lambda xs: torch.cat(xs, 1)) if torch_mode else (lambda xs: np.concatenate(xs, 1))
    anchors_arr = _as_float_array(anchors, first)
    num_anchors = anchors_arr.shape[1]
    in_h, in_w = int(input_size[0]), int(input_size[1])
    boxes_all, scores_all, labels_all = [], [], []
    for s, out in enumerate(outputs):
        if not torch_mode:
            out = np.asarray(out, dtype=np.float32)
        b, ch, h, w = out.shape
        per = ch // num_anchors
        if per * num_anchors != ch or per < 6:
            raise ValueError(f"head map {s} has {ch} channels; expected {num_anchors} anchors x (5 + classes)")
        # [B, A, 5+C, H, W] -> [B, A, H, W, 5+C]: channel a*(5+C)+k as in CONTRACTS.md
        p = out.reshape(b, num_anchors, per, h, w)
        p = p.permute(0, 1, 3, 4, 2) if torch_mode else p.transpose(0, 1, 3, 4, 2)
        p = _sigmoid(p)
        stride = float(strides[s])
        if torch_mode:
            gy, gx = torch.meshgrid(torch.arange(h, device=out.device, dtype=p.dtype),
                                    torch.arange(w, device=out.device, dtype=p.dtype), indexing="ij")
        else:
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        anc = anchors_arr[s].reshape(1, num_anchors, 1, 1, 2)
        cx = (p[..., 0] * 2 - 0.5 + gx) * stride
        cy = (p[..., 1] * 2 - 0.5 + gy) * stride
        bw = anc[..., 0] * (p[..., 2] * 2) ** 2
        bh = anc[..., 1] * (p[..., 3] * 2) ** 2
        if torch_mode:
            box = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            cls_score, label = (p[..., 5:] * p[..., 4:5]).max(-1)
        else:
            box = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            scores = p[..., 5:] * p[..., 4:5]
            label = scores.argmax(-1)
            cls_score = np.take_along_axis(scores, label[..., None], -1)[..., 0]
        boxes_all.append(box.reshape(b, -1, 4))
        scores_all.append(cls_score.reshape(b, -1))
        labels_all.append(label.reshape(b, -1))
    boxes, scores, labels = xp_cat(boxes_all), xp_cat(scores_all), xp_cat(labels_all)
    limits = [in_w, in_h, in_w, in_h]
    results = []
    for i in range(boxes.shape[0]):
        keep = scores[i] > conf_thresh
        bx, sc, lb = boxes[i][keep], scores[i][keep], labels[i][keep]
        if max_candidates is not None and sc.shape[0] > max_candidates:
            order = torch.sort(sc, descending=True, stable=True).indices[:max_candidates] if torch_mode else np.argsort(-sc, kind="stable")[:max_candidates]
            bx, sc, lb = bx[order], sc[order], lb[order]
        if torch_mode:
            bx = torch.stack([bx[:, k].clamp(0, limits[k]) for k in range(4)], 1)
            lb = lb.long()
        else:
            bx = np.clip(bx, 0, np.asarray(limits, dtype=np.float32)).astype(np.float32)
            lb = lb.astype(np.int64)
        results.append((bx, sc, lb))
    return results


def postprocess(outputs: Sequence[Any], anchors: Any, strides: Sequence[float], input_size: Sequence[int],
                conf_thresh: float = 0.001, nms_iou: float = 0.6, max_det: int = 100,
                max_candidates: int = 3000) -> list[Detections]:
    """:func:`decode` + :func:`tinydet.ops.boxes.batched_nms` + top ``max_det`` per image, in network-input pixels."""
    results = []
    for boxes, scores, labels in decode(outputs, anchors, strides, input_size, conf_thresh, max_candidates):
        keep = batched_nms(boxes, scores, labels, nms_iou)[:max_det]
        results.append((boxes[keep], scores[keep], labels[keep]))
    return results
