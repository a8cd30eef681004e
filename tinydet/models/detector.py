"""The detector: the spec's backbone + YOLO-style head (``tinydet.arch.build``) with anchors.

:class:`Detector` *is* a :class:`tinydet.arch.modules.Network`, so its module paths equal the op
names of ``tinydet.arch.lower`` (what the patch executor and the exporter look up); it adds the
anchors and per-scale strides as buffers so a checkpoint carries them.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import torch

from tinydet.arch import ArchSpec, HeadSpec, get_spec, parse_resolution
from tinydet.arch.modules import Network
from tinydet.errors import TinydetError
from tinydet.models.decode import postprocess


def head_strides(spec: ArchSpec) -> list[int]:
    """Total stride of each head scale's input, in order (``head_from`` blocks, or the neck's outputs)."""
    return spec.scale_strides()


class Detector(Network):
    """Backbone (+ neck) + head; ``forward(images [B,3,H,W] in [0,1])`` returns the raw head maps,
    one per scale (finest first). An arch with a head layout (``mcunet-person-det``) sets the
    head's form and widths itself; ``head_channels``/``head_kernel`` then do not apply."""

    def __init__(self, spec: ArchSpec, num_classes: int, anchors: Sequence[Sequence[Sequence[float]]],
                 head_channels: int = 64, head_kernel: int = 3, input_size: "int | Sequence[int]" = 320):
        anchors_t = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors_t.ndim != 3 or anchors_t.shape[-1] != 2:
            raise TinydetError(f"model.anchors: expected [scales][anchors][w, h], got shape {tuple(anchors_t.shape)}")
        if anchors_t.shape[0] != spec.num_scales:
            where = (f"neck outputs {list(spec.neck.outputs)}" if spec.neck is not None
                     else f"head_from {list(spec.head_from)}")
            raise TinydetError(f"model.anchors: {anchors_t.shape[0]} scales given but arch {spec.name} has "
                               f"{spec.num_scales} head maps ({where}, strides {head_strides(spec)})")
        if num_classes < 1:
            raise TinydetError(f"data: the detector needs at least one class, got {num_classes}")
        head = HeadSpec(num_classes=num_classes, num_anchors=int(anchors_t.shape[1]),
                        channels=head_channels, kernel=head_kernel)
        super().__init__(replace(spec, num_classes=0), head=head)
        self.num_classes = num_classes
        self.input_size = parse_resolution(input_size)
        self.register_buffer("anchors", anchors_t)
        self.register_buffer("strides", torch.tensor(head_strides(spec), dtype=torch.float32))
        self._init_head_bias()

    @torch.no_grad()
    def _init_head_bias(self) -> None:
        """YOLOv5's prior: ~8 objects per 640x640 image spread over each scale's cells, and class
        probabilities ~0.6/classes, so the first steps are not dominated by objectness noise."""
        per = 5 + self.num_classes
        h, w = self.input_size
        for head, stride in zip(self.heads, self.strides.tolist()):
            bias = head.out.conv.bias.view(-1, per)
            bias[:, 4] = math.log(8 / ((h / stride) * (w / stride) * (640 / max(h, w)) ** 2) + 1e-9)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, conf_thresh: float = 0.001, nms_iou: float = 0.6,
                max_det: int = 100) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Boxes (xyxy, network-input pixels), scores, labels per image after decode + NMS."""
        outputs = self(images)
        return postprocess(outputs, self.anchors, self.strides.tolist(), images.shape[-2:],
                           conf_thresh, nms_iou, max_det)


def detector_from_config(cfg: Any, num_classes: int, spec: ArchSpec | None = None) -> Detector:
    """Build the detector a config describes (``spec`` overrides ``model.arch``, e.g. from a checkpoint)."""
    model = cfg["model"]
    if spec is None:
        spec = resolve_spec(model["arch"], model.get("width_mult"), getattr(cfg, "source", None))
    head = model["head"]
    return Detector(spec, num_classes, model["anchors"], head["channels"], head["kernel"], model["resolution"])


def load_pretrained(model: Detector, cfg: Any) -> int | None:
    """Load ``model.pretrained``'s backbone weights into ``model`` (see :mod:`tinydet.zoo.pretrained`);
    returns the number of tensors loaded, None when the config names no pretrained weights."""
    value = cfg["model"].get("pretrained")
    if not value:
        return None
    from tinydet.zoo.pretrained import load_into, resolve

    return load_into(model, resolve(value, getattr(cfg, "source", None)))


def resolve_spec(arch: str, width_mult: float | None = None, config_path: str | None = None) -> ArchSpec:
    """``model.arch``: a preset, or a spec file relative to the cwd, else to the config's folder,
    else to the repository root (so the shipped configs work from any directory)."""
    from pathlib import Path

    text = str(arch)
    if not Path(text).is_absolute() and not Path(text).exists():
        bases = ([Path(config_path).parent] if config_path else []) + [Path(__file__).resolve().parents[2]]
        found = [base / text for base in bases if (base / text).exists()]
        if found:
            text = str(found[0])
    spec = get_spec(text)
    return spec.with_width(width_mult) if width_mult is not None else spec
