"""Patch executor (the only torch code in :mod:`tinydet.schedule`): run a network built by
:func:`tinydet.arch.build` the way a :class:`PatchPlan` says — stage-1 ops tile by tile with the
plan's regions and border padding, stitched into the stage-1 output map, the rest layer by layer.
Its outputs equal ``model(x)`` up to float rounding, which is what proves the plan's regions exact.
Blocks the plan fuses (``plan.rules.fused_blocks``) run the way :mod:`tinydet.schedule.fusion`
models them: row by row through a ring of k expanded rows, so a ring too short shows in the output.
"""
from __future__ import annotations

import torch

from tinydet.arch.graph import Op
from tinydet.arch.modules import weightless_op
from tinydet.errors import TinydetError
from tinydet.geometry import Pads, Rect
from tinydet.schedule.fusion import FusedBlock, ring_rows
from tinydet.schedule.memory import Stage, per_layer, plan_stage1
from tinydet.schedule.planner import OpRegion, PatchPlan
from tinydet.schedule.regions import input_region


def _crop(t: torch.Tensor, rect: Rect, holds: Rect) -> torch.Tensor:
    """The part ``rect`` (map coordinates) of ``t``, a buffer that holds region ``holds``."""
    if not holds.contains(rect):
        raise TinydetError(f"plan: region {rect.to_list()} is not inside the stored region {holds.to_list()}; "
                           "expected each tile to hold every region its ops read")
    r = rect.relative_to(holds)
    return t[..., r.y0:r.y1, r.x0:r.x1]


