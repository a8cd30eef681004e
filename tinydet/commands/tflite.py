"""``tinydet tflite``: write ``full.int8.tflite`` into a quantized export folder and check it in LiteRT.

    tinydet tflite out/NAME [--images K] [-c X.yaml] [--seed S] [--no-check] [--json]

The model carries the export folder's own int8 weights, biases, scales and zero points (see
:mod:`tinydet.export.tflite`); its checksum is recorded in schedule.json. Unless ``--no-check``, it
runs in LiteRT (PyPI ``ai-edge-litert``) on K images -- the config's val split when a config is
given (``-c`` or schedule.json's ``config``), else seeded random images, as ``tinydet validate`` --
and its raw int8 outputs are compared with the numpy int8 reference (the firmware's arithmetic):
``bit_exact_images`` must be K with LiteRT's reference kernels (TFLite Micro's arithmetic), else
the exit status is 1. LiteRT's optimized kernels are reported too (``optimized``, information).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinydet.commands.common import add_config_arguments, add_json_argument, declare_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="export folder (after `tinydet quantize`)")
    parser.add_argument("--images", type=int, default=4, metavar="K", help="images to check on (default 4)")
    add_config_arguments(parser, required=False, help="experiment YAML config: images from its val split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images (no config)")
    parser.add_argument("--no-check", action="store_true", help="write the file only (no LiteRT run)")
    add_json_argument(parser)

    declare_inputs(parser, folder="dir")

def run(args: argparse.Namespace):
    from tinydet.cli import print_json
    from tinydet.errors import TinydetError
    from tinydet.export import load_export
    from tinydet.export.tflite import LITERT_PACKAGE, TFLITE_FILE, compare_litert, litert_available, write_tflite
    from tinydet.pipeline.validate import validation_images
    from tinydet.quant.qgraph import load_qgraph

    folder = Path(args.folder)
    export = load_export(folder)
    qg = load_qgraph(export.path("full.int8.onnx"))
    if not args.no_check and not litert_available():  # fail before writing anything
        raise TinydetError(f"checking {TFLITE_FILE} needs LiteRT: pip install {LITERT_PACKAGE} "
                           "(or pass --no-check to write the file only)")
    result = {"folder": str(folder), **write_tflite(folder)}
    print(f"tinydet tflite: wrote {folder / TFLITE_FILE} ({result['bytes']} bytes)", file=sys.stderr)
    if args.no_check:
        return result
    images, source = validation_images(folder, args.images, args.config, args.overrides, args.seed)
    data = (folder / TFLITE_FILE).read_bytes()
    print(f"tinydet tflite: checking in LiteRT on {images.shape[0]} images ({source})", file=sys.stderr)
    ref = compare_litert(data, qg, images, "reference")
    opt = compare_litert(data, qg, images, "optimized")
    result.update(image_source=source, images=int(images.shape[0]), bit_exact_images=ref["bit_exact_images"],
                  reference=ref, optimized=opt, ok=ref["bit_exact_images"] == images.shape[0])
    if result["ok"]:
        return result
    if args.json:
        print_json(result)
    else:
        render(result)
    print(f"tinydet tflite: FAILED: {ref['bit_exact_images']} of {images.shape[0]} images bit exact "
          f"with LiteRT's reference kernels", file=sys.stderr)
    return 1


def render(result: dict) -> None:
    print(f"{result['folder']}/{result['file']}: {result['bytes']} bytes, ops {result['ops']}")
    if "reference" in result:
        for key in ("reference", "optimized"):
            r = result[key]
            print(f"  LiteRT {key:<9} kernels: {r['bit_exact_images']}/{r['images']} images bit exact, "
                  f"{r['mismatched_elements']} elements differ (max {r['max_abs_diff_lsb']} LSB)")
        print("OK" if result["ok"] else "FAILED")
