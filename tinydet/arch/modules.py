"""Build the torch ``nn.Module`` for an :class:`ArchSpec` (torchvision-style builder).

Module paths equal the op names of :func:`tinydet.arch.graph.lower` (``blocks.3.expand``,
``heads.0.out``, ``classifier.fc``), each a :class:`ConvBNAct` (or Linear), so the patch executor
and the exporter can walk the op list and find the module of every op.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tinydet.arch.graph import Graph, lower
from tinydet.arch.spec import ArchSpec, HeadSpec


class ConvBNAct(nn.Module):
    """Conv2d (+ BatchNorm) (+ ReLU6). ``forward(x, pad)`` runs it with explicit per-side zero
    padding (left, right, top, bottom) instead of the layer's own, for tiles at image borders."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, bn: bool = True, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=not bn)
        self.bn = nn.BatchNorm2d(c_out, eps=eps) if bn else nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor, pad: Sequence[int] | None = None) -> torch.Tensor:
        if pad is None:
            y = self.conv(x)
        else:
            if any(pad):
                x = F.pad(x, tuple(pad))
            c = self.conv
            y = F.conv2d(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)
        return self.act(self.bn(y))


class InputNorm(ConvBNAct):
    """``(x - mean) / std`` per channel as a 1x1 depthwise conv with a bias (the graph's
    ``blocks.0.norm`` op). Weight and bias are buffers: constants of the network, saved in the
    state_dict but neither trained nor counted as parameters."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__(len(mean), len(mean), groups=len(mean), act=False, bn=False)
        std_t = torch.tensor(std, dtype=torch.float64)
        weight = (1.0 / std_t).view(-1, 1, 1, 1)
        bias = -torch.tensor(mean, dtype=torch.float64) / std_t
        del self.conv.weight, self.conv.bias
        self.conv.register_buffer("weight", weight.float())
        self.conv.register_buffer("bias", bias.float())


class ConvBlock(nn.Module):
    """The stem (or any plain conv block); the stem carries the input normalisation when set."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, eps: float = 1e-5,
                 norm: InputNorm | None = None):
        super().__init__()
        if norm is not None:
            self.norm = norm
        self.conv = ConvBNAct(c_in, c_out, kernel, stride, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "norm"):
            x = self.norm(x)
        return self.conv(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> kxk depthwise -> 1x1 linear projection (+ shortcut)."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel: int, stride: int, residual: bool,
                 eps: float = 1e-5):
        super().__init__()
        self.expand = ConvBNAct(c_in, hidden, eps=eps) if hidden != c_in else None
        self.dw = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, eps=eps)
        self.project = ConvBNAct(hidden, c_out, act=False, eps=eps)
        self.use_res = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.use_res else y


class HeadScale(nn.Module):
    """One scale of the YOLO-style head: depthwise kxk, 1x1 to ``channels``, 1x1 to outputs."""

    def __init__(self, c_in: int, head: HeadSpec, eps: float = 1e-5):
        super().__init__()
        self.dw = ConvBNAct(c_in, c_in, head.kernel, 1, groups=c_in, eps=eps)
        self.pw = ConvBNAct(c_in, head.channels, eps=eps)
        self.out = ConvBNAct(head.channels, head.out_channels, act=False, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pw(self.dw(x)))


class Classifier(nn.Module):
    def __init__(self, c_in: int, num_classes: int, dropout: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class Network(nn.Module):
    """Backbone (+ head or classifier). ``forward`` returns a list of raw outputs: one map per
    head scale (detector), the logits (classifier), or the ``head_from`` features (backbone)."""

    def __init__(self, spec: ArchSpec, head: HeadSpec | None = None, classifier: bool | None = None):
        super().__init__()
        self.spec = spec
        self.head_spec = head
        # the graph at a nominal size tells which blocks are used and what the outputs are
        probe = lower(spec, spec.total_stride * 2, head=head, classifier=classifier)
        self.mode = probe.mode
        used = probe.num_blocks
        blocks = []
        for i, b in enumerate(spec.blocks[:used]):
            c_in, c_out = spec.in_channels_of(i), spec.channels(i)
            eps = spec.bn_eps
            if b.type == "conv":
                norm = InputNorm(spec.input_mean, spec.input_std) if i == 0 and spec.normalized else None
                blocks.append(ConvBlock(c_in, c_out, b.kernel, b.stride, eps, norm))
            else:
                blocks.append(InvertedResidual(c_in, c_out, spec.hidden_channels(i), b.kernel, b.stride,
                                               spec.has_residual(i), eps))
        self.blocks = nn.ModuleList(blocks)
        self.heads = (nn.ModuleList([HeadScale(spec.channels(i), head, spec.bn_eps) for i in spec.head_from])
                      if head else None)
        self.classifier = (Classifier(spec.channels(used - 1), spec.num_classes, spec.dropout)
                           if self.mode == "classifier" else None)
        self.taps = tuple(spec.head_from) if self.mode != "classifier" and spec.head_from else (used - 1,)
        _init_weights(self)

    def graph(self, resolution) -> Graph:
        return lower(self.spec, resolution, head=self.head_spec, classifier=self.mode == "classifier")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.mode != "classifier" and i in self.taps:
                outs.append(self.heads[self.taps.index(i)](x) if self.heads is not None else x)
        if self.classifier is not None:
            outs.append(self.classifier(x))
        return outs


def _init_weights(model: nn.Module) -> None:
    """torchvision MobileNetV2's initialisation (the input normalisation's constants stay)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and isinstance(m.weight, nn.Parameter):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build(spec: ArchSpec | str, head: HeadSpec | None = None, num_classes: int | None = None) -> Network:
    """Build the network for a spec or preset name; ``head`` makes it a detector."""
    from dataclasses import replace

    from tinydet.arch.registry import get_spec

    spec = get_spec(spec)
    if num_classes is not None:
        spec = replace(spec, num_classes=num_classes)
    return Network(spec, head=head)