def _run_full(model: torch.nn.Module, op: Op, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """One op on whole maps, with the layer's own padding. The neck's weightless ops may read
    tensors of both stages (a stage-1 tap, stitched, and a stage-2 result)."""
    x = values[op.inputs[0]]
    if op.kind in ("upsample", "maxpool", "add", "concat"):
        return weightless_op(op.kind, [values[t] for t in op.inputs])
    module = model.get_submodule(op.name)
    if op.kind == "fc":
        y = module(torch.flatten(x, 1))
    else:
        y = module(x)
    if op.add:
        y = values[op.add] + y
    return y


def _run_fused(model: torch.nn.Module, stage: Stage, fb: FusedBlock, x: torch.Tensor, x_holds: Rect,
               regions: dict[str, OpRegion], shortcut: "tuple[torch.Tensor, Rect] | None",
               ring_short: int = 0) -> torch.Tensor:
    """One fused inverted residual, row by row of its output: the input rows the depthwise window
    needs are expanded (each once) into a ring of k rows, slot ``row % k``; the depthwise reads its
    window from the ring (zero rows beyond the map border), the projection [+ shortcut] writes the
    output row. Without expansion the window is read from X directly. ``regions`` are the block's
    op regions (a tile's, or whole maps); ``ring_short`` shortens the ring (negative control)."""
    ops = stage.ops
    dw_op, proj_op = ops[fb.dw], ops[fb.project]
    dw_reg, out_rect = regions[dw_op.name], regions[proj_op.name].out_rect
    e_rect = dw_reg.in_rect  # the expanded region (columns and rows) the depthwise reads
    map_h = dw_op.in_shape[1]
    dw, proj = model.get_submodule(dw_op.name), model.get_submodule(proj_op.name)
    x_cols = _crop(x, Rect(x_holds.y0, x_holds.y1, e_rect.x0, e_rect.x1), x_holds)
    if fb.expand is not None:
        expand = model.get_submodule(ops[fb.expand].name)
        slots = ring_rows(dw_op, e_rect.h, ring_short)
        ring = x.new_zeros((x.shape[0], dw_op.in_shape[0], slots, e_rect.w))
        done = e_rect.y0  # rows below this are expanded (into the ring, some overwritten since)
    rows = []
    zero = Pads()
    for y in range(out_rect.y0, out_rect.y1):
        top = y * dw_op.stride - dw_op.padding
        real = [r for r in range(top, top + dw_op.kernel) if 0 <= r < map_h]
        if not (e_rect.y0 <= real[0] and real[-1] < e_rect.y1):
            raise TinydetError(f"plan: fused block {fb.block} needs rows {real[0]}..{real[-1]} outside its region "
                               f"{e_rect.to_list()}; expected exact regions")
        if fb.expand is not None:
            for r in range(done, real[-1] + 1):
                xr = x_cols[..., r - x_holds.y0:r - x_holds.y0 + 1, :]
                ring[..., r % slots:r % slots + 1, :] = expand(xr, zero.to_torch())
            done = max(done, real[-1] + 1)
            window = torch.cat([ring[..., r % slots:r % slots + 1, :] for r in real], dim=-2)
        else:
            window = x_cols[..., real[0] - x_holds.y0:real[-1] + 1 - x_holds.y0, :]
        pad = Pads(real[0] - top, dw_reg.pad.left, top + dw_op.kernel - 1 - real[-1], dw_reg.pad.right)
        row = proj(dw(window, pad.to_torch()), zero.to_torch())
        if shortcut is not None:
            sc, sc_holds = shortcut
            row = _crop(sc, Rect(y, y + 1, out_rect.x0, out_rect.x1), sc_holds) + row
        rows.append(row)
    return torch.cat(rows, dim=-2)


def _whole_map_regions(ops) -> dict[str, OpRegion]:
    """Every op's regions on whole maps (its own zero padding at the border)."""
    regions = {}
    for op in ops:
        out = Rect.full(*op.out_shape[1:])
        rect, pad = input_region(op, out)
        regions[op.name] = OpRegion(rect, pad, out)
    return regions


@torch.no_grad()
def run_patched(model: torch.nn.Module, plan: PatchPlan, x: torch.Tensor, ring_short: int = 0) -> list[torch.Tensor]:
    """Run ``model`` (a :class:`tinydet.arch.modules.Network`, eval mode) on ``x`` [B, C, H, W]
    following ``plan``; returns the same list as ``model(x)``. ``ring_short`` runs fused blocks
    with a ring that many rows too short (a negative control: the outputs then differ)."""
    if tuple(x.shape[-2:]) != tuple(plan.resolution):
        raise TinydetError(f"input: expected {plan.resolution[0]}x{plan.resolution[1]} images for this plan, "
                           f"got {x.shape[-2]}x{x.shape[-1]}")
    graph = model.graph(tuple(plan.resolution))
    values: dict[str, torch.Tensor] = {graph.input: x}
    start = 0
    if plan.patched:
        stage1 = plan_stage1(graph, plan)
        c, h, w = plan.split_shape
        out = x.new_zeros((x.shape[0], c, h, w))
        full = Rect.full(*plan.resolution)
        fused_at = {fb.first: fb for fb in stage1.fused}
        for tile in plan.tiles:
            # each stored tensor is (buffer, the region of the map it holds)
            stored: dict[str, tuple[torch.Tensor, Rect]] = {graph.input: (_crop(x, tile.in_rect, full), tile.in_rect)}
            skip = 0
            for i, op in enumerate(stage1.ops):
                if i < skip:
                    continue
                if i in fused_at:
                    fb = fused_at[i]
                    proj = stage1.ops[fb.project]
                    src, holds = stored[op.inputs[0]]
                    y = _run_fused(model, stage1, fb, src, holds, tile.regions,
                                   stored[proj.add] if proj.add else None, ring_short)
                    stored[proj.output] = (y, tile.regions[proj.name].out_rect)
                    skip = fb.project + 1
                    continue
                reg = tile.regions[op.name]
                src, holds = stored[op.inputs[0]]
                y = model.get_submodule(op.name)(_crop(src, reg.in_rect, holds), reg.pad.to_torch())
                if op.add:
                    shortcut, s_holds = stored[op.add]
                    y = _crop(shortcut, reg.out_rect, s_holds) + y
                stored[op.output] = (y, reg.out_rect)
            r = tile.out_rect
            out[..., r.y0:r.y1, r.x0:r.x1] = stored[stage1.sink][0]
        values[stage1.sink] = out
        start = len(stage1)
    layer = per_layer(graph, plan.rules)
    fused_at = {fb.first: fb for fb in layer.fused if fb.first >= start}
    regions = _whole_map_regions(graph.ops) if fused_at else {}
    i = start
    while i < len(graph.ops):
        op = graph.ops[i]
        if i in fused_at:
            fb = fused_at[i]
            proj = graph.ops[fb.project]
            src = values[op.inputs[0]]
            full = Rect.full(*src.shape[-2:])
            values[proj.output] = _run_fused(model, layer, fb, src, full, regions,
                                             (values[proj.add], full) if proj.add else None, ring_short)
            i = fb.project + 1
            continue
        values[op.output] = _run_full(model, op, values)
        i += 1
    return [values[name] for name in graph.outputs]
