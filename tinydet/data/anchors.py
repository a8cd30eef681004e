"""Anchor boxes by k-means on training box sizes, with 1 - IoU as the distance (YOLOv2 style).

Boxes are compared by width and height only (as if they shared a corner), after scaling each
image's boxes by its letterbox factor to the network input, so anchors are in network pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tinydet.data.records import ImageRecord
from tinydet.data.transforms import as_hw
from tinydet.errors import TinydetError


def network_box_sizes(records: Sequence[ImageRecord], input_size: int | Sequence[int],
                      include_difficult: bool = False) -> np.ndarray:
    """Widths and heights [M, 2] of the records' boxes in network-input pixels (letterboxed)."""
    H, W = as_hw(input_size)
    sizes = []
    for rec in records:
        boxes = rec.boxes if include_difficult else rec.boxes[~rec.difficult]
        scale = min(H / rec.height, W / rec.width)
        sizes.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)
    return wh[(wh > 0).all(axis=1)].astype(np.float64)


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU [M, K] of corner-aligned boxes of sizes ``wh`` [M, 2] and ``anchors`` [K, 2]."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def _kmeans_once(wh: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    # k-means++ seeding under the 1 - IoU distance
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - wh_iou(wh, np.asarray(centres)).max(axis=1)
        p = d ** 2
        centres.append(wh[rng.choice(len(wh), p=p / p.sum())] if p.sum() > 0 else wh[rng.integers(len(wh))])
    centres = np.asarray(centres, np.float64)
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, centres).argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)  # the median resists outlier boxes
            else:  # an emptied cluster restarts at the worst-covered box
                centres[j] = wh[wh_iou(wh, centres).max(axis=1).argmin()]
    return centres


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, restarts: int = 5, iters: int = 300) -> np.ndarray:
    """``k`` anchors [k, 2] (w, h), sorted by area, maximising the mean best IoU over ``wh``."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if k < 1:
        raise TinydetError(f"anchors: --k must be >= 1, got {k}")
    if len(np.unique(wh, axis=0)) < k:
        raise TinydetError(f"anchors: need at least {k} distinct training box sizes, found "
                           f"{len(np.unique(wh, axis=0))}")
    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(restarts):
        centres = _kmeans_once(wh, k, rng, iters)
        fit = float(wh_iou(wh, centres).max(axis=1).mean())
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[np.argsort(best[:, 0] * best[:, 1], kind="stable")]


def split_by_scale(anchors: np.ndarray, scales: int) -> list[list[list[float]]]:
    """Area-sorted anchors cut into ``scales`` equal groups, smallest first (finest stride first)."""
    if scales < 1 or len(anchors) % scales:
        raise TinydetError(f"anchors: --k ({len(anchors)}) must be a multiple of --scales ({scales})")
    per = len(anchors) // scales
    return [[[round(float(w), 2), round(float(h), 2)] for w, h in anchors[i * per:(i + 1) * per]]
            for i in range(scales)]


def anchor_stats(wh: np.ndarray, anchors: np.ndarray) -> dict:
    """How well ``anchors`` cover ``wh``: mean best IoU and the share of boxes with best IoU >= 0.5."""
    best = wh_iou(np.asarray(wh, np.float64), np.asarray(anchors, np.float64)).max(axis=1)
    return {"mean_best_iou": float(best.mean()), "recall_iou50": float((best >= 0.5).mean()), "boxes": int(len(wh))}
