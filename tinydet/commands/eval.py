"""``tinydet eval``: mAP of a model (checkpoint, ONNX file, export folder) or of a detections file.

    tinydet eval --dets FILE_OR_DIR --data DIR [--format voc|wider|coco|yolo] [--split NAME] [--classes a,b] [--json]
    tinydet eval --dets results.json --data instances_val.json [--json]   (COCO ground truth alone)
    tinydet eval -c CONFIG.yaml (--ckpt C | --onnx M.onnx | --export out/NAME [--int8 [--engine E]] [--patched])
                 [--split val] [--save-dets PATH] [--json]

VOC sets report ``map50`` (VOC07 11-point), ``map50_area``, ``map_coco`` (+ the other pycocotools
figures) and ``per_class``; WIDER Face sets report ``easy``, ``medium``, ``hard``. Both add
``n_images`` and ``source``. Finding the inputs is :mod:`tinydet.pipeline.eval`, scoring
:mod:`tinydet.eval`; this module parses the arguments and prints.
"""
from __future__ import annotations

import argparse
from typing import Any

from tinydet.commands.common import add_config_arguments, add_json_argument, declare_inputs
from tinydet.errors import TinydetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False, help="experiment YAML: the model, data and eval settings")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ckpt", default=None, help="Lightning checkpoint to evaluate (PyTorch)")
    model.add_argument("--onnx", default=None, help="ONNX model to evaluate (onnxruntime)")
    model.add_argument("--export", default=None, metavar="DIR", help="export folder out/<name> to evaluate")
    parser.add_argument("--int8", action="store_true", help="with --export: run the quantized *.int8.onnx models")
    parser.add_argument("--engine", choices=["reference", "onnxruntime", "litert", "qemu"], default=None,
                        help="with --export --int8: the numpy int8 reference the firmware matches bit for bit "
                             "(default), the QDQ models in onnxruntime, full.int8.tflite in LiteRT, or the "
                             "firmware itself on QEMU mps2-an500 (built once; its raw int8 outputs are decoded "
                             "in Python like the others')")
    parser.add_argument("--patched", action="store_true",
                        help="with --export: run stage1 tile by tile, stitch, then stage2 (patch-based; with "
                             "--engine qemu: the patch-mode firmware, else the per-layer one)")
    parser.add_argument("--dets", default=None, metavar="FILE_OR_DIR",
                        help="score a detections file: VOC comp4_det_<set>_<class>.txt folder, COCO results "
                             ".json, or WIDER <event>/<image>.txt submission folder")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="data set in its real layout (VOCdevkit / VOC<year> folder, WIDER root, COCO root, "
                             "YOLO data YAML), or a COCO ground-truth .json; with -c it replaces data.root")
    parser.add_argument("--format", choices=["voc", "wider", "coco", "yolo"], default=None,
                        help="data set format (default: detected from --data)")
    parser.add_argument("--split", default=None,
                        help="with -c: config split train|val|test (default eval.split); with --dets alone: "
                             "the VOC image set (default test) or WIDER split (default val)")
    parser.add_argument("--classes", default=None,
                        help="with --dets alone: comma-separated VOC class names in label order (default: "
                             "the devkit's per-class image set files, in VOC order when they are VOC's)")
    parser.add_argument("--save-dets", default=None, metavar="PATH",
                        help="with a model: also write its detections (VOC: comp4 folder, or a COCO .json; "
                             "WIDER: submission folder)")
    add_json_argument(parser)
    declare_inputs(parser, ckpt="file", onnx="file", export="dir", dets="path", data="path")


def _run_dets(args: argparse.Namespace) -> dict:
    from tinydet.pipeline.eval import evaluate_detections

    return evaluate_detections(args.dets, data=args.data, config=args.config, overrides=args.overrides,
                               fmt=args.format, split=args.split, class_names=args.classes)


