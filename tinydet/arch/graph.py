"""Lower an :class:`ArchSpec` to a flat list of ops with concrete shapes (pure: no torch).

This op list is the one view of a network that the memory model, the receptive-field/patch
arithmetic, the profiler and the exporter share. Op names are the module paths of the
``nn.Module`` that :func:`tinydet.arch.modules.build` makes, so executors can look modules up.
Shapes are (C, H, W); activations are int8, so a tensor costs C*H*W bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from tinydet.arch.spec import ArchSpec, HeadSpec
from tinydet.errors import TinydetError
from tinydet.geometry import conv_out_size

Shape = tuple[int, int, int]


def parse_resolution(value: "int | str | Sequence[int]") -> tuple[int, int]:
    """``224``, ``"224"``, ``"160x192"`` (H x W) or ``(160, 192)`` -> (H, W)."""
    try:
        if isinstance(value, int):
            h = w = value
        elif isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        else:
            h, w = (int(value[0]), int(value[1]))
    except (ValueError, TypeError, IndexError):
        raise TinydetError(f"resolution: expected N or HxW (e.g. 224 or 160x192), got {value!r}") from None
    if h < 1 or w < 1:
        raise TinydetError(f"resolution: expected positive sizes, got {h}x{w}")
    return h, w


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: Shape

    @property
    def nbytes(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass(frozen=True)
class Op:
    """One layer. ``kind`` is conv | dwconv | gap | fc. ``add`` names a tensor added to the output
    (the inverted-residual shortcut, fused into the projection conv)."""

    name: str
    kind: str
    role: str  # norm (input normalisation), conv, expand, dw, project, head_dw, head_pw, head_out, gap, fc
    block: int  # backbone block index; -1 for head and classifier ops
    inputs: tuple[str, ...]
    output: str
    in_shape: Shape
    out_shape: Shape
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    act: str = "none"
    add: str | None = None
    bias: bool = False  # a real bias in the float model (head output conv, fc); BN folds one in anyway

    @property
    def macs(self) -> int:
        c_out, h_out, w_out = self.out_shape
        c_in = self.in_shape[0]
        if self.kind in ("conv", "dwconv"):
            return h_out * w_out * c_out * self.kernel * self.kernel * (c_in // self.groups)
        if self.kind == "fc":
            return c_in * c_out
        return 0

    @property
    def weight_count(self) -> int:
        """Weights (without bias) of the deployed op."""
        c_in, c_out = self.in_shape[0], self.out_shape[0]
        if self.kind in ("conv", "dwconv"):
            return c_out * self.kernel * self.kernel * (c_in // self.groups)
        if self.kind == "fc":
            return c_in * c_out
        return 0


@dataclass
class Graph:
    """A network as ops in execution order; ``outputs`` are the tensors the caller reads."""

    arch: str
    resolution: tuple[int, int]
    ops: list[Op]
    tensors: dict[str, Tensor]
    outputs: list[str]
    input: str = "input"
    mode: str = "backbone"  # backbone | classifier | detector
    extra: dict = field(default_factory=dict)

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    def block_end(self, block: int) -> int:
        """Index (in ``ops``) one past the last op of backbone block ``block``."""
        last = max(i for i, op in enumerate(self.ops) if op.block == block)
        return last + 1

    @property
    def num_blocks(self) -> int:
        return 1 + max(op.block for op in self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)


def lower(spec: ArchSpec, resolution: "int | str | Sequence[int]", head: HeadSpec | None = None,
          classifier: bool | None = None) -> Graph:
    """Flatten ``spec`` at ``resolution``.

    With ``head`` the graph is the detector (blocks up to the last ``head_from`` map, one head per
    map, run right after the block that makes it). Otherwise, when the spec has a classifier and
    ``classifier`` is not False, the whole classification network; else the backbone alone.
    """
    h, w = parse_resolution(resolution)
    if head is not None and not spec.head_from:
        raise TinydetError(f"arch {spec.name}: head_from is empty, so no head can be attached")
    mode = "detector" if head is not None else ("classifier" if spec.num_classes and classifier is not False else "backbone")
    last_block = max(spec.head_from) if mode == "detector" else len(spec.blocks) - 1
    stride = 1
    for block in spec.blocks[: last_block + 1]:
        stride *= block.stride
    if h < stride or w < stride:
        raise TinydetError(f"resolution {h}x{w} is too small for arch {spec.name}: its total stride is {stride}, "
                           f"so each side must be at least {stride}")

    tensors: dict[str, Tensor] = {"input": Tensor("input", (spec.in_channels, h, w))}
    ops: list[Op] = []

    def add_op(name, kind, role, block, src, c_out, kernel=1, stride=1, groups=1, act="relu6", add=None, bias=False):
        c_in, hi, wi = tensors[src].shape
        pad = (kernel - 1) // 2 if kind in ("conv", "dwconv") else 0
        if kind == "gap":
            out = (c_in, 1, 1)
        elif kind == "fc":
            out = (c_out, 1, 1)
        else:
            out = (c_out, conv_out_size(hi, kernel, stride, pad, pad), conv_out_size(wi, kernel, stride, pad, pad))
        tensors[name] = Tensor(name, out)
        ops.append(Op(name, kind, role, block, (src,), name, (c_in, hi, wi), out, kernel, stride, pad,
                      groups, act, add, bias))
        return name

    outputs: list[str] = []
    x = "input"
    for i, block in enumerate(spec.blocks[: last_block + 1]):
        c_out = spec.channels(i)
        prefix = f"blocks.{i}"
        if i == 0 and spec.normalized:
            # (x - mean) / std as a 1x1 depthwise conv with a bias: an ordinary op for the memory model,
            # planner, export, int8 and firmware, and exact at the border because the stem then
            # zero-pads the normalised image (folding it into the stem would pad the raw image instead)
            x = add_op(f"{prefix}.norm", "dwconv", "norm", i, x, spec.in_channels, groups=spec.in_channels,
                       act="none", bias=True)
        if block.type == "conv":
            x = add_op(f"{prefix}.conv", "conv", "conv", i, x, c_out, block.kernel, block.stride)
        else:
            shortcut = x if spec.has_residual(i) else None
            hidden = spec.hidden_channels(i)
            if block.expand != 1:
                x = add_op(f"{prefix}.expand", "conv", "expand", i, x, hidden)
            x = add_op(f"{prefix}.dw", "dwconv", "dw", i, x, hidden, block.kernel, block.stride, groups=hidden)
            x = add_op(f"{prefix}.project", "conv", "project", i, x, c_out, act="none", add=shortcut)
        if mode == "detector" and i in spec.head_from:
            j = spec.head_from.index(i)
            y = add_op(f"heads.{j}.dw", "dwconv", "head_dw", -1, x, c_out, head.kernel, 1, groups=c_out)
            y = add_op(f"heads.{j}.pw", "conv", "head_pw", -1, y, head.channels)
            y = add_op(f"heads.{j}.out", "conv", "head_out", -1, y, head.out_channels, act="none", bias=True)
            outputs.append(y)
    if mode == "classifier":
        x = add_op("classifier.pool", "gap", "gap", -1, x, 0, act="none")
        x = add_op("classifier.fc", "fc", "fc", -1, x, spec.num_classes, act="none", bias=True)
        outputs.append(x)
    elif mode == "backbone":
        outputs = [f"blocks.{i}.{'conv' if spec.blocks[i].type == 'conv' else 'project'}" for i in (spec.head_from or (last_block,))]
    return Graph(spec.name, (h, w), ops, tensors, outputs, mode=mode)
