"""Per-tile Pad amounts of ``stage1_patch.onnx`` from a patch plan's regions (pure arithmetic).

Rectangles (:class:`tinydet.geometry.Rect`) are half-open, in the coordinates of the tensor they
live in. For a convolution with kernel k, stride s and padding p whose tile output is rows
``[o0, o1)``, the rows it reads are ``[o0*s - p, (o1-1)*s - p + k)`` (unclipped: outside the
image where the layer's own zero padding applies). Stage 1 holds only the rows its producer
made for this tile, ``[a0, a1)``; the Pad before the conv adds ``a0 - (o0*s - p)`` rows on top
(positive: true border zeros; negative: rows to drop) and ``((o1-1)*s - p + k) - a1`` at the
bottom, and likewise for columns. A fused shortcut is cropped to the projection's output rows.
Positive amounts are legal only at the true image border: anything else means the plan does not
give the layer all the data it needs, which is reported rather than silently zero-filled.
"""
from __future__ import annotations

from typing import Any, Mapping

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.export.onnx_writer import stage1_ops, tile_inputs
from tinydet.geometry import Pads, Rect
from tinydet.schedule.regions import input_region


def needed_rect(op: Op, out: Rect) -> Rect:
    """Input rows/columns (unclipped) that ``op`` reads to make output rectangle ``out``: the
    schedule's clipped input region grown by the zero padding that stands in for the rest."""
    region, pads = input_region(op, out)
    return region.padded(pads)


def _check_border(pads: Pads, have: Rect, size: tuple[int, int], what: str) -> None:
    h, w = size
    bad = [(pads.top > 0 and have.y0 != 0, "top"), (pads.bottom > 0 and have.y1 != h, "bottom"),
           (pads.left > 0 and have.x0 != 0, "left"), (pads.right > 0 and have.x1 != w, "right")]
    for is_bad, side in bad:
        if is_bad:
            raise TinydetError(f"{what}: the plan's region {have.to_list()} misses data on the {side} side inside the "
                               f"image ({h}x{w}); expected the tile to hold all rows/columns the layer reads")


def tile_pads(graph: Graph, split: int, in_rect: Any, out_rects: Mapping[str, Any],
              where: str = "tile") -> dict[str, Pads]:
    """The signed pads of every per-tile input of ``stage1_patch.onnx`` for one tile, by input
    name (``<op>/pads``, ``<op>/shortcut_pads``); ``Pads.to_onnx()`` is the int64[8] ONNX vector.

    ``in_rect`` is the tile's rectangle of the network input; ``out_rects[op]`` the rectangle of
    each stage-1 op's output that the tile computes (from the patch plan; ``Rect`` or list).
    """
    have: dict[str, Rect] = {graph.input: Rect.from_list(in_rect)}
    for op in stage1_ops(graph, split):
        if op.name not in out_rects:
            raise TinydetError(f"{where}: the plan has no region for stage-1 op '{op.name}'")
        have[op.output] = Rect.from_list(out_rects[op.name])
    pads: dict[str, Pads] = {}
    wanted = {(op_name, kind) for _, op_name, kind in tile_inputs(graph, split)}
    for op in stage1_ops(graph, split):
        src = op.inputs[0]
        size = graph.tensors[src].shape[1:]
        need = needed_rect(op, have[op.output])
        amounts = Pads.between(have[src], need)
        if (op.name, "pads") in wanted:
            _check_border(amounts, have[src], size, f"{where}: op '{op.name}'")
            pads[f"{op.name}/pads"] = amounts
        elif not amounts.is_zero:
            raise TinydetError(f"{where}: op '{op.name}' (kernel {op.kernel}) gets region {have[src].to_list()} but "
                               f"its output {have[op.output].to_list()} reads {need.to_list()}; "
                               f"expected the plan to give a 1x1 conv exactly its input")
        if op.add is not None:
            crop = Pads.between(have[op.add], have[op.output])
            if max(crop.top, crop.left, crop.bottom, crop.right) > 0:
                raise TinydetError(f"{where}: shortcut '{op.add}' region {have[op.add].to_list()} does not cover the "
                                   f"output {have[op.output].to_list()} of '{op.name}'")
            pads[f"{op.name}/shortcut_pads"] = crop
    return pads
