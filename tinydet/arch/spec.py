"""Architecture spec dataclasses and their YAML/JSON round trip (pure: no torch).

A backbone is a list of blocks. ``conv`` is conv-BN-ReLU6; ``mbconv`` is MobileNetV2's inverted
residual (1x1 expand -> kxk depthwise -> 1x1 linear projection, shortcut when stride 1 and
in == out unless ``residual: false``). Channels are given at width 1.0 and resolved with
torchvision's rounding rule, or taken as written with ``absolute_channels: true`` (published
networks whose channel counts follow no width rule). ``bn_eps`` is the network's BatchNorm eps;
``input_mean``/``input_std`` the per-channel normalisation the network expects of [0, 1] images
(the built module and every exported form apply it themselves, so inputs stay [0, 1] images).

A detector may add a ``neck`` between the backbone and the head: a graph of named nodes
(:class:`NeckNode`) that read backbone taps (``stride8``, ``stride16``, ...) or other nodes, and
``outputs`` (one per head scale). ``head`` (:class:`HeadLayout`) fixes the head's form per scale
as data; without it the head is today's (dw kxk -> 1x1 -> 1x1 out, sized by the config).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from tinydet.errors import TinydetError, closest
from tinydet.io.atomic import atomic_write_text

BLOCK_TYPES = ("conv", "mbconv")
NECK_TYPES = ("conv", "mbconv", "upsample", "maxpool", "add", "concat")
NECK_ACTS = ("relu6", "none")
HEAD_TEMPLATES = ("dw", "expand")  # dw kxk -> 1x1 -> out | 1x1 expand -> dw kxk -> 1x1 -> out


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never below 90%."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class BlockSpec:
    """One block. ``out`` is at width 1.0; ``fixed_width`` scales it by max(1, width_mult) instead
    (torchvision's last 1280-channel conv); ``residual=None`` means automatic."""

    type: str
    out: int
    kernel: int = 3
    stride: int = 1
    expand: int = 1
    residual: bool | None = None
    fixed_width: bool = False


@dataclass(frozen=True)
class HeadSpec:
    """YOLO-style head applied to each head input (``ArchSpec.head_from`` maps, or the neck's
    outputs). Template ``dw`` (today's): per scale a kxk depthwise conv, a 1x1 conv to
    ``channels``, and a 1x1 conv to anchors*(5+classes) outputs. Template ``expand`` (MCUNet
    person-det): a 1x1 expand conv to ``expand[j]`` channels first. ``scale_channels`` (per
    scale) overrides ``channels`` where given; both per-scale tuples come from a
    :class:`HeadLayout` (:meth:`HeadLayout.apply`)."""

    num_classes: int
    num_anchors: int = 3
    channels: int = 64
    kernel: int = 3
    template: str = "dw"
    expand: tuple[int, ...] = ()
    scale_channels: tuple[int, ...] = ()

    @property
    def out_channels(self) -> int:
        return self.num_anchors * (5 + self.num_classes)

    def channels_at(self, scale: int) -> int:
        """Channels of the 1x1 conv before the output conv at head scale ``scale``."""
        return self.scale_channels[scale] if self.scale_channels else self.channels


@dataclass(frozen=True)
class HeadLayout:
    """The head's form as architecture data: ``template`` (``dw`` | ``expand``), the depthwise
    ``kernel``, per scale the ``expand`` channels (template ``expand``) and the ``channels`` of
    the 1x1 conv before the output conv. Classes and anchors stay with the dataset/config."""

    template: str = "dw"
    kernel: int = 3
    expand: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()

    def apply(self, head: "HeadSpec") -> "HeadSpec":
        """``head`` (classes, anchors from the config) in this layout."""
        return replace(head, template=self.template, kernel=self.kernel, expand=tuple(self.expand),
                       scale_channels=tuple(self.channels))

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "kernel": self.kernel, "expand": list(self.expand),
                "channels": list(self.channels)}


