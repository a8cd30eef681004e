"""Prediction API shared by ``tinydet eval`` and export validation.

``runner`` is any callable images -> raw head maps (this module's :func:`torch_runner`, or an
onnxruntime session wrapped by the exporter), so every backend goes through the same letterbox,
decode, NMS and unletterbox and their mAPs compare exactly.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

Runner = Callable[[np.ndarray], list]


def torch_runner(cfg: Any, ckpt: str) -> Runner:
    """The checkpoint's detector (EMA weights when present) as ``images [B,3,H,W] float32 -> maps``."""
    import torch

    from tinydet.io.checkpoint import load_detector

    model = load_detector(cfg, ckpt)

    def run(images: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))]

    run.model = model  # type: ignore[attr-defined]  (callers may want class names / anchors)
    return run


def predict(cfg: Any, runner: Runner, split: str = "val", batch_size: int = 8
            ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], list]:
    """Detections of ``runner`` on ``split``: image_id -> (boxes [N,4] xyxy original pixels,
    scores [N], labels [N]), and the split's ImageRecords (ground truth)."""
    from torch.utils.data import DataLoader

    from tinydet.data.datamodule import DetectionDataModule, collate_detection
    from tinydet.data.transforms import unletterbox
    from tinydet.models.decode import postprocess
    from tinydet.models.detector import head_strides, resolve_spec
    from tinydet.config import to_dict

    model_cfg, ev = cfg["model"], cfg["eval"]
    spec = resolve_spec(model_cfg["arch"], model_cfg.get("width_mult"), getattr(cfg, "source", None))
    strides = head_strides(spec)
    dm = DetectionDataModule(to_dict(cfg["data"]), model_cfg["resolution"], batch_size=batch_size,
                             num_workers=0, source=getattr(cfg, "source", "config"))
    dataset = dm.dataset(split)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)
    detections: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for batch in loader:
        images = batch["images"].numpy()
        maps = runner(images)
        dets = postprocess([np.asarray(m, dtype=np.float32) for m in maps], model_cfg["anchors"], strides,
                           images.shape[-2:], ev["conf_thresh"], ev["nms_iou"], ev["max_det"])
        for (boxes, scores, labels), meta in zip(dets, batch["meta"]):
            detections[str(meta["image_id"])] = (unletterbox(boxes, meta), scores, labels)
    return detections, list(dataset.records)
