"""Weight-sharing supernet (Once-for-All style) over a :class:`~tinydet.nas.space.SearchSpace`.

The supernet holds the largest network of the space (deepest stages, 7x7 depthwise kernels,
largest expand ratio, widest width multiplier). A candidate runs a slice of it:

- elastic depth: stage s runs its first ``depth`` blocks;
- elastic kernel: a kxk depthwise kernel is the centre crop of the largest kernel;
- elastic expand and width: every convolution uses the first ``c_out`` filters and the first
  ``c_in`` input channels, BatchNorm the first ``c_out`` entries (so channel counts follow the
  candidate's ArchSpec exactly: ``spec.channels`` / ``spec.hidden_channels``);
- elastic resolution: the network is fully convolutional.

Module paths mirror :class:`tinydet.arch.modules.Network` (``blocks.<slot>.expand.conv``), and
:func:`extract` copies a candidate's slices into a standalone ``tinydet.arch.build(spec, head)``
network that computes exactly what the supernet computes for that candidate.

The supernet ends in a detection head (:class:`~tinydet.arch.spec.HeadSpec`) or, for ``task:
classify``, in a classifier (:class:`~tinydet.nas.space.ClassifierHead`: global average pool +
fully connected over the first ``c`` inputs, the candidate's last block width).
"""
from __future__ import annotations

import random
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tinydet.arch.modules import Network, build
from tinydet.arch.spec import ArchSpec, HeadSpec
from tinydet.nas.space import Candidate, ClassifierHead, SearchSpace


class ElasticConvBN(nn.Module):
    """Conv2d (+ BatchNorm) (+ ReLU6) at its largest size, run on a channel/kernel slice."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                 act: bool = True, bn: bool = True):
        super().__init__()
        self.depthwise = depthwise
        self.stride = stride
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=c_in if depthwise else 1,
                              bias=not bn)
        self.bn = nn.BatchNorm2d(c_out) if bn else None
        self.act = act
        # set by Supernet.recalibrate(): None = normal training; t > 0 = cumulative average, batch t
        self.recal_step: int | None = None

    def weight_slice(self, c_in: int, c_out: int, kernel: int) -> torch.Tensor:
        w = self.conv.weight
        w = w[:c_out] if self.depthwise else w[:c_out, :c_in]
        big = w.shape[-1]
        if kernel < big:
            lo = (big - kernel) // 2  # centre crop: smaller kernels share the largest one's centre
            w = w[:, :, lo:lo + kernel, lo:lo + kernel]
        return w

    def forward(self, x: torch.Tensor, c_out: int, kernel: int | None = None) -> torch.Tensor:
        c_in = x.shape[1]
        kernel = self.conv.kernel_size[0] if kernel is None else kernel
        w = self.weight_slice(c_in, c_out, kernel)
        bias = self.conv.bias[:c_out] if self.conv.bias is not None else None
        y = F.conv2d(x, w, bias, self.stride, (kernel - 1) // 2, 1, c_in if self.depthwise else 1)
        if self.bn is not None:
            bn = self.bn
            if self.recal_step is not None:
                momentum, training = 1.0 / self.recal_step, True
            else:
                momentum, training = bn.momentum, self.training
            # slices of the running buffers are views: training updates only the used channels
            y = F.batch_norm(y, bn.running_mean[:c_out], bn.running_var[:c_out], bn.weight[:c_out],
                             bn.bias[:c_out], training, momentum, bn.eps)
        return F.relu6(y) if self.act else y


class ElasticBlock(nn.Module):
    """An inverted-residual block (or the stem conv) at its largest size."""

    def __init__(self, kind: str, c_in: int, c_out: int, hidden: int, kernel: int, stride: int):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.conv = ElasticConvBN(c_in, c_out, kernel, stride)
        else:
            self.expand = ElasticConvBN(c_in, hidden) if hidden != c_in else None
            self.dw = ElasticConvBN(hidden, hidden, kernel, stride, depthwise=True)
            self.project = ElasticConvBN(hidden, c_out, act=False)


class ElasticHead(nn.Module):
    """One head scale (depthwise kxk, 1x1 to head channels, 1x1 to outputs); only its input
    channels are elastic."""

    def __init__(self, c_in: int, head: HeadSpec):
        super().__init__()
        self.dw = ElasticConvBN(c_in, c_in, head.kernel, depthwise=True)
        self.pw = ElasticConvBN(c_in, head.channels)
        self.out = ElasticConvBN(head.channels, head.out_channels, act=False, bn=False)


class ElasticClassifier(nn.Module):
    """Global average pool + fully connected at the largest input width; runs on the first ``c`` inputs."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(pooled, self.fc.weight[:, :x.shape[1]], self.fc.bias)