@dataclass(frozen=True)
class NeckNode:
    """One neck node. ``inputs`` name backbone taps (``strideN``) or other nodes. ``conv``:
    conv-BN-act (kernel ``kernel``, ``out`` channels, ``act`` relu6 | none); ``mbconv``: an
    inverted residual (``expand``, ``kernel``, ``out``; shortcut when in == out unless
    ``residual: false``); ``upsample``: nearest x2; ``maxpool``: 2x2 stride 2; ``add``:
    element-wise sum of equal shapes; ``concat``: channel concatenation of equal sizes.
    All convs have stride 1: resolution changes only by ``upsample`` / ``maxpool``."""

    name: str
    type: str
    inputs: tuple[str, ...]
    out: int = 0
    kernel: int = 1
    expand: int = 1
    act: str = "relu6"
    residual: bool | None = None


@dataclass(frozen=True)
class NeckSpec:
    """Neck nodes (in any order: they run in dependency order) and the names that feed the head
    scales, in scale order (finest first)."""

    nodes: tuple[NeckNode, ...]
    outputs: tuple[str, ...]

    def node(self, name: str) -> NeckNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [_neck_node_to_dict(n) for n in self.nodes], "outputs": list(self.outputs)}


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and total stride of a named feature (a tap or a neck node), before any resolution."""

    channels: int
    stride: int


def feature_taps(blocks: "tuple[BlockSpec, ...] | list[BlockSpec]") -> dict[str, int]:
    """Named feature maps of a block list: ``strideN`` = the last block whose output has total
    stride N (the deepest map at that resolution, where detectors tap), in stride order."""
    taps: dict[str, int] = {}
    stride = 1
    for i, block in enumerate(blocks):
        stride *= block.stride
        taps[f"stride{stride}"] = i
    return taps


@dataclass(frozen=True)
class ArchSpec:
    """A whole backbone: blocks, width multiplier, rounding, and the maps that feed the head."""

    name: str
    blocks: tuple[BlockSpec, ...]
    width_mult: float = 1.0
    round_to: int = 8
    in_channels: int = 3
    head_from: tuple[int, ...] = ()
    num_classes: int = 0  # > 0 adds torchvision's classifier (global pool, dropout, linear)
    dropout: float = 0.2
    description: str = ""
    absolute_channels: bool = False  # True: ``out`` is the channel count itself (no width rule)
    bn_eps: float = 1e-5
    input_mean: tuple[float, ...] | None = None  # per input channel, on the [0, 1] scale
    input_std: tuple[float, ...] | None = None
    neck: NeckSpec | None = None
    head: HeadLayout | None = None

    @property
    def normalized(self) -> bool:
        """Whether the network normalises its [0, 1] input (a ``blocks.0.norm`` op in the graph)."""
        return self.input_mean is not None

    def channels(self, index: int) -> int:
        """Output channels of block ``index`` after the width multiplier and rounding."""
        block = self.blocks[index]
        if self.absolute_channels:
            return block.out
        mult = max(1.0, self.width_mult) if block.fixed_width else self.width_mult
        return make_divisible(block.out * mult, self.round_to)

    def in_channels_of(self, index: int) -> int:
        return self.in_channels if index == 0 else self.channels(index - 1)

    def shortcut_fits(self, index: int) -> bool:
        """Whether an identity shortcut is possible (mbconv, stride 1, in == out channels)."""
        block = self.blocks[index]
        return block.type == "mbconv" and block.stride == 1 and self.in_channels_of(index) == self.channels(index)

    def has_residual(self, index: int) -> bool:
        """Automatic (where the shapes allow one) unless the block says ``residual: false``."""
        fits = self.shortcut_fits(index)
        residual = self.blocks[index].residual
        return fits if residual is None else residual and fits

    def hidden_channels(self, index: int) -> int:
        """Channels after the expansion conv (torchvision: round(in * expand))."""
        return int(round(self.in_channels_of(index) * self.blocks[index].expand))

    @property
    def taps(self) -> dict[str, int]:
        """The named feature maps a head or neck can read (:func:`feature_taps`)."""
        return feature_taps(self.blocks)

    def feature_info(self) -> dict[str, FeatureInfo]:
        """Channels and stride of every tap and neck node (the neck's shapes checked on the way)."""
        return neck_features(self)

    @property
    def head_inputs(self) -> tuple[str, ...]:
        """Feature names the head scales read, finest first: the neck's outputs, or the taps of
        the ``head_from`` blocks."""
        if self.neck is not None:
            return self.neck.outputs
        names = {i: name for name, i in self.taps.items()}
        return tuple(names.get(i, f"blocks.{i}") for i in self.head_from)

    @property
    def num_scales(self) -> int:
        """Number of head scales (one anchor set and one output map each)."""
        return len(self.neck.outputs) if self.neck is not None else len(self.head_from)

    def scale_strides(self) -> list[int]:
        """Total stride of each head scale's input, in scale order."""
        if self.neck is None:
            strides, stride = [], 1
            for i, block in enumerate(self.blocks):
                stride *= block.stride
                if i in self.head_from:
                    strides.append(stride)
            return strides
        info = self.feature_info()
        return [info[name].stride for name in self.neck.outputs]

    def neck_channels(self, node: NeckNode) -> int:
        """Output channels of a conv/mbconv neck node after the width rule (as for blocks)."""
        if self.absolute_channels:
            return node.out
        return make_divisible(node.out * self.width_mult, self.round_to)

    @property
    def total_stride(self) -> int:
        stride = 1
        for block in self.blocks:
            stride *= block.stride
        return stride

    def with_width(self, width_mult: float) -> "ArchSpec":
        if self.absolute_channels and width_mult != 1.0:
            raise TinydetError(f"arch {self.name}: absolute_channels is set (published channel counts), "
                               f"so width_mult must stay 1.0, got {width_mult}")
        return replace(self, width_mult=width_mult)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocks"] = [_block_to_dict(b) for b in self.blocks]
        data["head_from"] = list(self.head_from)
        for key in ("input_mean", "input_std"):
            data[key] = list(data[key]) if data[key] is not None else None
        # neck-free specs keep today's keys only, so their files and schedule.json stay as they were
        for key, value in (("neck", self.neck), ("head", self.head)):
            if value is None:
                del data[key]
            else:
                data[key] = value.to_dict()
        return data


def _neck_node_to_dict(node: NeckNode) -> dict[str, Any]:
    """Only the fields that differ from the defaults (and ``out`` where the type has one)."""
    defaults = NeckNode(name=node.name, type=node.type, inputs=node.inputs)
    out: dict[str, Any] = {"name": node.name, "type": node.type, "inputs": list(node.inputs)}
    for f in fields(NeckNode):
        value = getattr(node, f.name)
        if f.name not in out and value != getattr(defaults, f.name):
            out[f.name] = value
    return out


def _block_to_dict(block: BlockSpec) -> dict[str, Any]:
    """Only the fields that differ from the defaults, so spec files stay short."""
    defaults = BlockSpec(type=block.type, out=block.out)
    out = {"type": block.type, "out": block.out}
    for f in fields(BlockSpec):
        value = getattr(block, f.name)
        if f.name not in out and value != getattr(defaults, f.name):
            out[f.name] = value
    return out


def _check_keys(data: dict, allowed: list[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise TinydetError(f"{where}: unknown key '{key}'{closest(str(key), allowed)}")


def _typed(value: Any, kind: type, where: str, what: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise TinydetError(f"{where}: expected {what}, got {value!r}")
    return value


def block_from_dict(data: Any, where: str) -> list[BlockSpec]:
    """Parse one block entry; ``repeat: n`` expands to n blocks (stride on the first only)."""
    if not isinstance(data, dict):
        raise TinydetError(f"{where}: expected a mapping with 'type' and 'out', got {data!r}")
    allowed = [f.name for f in fields(BlockSpec)] + ["repeat"]
    _check_keys(data, allowed, where)
    for required in ("type", "out"):
        if required not in data:
            raise TinydetError(f"{where}: missing required key '{required}'")
    if data["type"] not in BLOCK_TYPES:
        raise TinydetError(f"{where}.type: expected one of {', '.join(BLOCK_TYPES)}, got {data['type']!r}")
    kwargs = {k: v for k, v in data.items() if k != "repeat"}
    for key in ("out", "kernel", "stride", "expand"):
        if key in kwargs:
            _typed(kwargs[key], int, f"{where}.{key}", "a positive integer")
            if kwargs[key] < 1:
                raise TinydetError(f"{where}.{key}: expected a positive integer, got {kwargs[key]}")
    for key in ("residual", "fixed_width"):
        if key in kwargs and kwargs[key] is not None:
            _typed(kwargs[key], bool, f"{where}.{key}", "true or false")
    block = BlockSpec(**kwargs)
    if block.kernel % 2 == 0:
        raise TinydetError(f"{where}.kernel: expected an odd kernel size, got {block.kernel}")
    if block.stride not in (1, 2):
        raise TinydetError(f"{where}.stride: expected 1 or 2, got {block.stride}")
    repeat = _typed(data.get("repeat", 1), int, f"{where}.repeat", "a positive integer")
    if repeat < 1:
        raise TinydetError(f"{where}.repeat: expected a positive integer, got {repeat}")
    return [block] + [replace(block, stride=1) for _ in range(repeat - 1)]


def check_spec_values(spec: ArchSpec, source: str) -> None:
    """The spec's numbers within their ranges (NaN is in none), so that no MAC count, channel
    rounding or builder ever sees 0 channels, a 0 divisor or a negative class count."""
    import math

    ranges = (("width_mult", spec.width_mult, 0.0, False, "a positive number"),
              ("round_to", spec.round_to, 1, True, "a positive integer"),
              ("in_channels", spec.in_channels, 1, True, "a positive integer"),
              ("num_classes", spec.num_classes, 0, True, "an integer >= 0 (0 = no classifier)"))
    for key, value, lo, inclusive, what in ranges:
        if not math.isfinite(value) or value < lo or (value == lo and not inclusive):
            raise TinydetError(f"{source}: {key}: expected {what}, got {value!r}")
    if not (math.isfinite(spec.dropout) and 0 <= spec.dropout < 1):
        raise TinydetError(f"{source}: dropout: expected a number in [0, 1), got {spec.dropout!r}")


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ONE_INPUT = ("conv", "mbconv", "upsample", "maxpool")


def neck_node_from_dict(data: Any, where: str) -> NeckNode:
    """Parse one neck node entry (``name``, ``type``, ``inputs`` and the type's fields)."""
    if not isinstance(data, dict):
        raise TinydetError(f"{where}: expected a mapping with 'name', 'type' and 'inputs', got {data!r}")
    _check_keys(data, [f.name for f in fields(NeckNode)], where)
    for required in ("name", "type", "inputs"):
        if required not in data:
            raise TinydetError(f"{where}: missing required key '{required}'")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("stride"):
        raise TinydetError(f"{where}.name: expected an identifier (a letter, then letters, digits, _) not "
                           f"starting with 'stride' (tap names), got {name!r}")
    where = f"{where} (node '{name}')"
    kind = data["type"]
    if kind not in NECK_TYPES:
        raise TinydetError(f"{where}.type: expected one of {', '.join(NECK_TYPES)}, got {kind!r}"
                           f"{closest(str(kind), list(NECK_TYPES))}")
    inputs = data["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise TinydetError(f"{where}.inputs: expected a non-empty list of tap or node names, got {inputs!r}")
    if kind in _ONE_INPUT and len(inputs) != 1:
        raise TinydetError(f"{where}.inputs: a {kind} node reads exactly one input, got {len(inputs)}")
    if kind in ("add", "concat") and len(inputs) < 2:
        raise TinydetError(f"{where}.inputs: an {kind} node needs at least two inputs, got {list(inputs)}")
    kwargs: dict[str, Any] = {"name": name, "type": kind, "inputs": tuple(inputs)}
    has_conv = kind in ("conv", "mbconv")
    for key in ("out", "kernel", "expand"):
        if key in data:
            if not has_conv or (key == "expand" and kind != "mbconv"):
                raise TinydetError(f"{where}.{key}: a {kind} node has no '{key}'")
            value = _typed(data[key], int, f"{where}.{key}", "a positive integer")
            if value < 1:
                raise TinydetError(f"{where}.{key}: expected a positive integer, got {value}")
            kwargs[key] = value
    if has_conv and "out" not in data:
        raise TinydetError(f"{where}: missing required key 'out' (output channels of the {kind})")
    if kind == "mbconv" and "kernel" not in data:
        kwargs["kernel"] = 3
    if kwargs.get("kernel", 1) % 2 == 0:
        raise TinydetError(f"{where}.kernel: expected an odd kernel size, got {kwargs['kernel']}")
    if "act" in data:
        if kind != "conv" or data["act"] not in NECK_ACTS:
            raise TinydetError(f"{where}.act: expected one of {', '.join(NECK_ACTS)} on a conv node, got "
                               f"{data['act']!r} on a {kind}")
        kwargs["act"] = data["act"]
    if "residual" in data and data["residual"] is not None:
        if kind != "mbconv":
            raise TinydetError(f"{where}.residual: only an mbconv node has a shortcut")
        kwargs["residual"] = _typed(data["residual"], bool, f"{where}.residual", "true or false")
    return NeckNode(**kwargs)


def neck_from_dict(data: Any, source: str) -> NeckSpec:
    """Parse ``neck: {nodes: [...], outputs: [...]}`` (names checked; shapes by :func:`neck_features`)."""
    where = f"{source}: neck"
    if not isinstance(data, dict):
        raise TinydetError(f"{where}: expected a mapping with 'nodes' and 'outputs', got {data!r}")
    _check_keys(data, ["nodes", "outputs"], where)
    if not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise TinydetError(f"{where}.nodes: expected a non-empty list of neck nodes")
    nodes = tuple(neck_node_from_dict(n, f"{where}.nodes[{i}]") for i, n in enumerate(data["nodes"]))
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise TinydetError(f"{where}: node '{n.name}' is defined twice; expected unique node names")
        seen.add(n.name)
    outputs = data.get("outputs")
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise TinydetError(f"{where}.outputs: expected a non-empty list of node names (one per head scale), got {outputs!r}")
    for o in outputs:
        if o not in seen:
            raise TinydetError(f"{where}.outputs: unknown node '{o}'{closest(o, sorted(seen))}")
    if len(set(outputs)) != len(outputs):
        raise TinydetError(f"{where}.outputs: a node is listed twice in {outputs}")
    return NeckSpec(nodes, tuple(outputs))


def head_layout_from_dict(data: Any, source: str, scales: int) -> HeadLayout:
    """Parse ``head: {template, kernel, expand, channels}`` with one entry per head scale."""
    where = f"{source}: head"
    if not isinstance(data, dict):
        raise TinydetError(f"{where}: expected a mapping with 'template', 'kernel', 'expand', 'channels', got {data!r}")
    _check_keys(data, [f.name for f in fields(HeadLayout)], where)
    template = data.get("template", "dw")
    if template not in HEAD_TEMPLATES:
        raise TinydetError(f"{where}.template: expected one of {', '.join(HEAD_TEMPLATES)}, got {template!r}")
    kernel = _typed(data.get("kernel", 3), int, f"{where}.kernel", "an odd positive integer")
    if kernel < 1 or kernel % 2 == 0:
        raise TinydetError(f"{where}.kernel: expected an odd positive integer, got {kernel}")
    lists = {}
    for key in ("expand", "channels"):
        value = data.get(key, [])
        wanted = scales if key == "channels" or template == "expand" else 0
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                      for v in value)
        if not ok or len(value) != wanted:
            raise TinydetError(f"{where}.{key}: expected {wanted} positive channel counts (one per head scale"
                               f"{'' if wanted else '; template dw has no expand conv'}), got {value!r}")
        lists[key] = tuple(value)
    return HeadLayout(template, kernel, lists["expand"], lists["channels"])


def neck_order(neck: NeckSpec, taps: "Mapping[str, int] | Iterable[str]") -> list[NeckNode]:
    """The neck's nodes in execution order (each after its inputs; otherwise as listed). An input
    that is neither a tap nor a node, or a cycle, is a one-line TinydetError naming the node."""
    by_name = {n.name: n for n in neck.nodes}
    taps = set(taps)
    for n in neck.nodes:
        for i in n.inputs:
            if i not in by_name and i not in taps:
                raise TinydetError(f"neck node '{n.name}': unknown input '{i}'; expected a tap "
                                   f"({', '.join(sorted(taps))}) or a neck node{closest(i, sorted(taps | set(by_name)))}")
    order: list[NeckNode] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise TinydetError(f"neck node '{name}': its inputs form a cycle {' -> '.join(cycle)}; "
                               "expected every node to read only taps or earlier results")
        state[name] = 1
        for i in by_name[name].inputs:
            if i in by_name:
                visit(i, path + [name])
        state[name] = 2
        order.append(by_name[name])

    for n in neck.nodes:
        visit(n.name, [])
    return order


def neck_features(spec: "ArchSpec") -> dict[str, FeatureInfo]:
    """Channels and stride of every tap and (in execution order) every neck node. A shape
    mismatch (``add`` of different channels or strides, ``concat`` of different strides,
    ``upsample`` above the input resolution) is a one-line TinydetError naming the node."""
    info: dict[str, FeatureInfo] = {}
    stride = 1
    for i, block in enumerate(spec.blocks):
        stride *= block.stride
        info[f"blocks.{i}"] = FeatureInfo(spec.channels(i), stride)
    for name, i in spec.taps.items():
        info[name] = info[f"blocks.{i}"]
    if spec.neck is None:
        return info
    for n in neck_order(spec.neck, spec.taps):
        ins = [info[i] for i in n.inputs]
        at = f"neck node '{n.name}' ({n.type})"
        if n.type in ("conv", "mbconv"):
            info[n.name] = FeatureInfo(spec.neck_channels(n), ins[0].stride)
            if n.type == "mbconv" and n.residual and ins[0].channels != info[n.name].channels:
                raise TinydetError(f"{at}: residual: true needs equal input and output channels, got "
                                   f"{ins[0].channels} -> {info[n.name].channels}")
        elif n.type == "upsample":
            if ins[0].stride < 2:
                raise TinydetError(f"{at}: input '{n.inputs[0]}' is at stride {ins[0].stride}; upsampling x2 "
                                   "would exceed the input resolution")
            info[n.name] = FeatureInfo(ins[0].channels, ins[0].stride // 2)
        elif n.type == "maxpool":
            info[n.name] = FeatureInfo(ins[0].channels, ins[0].stride * 2)
        else:
            shapes = ", ".join(f"{i} {f.channels} ch stride {f.stride}" for i, f in zip(n.inputs, ins))
            if len({f.stride for f in ins}) > 1 or (n.type == "add" and len({f.channels for f in ins}) > 1):
                need = "equal channels and strides" if n.type == "add" else "equal strides"
                raise TinydetError(f"{at}: shape mismatch of its inputs ({shapes}); expected {need}")
            channels = ins[0].channels if n.type == "add" else sum(f.channels for f in ins)
            info[n.name] = FeatureInfo(channels, ins[0].stride)
    return info


def neck_taps(neck: NeckSpec, taps: Mapping[str, int]) -> tuple[int, ...]:
    """Backbone blocks the neck reads (sorted): the ``head_from`` of a spec with a neck."""
    return tuple(sorted({taps[i] for n in neck.nodes for i in n.inputs if i in taps}))


def spec_from_dict(data: Any, source: str = "<spec>") -> ArchSpec:
    """Validate and build an :class:`ArchSpec`; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise TinydetError(f"{source}: expected a mapping with 'name' and 'blocks', got {type(data).__name__}")
    _check_keys(data, [f.name for f in fields(ArchSpec)], source)
    if not isinstance(data.get("blocks"), list) or not data["blocks"]:
        raise TinydetError(f"{source}: 'blocks' must be a non-empty list of blocks")
    blocks: list[BlockSpec] = []
    for i, entry in enumerate(data["blocks"]):
        blocks.extend(block_from_dict(entry, f"{source}: blocks[{i}]"))
    width = _typed(data.get("width_mult", 1.0), float, f"{source}: width_mult", "a positive number")
    head_from = data.get("head_from", [])
    if not isinstance(head_from, (list, tuple)) or not all(isinstance(i, (int, str)) for i in head_from):
        raise TinydetError(f"{source}: head_from: expected a list of block indices or tap names "
                           f"(e.g. stride16), got {head_from!r}")
    taps = feature_taps(blocks)
    for i in head_from:
        if isinstance(i, str) and i not in taps:
            raise TinydetError(f"{source}: head_from: unknown tap '{i}'; expected a block index or one of "
                               f"{', '.join(taps)}{closest(i, list(taps))}")
    head_from = [taps[i] if isinstance(i, str) else i for i in head_from]
    for i in head_from:
        if not -len(blocks) <= i < len(blocks):
            raise TinydetError(f"{source}: head_from: block index {i} out of range (0..{len(blocks) - 1})")
    head_from = tuple(sorted(i % len(blocks) for i in head_from))
    neck = neck_from_dict(data["neck"], source) if data.get("neck") is not None else None
    if neck is not None:
        # with a neck, head_from is what the neck reads (so tools that ask "which blocks are used"
        # keep working); given explicitly it must say the same
        read = neck_taps(neck, taps)
        if data.get("head_from") and read and head_from != read:
            raise TinydetError(f"{source}: head_from: with a neck it lists the blocks the neck reads, "
                               f"{list(read)}; got {list(head_from)} (leave it out)")
        head_from = read
    scales = len(neck.outputs) if neck is not None else len(head_from)
    head = head_layout_from_dict(data["head"], source, scales) if data.get("head") is not None else None
    absolute = _typed(data.get("absolute_channels", False), bool, f"{source}: absolute_channels", "true or false")
    if absolute and width != 1.0:
        raise TinydetError(f"{source}: width_mult: absolute_channels is true, so width_mult must be 1.0, got {width}")
    bn_eps = _typed(data.get("bn_eps", 1e-5), float, f"{source}: bn_eps", "a positive number")
    if not 0 < bn_eps < 1:
        raise TinydetError(f"{source}: bn_eps: expected a number in (0, 1), got {bn_eps}")
    in_channels = _typed(data.get("in_channels", 3), int, f"{source}: in_channels", "a positive integer")
    mean, std = _normalisation(data, in_channels, source)
    spec = ArchSpec(
        name=str(data.get("name", Path(source).stem)),
        blocks=tuple(blocks),
        width_mult=width,
        round_to=_typed(data.get("round_to", 8), int, f"{source}: round_to", "a positive integer"),
        in_channels=in_channels,
        head_from=head_from,
        num_classes=_typed(data.get("num_classes", 0), int, f"{source}: num_classes", "an integer >= 0"),
        dropout=_typed(data.get("dropout", 0.2), float, f"{source}: dropout", "a number in [0, 1)"),
        description=str(data.get("description", "")),
        absolute_channels=absolute,
        bn_eps=bn_eps,
        input_mean=mean,
        input_std=std,
        neck=neck,
        head=head,
    )
    check_spec_values(spec, source)
    if neck is not None:
        try:
            neck_features(spec)
        except TinydetError as exc:
            raise TinydetError(f"{source}: {exc}") from None
    if spec.blocks[0].type != "conv":
        raise TinydetError(f"{source}: blocks[0].type: the first block must be a 'conv' (the stem), got {spec.blocks[0].type!r}")
    for i, block in enumerate(spec.blocks):
        if block.residual and not spec.shortcut_fits(i):
            raise TinydetError(f"{source}: blocks[{i}].residual: true needs an mbconv with stride 1 and equal input "
                               f"and output channels, got {block.type} stride {block.stride} "
                               f"{spec.in_channels_of(i)} -> {spec.channels(i)} channels")
    return spec


def _normalisation(data: dict, in_channels: int, source: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``input_mean``/``input_std``: both or neither, one number per input channel, std > 0."""
    given = [key for key in ("input_mean", "input_std") if data.get(key) is not None]
    if len(given) == 1:
        missing = "input_std" if given[0] == "input_mean" else "input_mean"
        raise TinydetError(f"{source}: {given[0]} is set but {missing} is not; give both (one value per input channel)")
    if not given:
        return None, None
    out = []
    for key in ("input_mean", "input_std"):
        value = data[key]
        ok = isinstance(value, (list, tuple)) and len(value) == in_channels and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok:
            raise TinydetError(f"{source}: {key}: expected a list of {in_channels} numbers (one per input channel, "
                               f"on the [0, 1] image scale), got {value!r}")
        if key == "input_std" and not all(v > 0 for v in value):
            raise TinydetError(f"{source}: input_std: expected positive numbers, got {value!r}")
        out.append(tuple(float(v) for v in value))
    return out[0], out[1]


def load_spec(path: str | Path) -> ArchSpec:
    """Read a spec from a .yaml/.yml/.json file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read spec file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", getattr(exc, "lineno", None))
        at = f" line {line + 1 if hasattr(exc, 'problem_mark') else line}" if line is not None else ""
        raise TinydetError(f"{path}:{at} malformed {'JSON' if path.suffix == '.json' else 'YAML'}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("arch"), dict):
        data = data["arch"]  # a search result file carries the spec under 'arch'
    return spec_from_dict(data, str(path))


def save_spec(spec: ArchSpec, path: str | Path) -> None:
    """Write ``spec`` as YAML or JSON (by suffix); ``load_spec`` reads it back unchanged."""
    import yaml

    path = Path(path)
    data = spec.to_dict()
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(path, text)
