"""Classifiers on the emulated Cortex-M7: the MCUNet VWW presets exported, quantized and deployed in
patch and layer mode (QEMU mps2-an500), with the firmware's arena against the plan.

    .venv/bin/python benchmarks/classifier_deploy.py [--arch mcunet-vww0:64 ...] [--max-overhead 0.1] [--json]

Weights are random (BatchNorm randomised, the fully connected layer centred on the calibration
images' features so the top-1 varies): SRAM, Flash and instruction counts do not depend on the
weights' values. The plan is the planner's lowest-peak one over every exportable split within
``--max-overhead`` extra MACs (``tinydet.schedule.search_plans``, no SRAM budget). Per mode: the linked arena (== the planned peak),
Flash, instructions per inference (CMSDK timer ticks x 40 under ``-icount shift=0``), the global
pool's and the fully connected layer's instructions, and the checks of ``tinydet deploy
--validate`` (int8 logits bit exact vs the numpy reference, top-1 agreement) on 2 images.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

DEFAULT = ("mcunet-vww0:64", "mcunet-vww1:80", "mcunet-vww2:144")  # the mcunet README's resolutions


def measure(arch: str, res: int, work: Path, max_overhead: float | None) -> dict:
    """Export + quantize + deploy ``arch`` at ``res`` in both modes; the figures of one row."""
    from fixtures import centre_classifier
    from test_export_utils import random_network

    from tinydet.arch import get_spec, lower
    from tinydet.deploy import deploy
    from tinydet.export.folder import export_network
    from tinydet.pipeline.export import exportable_splits
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate
    from tinydet.schedule import search_plans

    spec = get_spec(arch)
    rng = np.random.default_rng(0)
    images = [rng.random((1, 3, res, res), dtype=np.float32) for _ in range(4)]
    model = centre_classifier(random_network(spec, None, seed=0), images)
    graph = lower(spec, (res, res))
    best, _ = search_plans(graph, splits=exportable_splits(graph), max_overhead=max_overhead)
    grid, split = tuple(best.grid), int(best.split)
    if split == 0:  # per layer wins: keep the folder's two stages with a 1x1 grid
        grid, split = (1, 1), exportable_splits(graph)[0]
    out = work / arch
    export_network(model, graph, out, split, grid)
    quantize_export(out, calibrate(str(out / "full.onnx"), images, "minmax"), {"kind": "ptq", "method": "minmax"})
    row = {"arch": arch, "resolution": res, "grid": list(grid), "split": split, "mac_overhead": best.mac_overhead}
    for mode in ("patch", "layer"):
        r = deploy(out, "qemu-mps2-an500", work / f"{arch}-{mode}", mode=mode, validate=True,
                   images=np.concatenate(images[:2]))
        layers = r["per_layer_instructions"]
        row[mode] = {"arena_bytes": r["sram_arena_bytes"], "planned_peak_bytes": r["planned_peak_bytes"],
                     "flash_bytes": r["flash_bytes"], "instructions": r["instructions_per_inference"],
                     "pool_instructions": layers["classifier.pool"], "fc_instructions": layers["classifier.fc"],
                     "logits_bit_exact": r["logits_bit_exact_vs_reference"],
                     "top1_agreement": r["top1_agreement_vs_reference"]}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=list(DEFAULT), help="PRESET:RESOLUTION (default: the VWW presets)")
    ap.add_argument("--max-overhead", type=float, default=0.1, help="extra MACs the plan may cost (default 0.1)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinydet-cls-bench-") as tmp:
        rows = [measure(a.split(":")[0], int(a.split(":")[1]), Path(tmp), args.max_overhead) for a in args.arch]
    if args.json:
        print(json.dumps({"rows": rows}, indent=1))
        return 0
    print("| model | input | plan | arena patch (= plan) | arena layer (= plan) | Flash | instructions patch | "
          "instructions layer | pool + fc instructions | logits bit exact, top-1 agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, q = r["patch"], r["layer"]
        ok = all(m["logits_bit_exact"] and m["arena_bytes"] == m["planned_peak_bytes"] for m in (p, q))
        print(f"| {r['arch']} | {r['resolution']} | {r['grid'][0]}x{r['grid'][1]}, split {r['split']} "
              f"(+{100 * r['mac_overhead']:.1f}% MACs) | "
              f"{p['arena_bytes'] / 1024:.1f} kB | {q['arena_bytes'] / 1024:.1f} kB | "
              f"{p['flash_bytes'] / 1024:.0f} kB | "
              f"{p['instructions'] / 1e6:.2f}M | {q['instructions'] / 1e6:.2f}M | "
              f"{p['pool_instructions']:,} + {p['fc_instructions']:,} | "
              f"{'yes' if ok else 'NO'}, {min(p['top1_agreement'], q['top1_agreement']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
