"""``tinydet quantize``: int8 QDQ models of an export folder (post-training, or QAT ranges).

    tinydet quantize out/NAME --calib N [--method minmax|percentile|entropy] [-c X.yaml] [--json]
    tinydet quantize out/NAME --qat CKPT                 (ranges learned by QAT, no calibration)

Calibration runs ``full.onnx`` on N images of the config's train split (eval letterbox). The
config is ``-c``, else the path stored in schedule.json (``config``). One activation table is
applied to ``full``, ``stage1_patch`` and ``stage2``, so stitched int8 equals full int8; the
three ``*.int8.onnx`` and ``quant.json`` are added to the folder with their checksums.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinydet.commands.common import add_config_arguments, add_json_argument
from tinydet.errors import TinydetError

METHODS = ("minmax", "percentile", "entropy")


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
    add_json_argument(parser)


def config_for(folder: Path, schedule: dict, config: str | None, overrides) -> "object":
    """The experiment config: ``-c``, else schedule.json's ``config`` (a path, relative to the
    working directory or to the folder)."""
    from tinydet.train.config import load_config

    if config is None:
        stored = schedule.get("config")
        if isinstance(stored, dict):
            stored = stored.get("path")
        if not stored:
            raise TinydetError(f"{folder / 'schedule.json'}: no 'config' recorded; pass the experiment config "
                               f"with -c X.yaml")
        path = Path(stored)
        if not path.is_file() and (folder / path).is_file():
            path = folder / path
        config = str(path)
    return load_config(config, overrides)


def run(args: argparse.Namespace) -> dict:
    import time

    from tinydet.export import load_export
    from tinydet.quant.qdq import quantize_export

    folder = Path(args.folder)
    export = load_export(folder)
    start = time.time()
    if args.qat is not None:
        from tinydet.quant.qat import ranges_from_checkpoint

        if args.calib is not None or args.method is not None:
            raise TinydetError("--qat: the ranges come from the checkpoint; do not combine it with --calib/--method")
        ranges = ranges_from_checkpoint(args.qat)
        source = {"kind": "qat", "checkpoint": str(args.qat)}
        print(f"tinydet quantize: {len(ranges)} QAT ranges from {args.qat}", file=sys.stderr)
    else:
        from tinydet.quant.calibrate import calibrate, calibration_images

        cfg = config_for(folder, export.schedule, args.config, args.overrides)
        source_name = getattr(cfg, "source", args.config or "config")
        count = args.calib if args.calib is not None else int(cfg["quant"]["calib"])
        method = args.method or cfg["quant"]["method"]
        if method not in METHODS:
            raise TinydetError(f"{source_name}: quant.method: expected one of {', '.join(METHODS)}, got {method!r}")
        _, h, w = export.input_shape
        images = calibration_images(cfg, count, (h, w), source_name)
        print(f"tinydet quantize: calibrating {folder / 'full.onnx'} on {len(images)} images ({method})",
              file=sys.stderr)
        ranges = calibrate(str(export.path("full.onnx")), images, method, args.percentile,
                           input_name=export.schedule["input"]["name"], where=f"{source_name}: calibration")
        source = {"kind": "ptq", "method": method, "images": len(images), "config": str(source_name)}
        if method == "percentile":
            source["percentile"] = args.percentile
    result = quantize_export(folder, ranges, source)
    result["seconds"] = round(time.time() - start, 3)
    return result


def render(result: dict) -> None:
    src = result["source"]
    how = f"QAT ranges from {src['checkpoint']}" if src.get("kind") == "qat" else \
        f"{src['method']} calibration on {src['images']} images"
    print(f"int8 models written to {result['out']} ({how}): {', '.join(result['files'])}")
    print(f"{result['tensors']} quantized activations; split tensor params {result['split_params']}")
