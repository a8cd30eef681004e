#!/usr/bin/env python
"""`make demo`: the whole tinydet story on one CPU machine, end to end.

1. memory plans of the presets (per-layer vs patch-based SRAM) with plots;
2. a synthetic face set in the official WIDER Face layout;
3. training a small face detector (a few minutes of CPU);
4. its WIDER easy/medium/hard AP and a PNG with drawn predictions;
5. the patch-aware export (split stages + schedule) and int8 quantization, validated in onnxruntime;
6. C code generation and firmware for an emulated Cortex-M7 (QEMU mps2-an500), run on held-out
   images in patch and per-layer mode, checked bit for bit against the numpy int8 reference;
7. PNGs of the detections the firmware made, an STM32F746 firmware with an embedded image, and a
   summary: AP on device vs float, SRAM (patch vs per-layer), Flash, instructions per inference.

Every step is a `tinydet` command (printed before it runs), so the demo doubles as a tutorial.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/synth_face.yaml"
PRESETS = [("mbv2-w1.0", "224"), ("mbv2-w1.0-rd", "224"), ("mcunetv2-m4", "320")]


def tinydet(*args: str) -> dict:
    """Run `tinydet ARGS --json`, echo the command, stream its log, return its JSON object."""
    cmd = ["tinydet", *args, "--json"]
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "tinydet", *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"demo: step failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kb(n: float) -> str:
    return f"{n / 1024:.1f} kB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    parser.add_argument("--images", type=int, default=600, help="images in the synthetic face set")
    parser.add_argument("--device-images", type=int, default=16, help="held-out images run on the emulated MCU")
    parser.add_argument("--retrain", action="store_true", help="train again even if a checkpoint exists")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    print("== 1/7 memory plans: per-layer vs patch-based peak SRAM (MCUNetV2), and with fused inverted residuals")
    plans = {}
    for arch, res in PRESETS:
        plot = out / f"memory_{arch}.png"
        paper = tinydet("plan", "--arch", arch, "--resolution", res, "--max-overhead", "0.1", "--no-fusion")
        r = tinydet("plan", "--arch", arch, "--resolution", res, "--max-overhead", "0.1", "--plot", str(plot))
        plans[arch] = (r, plot)
        for label, result in (("MCUNetV2 patches", paper), ("fused blocks    ", r)):
            best = result["best"]
            print(f"   {arch}@{res} {label}: per-layer {kb(result['peak_sram_per_layer'])} -> {kb(best['peak_sram'])} "
                  f"(grid {best['grid']}, split {best['split']}, MACs +{100 * best['mac_overhead']:.1f}%)")
        print(f"   plot {plot}")

    print("\n== 2/7 synthetic face data in the WIDER Face layout")
    data_root = ROOT / "data" / "synth_face"
    if not (data_root / "wider_face_split").exists():
        tinydet("data", "synth", "--format", "wider", "--out", str(data_root), "--images", str(args.images),
                "--seed", "0", "--size", "256")
    else:
        print(f"   {data_root} exists; reusing it")

    print("\n== 3/7 training a small face detector on the CPU")
    run_dir = out / "train"
    ckpt = run_dir / "best.ckpt"
    if args.retrain or not ckpt.exists():
        # a run folder is never overwritten: --new trains into demo_out/train-2, ... when it holds one
        t = tinydet("train", "-c", CONFIG, "--set", f"train.out_dir={run_dir}", "--new")
        ckpt = Path(t["best_ckpt"] or t["last_ckpt"])
        print(f"   trained {t['epochs']} epochs in {t['wall_s']:.0f} s ({t['train_images_per_s']:.0f} images/s); "
              f"best val hard AP {t['best_map50']:.3f}; checkpoint {ckpt}")
    else:
        print(f"   {ckpt} exists; reusing it (--retrain to train again)")

    print("\n== 4/7 evaluation (official WIDER Face protocol: easy / medium / hard AP)")
    float_eval = tinydet("eval", "-c", CONFIG, "--ckpt", str(ckpt))
    print(f"   float: easy {float_eval['easy']:.3f}  medium {float_eval['medium']:.3f}  hard {float_eval['hard']:.3f}")

    print("\n== 5/7 patch-aware export, int8 quantization, validation in onnxruntime")
    export_dir = out / "export"
    exp = tinydet("export", "-c", CONFIG, "--ckpt", str(ckpt), "--out", str(export_dir), "--plan", "auto")
    tinydet("quantize", str(export_dir), "-c", CONFIG, "--calib", "64")
    val = tinydet("validate", str(export_dir), "-c", CONFIG, "--images", "8")
    print(f"   stitched float max diff {val['float_stitched_max_abs_diff']:.2e}, stitched int8 mismatches "
          f"{val['int8_stitched_mismatches']}, per-layer int8 vs onnxruntime <= {val['int8_layer_max_lsb_vs_ort']} LSB, "
          f"detections match {100 * val['detections_match_fraction']:.0f}%")

    print("\n== 6/7 firmware for the emulated Cortex-M7 (QEMU mps2-an500), patch and per-layer mode")
    from tinydet.data.records import load_records
    from tinydet.deploy import run_demo
    from tinydet.eval.draw import draw_detections
    from tinydet.eval.wider import eval_wider_detections
    from tinydet.io.atomic import atomic_write_json
    from tinydet.config import load_config

    cfg = load_config(ROOT / CONFIG, [])
    records, class_names, _ = load_records(cfg["data"], "val", CONFIG)
    held_out = records[: args.device_images]
    print(f"$ tinydet deploy {export_dir} --target qemu-mps2-an500 --mode both --run --validate "
          f"(on {len(held_out)} held-out val images)", flush=True)
    demo = run_demo(export_dir, [r.path for r in held_out], out / "firmware", conf=cfg["eval"]["conf_thresh"])
    patch, layer = demo["patch"], demo["layer"]

    print("\n== 7/7 detections from the device, board firmware, summary")
    import numpy as np

    from tinydet.pipeline.predict import predict, torch_runner

    device_dets = {}
    png_dir = out / "device_png"
    for rec in held_out:
        d = demo["detections"][rec.path]
        boxes, scores, labels = (np.asarray(d["boxes"], np.float32).reshape(-1, 4), np.asarray(d["scores"], np.float32),
                                 np.asarray(d["labels"], np.int64))
        device_dets[rec.image_id] = (boxes, scores, labels)
        draw_detections(rec.path, boxes, scores, labels, class_names, png_dir / (rec.image_id.replace("/", "_") + ".png"),
                        gt_boxes=rec.boxes)
    gt_dir = str(Path(cfg["data"]["root"]) / "eval_tools" / "ground_truth")
    device_ap = eval_wider_detections(device_dets, held_out, gt_dir, records_only=True)
    float_dets, _ = predict(cfg, torch_runner(cfg, str(ckpt)), "val")
    float_subset = {r.image_id: float_dets[r.image_id] for r in held_out}
    float_ap = eval_wider_detections(float_subset, held_out, gt_dir, records_only=True)
    first = held_out[0]
    draw_detections(first.path, *float_subset[first.image_id], class_names, out / "float_pred.png", gt_boxes=first.boxes)

    from tinydet.deploy.build import build_board_demo

    board = build_board_demo(export_dir, held_out[0].path, out / "stm32f746", target="stm32f746")

    summary = {
        "float_ap_full_val": {k: float_eval[k] for k in ("easy", "medium", "hard")},
        "held_out_images": len(held_out),
        "ap_float_held_out": {k: device_ap_key(float_ap, k) for k in ("easy", "medium", "hard")},
        "ap_device_int8_held_out": {k: device_ap_key(device_ap, k) for k in ("easy", "medium", "hard")},
        "sram_arena_patch": patch["sram_arena_bytes"], "sram_arena_layer": layer["sram_arena_bytes"],
        "flash_bytes": patch["flash_bytes"], "stack_bytes": patch.get("stack_bytes"),
        "instructions_per_inference_patch": patch.get("instructions_per_inference"),
        "instructions_per_inference_layer": layer.get("instructions_per_inference"),
        "outputs_bit_exact_vs_reference": bool(patch.get("outputs_bit_exact_vs_reference")
                                               and layer.get("outputs_bit_exact_vs_reference")),
        "grid": exp.get("grid"), "split": exp.get("split"),
        "stm32f746_firmware": str(board.get("bin") or board.get("elf")),
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"""
   AP (WIDER, {len(held_out)} held-out images)  float: easy {summary['ap_float_held_out']['easy']:.3f} medium {summary['ap_float_held_out']['medium']:.3f} hard {summary['ap_float_held_out']['hard']:.3f}
                                    device int8: easy {summary['ap_device_int8_held_out']['easy']:.3f} medium {summary['ap_device_int8_held_out']['medium']:.3f} hard {summary['ap_device_int8_held_out']['hard']:.3f}
   SRAM arena: patch {kb(summary['sram_arena_patch'])} vs per-layer {kb(summary['sram_arena_layer'])} (= the planner's peaks)
   Flash: {kb(summary['flash_bytes'])}   stack: {summary['stack_bytes']} B
   instructions per inference: patch {summary['instructions_per_inference_patch']:,} vs per-layer {summary['instructions_per_inference_layer']:,}
   firmware outputs bit exact vs numpy int8 reference: {summary['outputs_bit_exact_vs_reference']}

   memory plots:      {out}/memory_*.png
   checkpoint:        {ckpt}
   float predictions: {out}/float_pred.png
   device detections: {png_dir}/*.png
   export folder:     {export_dir}
   STM32F746 build:   {summary['stm32f746_firmware']} (see deploy/demo/README.md to flash it)
   summary:           {out}/summary.json      ({time.time() - start:.0f} s in all)""")
    return 0


def device_ap_key(result: dict, key: str) -> float:
    value = result.get(key)
    return float(value) if value is not None else 0.0


if __name__ == "__main__":
    sys.exit(main())
