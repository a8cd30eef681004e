"""Lower an :class:`ArchSpec` to a flat list of ops with concrete shapes (pure: no torch).

This op list is the one view of a network that the memory model, the receptive-field/patch
arithmetic, the profiler and the exporter share. Op names are the module paths of the
``nn.Module`` that :func:`tinydet.arch.modules.build` makes, so executors can look modules up.
Shapes are (C, H, W); activations are int8, so a tensor costs C*H*W bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from tinydet.arch.spec import ArchSpec, HeadSpec, NeckNode, neck_order
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
    """One layer. ``kind`` is conv | dwconv | gap | fc, or a neck op without weights: upsample
    (nearest x2), maxpool (2x2 stride 2), add (element-wise sum of ``inputs``), concat (channels of
    ``inputs`` in order). ``add`` names a tensor added to the output (the inverted-residual
    shortcut, fused into the projection conv). ``in_shape`` is the first input's shape."""

    name: str
    kind: str
    role: str  # norm (input normalisation), conv, expand, dw, project, head_expand, head_dw, head_pw,
    # head_out, gap, fc; in the neck: neck_conv, neck_expand, neck_dw, neck_project, upsample, maxpool, add, concat
    block: int  # backbone block index; -1 for neck, head and classifier ops
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


WEIGHTLESS_KINDS = ("upsample", "maxpool", "add", "concat", "gap")  # ops without weights


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

    With ``head`` the graph is the detector (blocks up to the last ``head_from`` map, then the
    neck if the spec has one, one head per scale, run right after the op that makes its input).
    Otherwise, when the spec has a classifier and ``classifier`` is not False, the whole
    classification network; else the backbone alone (with its neck, whose outputs it returns).
    The spec's :class:`HeadLayout`, when it has one, sets the head's form over ``head``'s.
    """
    h, w = parse_resolution(resolution)
    if head is not None and not spec.head_from:
        raise TinydetError(f"arch {spec.name}: head_from is empty, so no head can be attached")
    if head is not None and spec.head is not None:
        head = spec.head.apply(head)
    mode = "detector" if head is not None else ("classifier" if spec.num_classes and classifier is not False else "backbone")
    neck = spec.neck if mode != "classifier" else None
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
        srcs = (src,) if isinstance(src, str) else tuple(src)
        c_in, hi, wi = tensors[srcs[0]].shape
        pad = (kernel - 1) // 2 if kind in ("conv", "dwconv") else 0
        if kind == "gap":
            out = (c_in, 1, 1)
        elif kind == "fc":
            out = (c_out, 1, 1)
        elif kind == "upsample":
            out = (c_in, 2 * hi, 2 * wi)
        elif kind in ("add", "concat"):
            out = (c_in if kind == "add" else sum(tensors[t].shape[0] for t in srcs), hi, wi)
        else:  # conv, dwconv, maxpool (kernel 2, stride 2, no padding: floor like PyTorch and TFLite VALID)
            out = (c_out, conv_out_size(hi, kernel, stride, pad, pad), conv_out_size(wi, kernel, stride, pad, pad))
        tensors[name] = Tensor(name, out)
        ops.append(Op(name, kind, role, block, srcs, name, (c_in, hi, wi), out, kernel, stride, pad,
                      groups, act, add, bias))
        return name

    def add_head(j: int, x: str) -> None:
        c_in = tensors[x].shape[0]
        if head.template == "expand":
            x = add_op(f"heads.{j}.expand", "conv", "head_expand", -1, x, head.expand[j])
            c_in = head.expand[j]
        y = add_op(f"heads.{j}.dw", "dwconv", "head_dw", -1, x, c_in, head.kernel, 1, groups=c_in)
        y = add_op(f"heads.{j}.pw", "conv", "head_pw", -1, y, head.channels_at(j))
        y = add_op(f"heads.{j}.out", "conv", "head_out", -1, y, head.out_channels, act="none", bias=True)
        outputs[j] = y

    def add_neck_node(node: NeckNode, feature: dict[str, str]) -> str:
        prefix = f"neck.{node.name}"
        srcs = [feature[i] for i in node.inputs]
        if node.type == "conv":
            return add_op(prefix, "conv", "neck_conv", -1, srcs[0], spec.neck_channels(node), node.kernel, act=node.act)
        if node.type == "mbconv":
            x, c_in = srcs[0], tensors[srcs[0]].shape[0]
            c_out = spec.neck_channels(node)
            hidden = int(round(c_in * node.expand))
            shortcut = x if c_in == c_out and node.residual is not False else None
            if node.expand != 1:
                x = add_op(f"{prefix}.expand", "conv", "neck_expand", -1, x, hidden)
            x = add_op(f"{prefix}.dw", "dwconv", "neck_dw", -1, x, hidden, node.kernel, 1, groups=hidden)
            return add_op(f"{prefix}.project", "conv", "neck_project", -1, x, c_out, act="none", add=shortcut)
        if node.type == "maxpool":
            return add_op(prefix, "maxpool", "maxpool", -1, srcs[0], tensors[srcs[0]].shape[0], 2, 2, act="none")
        if node.type in ("add", "concat"):
            shapes = [tensors[t].shape for t in srcs]
            sizes = {s[1:] for s in shapes}
            if len(sizes) > 1 or (node.type == "add" and len(set(shapes)) > 1):
                listed = ", ".join(f"{i} {'x'.join(map(str, s))}" for i, s in zip(node.inputs, shapes))
                raise TinydetError(f"neck node '{node.name}' ({node.type}): input shapes differ at resolution {h}x{w} "
                                   f"({listed}, C x H x W); expected a resolution divisible by the total stride "
                                   f"{spec.total_stride}")
        return add_op(prefix, node.type, node.type, -1, srcs, 0, act="none")

    scales = spec.num_scales if mode != "classifier" else 0
    outputs: list = [None] * scales
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
        if mode == "detector" and neck is None and i in spec.head_from:
            add_head(spec.head_from.index(i), x)
    if neck is not None:
        feature = {name: ops[graph_block_last(ops, b)].output for name, b in spec.taps.items() if b <= last_block}
        for node in neck_order(neck, feature):
            feature[node.name] = add_neck_node(node, feature)
            if mode == "detector" and node.name in neck.outputs:
                add_head(neck.outputs.index(node.name), feature[node.name])
        if mode == "backbone":
            outputs = [feature[name] for name in neck.outputs]
    if mode == "classifier":
        x = add_op("classifier.pool", "gap", "gap", -1, x, 0, act="none")
        x = add_op("classifier.fc", "fc", "fc", -1, x, spec.num_classes, act="none", bias=True)
        outputs.append(x)
    elif mode == "backbone" and neck is None:
        outputs = [f"blocks.{i}.{'conv' if spec.blocks[i].type == 'conv' else 'project'}" for i in (spec.head_from or (last_block,))]
    return Graph(spec.name, (h, w), ops, tensors, outputs, mode=mode)


def graph_block_last(ops: Sequence[Op], block: int) -> int:
    """Index of the last op of backbone block ``block`` in ``ops`` (its output is the block's)."""
    return max(i for i, op in enumerate(ops) if op.block == block)
