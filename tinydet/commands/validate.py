"""``tinydet validate``: prove an export folder right in onnxruntime and the int8 reference.

    tinydet validate out/NAME --images K [-c X.yaml] [--json]

Images: K images of the config's val split (eval letterbox) when a config is given (``-c`` or
schedule.json's ``config``), else K uniform random images (seeded). The checks and their bounds are
:mod:`tinydet.pipeline.validate`; they are printed as one JSON object with ``--json``.

The exit status is 1 when a must-hold bound fails (the JSON is printed either way).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinydet.commands.common import add_config_arguments, add_json_argument, declare_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="export folder (after `tinydet quantize`)")
    parser.add_argument("--images", type=int, default=4, metavar="K", help="images to validate on (default 4)")
    add_config_arguments(parser, required=False, help="experiment YAML config: images from its val split")
    parser.add_argument("--conf", type=float, default=0.25,
                        help="score threshold for the detections comparison (a deployment threshold; default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images (no config)")
    add_json_argument(parser)

    declare_inputs(parser, folder="dir")

def run(args: argparse.Namespace):
    from tinydet.cli import print_json
    from tinydet.pipeline.validate import validate_export, validation_images

    folder = Path(args.folder)
    images, source = validation_images(folder, args.images, args.config, args.overrides, args.seed)
    print(f"tinydet validate: {folder} on {images.shape[0]} images ({source})", file=sys.stderr)
    report = validate_export(folder, images, args.conf)
    report["image_source"] = source
    if report["ok"]:
        return report
    # a failed bound: print the report, then exit non-zero
    if args.json:
        print_json(report)
    else:
        render(report)
    for msg in report["failed"]:
        print(f"tinydet validate: FAILED {msg}", file=sys.stderr)
    return 1


def render(result: dict) -> None:
    print(f"export folder {result['folder']} on {result['images']} images ({result.get('image_source', '')})")
    for key in ("float_stitched_max_abs_diff", "int8_stitched_mismatches", "int8_stitched_mismatches_ort",
                "int8_layer_max_lsb_vs_ort", "int8_output_mismatch_fraction_vs_ort", "int8_output_max_lsb_vs_ort",
                "detections_match_fraction", "tflite_bit_exact_images", "peak_sram_patch", "peak_sram_per_layer",
                "mac_overhead"):
        print(f"  {key:<40} {result.get(key)}")
    print("OK" if result["ok"] else "FAILED: " + "; ".join(result["failed"]))

