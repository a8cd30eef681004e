"""Receptive field and region arithmetic (pure): which input rows/columns an output rectangle needs.

Rectangles are half-open ``[y0, y1) x [x0, x1)`` on a feature map. A convolution with kernel k,
stride s and padding p computes output row ``r`` from input rows ``r*s - p .. r*s - p + k - 1``.
The part of that range outside ``[0, H)`` is the layer's zero padding: it is only ever needed
where a region crosses the true border of the feature map, so a tile inside the map gets no
padding and a tile on the border gets it on that side only.
"""
from __future__ import annotations

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.geometry import Pads, Rect, input_rect

__all__ = ["Rect", "Pads", "input_region", "receptive_field", "receptive_fields", "halo"]


def input_region(op: Op, out_rect: Rect) -> tuple[Rect, Pads]:
    """The input rectangle ``op`` reads to produce ``out_rect`` (clipped to the input map) and the
    border zero padding that stands in for the clipped part. Convolving the padded region with
    padding 0 gives exactly ``out_rect``. Global pooling and the classifier read the whole map."""
    _, h, w = op.in_shape
    if op.kind in ("gap", "fc"):
        return Rect.full(h, w), Pads()
    if op.kind in ("upsample", "add", "concat"):  # a valid split keeps the neck in stage 2
        raise TinydetError(f"op '{op.name}' ({op.kind}): a neck op has no per-tile region; expected it in "
                           "stage 2 (a split before the neck)")
    return input_rect(out_rect, op.kernel, op.stride, op.padding, h, w)


def _tensor_rf(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Per tensor: (receptive field, jump, pixels of padding before) along one axis, from the input.

    Global pooling acts as a kernel the size of its input map. Square kernels and strides are
    the same on both axes, so one axis describes both."""
    rf = {graph.input: (1, 1, 0)}
    for op in graph.ops:
        size, jump, before = rf[op.inputs[0]]
        kernel, stride, padding = op.kernel, op.stride, op.padding
        if op.kind == "upsample":  # nearest x2: each output pixel is one input pixel, half the jump
            rf[op.output] = (size, jump // 2, before)
            continue
        if op.kind in ("add", "concat"):  # the widest of the inputs (they share the jump)
            rf[op.output] = max(rf[t] for t in op.inputs)
            continue
        if op.kind == "gap":
            kernel, stride, padding = max(op.in_shape[1:]), 1, 0
        elif op.kind == "fc":
            kernel, stride, padding = 1, 1, 0
        rf[op.output] = (size + (kernel - 1) * jump, jump * stride, before + padding * jump)
    return rf


def receptive_field(graph: Graph, upto_op_index: int) -> tuple[int, int]:
    """(receptive field in input pixels, jump = cumulative stride) of the output of op
    ``upto_op_index``; follows the op's own input chain (so head ops see their tap)."""
    size, jump, _ = _tensor_rf(graph)[graph.ops[upto_op_index].output]
    return size, jump


def halo(graph: Graph, upto_op_index: int) -> tuple[int, int]:
    """Extra input pixels (before, after) an output tile of op ``upto_op_index`` needs on each axis
    beyond ``tile * jump``: an interior tile of t output pixels reads ``t*jump + before + after``
    input pixels. Asymmetric because the padding sits before the first pixel."""
    size, jump, before = _tensor_rf(graph)[graph.ops[upto_op_index].output]
    return before, size - jump - before


def receptive_fields(graph: Graph) -> list[tuple[int, int]]:
    """(receptive field, jump) of every op's output, in op order."""
    table = _tensor_rf(graph)
    return [table[op.output][:2] for op in graph.ops]
