"""Architecture specs: a network is data (dataclasses), a registry of presets, and an nn builder.

    spec = get_spec("mbv2-w0.35")            # preset name or path to a .yaml/.json spec file
    graph = lower(spec, (224, 224))          # flat op list with shapes: what memory model & export read
    model = build(spec)                       # torch nn.Module (import of torch happens only here)
"""
from tinydet.arch.spec import ArchSpec, BlockSpec, HeadSpec, make_divisible, load_spec, save_spec
from tinydet.arch.registry import get_spec, list_presets, register
from tinydet.arch.graph import Graph, Op, Tensor, lower, parse_resolution

__all__ = [
    "ArchSpec", "BlockSpec", "HeadSpec", "make_divisible", "load_spec", "save_spec",
    "get_spec", "list_presets", "register", "Graph", "Op", "Tensor", "lower", "parse_resolution",
    "build",
]


def build(spec, head=None, num_classes=None):
    """Build the torch module for ``spec`` (see :func:`tinydet.arch.modules.build`)."""
    from tinydet.arch.modules import build as _build

    return _build(spec, head=head, num_classes=num_classes)
