"""Memory model, receptive field, patch planner, arena allocation and patch executor.

    graph = tinydet.arch.lower(spec, 224)
    peak_sram_per_layer(graph)                       # bytes, DESIGN.md model
    plan = plan_patches(graph, grid=4, split=5)      # MCUNetV2 patch-based schedule
    arena = allocate(graph, plan)                    # byte offsets for the C runtime
    best, pareto = search_plans(graph, max_overhead=0.1)

Everything here is pure Python except :func:`run_patched` (torch, imported on first use).
"""
from tinydet.geometry import Pads, Rect
from tinydet.schedule.memory import (FUSED_IR, FUSED_RESIDUAL, INPLACE_DW, NORMAL, SINK, Liveness, MemoryRules, Stage,
                                     layer_working_sets, liveness, op_modes, peak_sram_per_layer, per_layer,
                                     plan_stage1, stage1, stage1_ops)
from tinydet.schedule.regions import halo, input_region, receptive_field, receptive_fields
from tinydet.schedule.planner import (OpRegion, PatchPlan, PeakBreakdown, Tile, check_split, max_split, pareto_front,
                                      parse_grid, peak_breakdown, per_layer_plan, plan_patches, search_plans,
                                      tile_bounds, plan_fused, with_fusion)
from tinydet.schedule.fusion import FusedBlock, FusedCost, fusable_blocks
from tinydet.schedule.profile import op_flash_bytes, op_params, parse_bytes, profile_graph

__all__ = [
    "MemoryRules", "Liveness", "liveness", "op_modes", "layer_working_sets", "peak_sram_per_layer",
    "NORMAL", "INPLACE_DW", "FUSED_RESIDUAL", "FUSED_IR", "SINK", "Stage", "stage1", "stage1_ops", "plan_stage1", "per_layer",
    "Rect", "Pads", "input_region", "receptive_field", "receptive_fields", "halo",
    "OpRegion", "Tile", "PatchPlan", "plan_patches", "search_plans", "pareto_front", "per_layer_plan",
    "check_split", "max_split", "parse_grid", "tile_bounds", "PeakBreakdown", "peak_breakdown", "with_fusion", "plan_fused",
    "ArenaPlan", "ArenaStep", "allocate", "check_arena",
    "run_patched", "plot_memory", "patch_working_sets",
    "FusedBlock", "FusedCost", "fusable_blocks",
    "profile_graph", "op_params", "op_flash_bytes", "parse_bytes",
]


def __getattr__(name):
    # lazy: the arena module is pure but large; the executor needs torch, the plot matplotlib
    if name in ("ArenaPlan", "ArenaStep", "allocate", "check_arena"):
        from tinydet.schedule import arena

        return getattr(arena, name)
    if name == "run_patched":
        from tinydet.schedule.executor import run_patched

        return run_patched
    if name in ("plot_memory", "patch_working_sets"):
        from tinydet.schedule import plot

        return getattr(plot, name)
    raise AttributeError(f"module 'tinydet.schedule' has no attribute {name!r}")
