"""Float -> int8 AP of one export folder on every ``tinydet eval`` engine, on a whole split.

For each engine: ``tinydet eval -c CONFIG --export DIR --int8 --engine E`` (reference: the numpy
integer interpreter the firmware matches bit for bit; qemu: the firmware itself on QEMU mps2-an500;
litert: full.int8.tflite, when the folder has one; onnxruntime: the QDQ models), next to the float
``--export DIR`` figures, with the change in AP points and the wall time of each run. WIDER sets
report easy / medium / hard, VOC-style sets map50 and map_coco.

Prints one JSON line; ``qemu_equals_reference`` is the device check (the figures must be equal).

    python benchmarks/eval_engines.py -c configs/synth_face.yaml --export out/face [--data DIR] [--split val]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export_synth import cli  # noqa: E402  (benchmarks/ is the script's folder: a tinydet verb in-process)

ENGINES = ("reference", "qemu", "litert", "onnxruntime")
WIDER_KEYS = ("easy", "medium", "hard")
VOC_KEYS = ("map50", "map50_area", "map_coco")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--export", required=True, help="export folder (quantized)")
    p.add_argument("--data", default=None, help="data root (default: the config's data.root)")
    p.add_argument("--split", default="val")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"--engines: unknown {unknown}; expected a subset of {','.join(ENGINES)}")
    common = ["eval", "-c", args.config, "--export", args.export, "--split", args.split]
    if args.data:
        common += ["--data", args.data]

    def timed(flags: list[str]) -> tuple[dict, float]:
        t0 = time.perf_counter()
        result = cli(common + flags)
        return result, round(time.perf_counter() - t0, 1)

    flt, flt_s = timed([])
    keys = WIDER_KEYS if flt["format"] == "wider" else VOC_KEYS
    report: dict = {"benchmark": "eval_engines", "config": args.config, "export": args.export, "split": args.split,
                    "n_images": flt["n_images"], "float": {k: flt[k] for k in keys}, "wall_s": {"float": flt_s},
                    "int8": {}, "int8_minus_float_points": {}, "skipped": {}}
    for engine in engines:
        if engine == "litert" and not (Path(args.export) / "full.int8.tflite").is_file():
            report["skipped"][engine] = f"no full.int8.tflite: run `tinydet tflite {args.export}` first"
            continue
        result, wall = timed(["--int8", "--engine", engine])
        report["int8"][engine] = {k: result[k] for k in keys}
        report["int8_minus_float_points"][engine] = {k: round(100.0 * (result[k] - flt[k]), 2) for k in keys}
        report["wall_s"][engine] = wall
        if "device" in result:
            report["device"] = result["device"]
    if "qemu" in report["int8"] and "reference" in report["int8"]:
        report["qemu_equals_reference"] = report["int8"]["qemu"] == report["int8"]["reference"]
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