def _run_model(args: argparse.Namespace) -> dict:
    from tinydet.pipeline.eval import evaluate_model
    from tinydet.config import load_config

    config = args.config
    if config is None and args.export:  # the config `tinydet export` recorded in the folder
        from tinydet.export.schedule_file import load_export

        config = load_export(args.export, strict=False).config_path
    if config is None:
        raise TinydetError("pass --dets FILE_OR_DIR --data DIR, or -c CONFIG with --ckpt, --onnx or --export")
    if not (args.ckpt or args.onnx or args.export):
        raise TinydetError("-c CONFIG needs the model to evaluate: --ckpt C, --onnx M.onnx or --export out/NAME")
    if (args.int8 or args.patched) and not args.export:
        raise TinydetError("--int8 and --patched need --export out/NAME")
    if args.engine and not args.int8:
        raise TinydetError("--engine chooses how the int8 model runs; add --int8 (with --export)")
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    cfg = load_config(config, overrides)
    if cfg.task == "classify":
        from tinydet.pipeline.eval_classify import evaluate_classifier

        if args.save_dets:
            raise TinydetError("--save-dets writes detections; it does not apply to a task: classify config")
        return evaluate_classifier(cfg, ckpt=args.ckpt, onnx=args.onnx, export=args.export, int8=args.int8,
                                   patched=args.patched, split=args.split, engine=args.engine or "reference")
    return evaluate_model(cfg, ckpt=args.ckpt, onnx=args.onnx, export=args.export, int8=args.int8,
                          patched=args.patched, split=args.split, save_dets=args.save_dets,
                          engine=args.engine or "reference")


def run(args: argparse.Namespace) -> dict:
    if args.dets is not None:
        if args.ckpt or args.onnx or args.export:
            raise TinydetError("--dets scores a detections file; it cannot be combined with --ckpt, --onnx or --export")
        if args.save_dets:
            raise TinydetError("--save-dets writes a model's detections; it does not apply to --dets")
        return _run_dets(args)
    return _run_model(args)


# ------------------------------------------------------------------------------------ output


def _fmt(value: Any) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def render(result: dict) -> None:
    """A readable table: per-class AP and the means (VOC), the three subsets (WIDER), or the
    classifier's accuracies."""
    if result.get("task") == "classify":
        _render_classify(result)
        return
    print(f"{result['format']} {result.get('split', '')}: {result['n_images']} images, {result['source']}"
          + (f", engine {result['engine']}" if "engine" in result else ""))
    if "device" in result:
        dev = result["device"]
        per = dev["instructions_per_inference"]
        print(f"firmware on {dev['target']} ({dev['mode']} mode): {dev['images']} images"
              + (f", {per:,} instructions per inference" if per else "") + f"; {dev['decode']}")
    if "per_class" in result:
        width = max([5] + [len(n) for n in result["per_class"]])
        print(f"{'class':<{width}}  AP50(07)  AP50(area)  n_gt  n_det")
        for name, c in result["per_class"].items():
            print(f"{name:<{width}}  {_fmt(c['ap50']):>8}  {_fmt(c['ap50_area']):>10}  {c['n_gt']:>4}  {c['n_det']:>5}")
        print(f"mAP50 (VOC07 11-point)  {_fmt(result['map50'])}")
        print(f"mAP50 (all-point area)  {_fmt(result['map50_area'])}")
        print(f"mAP@[.5:.95] (COCO)     {_fmt(result['map_coco'])}")
        print(f"mAP@.75 (COCO)          {_fmt(result['map_coco_75'])}")
    else:
        for s in ("easy", "medium", "hard"):
            print(f"{s:<7} AP {_fmt(result[s])}  ({result['n_faces'][s]} faces)")
        print(f"subsets: {result['difficulty_rule']}")


def _render_classify(result: dict) -> None:
    print(f"{result['format']} {result['split']}: {result['n_images']} images, {result['source']}"
          + (f", engine {result['engine']}" if "engine" in result else ""))
    width = max([5] + [len(n) for n in result["per_class"]])
    print(f"{'class':<{width}}  accuracy  images")
    for name, c in result["per_class"].items():
        print(f"{name:<{width}}  {_fmt(c['accuracy']):>8}  {c['images']:>6}")
    print(f"top-1 {_fmt(result['top1'])}   top-5 {_fmt(result['top5'])}   "
          f"mean class accuracy {_fmt(result['mean_class_accuracy'])}")
