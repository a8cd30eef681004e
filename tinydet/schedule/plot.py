"""The picture that explains patch-based inference: per-layer working sets, the per-layer peak and
the patch-based peak, with the per-patch stage shaded."""
from __future__ import annotations

from pathlib import Path

from tinydet.arch.graph import Graph
from tinydet.io.atomic import atomic_open
from tinydet.schedule.memory import MemoryRules, layer_working_sets
from tinydet.schedule.planner import PatchPlan


def patch_working_sets(plan: PatchPlan, layer_ws: list[int]) -> list[int]:
    """Working set per op under ``plan``: stage-1 ops = stage-1 buffer + largest tile working
    set of that op; stage-2 ops as per layer."""
    stage1 = plan.stage1_working_sets()
    return stage1 + list(layer_ws[len(stage1):])


def plot_memory(graph: Graph, plan: PatchPlan | None, path: "str | Path", log: bool = True) -> Path:
    """Write a PNG: bars of the per-layer working set (kB) of every op, the patch-based working
    set beside them, the per-layer and patch-based peaks as lines, stage 1 shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer_ws = layer_working_sets(graph, plan.rules if plan is not None else MemoryRules())
    kb = 1024.0
    x = list(range(len(graph.ops)))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.22 * len(x) + 3), 4.8))
    patched = plan is not None and plan.patched
    width = 0.42 if patched else 0.8
    ax.bar([i - (width / 2 if patched else 0) for i in x], [w / kb for w in layer_ws], width=width,
           color="#9aa7b8", label="per-layer working set")
    peak_layer = max(layer_ws) / kb
    ax.axhline(peak_layer, color="#c0392b", linestyle="--", linewidth=1.2,
               label=f"per-layer peak {peak_layer:,.0f} kB")
    if patched:
        patch_ws = patch_working_sets(plan, layer_ws)
        ax.bar([i + width / 2 for i in x], [w / kb for w in patch_ws], width=width, color="#2e86c1",
               label="patch-based working set")
        n = len(plan.stage1_ops)
        ax.axvspan(-0.5, n - 0.5, color="#f5b041", alpha=0.18,
                   label=f"stage 1: {plan.grid[0]}x{plan.grid[1]} patches, split {plan.split}")
        peak_patch = plan.peak_sram_patch / kb
        ax.axhline(peak_patch, color="#1e8449", linestyle="-", linewidth=1.4,
                   label=f"patch-based peak {peak_patch:,.0f} kB ({plan.mac_overhead * 100:+.1f}% MACs)")
    if log:
        ax.set_yscale("log")
    ax.set_xlim(-0.8, len(x) - 0.2)
    ax.set_xticks(x)
    ax.set_xticklabels([op.name.replace("blocks.", "b") for op in graph.ops], rotation=90, fontsize=6)
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("SRAM working set (kB, int8)" + (", log scale" if log else ""))
    res = f"{graph.resolution[0]}x{graph.resolution[1]}"
    ax.set_title(f"{graph.arch} @ {res}: activation memory per layer")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path
