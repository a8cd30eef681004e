#!/usr/bin/env python
"""`make demo-vww`: a person / no-person classifier (Visual Wake Words) from data to an emulated MCU.

1. synthetic COCO-layout images with person silhouettes (above and below the 0.5% area rule) and
   distractor shapes, labelled with the official Visual Wake Words rule (`tinydet data vww`);
2. training the MCUNet zoo's smallest VWW network (mcunet-vww0, 64x64) from scratch on the CPU;
3. its float top-1 and per-class accuracy;
4. the patch-based export under the paper's 32 kB SRAM budget and int8 quantization;
5. the int8 firmware on QEMU mps2-an500 (Cortex-M7) in patch mode, classifying the val images:
   accuracy on device vs float;
6. the firmware in patch and per-layer mode, bit exact against the numpy int8 reference, with the
   SRAM each needs.

Every step is a `tinydet` command (printed before it runs), as in `make demo`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from demo import kb, tinydet  # noqa: E402  (the same command runner as make demo)

from tinydet.io.atomic import atomic_write_json  # noqa: E402

CONFIG = "configs/vww_synth.yaml"
# one person class among seven distractor shapes: about half of the images end up label 1 (person
# present above the 0.5% rule), as in the real Visual Wake Words set
DISTRACTORS = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring")
COCO, VWW = "data/synth_vww_coco", "data/synth_vww"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder: run, export, builds, summary "
                        "(default demo_out/)")
    parser.add_argument("--images", type=int, default=480, help="images in the synthetic COCO set")
    parser.add_argument("--retrain", action="store_true", help="train again even if a checkpoint exists")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    print("== 1/6 data: synthetic persons in the COCO layout, labelled with the Visual Wake Words rule")
    if not (ROOT / COCO / "annotations").is_dir():
        tinydet("data", "synth", "--format", "coco", "--classes", "person", *DISTRACTORS, "--out", COCO,
                "--images", str(args.images), "--size", "96", "--seed", "0")
    vww = tinydet("data", "vww", "--coco", COCO, "--splits", "train", "val", "--out", VWW, "--overwrite")

    print("\n== 2/6 training mcunet-vww0 from scratch (PyTorch Lightning, CPU)")
    run_dir = out / "vww_train"
    best = run_dir / "best.ckpt"
    if args.retrain or not best.is_file():
        # a run folder is never overwritten: --new trains into demo_out/vww_train-2, ... when it holds one
        t = tinydet("train", "-c", CONFIG, "--set", "train.progress_bar=false", f"train.out_dir={run_dir}", "--new")
        best = Path(t["best_ckpt"] or t["last_ckpt"])
    else:
        print(f"   {best} exists; reusing it (--retrain to train again)")

    print("\n== 3/6 float accuracy")
    ckpt = str(best)
    export_dir, build_dir = str(out / "vww_export"), str(out / "vww_build")
    floating = tinydet("eval", "-c", CONFIG, "--ckpt", ckpt)

    print("\n== 4/6 patch-based export (32 kB budget) and int8 quantization")
    export = tinydet("export", "-c", CONFIG, "--ckpt", ckpt, "--out", export_dir)
    tinydet("quantize", export_dir, "-c", CONFIG, "--calib", "32")

    print("\n== 5/6 the firmware on QEMU (patch mode) classifies the val images")
    device = tinydet("eval", "-c", CONFIG, "--export", export_dir, "--int8", "--engine", "qemu", "--patched")

    print("\n== 6/6 firmware in patch and per-layer mode, bit exact vs the int8 reference")
    dep = tinydet("deploy", export_dir, "--target", "qemu-mps2-an500", "--out", build_dir, "--mode", "both", "--run",
                  "--validate", "--images", "4")

    patch, layer = dep["patch"], dep["layer"]
    summary = {
        "data": vww["splits"], "float": {k: floating[k] for k in ("top1", "mean_class_accuracy", "per_class")},
        "device": {k: device[k] for k in ("top1", "mean_class_accuracy", "per_class")},
        "device_engine": device.get("device"),
        "plan": {k: export.get(k) for k in ("grid", "split") if k in export},
        "sram_patch_bytes": patch["sram_arena_bytes"], "sram_layer_bytes": layer["sram_arena_bytes"],
        "flash_bytes": patch["flash_bytes"],
        "bit_exact": {"patch": patch.get("outputs_bit_exact_vs_reference"),
                      "layer": layer.get("outputs_bit_exact_vs_reference")},
        "instructions_per_inference": {"patch": patch.get("instructions_per_inference"),
                                       "layer": layer.get("instructions_per_inference")},
        "wall_s": round(time.time() - start, 1),
    }
    atomic_write_json(out / "vww_summary.json", summary)
    print("\n== summary")
    print(f"data: {vww['splits']}")
    print(f"top-1 float {floating['top1']:.3f} (mean class accuracy {floating['mean_class_accuracy']:.3f}) | "
          f"on device (int8, patch mode, QEMU) {device['top1']:.3f} ({device['mean_class_accuracy']:.3f})")
    print(f"SRAM: patch {kb(patch['sram_arena_bytes'])} vs per layer {kb(layer['sram_arena_bytes'])}; "
          f"Flash {kb(patch['flash_bytes'])}; bit exact: patch {summary['bit_exact']['patch']}, "
          f"layer {summary['bit_exact']['layer']}")
    print(f"written {out / 'vww_summary.json'} in {summary['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
