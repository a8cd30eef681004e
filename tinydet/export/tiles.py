"""Per-tile Pad amounts of ``stage1_patch.onnx`` from a patch plan's regions (pure arithmetic).

A rectangle here is ``(y0, y1, x0, x1)``, half-open, in the coordinates of the tensor it lives
in. For a convolution with kernel k, stride s and padding p whose tile output is rows
``[o0, o1)``, the rows it reads are ``[o0*s - p, (o1-1)*s - p + k)`` (unclipped: outside the
image where the layer's own zero padding applies). Stage 1 holds only the rows its producer
made for this tile, ``[a0, a1)``; the Pad before the conv adds ``a0 - (o0*s - p)`` rows on top
(positive: true border zeros; negative: rows to drop) and ``((o1-1)*s - p + k) - a1`` at the
bottom, and likewise for columns. A fused shortcut is cropped to the projection's output rows.
Positive amounts are legal only at the true image border: anything else means the plan does not
give the layer all the data it needs, which is reported rather than silently zero-filled.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.export.onnx_writer import stage1_ops, tile_inputs
from tinydet.schedule.regions import Rect as SRect, input_region

Rect = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


def _rect(value: Any) -> Rect:
    """A rectangle from a ``tinydet.schedule.regions.Rect`` or a ``[y0, y1, x0, x1]`` sequence."""
    values = value.to_list() if hasattr(value, "to_list") else value
    y0, y1, x0, x1 = (int(v) for v in values)
    return y0, y1, x0, x1


def needed_rect(op: Op, out: Rect) -> Rect:
    """Input rows/columns (unclipped) that ``op`` reads to make output rectangle ``out``: the
    schedule's clipped input region grown by the zero padding that stands in for the rest."""
    region, (left, right, top, bottom) = input_region(op, SRect.from_list(out))
    return region.y0 - top, region.y1 + bottom, region.x0 - left, region.x1 + right


def _amounts(need: Rect, have: Rect) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows/columns to add (>0) or drop (<0) so ``have`` becomes ``need``."""
    return have[0] - need[0], need[1] - have[1], have[2] - need[2], need[3] - have[3]


def _check_border(amounts, have: Rect, size: tuple[int, int], what: str) -> None:
    top, bottom, left, right = amounts
    h, w = size
    bad = [(top > 0 and have[0] != 0, "top"), (bottom > 0 and have[1] != h, "bottom"),
           (left > 0 and have[2] != 0, "left"), (right > 0 and have[3] != w, "right")]
    for is_bad, side in bad:
        if is_bad:
            raise TinydetError(f"{what}: the plan's region {list(have)} misses data on the {side} side inside the "
                               f"image ({h}x{w}); expected the tile to hold all rows/columns the layer reads")


def tile_pad_vectors(graph: Graph, split: int, in_rect: Any, out_rects: Mapping[str, Any],
                     where: str = "tile") -> dict[str, list[int]]:
    """The int64[8] ONNX Pad vectors ``[0, 0, top, left, 0, 0, bottom, right]`` of every per-tile
    input of ``stage1_patch.onnx`` for one tile.

    ``in_rect`` is the tile's rectangle of the network input; ``out_rects[op]`` the rectangle of
    each stage-1 op's output that the tile computes (from the patch plan; ``Rect`` or list).
    """
    have: dict[str, Rect] = {graph.input: _rect(in_rect)}
    for op in stage1_ops(graph, split):
        if op.name not in out_rects:
            raise TinydetError(f"{where}: the plan has no region for stage-1 op '{op.name}'")
        have[op.output] = _rect(out_rects[op.name])
    vectors: dict[str, list[int]] = {}
    wanted = {(op_name, kind) for _, op_name, kind in tile_inputs(graph, split)}
    for op in stage1_ops(graph, split):
        src = op.inputs[0]
        size = graph.tensors[src].shape[1:]
        amounts = _amounts(needed_rect(op, have[op.output]), have[src])
        if (op.name, "pads") in wanted:
            _check_border(amounts, have[src], size, f"{where}: op '{op.name}'")
            top, bottom, left, right = amounts
            vectors[f"{op.name}/pads"] = [0, 0, top, left, 0, 0, bottom, right]
        elif any(amounts):
            raise TinydetError(f"{where}: op '{op.name}' (kernel {op.kernel}) gets region {list(have[src])} but its "
                               f"output {list(have[op.output])} reads {list(needed_rect(op, have[op.output]))}; "
                               f"expected the plan to give a 1x1 conv exactly its input")
        if op.add is not None:
            top, bottom, left, right = _amounts(have[op.output], have[op.add])
            if max(top, bottom, left, right) > 0:
                raise TinydetError(f"{where}: shortcut '{op.add}' region {list(have[op.add])} does not cover the "
                                   f"output {list(have[op.output])} of '{op.name}'")
            vectors[f"{op.name}/shortcut_pads"] = [0, 0, top, left, 0, 0, bottom, right]
    return vectors


def border_pads(vector: Sequence[int]) -> list[int]:
    """(left, right, top, bottom) of an ONNX Pad vector: the layout schedule.json and the C runtime use."""
    return [int(vector[3]), int(vector[7]), int(vector[2]), int(vector[6])]
