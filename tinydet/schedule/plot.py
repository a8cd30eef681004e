"""The picture that explains patch-based inference: per-layer working sets, the per-layer peak and
the patch-based peak, with the per-patch stage shaded; ops of fused inverted residuals hatched and
the buffer that bounds the peak named."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tinydet.arch.graph import Graph
from tinydet.io.atomic import atomic_open
from tinydet.schedule.memory import MemoryRules, layer_working_sets
from tinydet.schedule.planner import PatchPlan


NECK_COLOR, HEAD_COLOR = "#7d3c98", "#117a65"

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

    from tinydet.schedule.planner import peak_breakdown

    rules = plan.rules if plan is not None else MemoryRules()
    fused = set(rules.fused_blocks)
    layer_ws = layer_working_sets(graph, rules)
    plain_ws = layer_working_sets(graph, replace(rules, fused_blocks=())) if fused else layer_ws
    kb = 1024.0
    x = list(range(len(graph.ops)))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.22 * len(x) + 3), 4.8))
    patched = plan is not None and plan.patched
    pair = patched or bool(fused)  # a second bar per op: the schedule's working set
    width = 0.42 if pair else 0.8
    ax.bar([i - (width / 2 if pair else 0) for i in x], [w / kb for w in plain_ws], width=width,
           color="#9aa7b8", label="per-layer working set" + (" (no fusion)" if fused else ""))
    peak_layer = max(plain_ws) / kb
    ax.axhline(peak_layer, color="#c0392b", linestyle="--", linewidth=1.2,
               label=f"per-layer peak {peak_layer:,.0f} kB")
    if pair:
        sched_ws = patch_working_sets(plan, layer_ws) if patched else layer_ws
        bars = ax.bar([i + width / 2 for i in x], [w / kb for w in sched_ws], width=width, color="#2e86c1",
                      label="patch-based working set" if patched else "per-layer working set, fused")
        for i, op in enumerate(graph.ops):
            if op.block in fused:
                bars[i].set_hatch("///")
                bars[i].set_edgecolor("#1b2631")
    if fused:
        ax.bar([], [], color="#2e86c1", edgecolor="#1b2631", hatch="///",
               label=f"fused inverted residual (blocks {', '.join(str(b) for b in sorted(fused))})")
    if plan is not None:
        at = peak_breakdown(graph, plan)
        i = [op.name for op in graph.ops].index(at.op)
        ax.annotate(f"peak bounded by {at.bound} ({at.parts[at.bound] / kb:,.1f} kB)", xy=(i, at.peak / kb),
                    xytext=(24, 18), textcoords="offset points", ha="left", fontsize=7,
                    arrowprops={"arrowstyle": "->", "linewidth": 0.8})
    if patched:
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
    # the neck's ops (and the heads between them) in their own colours, named in the legend
    for label, op in zip(ax.get_xticklabels(), graph.ops):
        label.set_color(NECK_COLOR if op.name.startswith("neck.") else HEAD_COLOR if op.name.startswith("heads.")
                        else "black")
    neck = [i for i, op in enumerate(graph.ops) if op.name.startswith("neck.")]
    for i in neck:
        ax.axvspan(i - 0.5, i + 0.5, color=NECK_COLOR, alpha=0.08, linewidth=0,
                   label="neck ops (labels purple; heads teal)" if i == neck[0] else None)
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
