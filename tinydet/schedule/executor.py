"""Patch executor (the only torch code in :mod:`tinydet.schedule`): run a network built by
:func:`tinydet.arch.build` the way a :class:`PatchPlan` says — stage-1 ops tile by tile with the
plan's regions and border padding, stitched into the stage-1 output map, the rest layer by layer.
Its outputs equal ``model(x)`` up to float rounding, which is what proves the plan's regions exact.
"""
from __future__ import annotations

import torch

from tinydet.arch.graph import Op
from tinydet.errors import TinydetError
from tinydet.schedule.planner import PatchPlan
from tinydet.schedule.regions import Rect


def _crop(t: torch.Tensor, rect: Rect, holds: Rect) -> torch.Tensor:
    """The part ``rect`` (map coordinates) of ``t``, a buffer that holds region ``holds``."""
    r = rect.relative_to(holds)
    if r.y0 < 0 or r.x0 < 0 or r.y1 > holds.h or r.x1 > holds.w:
        raise ValueError(f"region {rect} is not inside the stored region {holds}")
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
        stage1 = graph.ops[:len(plan.stage1_ops)]
        if [op.name for op in stage1] != list(plan.stage1_ops):
            raise TinydetError(f"plan: its stage-1 ops do not match the model's graph ({graph.arch}, {graph.mode}); "
                               "expected a plan made from the same arch, head and resolution")
        c, h, w = plan.split_shape
        out = x.new_zeros((x.shape[0], c, h, w))
        full = Rect.full(*plan.resolution)
        for tile in plan.tiles:
            # each stored tensor is (buffer, the region of the map it holds)
            stored: dict[str, tuple[torch.Tensor, Rect]] = {graph.input: (_crop(x, tile.in_rect, full), tile.in_rect)}
            for op in stage1:
                reg = tile.regions[op.name]
                src, holds = stored[op.inputs[0]]
                y = model.get_submodule(op.name)(_crop(src, reg.in_rect, holds), reg.pad)
                if op.add:
                    shortcut, s_holds = stored[op.add]
                    y = _crop(shortcut, reg.out_rect, s_holds) + y
                stored[op.output] = (y, reg.out_rect)
            r = tile.out_rect
            out[..., r.y0:r.y1, r.x0:r.x1] = stored[stage1[-1].output][0]
        values[stage1[-1].output] = out
        start = len(stage1)
    for op in graph.ops[start:]:
        values[op.output] = _run_full(model, op, values)
    return [values[name] for name in graph.outputs]
