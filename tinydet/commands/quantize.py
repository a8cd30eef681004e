"""``tinydet quantize``: int8 QDQ models of an export folder (post-training, or QAT ranges).

    tinydet quantize out/NAME --calib N [--method minmax|percentile|entropy] [-c X.yaml] [--json]
    tinydet quantize out/NAME --qat CKPT                 (ranges learned by QAT, no calibration)

Calibration runs ``full.onnx`` on N images of the config's train split (eval letterbox). The
config is ``-c``, else the one `tinydet export` recorded (``config.yaml`` in the folder); a
config whose classes or input size are not the export's is refused (``--other-data``: on purpose). One activation table is
applied to ``full``, ``stage1_patch`` and ``stage2``, so stitched int8 equals full int8; the
three ``*.int8.onnx`` and ``quant.json`` are added to the folder with their checksums.
"""
from __future__ import annotations

import argparse

from tinydet.commands.common import add_config_arguments, add_json_argument, declare_inputs
from tinydet.quant.calibrate import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="export folder written by `tinydet export`")
    parser.add_argument("--calib", type=int, default=None, metavar="N",
                        help="calibration images from the config's train split (default quant.calib)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="range estimation (default quant.method): min/max, percentile, KL entropy")
    parser.add_argument("--percentile", type=float, default=99.99, help="percentile for --method percentile")
    add_config_arguments(parser, required=False, help="experiment YAML config (default: schedule.json's config)")
    parser.add_argument("--qat", default=None, metavar="CKPT",
                        help="use the activation ranges learned by QAT in this checkpoint instead of calibrating")
    parser.add_argument("--other-data", action="store_true",
                        help="calibrate on a data set other than the model's on purpose (skips the check that the "
                        "config's classes and model.resolution are the export's)")
    add_json_argument(parser)

    declare_inputs(parser, folder="dir", qat="file")

def run(args: argparse.Namespace) -> dict:
    from tinydet.pipeline.quantize import quantize_folder

    return quantize_folder(args.folder, qat=args.qat, calib=args.calib, method=args.method,
                           percentile=args.percentile, config=args.config, overrides=args.overrides,
                           other_data=args.other_data)


def render(result: dict) -> None:
    src = result["source"]
    how = f"QAT ranges from {src['checkpoint']}" if src.get("kind") == "qat" else \
        f"{src['method']} calibration on {src['images']} images"
    print(f"int8 models written to {result['out']} ({how}): {', '.join(result['files'])}")
    print(f"{result['tensors']} quantized activations; split tensor params {result['split_params']}")
