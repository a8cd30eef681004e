"""Fused, row-streamed inverted residuals (issue 15): the planner's peak SRAM with grid, split and
per-block fusion searched jointly, against the unfused MCUNetV2 schedules, for MobileNetV2 and every
preset.

    .venv/bin/python benchmarks/fusion_plan.py [--json] [--presets a,b] [--export DIR]

Per preset (the graphs of benchmarks/profile_presets.py: classifiers at 224, zoo models at their
published resolution, detector backbones with a 20-class head): the best peak within +10% MACs
and at +0% MACs, unfused and fused, and the fused Pareto front. Every figure is the exact model of
tinydet.schedule.fusion (kB = 1024 B, int8, in-place depthwise and fused residual on) and every
plan's arena (tinydet.schedule.allocate) equals its peak. ``--export DIR``: the planned peaks of
an export folder's network at its own grid and split (today's schedule) and fused, per layer and
patched, and the best fused plan within +10% MACs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_presets import preset_graph  # noqa: E402

from tinydet.arch import list_presets  # noqa: E402
from tinydet.schedule import allocate, peak_breakdown, search_plans  # noqa: E402

KB = 1024


def _row(plan, graph) -> dict:
    at = peak_breakdown(graph, plan)
    assert allocate(graph, plan).arena_bytes == plan.peak  # the firmware arena is exactly the plan
    return {"peak": plan.peak, "grid": list(plan.grid), "split": plan.split, "mac_overhead": plan.mac_overhead,
            "fused_blocks": list(plan.rules.fused_blocks), "bound": at.bound, "bound_bytes": at.parts[at.bound],
            "peak_op": at.op, "stage": at.stage}


def bench(presets: list[str]) -> dict:
    rows = []
    for name in presets:
        g = preset_graph(name)
        out = {"preset": name, "resolution": list(g.resolution), "mode": g.mode}
        for fusion in (False, True):
            key = "fused" if fusion else "unfused"
            best, front = search_plans(g, max_overhead=0.10, fusion=fusion)
            zero, _ = search_plans(g, max_overhead=0.0, fusion=fusion)
            out[key] = {"best_10": _row(best, g), "best_0": _row(zero, g)}
            if fusion:
                out["pareto_fused"] = [{"peak": p.peak, "grid": list(p.grid), "split": p.split,
                                        "mac_overhead": p.mac_overhead} for p in front]
        rows.append(out)
    return {"rows": rows}


def export_figures(folder: str) -> dict:
    """Planned SRAM of the network of export ``folder``: its schedule as exported, the same grid and
    split fused, per layer unfused / fused, and the best fused plan within +10% MACs."""
    from tinydet.arch.graph import lower
    from tinydet.arch.spec import HeadSpec, spec_from_dict
    from tinydet.export.schedule_file import load_export
    from tinydet.schedule import per_layer_plan, plan_fused, plan_patches

    s = load_export(folder).schedule
    head = HeadSpec(**s["arch"]["head"]) if s["arch"]["head"] else None
    g = lower(spec_from_dict(s["arch"]["spec"]), tuple(s["input"]["shape"][1:]), head=head)
    grid, split = tuple(s["grid"]), int(s["split"])
    best, _ = search_plans(g, max_overhead=0.10, fusion=True)
    return {"export": folder, "arch": g.arch, "resolution": list(g.resolution), "grid": list(grid), "split": split,
            "exported_arena_bytes": s["arena"]["arena_bytes"],
            "patch": _row(plan_patches(g, grid, split), g), "patch_fused": _row(plan_fused(g, grid, split), g),
            "layer": _row(per_layer_plan(g), g), "layer_fused": _row(plan_fused(g, 1, 0), g),
            "best_fused_10": _row(best, g)}


def _kb(v: int) -> str:
    return f"{v / KB:,.1f} kB"


def _cfg(r: dict) -> str:
    return f"{r['grid'][0]}x{r['grid'][1]}, {r['split']}" if r["split"] else "per layer"


def render(result: dict) -> None:
    print("| preset | resolution | unfused best (+10%) | fused best (+10%) | MACs | bounded by | unfused +0% | fused +0% | bounded by |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        u10, f10, u0, f0 = r["unfused"]["best_10"], r["fused"]["best_10"], r["unfused"]["best_0"], r["fused"]["best_0"]
        res = "x".join(str(v) for v in r["resolution"])
        print(f"| {r['preset']} | {res} | {_kb(u10['peak'])} ({_cfg(u10)}) | {_kb(f10['peak'])} ({_cfg(f10)}) | "
              f"{f10['mac_overhead'] * 100:+.1f}% | {f10['bound']} {_kb(f10['bound_bytes'])} | {_kb(u0['peak'])} | "
              f"{_kb(f0['peak'])} ({_cfg(f0)}) | {f0['bound']} {_kb(f0['bound_bytes'])} |")
    for r in result["rows"]:
        front = ", ".join(f"{_kb(p['peak'])} @ {p['mac_overhead'] * 100:+.1f}% ({_cfg(p)})" for p in r["pareto_fused"])
        print(f"\n{r['preset']} fused Pareto front: {front}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    parser.add_argument("--export", default=None, metavar="DIR", help="figures of an export folder's network instead")
    args = parser.parse_args()
    if args.export:
        result = export_figures(args.export)
        if args.json:
            print(json.dumps(result))
        else:
            for key in ("patch", "patch_fused", "layer", "layer_fused", "best_fused_10"):
                r = result[key]
                print(f"{key:>14}: {_kb(r['peak'])} ({r['peak']:,} B, {_cfg(r)}, {r['mac_overhead'] * 100:+.1f}% MACs, "
                      f"fused {r['fused_blocks'] or '-'}, bounded by {r['bound']})")
        return
    presets = args.presets.split(",") if args.presets else list_presets()
    result = bench(presets)
    if args.json:
        print(json.dumps(result))
    else:
        render(result)


if __name__ == "__main__":
    main()
