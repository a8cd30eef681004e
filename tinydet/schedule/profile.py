"""Per-layer profile of a graph (pure): shapes, MACs, parameters, Flash, SRAM working sets,
receptive fields; the figures ``tinydet profile`` and ``tinydet plan`` print."""
from __future__ import annotations

from tinydet.arch.graph import Graph, Op
from tinydet.schedule.memory import MemoryRules, layer_working_sets
from tinydet.schedule.planner import PatchPlan
from tinydet.schedule.regions import receptive_fields
from tinydet.units import parse_bytes  # noqa: F401  (re-exported: the one size parser)


def op_params(op: Op) -> int:
    """Float-model parameters of ``op`` (torchvision convention): weights, plus BatchNorm's
    weight and bias (2 per output channel) or the conv/linear bias (1 per output channel)."""
    if op.kind not in ("conv", "dwconv", "fc"):
        return 0
    c_out = op.out_shape[0]
    return op.weight_count + (c_out if op.bias else 2 * c_out)


def op_flash_bytes(op: Op) -> int:
    """Deployed int8 op in Flash: int8 weights + per output channel an int32 bias and the
    requantization parameters (int32 multiplier, int32 shift): ``weights + 12 * C_out`` bytes."""
    if op.kind not in ("conv", "dwconv", "fc"):
        return 0
    return op.weight_count + 12 * op.out_shape[0]


def profile_graph(graph: Graph, rules: MemoryRules = MemoryRules(), plan: PatchPlan | None = None) -> dict:
    """The profile as a JSON-able dict (see ``tinydet profile --help`` for the keys)."""
    ws = layer_working_sets(graph, rules)
    rfs = receptive_fields(graph)
    layers = []
    for i, op in enumerate(graph.ops):
        layers.append({
            "name": op.name, "kind": op.kind, "in_shape": list(op.in_shape), "out_shape": list(op.out_shape),
            "kernel": op.kernel, "op_stride": op.stride, "macs": op.macs, "params": op_params(op),
            "flash_bytes": op_flash_bytes(op), "working_set": ws[i],
            "receptive_field": rfs[i][0], "stride": rfs[i][1],
        })
    result = {
        "arch": graph.arch, "resolution": list(graph.resolution), "mode": graph.mode,
        "macs": graph.macs, "params": sum(op_params(op) for op in graph.ops),
        "flash_bytes": sum(op_flash_bytes(op) for op in graph.ops),
        "flash_formula": "sum over conv/fc ops of int8 weights + 12 bytes per output channel "
                         "(int32 bias, int32 multiplier, int32 shift)",
        "peak_sram_per_layer": max(ws), "input_bytes": graph.tensors[graph.input].nbytes,
        "rules": rules.to_dict(), "outputs": list(graph.outputs), "layers": layers,
    }
    if plan is not None and plan.patched:
        for layer, patch_ws in zip(layers, plan.stage1_working_sets()):
            layer["patch_working_set"] = patch_ws
        result.update({
            "peak_sram_patch": plan.peak_sram_patch, "peak_sram_stage1": plan.peak_sram_stage1,
            "peak_sram_stage2": plan.peak_sram_stage2, "grid": list(plan.grid), "split": plan.split,
            "split_shape": list(plan.split_shape), "stage1_ops": list(plan.stage1_ops),
            "macs_patch": plan.macs_patch, "mac_overhead": plan.mac_overhead,
            "input_streamed": plan.input_streamed, "max_tile_input": list(plan.max_tile_input),
            "reduction": max(ws) / plan.peak_sram_patch,
            "tiles": [{"row": t.row, "col": t.col, "in_rect": t.in_rect.to_list(), "out_rect": t.out_rect.to_list(),
                       "pad": t.pad.to_dict(), "in_size": [t.in_rect.h, t.in_rect.w], "macs": t.macs}
                      for t in plan.tiles],
        })
    return result


def kb(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} kB"
