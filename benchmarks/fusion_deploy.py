"""Fused inverted residuals on the emulated Cortex-M7 (QEMU mps2-an500): SRAM and instructions of
the same detector unfused (MCUNetV2's patch schedule) and fused, one JSON line per schedule and mode.

    .venv/bin/python benchmarks/fusion_deploy.py [--ckpt out/synth_face/train/best.ckpt]
        [--config configs/synth_face.yaml] [--grid 3x3 --split 4] [--work build/bench_fusion]

Model: the trained checkpoint ``--ckpt`` (the demo detector; `tinydet export`'s own loader), else a
random-weight model of ``--config``'s architecture (memory and instructions depend on the shapes,
not on the weight values). The plan: ``--grid``/``--split``, else the config's (`tinydet export`'s
choice). Schedules: ``unfused`` (``export.fusion: false``), ``fused`` (what ``export.fusion: true``
writes: the blocks the plan's peak needs fused, ``tinydet.schedule.plan_fused``) and ``all`` (every
fusable block fused: the instruction cost of fusion where it saves nothing). All three share one
float graph and one set of PTQ ranges (minmax on 4 random images), so they run the same int8
arithmetic: each is checked bit exact against the numpy reference and the arena against the plan.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _model(cfg, ckpt: Path | None):
    if ckpt is not None:
        from tinydet.io.checkpoint import load_detector

        return load_detector(cfg, ckpt)
    import torch

    from tinydet.models import detector_from_config

    torch.manual_seed(0)
    return detector_from_config(cfg, 1).eval()  # the demo face detector's one class


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, default=None)
    p.add_argument("--config", type=Path, default=REPO / "configs" / "synth_face.yaml")
    p.add_argument("--grid", default=None)
    p.add_argument("--split", type=int, default=None)
    p.add_argument("--work", type=Path, default=REPO / "build" / "bench_fusion")
    p.add_argument("--images", type=int, default=1)
    args = p.parse_args(argv)

    from tinydet.config import load_config
    from tinydet.deploy import deploy
    from tinydet.export.folder import export_network
    from tinydet.pipeline.export import choose_plan, detector_info
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate
    from tinydet.schedule import MemoryRules, plan_fused
    from tinydet.schedule.fusion import fusable_blocks

    cfg = load_config(str(args.config), [])
    model = _model(cfg, args.ckpt if args.ckpt and args.ckpt.exists() else None)
    graph = model.graph(cfg["model"]["resolution"])
    grid, split, _ = choose_plan(graph, cfg, grid=args.grid, split=args.split)
    h, w = graph.resolution
    rng = np.random.default_rng(1)
    calib = [rng.random((1, 3, h, w), dtype=np.float32) for _ in range(4)]
    images = np.random.default_rng(2).random((args.images, 3, h, w), dtype=np.float32)
    schedules = {"unfused": MemoryRules(), "fused": plan_fused(graph, grid, split).rules,
                 "all": MemoryRules(fused_blocks=tuple(fusable_blocks(graph)))}
    ranges = None
    for name, rules in schedules.items():
        out = args.work / name
        export_network(model, graph, out, split, grid, rules=rules, detector=detector_info(model, cfg),
                       check_images=1)
        ranges = ranges or calibrate(str(out / "full.onnx"), calib, "minmax")  # one float graph for all three
        quantize_export(out, ranges, {"kind": "ptq", "method": "minmax", "images": len(calib),
                                      "note": "benchmark, random"})
        for mode in ("patch", "layer"):
            r = deploy(out, "qemu-mps2-an500", args.work / f"{name}_{mode}", mode=mode, validate=True,
                       images=images, conf=0.1)
            print(json.dumps({"schedule": name, "mode": mode, "model": str(args.ckpt or "random weights"),
                              "grid": list(grid), "split": split, "fused_blocks": list(rules.fused_blocks),
                              "sram_arena_bytes": r["sram_arena_bytes"], "planned_peak_bytes": r["planned_peak_bytes"],
                              "scratch_bytes": r.get("sram_scratch_bytes", r.get("scratch_bytes")),
                              "flash_bytes": r["flash_bytes"], "stack_bytes": r.get("stack_bytes"),
                              "instructions_per_inference": r.get("instructions_per_inference"),
                              "bit_exact": r["outputs_bit_exact_vs_reference"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
