"""YOLOv5-style detection loss.

Choices (and why):
- **Assignment** from the config anchors by shape, not IoU: a ground-truth box goes to every
  anchor (of every scale) whose width and height ratios to it are within ``anchor_t`` (4.0,
  matching the decode's bounded ``(2*sig)**2`` range of 0..4x the anchor). Besides the cell that
  holds the box centre, the two nearest neighbour cells (left/right, up/down by which half of the
  cell the centre falls in) are positives too: the decode's ``2*sig - 0.5`` centre offset reaches
  -0.5..1.5 cells, and more positives per object speed up training of small models.
- **Box loss** 1 - CIoU (or GIoU) on the decoded box in grid units: scale invariant and it
  optimises the quantity mAP measures.
- **Objectness** BCE over every anchor of every cell; the target at a positive is its
  (detached, clamped) IoU so the objectness score ranks boxes by localisation quality. Per-scale
  ``balance`` weights (stride 8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1 by default, as YOLOv5) because
  fine scales have many more negatives.
- **Classes** BCE (one-hot, independent sigmoids) at positives only; skipped for one class
  (objectness already says "face").
- Gains box 0.05 / obj 1.0 / cls 0.5 are YOLOv5's at 640 px, rescaled by (resolution/640)**2 for
  objectness, classes/80 for classes and 3/scales for all, as YOLOv5 does. The sum is multiplied by
  the batch size (YOLOv5's convention, which the default SGD learning rate is tuned for).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, kind: str = "ciou", eps: float = 1e-7) -> torch.Tensor:
    """IoU variant between paired boxes in (cx, cy, w, h): ``iou`` | ``giou`` | ``ciou``."""
    b1x1, b1x2 = box1[:, 0] - box1[:, 2] / 2, box1[:, 0] + box1[:, 2] / 2
    b1y1, b1y2 = box1[:, 1] - box1[:, 3] / 2, box1[:, 1] + box1[:, 3] / 2
    b2x1, b2x2 = box2[:, 0] - box2[:, 2] / 2, box2[:, 0] + box2[:, 2] / 2
    b2y1, b2y2 = box2[:, 1] - box2[:, 3] / 2, box2[:, 1] + box2[:, 3] / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    w1, h1, w2, h2 = box1[:, 2], box1[:, 3] + eps, box2[:, 2], box2[:, 3] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # enclosing box
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    if kind == "giou":
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (box2[:, 0] - box1[:, 0]) ** 2 + (box2[:, 1] - box1[:, 1]) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """Callable ``loss(outputs, targets) -> (total, parts)``.

    ``outputs``: raw head maps ``[B, A*(5+C), H, W]``; ``targets``: per image a dict with
    ``boxes`` [N,4] xyxy in network-input pixels and ``labels`` [N]. ``parts`` holds the detached
    box / obj / cls terms for logging.
    """

    def __init__(self, anchors: torch.Tensor, strides: Sequence[float], num_classes: int,
                 input_size: Sequence[int], box: float = 0.05, obj: float = 1.0, cls: float = 0.5,
                 anchor_t: float = 4.0, box_iou: str = "ciou", balance: Sequence[float] | None = None):
        self.anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.strides = [float(s) for s in strides]
        self.num_classes = num_classes
        scales = len(self.strides)
        size = max(float(input_size[0]), float(input_size[1]))
        self.box_gain = box * 3 / scales
        self.obj_gain = obj * (size / 640) ** 2 * 3 / scales
        self.cls_gain = cls * num_classes / 80 * 3 / scales
        self.anchor_t = anchor_t
        self.box_iou = box_iou
        self.balance = list(balance) if balance is not None else [DEFAULT_BALANCE.get(int(s), 0.1) for s in self.strides]
        if len(self.balance) != scales:
            raise ValueError(f"train.loss.balance: expected {scales} values (one per head scale), got {len(self.balance)}")

    def build_targets(self, outputs: Sequence[torch.Tensor], targets: Sequence[dict]):
        """Per scale: (image idx, anchor idx, gy, gx), target box (dx, dy, w, h) in grid units
        relative to the cell, the matched anchor (grid units) and the class of each positive."""
        device = outputs[0].device
        rows = []
        for i, t in enumerate(targets):
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
            labels = torch.as_tensor(t["labels"], device=device).reshape(-1, 1).float()
            if boxes.shape[0]:
                cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
                rows.append(torch.cat([torch.full_like(labels, i), labels, cxcywh], 1))
        table = torch.cat(rows) if rows else torch.zeros((0, 6), device=device)
        num_anchors = self.anchors.shape[1]
        g = 0.5
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * g
        results = []
        for s, out in enumerate(outputs):
            h, w = out.shape[-2:]
            anchors = self.anchors[s].to(device) / self.strides[s]
            if table.shape[0] == 0:
                results.append(None)
                continue
            # [A, N, 7]: image, class, cx, cy, w, h (grid units), anchor index
            t = table.clone()
            t[:, 2:6] /= self.strides[s]
            t = torch.cat([t.unsqueeze(0).expand(num_anchors, -1, -1),
                           torch.arange(num_anchors, device=device).float().view(-1, 1, 1).expand(-1, t.shape[0], 1)], 2)
            ratio = t[..., 4:6] / anchors[:, None]
            match = torch.max(ratio, 1 / ratio).max(2)[0] < self.anchor_t
            t = t[match]
            gxy = t[:, 2:4]
            gxy_inv = torch.tensor([w, h], device=device).float() - gxy
            j, k = ((gxy % 1 < g) & (gxy > 1)).T
            l, m = ((gxy_inv % 1 < g) & (gxy_inv > 1)).T
            select = torch.stack([torch.ones_like(j), j, k, l, m])
            t = t.unsqueeze(0).expand(5, -1, -1)[select]
            off = (torch.zeros_like(gxy)[None] + offsets[:, None])[select]
            gxy = t[:, 2:4]
            gij = (gxy - off).long()
            gi = gij[:, 0].clamp(0, w - 1)
            gj = gij[:, 1].clamp(0, h - 1)
            a = t[:, 6].long()
            tbox = torch.cat([gxy - torch.stack([gi, gj], 1).float(), t[:, 4:6]], 1)
            results.append((t[:, 0].long(), a, gj, gi, tbox, anchors[a], t[:, 1].long()))
        return results

    def __call__(self, outputs: Sequence[torch.Tensor], targets: Sequence[dict]):
        device = outputs[0].device
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        per = 5 + self.num_classes
        batch = outputs[0].shape[0]
        for s, (out, tgt) in enumerate(zip(outputs, self.build_targets(outputs, targets))):
            b_, _, h, w = out.shape
            p = out.view(b_, -1, per, h, w).permute(0, 1, 3, 4, 2)  # [B, A, H, W, 5+C]
            tobj = torch.zeros(p.shape[:4], device=device, dtype=p.dtype)
            if tgt is not None and tgt[0].shape[0]:
                b, a, gj, gi, tbox, anchor, tcls = tgt
                ps = p[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchor
                iou = bbox_iou(torch.cat([pxy, pwh], 1), tbox, self.box_iou)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.num_classes > 1:
                    onehot = torch.zeros_like(ps[:, 5:])
                    onehot[torch.arange(tcls.shape[0], device=device), tcls] = 1.0
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot)
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * self.balance[s]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        total = (lbox + lobj + lcls) * batch
        return total, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