class Supernet(nn.Module):
    """The largest network of ``space`` with a detection ``head`` (or a :class:`ClassifierHead`);
    ``forward(x, cand)`` runs the sub-network ``cand`` and returns the raw head maps (or
    ``[logits]``) like :class:`tinydet.arch.modules.Network`."""

    def __init__(self, space: SearchSpace, head: "HeadSpec | ClassifierHead"):
        super().__init__()
        self.space = space
        self.head_spec = head
        self.max_spec = space.largest().to_spec(space, "supernet")
        spec = self.max_spec
        blocks = []
        for i, b in enumerate(spec.blocks):
            blocks.append(ElasticBlock(b.type, spec.in_channels_of(i), spec.channels(i), spec.hidden_channels(i),
                                       b.kernel, b.stride))
        self.blocks = nn.ModuleList(blocks)
        self.is_classifier = isinstance(head, ClassifierHead)
        if self.is_classifier:
            self.heads = None
            self.classifier = ElasticClassifier(spec.channels(len(spec.blocks) - 1), head.num_classes)
        else:
            self.heads = nn.ModuleList([ElasticHead(spec.channels(i), head) for i in spec.head_from])
        _init_like_network(self)

    def forward(self, x: torch.Tensor, cand: Candidate) -> list[torch.Tensor]:
        spec = cand.to_spec(self.space)
        slots = self.space.slot_of(cand.depths)
        outs = []
        for i, (b, slot) in enumerate(zip(spec.blocks, slots)):
            block = self.blocks[slot]
            c_out = spec.channels(i)
            if b.type == "conv":
                x = block.conv(x, c_out, b.kernel)
            else:
                y = block.expand(x, spec.hidden_channels(i)) if block.expand is not None else x
                y = block.dw(y, spec.hidden_channels(i), b.kernel)
                y = block.project(y, c_out)
                x = x + y if spec.has_residual(i) else y
            if not self.is_classifier and i in spec.head_from:
                h = self.heads[spec.head_from.index(i)]
                y = h.dw(x, c_out)
                y = h.pw(y, self.head_spec.channels)
                outs.append(h.out(y, self.head_spec.out_channels))
        if self.is_classifier:
            outs.append(self.classifier(x))
        return outs

    def elastic_layers(self) -> Iterator[ElasticConvBN]:
        return (m for m in self.modules() if isinstance(m, ElasticConvBN))

    @torch.no_grad()
    def recalibrate(self, cand: Candidate, batches: Iterable[torch.Tensor]) -> int:
        """Re-estimate BatchNorm statistics for ``cand`` (the shared running statistics belong to
        no single sub-network): a cumulative average over ``batches``. Returns the batch count."""
        was_training = self.training
        self.eval()
        for m in self.elastic_layers():
            if m.bn is not None:
                m.bn.running_mean.zero_()
                m.bn.running_var.fill_(1.0)
        n = 0
        try:
            for n, images in enumerate(batches, 1):
                for m in self.elastic_layers():
                    m.recal_step = n
                self(images, cand)
        finally:
            for m in self.elastic_layers():
                m.recal_step = None
            self.train(was_training)
        return n


def sandwich(space: SearchSpace, rng: random.Random, n_random: int = 2) -> list[Candidate]:
    """The sub-networks of one training step: largest, smallest and ``n_random`` random ones
    (the sandwich rule of slimmable networks / BigNAS)."""
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n_random)]


@torch.no_grad()
def extract(supernet: Supernet, cand: Candidate, name: str = "searched") -> Network:
    """A standalone ``tinydet.arch.build(spec, head)`` network with ``cand``'s weights and
    BatchNorm statistics copied out of ``supernet`` (same outputs in eval mode)."""
    from dataclasses import replace

    space = supernet.space
    spec: ArchSpec = cand.to_spec(space, name)
    if supernet.is_classifier:
        spec = replace(spec, num_classes=supernet.head_spec.num_classes)
        net = Network(spec, classifier=True)
    else:
        net = build(spec, head=supernet.head_spec)
    slots = space.slot_of(cand.depths)
    for i, (b, slot) in enumerate(zip(spec.blocks, slots)):
        src, dst = supernet.blocks[slot], net.blocks[i]
        c_in, c_out, kernel = spec.in_channels_of(i), spec.channels(i), b.kernel
        if b.type == "conv":
            _copy(src.conv, dst.conv, c_in, c_out, kernel)
            continue
        hidden = spec.hidden_channels(i)
        if dst.expand is not None:
            _copy(src.expand, dst.expand, c_in, hidden, 1)
        _copy(src.dw, dst.dw, hidden, hidden, kernel)
        _copy(src.project, dst.project, hidden, c_out, 1)
    if supernet.is_classifier:
        c = spec.channels(len(spec.blocks) - 1)
        net.classifier.fc.weight.copy_(supernet.classifier.fc.weight[:, :c])
        net.classifier.fc.bias.copy_(supernet.classifier.fc.bias)
        return net
    for j, i in enumerate(spec.head_from):
        src, dst, c = supernet.heads[j], net.heads[j], spec.channels(i)
        _copy(src.dw, dst.dw, c, c, supernet.head_spec.kernel)
        _copy(src.pw, dst.pw, c, supernet.head_spec.channels, 1)
        _copy(src.out, dst.out, supernet.head_spec.channels, supernet.head_spec.out_channels, 1)
    return net


def _copy(src: ElasticConvBN, dst: nn.Module, c_in: int, c_out: int, kernel: int) -> None:
    """Copy one elastic layer's slice into a ``ConvBNAct`` of the built network."""
    dst.conv.weight.copy_(src.weight_slice(c_in, c_out, kernel))
    if src.conv.bias is not None:
        dst.conv.bias.copy_(src.conv.bias[:c_out])
    if src.bn is not None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst.bn, name).copy_(getattr(src.bn, name)[:c_out])
        dst.bn.num_batches_tracked.copy_(src.bn.num_batches_tracked)


def _init_like_network(model: nn.Module) -> None:
    """The same initialisation as ``tinydet.arch.build`` (torchvision MobileNetV2's)."""
    from tinydet.arch.modules import _init_weights

    _init_weights(model)
