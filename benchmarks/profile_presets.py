"""Per-layer vs patch-based peak SRAM of every preset, and the MCUNetV2 paper's two configurations.

    .venv/bin/python benchmarks/profile_presets.py [--json]

Classifier presets run at 224x224, the MCUNet-zoo presets at their published resolution (beside
the SRAM/Flash TinyEngine reports for the same int8 model in the mcunet README); detector
backbones (no classifier) at the resolution their description states, with a 20-class, 3-anchor
head (VOC). "best patch" is the lowest peak whose
MAC overhead is at most 10%; "lowest" is the lowest peak at any overhead (grids 2..8, all splits).
kB = 1024 bytes; activations int8; both memory rules on (in-place depthwise, fused residual).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinydet.arch import HeadSpec, get_spec, list_presets, lower  # noqa: E402
from tinydet.schedule import allocate, plan_patches, search_plans  # noqa: E402
from tinydet.schedule.profile import op_flash_bytes  # noqa: E402

PAPER = [  # (preset, grid, split, paper's per-layer kB, paper's patch kB, paper's tile input, paper's MAC overhead)
    ("mbv2-w1.0", 4, 5, 1372, 172, 75, 0.10),
    ("mbv2-w1.0-rd", 4, 3, 1372, 172, 63, 0.03),
]


# mit-han-lab/mcunet README, Model List: resolution, TinyEngine peak SRAM kB, Flash kB (STM32F746)
TINYENGINE = {
    "mcunet-mbv2-w0.35": (144, 308, 862), "mcunet-proxyless-w0.3": (176, 292, 892),
    "mcunet-in0": (48, 266, 889), "mcunet-in1": (96, 307, 992), "mcunet-in2": (160, 242, 878),
    "mcunet-in3": (176, 293, 897), "mcunet-in4": (160, 456, 1876), "mcunet-vww0": (64, 146, 617),
    "mcunet-vww1": (80, 162, 689), "mcunet-vww2": (144, 311, 897),
}


def preset_graph(name: str):
    """The graph the benchmark profiles for preset ``name`` (see the module docstring)."""
    spec = get_spec(name)
    if name in TINYENGINE:
        return lower(spec, TINYENGINE[name][0])
    if spec.num_classes:
        return lower(spec, 224)
    m = re.search(r"(\d+)x(\d+)", spec.description)
    res = (int(m.group(1)), int(m.group(2))) if m else 224
    return lower(spec, res, head=HeadSpec(num_classes=20, num_anchors=3))


def bench() -> dict:
    rows = []
    for name in list_presets():
        g = preset_graph(name)
        best, front = search_plans(g, max_overhead=0.10)
        lowest = front[0]
        for plan in (best, lowest):
            assert allocate(g, plan).arena_bytes == plan.peak  # the C arena is exactly the plan
        rows.append({"arch": name, "resolution": list(g.resolution), "mode": g.mode, "macs": g.macs,
                     "peak_sram_per_layer": best.peak_sram_per_layer,
                     "best": {**best.summary(), "reduction": best.peak_sram_per_layer / best.peak},
                     "lowest": {**lowest.summary(), "reduction": lowest.peak_sram_per_layer / lowest.peak}})
    paper = []
    for name, grid, split, p_layer, p_patch, p_tile, p_over in PAPER:
        plan = plan_patches(lower(get_spec(name), 224), grid, split)
        paper.append({"arch": name, "grid": grid, "split": split, **plan.summary(),
                      "paper": {"per_layer_kB": p_layer, "patch_kB": p_patch, "tile_input": p_tile, "mac_overhead": p_over}})
    zoo = []
    for name, (res, te_sram, te_flash) in TINYENGINE.items():
        row = next(r for r in rows if r["arch"] == name)
        flash = sum(op_flash_bytes(op) for op in preset_graph(name).ops)
        zoo.append({"arch": name, "resolution": res, "peak_sram_per_layer": row["peak_sram_per_layer"],
                    "best_patch": row["best"], "flash_bytes": flash,
                    "tinyengine": {"sram_kB": te_sram, "flash_kB": te_flash},
                    "reduction_vs_tinyengine": te_sram * 1024 / row["best"]["peak_sram"]})
    return {"presets": rows, "paper": paper, "zoo": zoo}


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f}"


def render(result: dict) -> None:
    print("preset          resolution  per-layer kB | best (<=+10% MACs): grid split   peak kB  reduction  MACs  "
          "| lowest: grid split  peak kB  reduction  MACs")
    for r in result["presets"]:
        b, lo = r["best"], r["lowest"]
        grid = lambda p: f"{p['grid'][0]}x{p['grid'][1]}" if p["patched"] else "-"  # noqa: E731
        res = f"{r['resolution'][0]}x{r['resolution'][1]}"
        print(f"{r['arch']:<15} {res:>10} {_kb(r['peak_sram_per_layer']):>12} | {grid(b):>22} {b['split']:>5} "
              f"{_kb(b['peak_sram']):>9} {b['reduction']:>9.1f}x {b['mac_overhead'] * 100:>+5.1f}% "
              f"| {grid(lo):>10} {lo['split']:>5} {_kb(lo['peak_sram']):>8} {lo['reduction']:>9.1f}x "
              f"{lo['mac_overhead'] * 100:>+5.1f}%")
    print()
    print("MCUNetV2 paper configurations (224x224):     ours                               | paper")
    for p in result["paper"]:
        q = p["paper"]
        print(f"{p['arch']:<13} grid {p['grid'][0]}x{p['grid'][1]} split {p['split']}: per-layer {_kb(p['peak_sram_per_layer'])} kB "
              f"-> patch {_kb(p['peak_sram'])} kB (stage 1 {_kb(p['peak_sram_stage1'])}, stage 2 "
              f"{_kb(p['peak_sram_stage2'])}), tile {p['max_tile_input'][0]}x{p['max_tile_input'][1]}, "
              f"MACs {p['mac_overhead'] * 100:+.1f}% | {q['per_layer_kB']} kB -> {q['patch_kB']} kB, "
              f"{q['tile_input']}x{q['tile_input']}, {q['mac_overhead'] * 100:+.0f}%")
    print()
    print("MCUNet zoo (published resolution): ours per-layer / best patch (<=+10% MACs) | TinyEngine (mcunet README)")
    for z in result["zoo"]:
        b, te = z["best_patch"], z["tinyengine"]
        grid = f"{b['grid'][0]}x{b['grid'][1]} split {b['split']}" if b["patched"] else "per-layer"
        print(f"{z['arch']:<22} {z['resolution']:>4}: {_kb(z['peak_sram_per_layer']):>7} kB / {_kb(b['peak_sram']):>6} kB "
              f"({grid}, {b['mac_overhead'] * 100:+.1f}% MACs), Flash {_kb(z['flash_bytes'])} kB | SRAM {te['sram_kB']} kB, "
              f"Flash {te['flash_kB']} kB; TinyEngine / ours {z['reduction_vs_tinyengine']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = bench()
    if args.json:
        print(json.dumps(result))
    else:
        render(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
