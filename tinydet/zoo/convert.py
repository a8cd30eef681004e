"""Source networks as records, and their conversion into a tinydet spec and state_dict.

Every importer (MCUNet net_config, torchvision, timm) reduces its network to a
:class:`SourceNet`: blocks in the spec's vocabulary, each naming the state_dict key prefixes of
its convolutions and BatchNorms in execution order. :func:`convert` then builds the spec, copies
every tensor to its tinydet key (shapes checked), and proves the result complete by loading it
into ``tinydet.arch.build(spec)`` with strict=True. Nothing here knows a source library.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from tinydet.arch.presets import detection_taps
from tinydet.arch.spec import ArchSpec, BlockSpec
from tinydet.errors import TinydetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class SourceLayer:
    """One conv + BatchNorm of the source: key prefixes of its Conv2d and its BatchNorm2d."""

    conv: str
    bn: str


@dataclass(frozen=True)
class SourceBlock:
    """One block: ``block`` in spec terms (absolute channels; ``residual`` True/False as the
    source has it) and its layers (stem/mix: one; mbconv: [expand,] depthwise, projection)."""

    block: BlockSpec
    layers: tuple[SourceLayer, ...]
    where: str  # the block's name in the source, for messages and the mapping summary


@dataclass
class SourceNet:
    """A whole source network; ``mix`` says the last block is the classifier's 1x1 feature-mix
    conv (the detector taps end before it)."""

    name: str
    blocks: list[SourceBlock]
    classifier: str | None  # key prefix of the Linear, None without a classifier
    num_classes: int
    dropout: float
    bn_eps: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mix: bool = False
    skipped: list[str] = field(default_factory=list)  # identity (zero) blocks left out
    description: str = ""


@dataclass
class Imported:
    """The result of an import: the spec, a state_dict ``build(spec)`` loads strictly, and the
    key mapping (source prefix -> tinydet prefix) for the summary."""

    spec: ArchSpec
    state_dict: dict
    mapping: list[tuple[str, str]]
    skipped: list[str]
    tensors: int
    weights: str  # where the weights came from

    def summary(self) -> dict:
        spec = self.spec
        return {
            "name": spec.name, "blocks": len(spec.blocks), "num_classes": spec.num_classes,
            "head_from": list(spec.head_from), "bn_eps": spec.bn_eps,
            "input_mean": list(spec.input_mean or ()), "input_std": list(spec.input_std or ()),
            "tensors": self.tensors, "weights": self.weights, "skipped_blocks": list(self.skipped),
            "shortcuts": sum(spec.has_residual(i) for i in range(len(spec.blocks))),
            "mapping": [{"source": s, "tinydet": t} for s, t in self.mapping],
        }


def to_spec(net: SourceNet) -> ArchSpec:
    """The :class:`ArchSpec` of ``net`` (absolute channels; shortcuts exactly as the source has them)."""
    blocks = tuple(b.block for b in net.blocks)
    spec = ArchSpec(name=net.name, blocks=blocks, head_from=(), num_classes=net.num_classes,
                    dropout=net.dropout, absolute_channels=True, bn_eps=net.bn_eps,
                    input_mean=tuple(net.mean), input_std=tuple(net.std), description=net.description)
    fixed = []
    for i, b in enumerate(blocks):
        if b.residual and not spec.shortcut_fits(i):
            raise TinydetError(f"{net.name}: block {net.blocks[i].where}: identity shortcut on a block whose "
                               f"shapes differ ({spec.in_channels_of(i)} -> {spec.channels(i)}, stride {b.stride})")
        # explicit only where automatic would differ, so spec files stay short
        fixed.append(replace(b, residual=False if spec.shortcut_fits(i) and not b.residual else None))
    last = len(blocks) - (2 if net.mix else 1)
    return replace(spec, blocks=tuple(fixed), head_from=detection_taps(blocks, last))


def _roles(block: BlockSpec) -> list[str]:
    if block.type == "conv":
        return ["conv"]
    return (["expand"] if block.expand != 1 else []) + ["dw", "project"]


def convert(net: SourceNet, state: Mapping | None, weights: str) -> Imported:
    """Map ``state`` (the source's state_dict; None: tinydet's own initialisation) onto the spec."""
    from tinydet.arch.modules import build

    spec = to_spec(net)
    model = build(spec)
    target = model.state_dict()
    if state is None:
        return Imported(spec, target, [], list(net.skipped), 0, "none (tinydet initialisation)")
    out = dict(target)
    used: set[str] = set()
    mapping: list[tuple[str, str]] = []

    def copy(src: str, dst: str, where: str, optional: bool = False) -> None:
        if src not in state:
            if optional:
                return
            raise TinydetError(f"{net.name}: block {where}: the weights have no tensor '{src}' "
                               f"(expected for tinydet's '{dst}'); the weights do not match the architecture")
        value = state[src]
        if tuple(value.shape) != tuple(target[dst].shape):
            raise TinydetError(f"{net.name}: block {where}: tensor '{src}' has shape {tuple(value.shape)}, "
                               f"tinydet's '{dst}' needs {tuple(target[dst].shape)}; the weights do not match "
                               f"the architecture")
        out[dst] = value.detach().to(target[dst].dtype).clone()
        used.add(src)

    for i, (source, block) in enumerate(zip(net.blocks, spec.blocks)):
        roles = _roles(block)
        if len(roles) != len(source.layers):
            raise TinydetError(f"{net.name}: block {source.where}: {len(source.layers)} conv layers, a "
                               f"{block.type} with expand {block.expand} has {len(roles)}")
        for role, layer in zip(roles, source.layers):
            dst = f"blocks.{i}.{role}"
            copy(f"{layer.conv}.weight", f"{dst}.conv.weight", source.where)
            for name in BN_TENSORS:
                copy(f"{layer.bn}.{name}", f"{dst}.bn.{name}", source.where, optional=name == "num_batches_tracked")
            mapping.append((layer.conv, f"{dst}.conv"))
    if net.classifier is not None:
        for name in ("weight", "bias"):
            copy(f"{net.classifier}.{name}", f"classifier.fc.{name}", "classifier")
        mapping.append((net.classifier, "classifier.fc"))
    left = sorted(k for k in state if k not in used)
    if left:
        raise TinydetError(f"{net.name}: the weights have {len(left)} tensors the architecture has no place for "
                           f"(first: '{left[0]}'); the weights do not match the net config")
    model.load_state_dict(out, strict=True)  # every tinydet key filled, with the right shape
    return Imported(spec, out, mapping, list(net.skipped), len(used), weights)
