"""Draw detections (and optionally ground truth) on an image and save a PNG (PIL only)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tinydet.io.atomic import atomic_open

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def draw_detections(image_path: "str | Path", boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], out_path: "str | Path", gt_boxes: np.ndarray | None = None,
                    min_score: float = 0.3) -> Path:
    """Save ``image_path`` with boxes (xyxy, original pixels) whose score >= ``min_score``.

    Ground truth, when given, is drawn thin and white under the predictions.
    """
    from PIL import Image

    image = annotate(Image.open(image_path).convert("RGB"), boxes, scores, labels, class_names, gt_boxes, min_score)
    out_path = Path(out_path)
    with atomic_open(out_path, "wb") as fh:
        image.save(fh, format="PNG")
    return out_path


def annotate(image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
             gt_boxes: np.ndarray | None = None, min_score: float = 0.3):
    """Draw on an RGB PIL image in place and return it (see :func:`draw_detections`)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 200))
    for box in [] if gt_boxes is None else np.asarray(gt_boxes).reshape(-1, 4):
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    for box, score, label in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores), np.asarray(labels)):
        if score < min_score:
            continue
        colour = PALETTE[int(label) % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        draw.text((x0 + 2, max(0.0, y0 - 11)), f"{name} {score:.2f}", fill=colour)
    return image
