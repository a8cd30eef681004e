"""Patch executor (the only torch code in :mod:`tinydet.schedule`): run a network built by
:func:`tinydet.arch.build` the way a :class:`PatchPlan` says — stage-1 ops tile by tile with the
plan's regions and border padding, stitched into the stage-1 output map, the rest layer by layer.
Its outputs equal ``model(x)`` up to float rounding, which is what proves the plan's regions exact.
"""
from __future__ import annotations

import torch

from tinydet.arch.graph import Op
from tinydet.errors import TinydetError
from tinydet.geometry import Rect
from tinydet.schedule.memory import plan_stage1
from tinydet.schedule.planner import PatchPlan


def _crop(t: torch.Tensor, rect: Rect, holds: Rect) -> torch.Tensor:
    """The part ``rect`` (map coordinates) of ``t``, a buffer that holds region ``holds``."""
    if not holds.contains(rect):
        raise TinydetError(f"plan: region {rect.to_list()} is not inside the stored region {holds.to_list()}; "
                           "expected each tile to hold every region its ops read")
    r = rect.relative_to(holds)
    return t[..., r.y0:r.y1, r.x0:r.x1]


def _run_full(model: torch.nn.Module, op: Op, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """One op on whole maps, with the layer's own padding."""
    x = values[op.inputs[0]]
    module = model.get_submodule(op.name)
    if op.kind == "fc":
        y = module(torch.flatten(x, 1))
    else:
        y = module(x)
    if op.add:
        y = values[op.add] + y
    return y


@torch.no_grad()
def run_patched(model: torch.nn.Module, plan: PatchPlan, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` (a :class:`tinydet.arch.modules.Network`, eval mode) on ``x`` [B, C, H, W]
    following ``plan``; returns the same list as ``model(x)``."""
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
        for tile in plan.tiles:
            # each stored tensor is (buffer, the region of the map it holds)
            stored: dict[str, tuple[torch.Tensor, Rect]] = {graph.input: (_crop(x, tile.in_rect, full), tile.in_rect)}
            for op in stage1.ops:
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
    for op in graph.ops[start:]:
        values[op.output] = _run_full(model, op, values)
    return [values[name] for name in graph.outputs]
