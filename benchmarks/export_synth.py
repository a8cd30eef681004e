"""Float vs int8 vs patch-based int8 on the synthetic VOC benchmark, and onnxruntime CPU latency.

1. The synthetic VOC set of ``configs/synth_voc.yaml`` (generated when missing).
2. A trained checkpoint: ``--ckpt``, else ``tinydet train -c configs/synth_voc.yaml`` (``--epochs``).
3. ``tinydet export`` (auto plan), ``tinydet quantize`` (``--calib`` images, ``--method``),
   ``tinydet validate`` (``--validate-images`` val images).
4. ``tinydet eval`` map50 on the test split of: ``--onnx full.onnx`` (float), ``--export --int8``
   (full int8) and ``--export --int8 --patched`` (stage 1 per tile, stitched, stage 2).
5. onnxruntime latency (1 thread, batch 1, median of ``--runs``) of the same three.

Prints one JSON line; the int8 map50 should be within 1 point of float.

    python benchmarks/export_synth.py [--ckpt C] [--quick] [--out bench_out/export_synth]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synth_voc.yaml"))
    p.add_argument("--ckpt", default=None, help="trained checkpoint (default: train one)")
    p.add_argument("--out", default=str(ROOT / "bench_out" / "export_synth"))
    p.add_argument("--data", default=None, help="data root (default: the config's data.root)")
    p.add_argument("--images", type=int, default=1000, help="synthetic images to generate when the data is missing")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=None, help="training epochs without --ckpt (default: the config's)")
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    p.add_argument("--validate-images", type=int, default=8)
    p.add_argument("--split", default="test")
    p.add_argument("--runs", type=int, default=30, help="timed runs per model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run of the pipeline")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.calib, args.validate_images, args.runs = 40, 1, 8, 2, 5
        if args.data is None:
            args.data = str(Path(args.out) / "data-quick")
    return args


def log(msg: str) -> None:
    print(f"[export_synth] {msg}", file=sys.stderr, flush=True)


def cli(argv: list[str]) -> dict:
    """Run a tinydet verb in-process with --json; its JSON object (progress stays on stderr)."""
    from tinydet.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv + ["--json"])
    out = buf.getvalue().strip()
    if rc != 0:
        raise SystemExit(f"tinydet {' '.join(argv)} failed with status {rc}: {out[-500:]}")
    return json.loads(out.splitlines()[-1])


def latency_ms(runner, image, runs: int) -> float:
    """Median wall time of ``runner(image)`` over ``runs`` calls, after 3 warm-up calls."""
    import numpy as np

    for _ in range(3):
        runner(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(image)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np

    from tinydet.data.synth import synth_voc
    from tinydet.export import onnx_runner
    from tinydet.io.onnxrt import session
    from tinydet.config import load_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    data_root = Path(args.data or cfg["data"]["root"])
    if not data_root.is_absolute() and args.data is None:
        data_root = ROOT / data_root
    if not (data_root / "VOC2007").is_dir():
        log(f"generating {args.images} synthetic VOC images in {data_root}")
        synth_voc(str(data_root), args.images, seed=0, size=args.image_size)
    sets = [f"data.root={data_root}"]
    t0 = time.perf_counter()
    ckpt = args.ckpt
    if ckpt is None:
        overrides = sets + [f"train.out_dir={out / 'runs'}", "train.num_workers=0"]
        if args.epochs is not None:
            overrides += [f"train.epochs={args.epochs}", f"train.check_val_every_n_epoch={args.epochs}"]
        log(f"training {args.config} ({args.epochs or cfg['train']['epochs']} epochs)")
        summary = cli(["train", "-c", args.config, "--set", *overrides, "--new"])  # a rerun: runs-2, ...
        ckpt = summary.get("best_ckpt") or summary["last_ckpt"]
    folder = out / "export"
    sets_flags = [f for s in sets for f in ("--set", s)]
    log(f"exporting {ckpt} -> {folder}")
    exported = cli(["export", "-c", args.config, "--ckpt", str(ckpt), "--out", str(folder), *sets_flags])
    log(f"quantizing ({args.method}, {args.calib} images)")
    quantized = cli(["quantize", str(folder), "--calib", str(args.calib), "--method", args.method,
                     "-c", args.config, *sets_flags])
    log("validating")
    from tinydet.cli import main as tinydet_main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = tinydet_main(["validate", str(folder), "--images", str(args.validate_images), "-c", args.config,
                           *sets_flags, "--json"])
    validated = json.loads(buf.getvalue().strip().splitlines()[-1])
    validated["exit_status"] = rc

    evals = {}
    for key, flags in (("float", ["--onnx", str(folder / "full.onnx")]),
                       ("int8", ["--export", str(folder), "--int8"]),
                       ("int8_patched", ["--export", str(folder), "--int8", "--patched"])):
        log(f"evaluating {key} on the {args.split} split")
        result = cli(["eval", "-c", args.config, *flags, "--split", args.split, "--set", *sets])
        evals[key] = result.get("map50")

    from tinydet.export import load_export

    c, h, w = load_export(folder).input_shape
    image = np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)
    float_sess = session(folder / "full.onnx", threads=args.threads)
    int8_sess = session(folder / "full.int8.onnx", threads=args.threads)
    patched = onnx_runner(folder, int8=True, patched=True, threads=args.threads)
    lat = {
        "float": latency_ms(lambda x: float_sess.run(None, {"input": x}), image, args.runs),
        "int8": latency_ms(lambda x: int8_sess.run(None, {"input": x}), image, args.runs),
        "int8_patched": latency_ms(patched, image, args.runs),
    }
    report = {
        "benchmark": "export_synth",
        "config": args.config, "ckpt": str(ckpt), "split": args.split, "quick": args.quick,
        "map50_float": evals["float"], "map50_int8": evals["int8"], "map50_int8_patched": evals["int8_patched"],
        "int8_minus_float_points": (None if evals["float"] is None or evals["int8"] is None
                                    else round(100.0 * (evals["int8"] - evals["float"]), 3)),
        "patched_minus_int8_points": (None if evals["int8"] is None or evals["int8_patched"] is None
                                      else round(100.0 * (evals["int8_patched"] - evals["int8"]), 3)),
        "ort_latency_ms": {k: round(v, 3) for k, v in lat.items()}, "ort_threads": args.threads,
        "calibration": {"method": args.method, "images": quantized["source"]["images"]},
        "grid": exported.get("grid"), "split_after_block": exported.get("split"),
        "resolution": exported.get("resolution"),
        "validate": {k: validated.get(k) for k in (
            "float_stitched_max_abs_diff", "int8_stitched_mismatches", "int8_layer_max_lsb_vs_ort",
            "int8_output_mismatch_fraction_vs_ort", "detections_match_fraction", "peak_sram_patch",
            "peak_sram_per_layer", "mac_overhead", "ok", "exit_status")},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    report["int8_within_1_point"] = (report["int8_minus_float_points"] is not None
                                     and abs(report["int8_minus_float_points"]) <= 1.0)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
