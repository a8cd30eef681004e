"""Receptive field and region arithmetic (pure): which input rows/columns an output rectangle needs.

Rectangles are half-open ``[y0, y1) x [x0, x1)`` on a feature map. A convolution with kernel k,
stride s and padding p computes output row ``r`` from input rows ``r*s - p .. r*s - p + k - 1``.
The part of that range outside ``[0, H)`` is the layer's zero padding: it is only ever needed
where a region crosses the true border of the feature map, so a tile inside the map gets no
padding and a tile on the border gets it on that side only.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinydet.arch.graph import Graph, Op

Pad = tuple[int, int, int, int]  # (left, right, top, bottom), the order of torch.nn.functional.pad


@dataclass(frozen=True)
class Rect:
    """Half-open rectangle ``[y0, y1) x [x0, x1)`` on a feature map."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.h * self.w

    def union(self, other: "Rect") -> "Rect":
        """Bounding box of both (regions of one tensor are always nested or overlapping)."""
        return Rect(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def contains(self, other: "Rect") -> bool:
        return self.y0 <= other.y0 and other.y1 <= self.y1 and self.x0 <= other.x0 and other.x1 <= self.x1

    def relative_to(self, outer: "Rect") -> "Rect":
        """This rectangle in the coordinates of a buffer that holds ``outer``."""
        return Rect(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)

    def to_list(self) -> list[int]:
        return [self.y0, self.y1, self.x0, self.x1]

    @classmethod
    def from_list(cls, values) -> "Rect":
        y0, y1, x0, x1 = (int(v) for v in values)
        return cls(y0, y1, x0, x1)

    @classmethod
    def full(cls, h: int, w: int) -> "Rect":
        return cls(0, h, 0, w)


def _axis(lo: int, hi: int, kernel: int, stride: int, padding: int, size: int) -> tuple[int, int, int, int]:
    """Input interval for output interval [lo, hi) on one axis: (start, end, pad_before, pad_after)."""
    start = lo * stride - padding
    end = (hi - 1) * stride - padding + kernel
    return max(start, 0), min(end, size), max(0, -start), max(0, end - size)


def input_region(op: Op, out_rect: Rect) -> tuple[Rect, Pad]:
    """The input rectangle ``op`` reads to produce ``out_rect`` (clipped to the input map) and the
    zero padding (left, right, top, bottom) that stands in for the clipped part. Convolving the
    padded region with padding 0 gives exactly ``out_rect``."""
    _, h, w = op.in_shape
    if op.kind in ("gap", "fc"):
        return Rect.full(h, w), (0, 0, 0, 0)
    y0, y1, top, bottom = _axis(out_rect.y0, out_rect.y1, op.kernel, op.stride, op.padding, h)
    x0, x1, left, right = _axis(out_rect.x0, out_rect.x1, op.kernel, op.stride, op.padding, w)
    return Rect(y0, y1, x0, x1), (left, right, top, bottom)


def _tensor_rf(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Per tensor: (receptive field, jump, pixels of padding before) along one axis, from the input.

    Global pooling acts as a kernel the size of its input map. Square kernels and strides are
    the same on both axes, so one axis describes both."""
    rf = {graph.input: (1, 1, 0)}
    for op in graph.ops:
        size, jump, before = rf[op.inputs[0]]
        kernel, stride, padding = op.kernel, op.stride, op.padding
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
