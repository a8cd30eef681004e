"""Deploy figures of the demo face detector on the emulated Cortex-M7 (QEMU mps2-an500), one JSON line.

    .venv/bin/python benchmarks/deploy_synth.py [--export out/synth_face] [--work build/bench_deploy]

Model: ``--export`` (the trained demo export, after `tinydet quantize`), else a random-weight
export of configs/synth_face.yaml's architecture (mbv2-w0.35 detector at 192x192, the export's
automatic patch plan, minmax PTQ on random images): instruction counts and memory depend on the
shapes, not on the weight values.

Figures, per mode (patch = the export's tile schedule, layer = per layer): flash_bytes,
sram_arena_bytes (== planned peak), sram_static_bytes, stack_bytes (stack painting),
instructions_per_inference (QEMU -icount shift=0), instructions/MAC, instructions_decode (decode + NMS
at ``--conf``, after inference); and, on the same layers (layer-mode shapes,
the model's weights, random int8 inputs), the instructions of the bundled kernels
(arm_convolve_wrapper_s8 / arm_depthwise_conv_wrapper_s8) against the runtime's straightforward
``ref_`` C loops (deploy/runtime/src/ref_kernels.c), with their ratio.

With ``--cmsis-nn-root`` (default ``$CMSIS_NN_ROOT``) the same command also builds and runs the same
firmware against ARM's CMSIS-NN sources (both modes, ``arm_patch`` / ``arm_layer``) and prints the
peer ratios ``arm_over_bundled`` (ARM's instructions per inference / the bundled kernels'); the
ARM build keeps tinydet's in-place depthwise where the arena runs it (ARM has none; a staged
step runs ARM's ordinary depthwise) and the runtime's own steps;
``arm_over_bundled_without_inplace_dw`` is the same ratio over the other layers (where the builds'
kernels differ). ``patch_overhead`` (tinydet.deploy.report.patch_overhead) splits patch mode's extra
instructions into the recomputed halo MACs, priced at each layer's own instructions/MAC, and the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "c"))  # the kernel driver's record encoder (tests/c/driver.py)


def synthetic_export(out: Path, config: Path) -> Path:
    """Random-weight export + PTQ of the config's architecture (the demo model's shapes)."""
    import torch

    from tinydet.arch import HeadSpec, build, get_spec, lower
    from tinydet.pipeline.export import auto_plan
    from tinydet.export.folder import export_network
    from tinydet.quant.calibrate import calibrate
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.config import load_config

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_config(str(config), [])
    m = cfg["model"]
    spec = get_spec(m["arch"])
    head = HeadSpec(num_classes=1, **m["head"])
    res = m["resolution"]
    model = build(spec, head=head).eval()
    graph = lower(spec, res, head=head)
    grid, split = auto_plan(graph, cfg, None)
    strides = [int(round(graph.resolution[0] / graph.tensors[graph.outputs[i]].shape[1]))
               for i in range(len(graph.outputs))]
    det = {"num_classes": 1, "class_names": ["face"], "anchors": m["anchors"], "strides": strides,
           "conf_thresh": float(cfg["eval"]["conf_thresh"]), "nms_iou": float(cfg["eval"]["nms_iou"]),
           "max_det": int(cfg["eval"]["max_det"])}
    export_network(model, graph, out, split, grid, detector=det, check_images=1)
    h, w = graph.resolution
    rng = np.random.default_rng(1)
    ranges = calibrate(str(out / "full.onnx"), [rng.random((1, 3, h, w), dtype=np.float32) for _ in range(4)],
                       "minmax")
    quantize_export(out, ranges, {"kind": "ptq", "method": "minmax", "images": 4, "note": "benchmark, random"})
    return out


def kernel_comparison(export_dir: Path, work: Path) -> dict:
    """Instructions of the bundled kernels vs the ref_ loops on every conv / depthwise layer."""
    import driver as drv

    from tinydet.deploy import toolchain

    recs, names = [], []
    for lay in drv.export_layers(export_dir, np.random.default_rng(0)):
        for variant in ("bundled", "ref"):
            if lay.kind == "conv":
                recs.append(lay.record(drv.CONV_WRAPPER if variant == "bundled" else drv.CONV_REF))
            else:
                recs.append(lay.record(drv.DW_WRAPPER if variant == "bundled" else drv.DW_REF))
            names.append((lay.name, variant))
    elf = toolchain.compile([drv.DRIVER_SOURCE], "qemu-mps2-an500", work / "kernels" / "driver.elf", ref_kernels=True,
                            defines={"TINYDET_BOARD": 1, "ARENA_BYTES": 3 * 1024 * 1024})
    run = work / "kernels" / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "kin.bin").write_bytes(b"".join(recs))
    code, out, log = toolchain.run_qemu(elf, run, timeout_s=580)
    if code != 0:
        raise SystemExit(f"kernel driver exit {code} (log {log})")
    results = drv.read_outputs(run / "kout.bin")
    ipt = toolchain_ipt()
    per = {}
    for (name, variant), (status, ticks, payload) in zip(names, results):
        if status != 0:
            raise SystemExit(f"{name} ({variant}): status {status}")
        per.setdefault(name, {})[variant] = ticks * ipt
        per[name].setdefault("outputs", []).append(payload)
    for name, d in per.items():
        outs = d.pop("outputs")
        if outs[0] != outs[1]:
            raise SystemExit(f"{name}: bundled and ref_ kernels disagree")
    bundled = sum(d["bundled"] for d in per.values())
    ref = sum(d["ref"] for d in per.values())
    return {"kernel_layers": len(per), "instructions_bundled_kernels": int(bundled), "instructions_ref_loops": int(ref),
            "ref_over_bundled": round(ref / bundled, 2),
            "per_layer_ref_over_bundled": {k: round(v["ref"] / v["bundled"], 2) for k, v in per.items()}}


def inplace_layers(sched: dict) -> set[str]:
    """Layers the schedule runs through the in-place depthwise kernel in either mode (tinydet's kernel
    in every build: ARM has none); staged steps run the ordinary depthwise, ARM's in its build."""
    steps = sched["arena"]["steps"] + sched["arena_layer"]["steps"]
    steps += [s for tile in sched["arena"]["tiles"] for s in tile]
    return {s["op"] for s in steps if s["mode"] == "inplace_dw" and not s.get("staged", False)}


