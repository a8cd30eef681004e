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

from tinydet.arch.graph import Graph, Op, lower
from tinydet.arch.spec import ArchSpec, HeadSpec, NeckNode, neck_order


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
    """One scale of the YOLO-style head: [1x1 expand (template ``expand``)] -> depthwise kxk ->
    1x1 to the scale's channels -> 1x1 to outputs."""

    def __init__(self, c_in: int, head: HeadSpec, eps: float = 1e-5, scale: int = 0):
        super().__init__()
        if head.template == "expand":
            self.expand = ConvBNAct(c_in, head.expand[scale], eps=eps)
            c_in = head.expand[scale]
        channels = head.channels_at(scale)
        self.dw = ConvBNAct(c_in, c_in, head.kernel, 1, groups=c_in, eps=eps)
        self.pw = ConvBNAct(c_in, channels, eps=eps)
        self.out = ConvBNAct(channels, head.out_channels, act=False, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "expand"):
            x = self.expand(x)
        return self.out(self.pw(self.dw(x)))


def weightless_op(kind: str, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The neck ops without parameters (one definition for the network, the patch executor and
    the export check): nearest x2 upsampling, 2x2 stride-2 max-pooling, sum, channel concat."""
    if kind == "upsample":
        return F.interpolate(inputs[0], scale_factor=2, mode="nearest")
    if kind == "maxpool":
        return F.max_pool2d(inputs[0], 2, 2)
    if kind == "add":
        out = inputs[0]
        for t in inputs[1:]:
            out = out + t
        return out
    if kind == "concat":
        return torch.cat(list(inputs), dim=1)
    raise ValueError(f"not a weightless neck op: {kind}")


class Neck(nn.ModuleDict):
    """The spec's neck: one module per conv/mbconv node, keyed by node name (``neck.<node>``, so
    module paths equal the graph's op names); ``forward(features)`` runs every node in dependency
    order on the named backbone taps and returns the neck's outputs in head-scale order."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        info = spec.feature_info()
        # underscore names: node names start with a letter, so they never shadow these
        self._order = neck_order(spec.neck, spec.taps)
        self._outputs = spec.neck.outputs
        for node in self._order:
            c_in, c_out = info[node.inputs[0]].channels, info[node.name].channels
            if node.type == "conv":
                self[node.name] = ConvBNAct(c_in, c_out, node.kernel, act=node.act == "relu6", eps=spec.bn_eps)
            elif node.type == "mbconv":
                self[node.name] = InvertedResidual(c_in, c_out, int(round(c_in * node.expand)), node.kernel, 1,
                                                   c_in == c_out and node.residual is not False, spec.bn_eps)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        values = dict(features)
        for node in self._order:
            ins = [values[i] for i in node.inputs]
            values[node.name] = self[node.name](ins[0]) if node.name in self else weightless_op(node.type, ins)
        return [values[name] for name in self._outputs]


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
        self.neck = Neck(spec) if spec.neck is not None and self.mode != "classifier" else None
        if head is not None and spec.head is not None:
            head = spec.head.apply(head)  # the arch's head layout (its graph applies it too)
        info = spec.feature_info()
        self.heads = (nn.ModuleList([HeadScale(info[name].channels, head, spec.bn_eps, j)
                                     for j, name in enumerate(spec.head_inputs)]) if head else None)
        self.classifier = (Classifier(spec.channels(used - 1), spec.num_classes, spec.dropout)
                           if self.mode == "classifier" else None)
        self.taps = tuple(spec.head_from) if self.mode != "classifier" and spec.head_from else (used - 1,)
        _init_weights(self)

    def graph(self, resolution) -> Graph:
        return lower(self.spec, resolution, head=self.head_spec, classifier=self.mode == "classifier")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        features: dict[str, torch.Tensor] = {}
        names = {i: name for name, i in self.spec.taps.items()}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.neck is not None:
                if i in names:
                    features[names[i]] = x
            elif self.mode != "classifier" and i in self.taps:
                outs.append(self.heads[self.taps.index(i)](x) if self.heads is not None else x)
        if self.neck is not None:
            outs = self.neck(features)
            if self.heads is not None:
                outs = [head(y) for head, y in zip(self.heads, outs)]
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
