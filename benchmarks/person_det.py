"""MIT's MCUNet person detector (preset ``mcunet-person-det``): cost and activation memory per
layer vs the best patch-based schedules, at the published 128x160 input and at 96x128.

    .venv/bin/python benchmarks/person_det.py [--json]

One class (person), 3 anchors per scale, strides 8/16/32. "best patch" is the lowest peak with at
most 10% more MACs, "lowest" the lowest peak at any overhead (grids 2..8, every valid split: the
neck reads the stride-8 tap, so at most the first 5 blocks run per patch); "fused" searches
row-streamed fusion of inverted residuals jointly (issue 15). "bound by" names the buffer that
dominates the peak's working set (tinydet.schedule.peak_breakdown). kB = 1024 bytes, int8
activations, in-place depthwise and fused residual on; the arena equals each plan's peak.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinydet.arch import HeadSpec, get_spec, lower  # noqa: E402
from tinydet.schedule import allocate, peak_breakdown, search_plans  # noqa: E402
from tinydet.schedule.profile import op_flash_bytes  # noqa: E402

RESOLUTIONS = ((128, 160), (96, 128))
PUBLISHED = {"macs": 18_296_320, "weights": 163_494}  # tinyengine assets/detection.tflite, counted op by op


def _plan_row(graph, plan) -> dict:
    why = peak_breakdown(graph, plan)
    return {"grid": list(plan.grid), "split": plan.split, "peak": plan.peak, "mac_overhead": plan.mac_overhead,
            "fused_blocks": list(plan.rules.fused_blocks), "arena": allocate(graph, plan).arena_bytes,
            "peak_op": why.op, "stage": why.stage, "bound_by": why.bound, "bound_bytes": why.parts[why.bound]}


def measure(resolution: tuple[int, int]) -> dict:
    spec = get_spec("mcunet-person-det")
    graph = lower(spec, resolution, head=HeadSpec(num_classes=1, num_anchors=3))
    norm = sum(op.macs for op in graph.ops if op.role == "norm")
    best, _ = search_plans(graph, max_overhead=0.10)
    lowest, _ = search_plans(graph)
    fused, _ = search_plans(graph, max_overhead=0.10, fusion=True)
    per_layer = best.peak_sram_per_layer
    return {"resolution": list(resolution), "macs": graph.macs, "macs_without_norm": graph.macs - norm,
            "weights_and_biases": sum(op.weight_count + op.out_shape[0] for op in graph.ops
                                      if op.kind in ("conv", "dwconv") and op.role != "norm"),
            "flash_bytes": sum(op_flash_bytes(op) for op in graph.ops), "peak_per_layer": per_layer,
            "arena_per_layer": allocate(graph).arena_bytes,
            "best_patch": _plan_row(graph, best), "lowest": _plan_row(graph, lowest), "fused": _plan_row(graph, fused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(r) for r in RESOLUTIONS]
    if args.json:
        print(json.dumps({"published": PUBLISHED, "rows": rows}, indent=2))
        return
    kb = lambda b: f"{b / 1024:.1f} kB"  # noqa: E731
    print(f"published (tflite): {PUBLISHED['macs']:,} MACs, {PUBLISHED['weights']:,} weights + biases")
    for r in rows:
        h, w = r["resolution"]
        print(f"\nmcunet-person-det @ {h}x{w}: {r['macs_without_norm']:,} MACs (+{r['macs'] - r['macs_without_norm']:,} "
              f"input normalisation), {r['weights_and_biases']:,} weights + biases, Flash {kb(r['flash_bytes'])}")
        print(f"  per layer: {kb(r['peak_per_layer'])} (arena {kb(r['arena_per_layer'])})")
        for key in ("best_patch", "lowest", "fused"):
            p = r[key]
            fusedb = f", fused blocks {p['fused_blocks']}" if p["fused_blocks"] else ""
            print(f"  {key:<10}: {p['grid'][0]}x{p['grid'][1]} split {p['split']}{fusedb}: {kb(p['peak'])} "
                  f"(x{r['peak_per_layer'] / p['peak']:.1f} less), {p['mac_overhead'] * 100:+.1f}% MACs, arena "
                  f"{kb(p['arena'])}; peak at {p['peak_op']} ({p['stage']}), bound by {p['bound_by']} "
                  f"({kb(p['bound_bytes'])})")


if __name__ == "__main__":
    main()