def _without(rows, names: set[str]) -> int:
    """Instructions of a run's layers outside ``names``."""
    return sum(f.instructions for f in rows if f.name not in names)


def toolchain_ipt() -> float:
    """Instructions per counter tick on QEMU (target.json, calibrated by tests/test_c_kernels.py)."""
    from tinydet.deploy.toolchain import TARGETS_DIR

    return float(json.loads((TARGETS_DIR / "qemu-mps2-an500" / "target.json").read_text())["instructions_per_tick"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=None, help="demo export folder (default: random-weight synth_face export)")
    p.add_argument("--config", default=str(REPO / "configs" / "synth_face.yaml"))
    p.add_argument("--work", default=str(REPO / "build" / "bench_deploy"))
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--conf", type=float, default=0.001, help="decode threshold (default 0.001, the demo's eval conf)")
    p.add_argument("--cmsis-nn-root", default=os.environ.get("CMSIS_NN_ROOT"),
                   help="also build against ARM's CMSIS-NN in this source tree (default $CMSIS_NN_ROOT)")
    args = p.parse_args()
    from tinydet.deploy import deploy
    from tinydet.deploy.report import LayerFigures, patch_overhead

    t0 = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    export = Path(args.export) if args.export else synthetic_export(work / "export", Path(args.config))
    result = {"benchmark": "deploy_synth", "target": "qemu-mps2-an500", "model": export.name, "conf": args.conf,
              "weights": "trained" if args.export else "random (shapes of " + Path(args.config).name + ")"}
    sched = json.loads((export / "schedule.json").read_text())
    result.update(arch=sched["arch"]["name"], input=sched["input"]["shape"], grid=sched["grid"], split=sched["split"])
    keys = ("flash_bytes", "sram_arena_bytes", "planned_peak_bytes", "sram_static_bytes", "scratch_bytes",
            "stack_bytes", "instructions_per_inference", "instructions_per_mac", "instructions_decode",
            "detections_per_image", "outputs_bit_exact_vs_reference", "detections_match_fraction_vs_python_decode")
    per_layer: dict[str, list] = {}
    builds = [("", None)] + ([("arm_", args.cmsis_nn_root)] if args.cmsis_nn_root else [])
    saved = os.environ.pop("CMSIS_NN_ROOT", None)
    try:
        for prefix, root in builds:
            if root:
                os.environ["CMSIS_NN_ROOT"] = root  # tinydet.deploy.build reads it when compiling
            for mode in ("patch", "layer"):
                r = deploy(export, "qemu-mps2-an500", work / (prefix + mode), mode=mode, run=True, validate=True,
                           images=args.images, timeout_s=580, conf=args.conf)
                result[prefix + mode] = {k: r[k] for k in keys}
                per_layer[prefix + mode] = [LayerFigures(**f) for f in r["per_layer"]]
            os.environ.pop("CMSIS_NN_ROOT", None)
    finally:
        if saved is not None:
            os.environ["CMSIS_NN_ROOT"] = saved
    if args.cmsis_nn_root:
        result["arm_over_bundled"] = {
            mode: round(result["arm_" + mode]["instructions_per_inference"] / result[mode]["instructions_per_inference"],
                        3) for mode in ("patch", "layer")}
    result["arena_saved_bytes"] = result["layer"]["sram_arena_bytes"] - result["patch"]["sram_arena_bytes"]
    result["patch_instruction_overhead"] = round(
        result["patch"]["instructions_per_inference"] / result["layer"]["instructions_per_inference"] - 1, 4)
    result["patch_overhead"] = patch_overhead(per_layer["patch"], per_layer["layer"]).to_dict()
    if args.cmsis_nn_root:
        # the peer ratio on the layers where the two builds run different kernels
        same = inplace_layers(sched)
        result["arm_over_bundled_without_inplace_dw"] = {
            mode: round(_without(per_layer["arm_" + mode], same) / _without(per_layer[mode], same), 3)
            for mode in ("patch", "layer")}
    result.update(kernel_comparison(export, work))
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
