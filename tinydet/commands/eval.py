"""``tinydet eval``: mAP of a model (checkpoint, ONNX file, export folder) or of a detections file.

    tinydet eval --dets FILE_OR_DIR --data DIR [--format voc|wider|coco|yolo] [--split NAME] [--classes a,b] [--json]
    tinydet eval --dets results.json --data instances_val.json [--json]   (COCO ground truth alone)
    tinydet eval -c CONFIG.yaml (--ckpt C | --onnx M.onnx | --export out/NAME [--int8] [--patched])
                 [--split val] [--save-dets PATH] [--json]

VOC sets report ``map50`` (VOC07 11-point), ``map50_area``, ``map_coco`` (+ the other pycocotools
figures) and ``per_class``; WIDER Face sets report ``easy``, ``medium``, ``hard``. Both add
``n_images`` and ``source``. Scoring lives in :mod:`tinydet.eval`; this module only finds the
inputs and prints.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from tinydet.commands.common import add_config_arguments, add_json_argument
from tinydet.errors import TinydetError

_VOC_DIR = re.compile(r"^VOC\d{4}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False, help="experiment YAML: the model, data and eval settings")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ckpt", default=None, help="Lightning checkpoint to evaluate (PyTorch)")
    model.add_argument("--onnx", default=None, help="ONNX model to evaluate (onnxruntime)")
    model.add_argument("--export", default=None, metavar="DIR", help="export folder out/<name> to evaluate")
    parser.add_argument("--int8", action="store_true", help="with --export: run the quantized *.int8.onnx models")
    parser.add_argument("--patched", action="store_true",
                        help="with --export: run stage1 tile by tile, stitch, then stage2 (patch-based)")
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


def _log(message: str) -> None:
    print(f"tinydet eval: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- data sets


def detect_data_format(path: str) -> str:
    """'voc', 'wider', 'coco' or 'yolo' from the layout (VOCdevkit root, VOC<year>/, WIDER root,
    a COCO .json or a folder with annotations/instances_*.json, a YOLO data YAML or data.yaml)."""
    if os.path.isfile(path) and path.endswith(".json"):
        return "coco"
    if (os.path.isfile(path) and path.endswith((".yaml", ".yml"))) or os.path.isfile(os.path.join(path, "data.yaml")):
        return "yolo"
    ann = os.path.join(path, "annotations")
    if os.path.isdir(ann) and any(f.startswith("instances_") and f.endswith(".json") for f in os.listdir(ann)):
        return "coco"
    if not os.path.isdir(path):
        raise TinydetError(f"{path}: --data folder does not exist")
    entries = set(os.listdir(path))
    is_wider = bool(entries & {"wider_face_split", "WIDER_val", "eval_tools", "ground_truth"}) or \
        any(name.endswith("_val.mat") for name in entries)
    is_voc = bool(_VOC_DIR.match(os.path.basename(os.path.normpath(path)))) or \
        any(_VOC_DIR.match(e) for e in entries) or "VOCdevkit" in entries
    if is_voc and is_wider:
        raise TinydetError(f"{path}: looks like both a VOC and a WIDER Face set; pass --format voc or --format wider")
    if not (is_voc or is_wider):
        raise TinydetError(f"{path}: expected a VOC devkit folder (VOC<year>/Annotations, ...) or a WIDER Face "
                           "root (wider_face_split/, WIDER_val/)")
    return "voc" if is_voc else "wider"


def voc_base(data: str, image_set: str) -> tuple[str, str]:
    """(devkit root, year) of the VOC<year> folder under ``data`` that has ``image_set``."""
    data = os.path.normpath(data)
    if _VOC_DIR.match(os.path.basename(data)):
        return os.path.dirname(data) or ".", os.path.basename(data)[3:]
    root = os.path.join(data, "VOCdevkit") if os.path.isdir(os.path.join(data, "VOCdevkit")) else data
    years = sorted(e[3:] for e in os.listdir(root) if _VOC_DIR.match(e) and
                   os.path.isfile(os.path.join(root, e, "ImageSets", "Main", f"{image_set}.txt")))
    if not years:
        raise TinydetError(f"{root}: no VOC<year>/ImageSets/Main/{image_set}.txt (check --split)")
    if len(years) > 1:
        raise TinydetError(f"{root}: image set '{image_set}' exists for years {years}; pass --data {root}/VOC<year>")
    return root, years[0]


def voc_classes(root: str, year: str, image_set: str) -> list[str]:
    """Class names from the devkit's per-class image set files ``<class>_<image_set>.txt``."""
    from tinydet.data.records import VOC_CLASSES

    main = os.path.join(root, f"VOC{year}", "ImageSets", "Main")
    suffix = f"_{image_set}.txt"
    names = sorted(f[: -len(suffix)] for f in os.listdir(main) if f.endswith(suffix) and len(f) > len(suffix))
    if not names:
        raise TinydetError(f"{main}: no per-class files <class>{suffix} to take the class names from; "
                           "pass --classes a,b,... (in label order) or -c CONFIG")
    return [c for c in VOC_CLASSES if c in names] if set(names) <= set(VOC_CLASSES) else names


def _load(data_cfg: dict, split: str, source: str) -> tuple[list, list[str]]:
    from tinydet.data.records import load_records

    records, classes, _ = load_records(data_cfg, split, source)
    return records, classes


# ------------------------------------------------------------------------------------ scoring


def score_voc(detections: Any, records: list, classes: list[str], per_class_lists: Any = None) -> dict:
    """VOC + COCO figures of ``detections``; ``per_class_lists`` keeps a comp4 file's line order."""
    from tinydet.eval.coco import eval_coco
    from tinydet.eval.voc import eval_voc, eval_voc_per_class

    if per_class_lists is not None:
        result = eval_voc_per_class(per_class_lists, records, classes)
    else:
        result = eval_voc(detections, records, classes)
    return {"map50": result["map50"], "map50_area": result["map50_area"], **eval_coco(detections, records, classes),
            "per_class": result["per_class"], "n_images": result["n_images"]}


def _run_dets(args: argparse.Namespace) -> dict:
    from tinydet.eval import formats
    from tinydet.eval.wider import detections_to_wider, eval_wider, find_wider_mats

    if args.classes and args.config:
        raise TinydetError("--classes applies without -c; with -c the config's data.classes are used")
    if args.data is None and args.config is None:
        raise TinydetError("--dets needs --data DIR (the data set the detections are scored against) or -c CONFIG")
    cfg_data = None
    default_split = None
    if args.config is not None:
        from tinydet.train.config import load_config, to_dict

        cfg = load_config(args.config, args.overrides)
        cfg_data, default_split = to_dict(cfg["data"]), cfg["eval"]["split"]
        if args.data is not None:
            cfg_data["root"] = args.data
    data = args.data if args.data is not None else cfg_data["root"]
    data_fmt = args.format or (cfg_data.get("format", "voc") if cfg_data else detect_data_format(data))
    dets_fmt = formats.detect_format(args.dets)
    if dets_fmt == "wider" and data_fmt != "wider":
        raise TinydetError(f"{args.dets}: a WIDER submission folder needs a WIDER Face data set, but {data} is {data_fmt}")
    result: dict = {"source": f"dets:{args.dets}", "dets_format": dets_fmt, "data": data, "format": data_fmt}

    if data_fmt == "coco" and os.path.isfile(data):  # a COCO ground-truth JSON alone
        from tinydet.data.coco import label_category_ids, load_coco_ground_truth

        classes_arg = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        records, classes = load_coco_ground_truth(data, classes_arg)
        if dets_fmt != "coco":
            raise TinydetError(f"{args.dets}: a COCO ground-truth JSON is scored with COCO results (.json)")
        _log(f"{len(records)} images, {len(classes)} classes; reading COCO results {args.dets}")
        detections = formats.read_coco_results(args.dets, [r.image_id for r in records], len(classes),
                                               label_category_ids(records, classes))
        result.update(split=os.path.basename(data), **score_voc(detections, records, classes))
        return result
    if data_fmt in ("coco", "yolo"):
        from tinydet.data.coco import label_category_ids

        split = args.split or (default_split if cfg_data is not None else "val")
        data_cfg = cfg_data if cfg_data is not None else {"format": data_fmt, "root": data, "test": [split]}
        if args.classes:
            data_cfg = dict(data_cfg, classes=[c.strip() for c in args.classes.split(",") if c.strip()])
        records, classes = _load(data_cfg, split if cfg_data is not None else "test", args.config or data)
        result["split"] = split
        ids = [r.image_id for r in records]
        if dets_fmt == "voc":
            lists = formats.read_voc_dets(args.dets, classes, ids)
            result.update(score_voc(formats.class_detections_to_detections(lists), records, classes, lists))
        else:
            detections = formats.read_coco_results(args.dets, ids, len(classes), label_category_ids(records, classes))
            result.update(score_voc(detections, records, classes))
        return result
    if data_fmt == "voc":
        if cfg_data is not None:
            split = args.split or default_split
            if split not in ("train", "val", "test"):
                raise TinydetError(f"--split '{split}' with -c must be one of train, val, test")
            records, classes = _load(cfg_data, split, args.config)
        else:
            split = args.split or "test"
            root, year = voc_base(data, split)
            classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes \
                else voc_classes(root, year, split)
            records, classes = _load({"format": "voc", "root": root, "test": [[year, split]], "classes": classes},
                                     "test", data)
        result["split"] = split
        ids = [r.image_id for r in records]
        _log(f"{len(records)} images, {len(classes)} classes; reading {dets_fmt} detections {args.dets}")
        if dets_fmt == "voc":
            lists = formats.read_voc_dets(args.dets, classes, ids)
            detections = formats.class_detections_to_detections(lists)
            result.update(score_voc(detections, records, classes, lists))
        else:
            detections = formats.read_coco_results(args.dets, ids, len(classes))
            result.update(score_voc(detections, records, classes))
        return result

    if cfg_data is not None:  # --split names a config split, whose entries are WIDER splits
        from tinydet.data.records import resolve_data_cfg

        split = args.split or default_split
        data_cfg, source = resolve_data_cfg(cfg_data, args.config), args.config
        wider_splits, load_split = list(data_cfg.get(split) or []), split
    else:  # --split names the WIDER split itself
        split = args.split or "val"
        data_cfg, source, wider_splits = {"format": "wider", "root": data, "test": [split]}, data, [split]
        load_split = "test"
    result["split"] = split
    # the official .mat subsets describe WIDER's val split only
    official = wider_splits == ["val"] and find_wider_mats(data) is not None
    records = None
    if dets_fmt != "wider" or not official:
        records, _ = _load(data_cfg, load_split, source)
    if dets_fmt == "wider":
        pred = formats.read_wider_dets(args.dets)
    else:
        ids = [r.image_id for r in records]
        if dets_fmt == "voc":
            detections = formats.class_detections_to_detections(formats.read_voc_dets(args.dets, ["face"], ids))
        else:
            detections = formats.read_coco_results(args.dets, ids, 1)
        pred = detections_to_wider(detections, records)
    result.update(eval_wider(pred, data if official else None, records=records))
    return result


def _runner(args: argparse.Namespace, cfg: Any) -> tuple[Any, str]:
    if args.ckpt:
        from tinydet.train.predict import torch_runner

        return torch_runner(cfg, args.ckpt), f"checkpoint:{args.ckpt}"
    from tinydet.export.runtime import onnx_runner

    if args.onnx:
        return onnx_runner(args.onnx), f"onnx:{args.onnx}"
    mode = "int8" if args.int8 else "float"
    return (onnx_runner(args.export, int8=args.int8, patched=args.patched),
            f"export:{args.export} ({mode}, {'patched' if args.patched else 'full'})")


def _save_dets(path: str, fmt: str, detections: Any, records: list, classes: list[str], split: str) -> None:
    from tinydet.eval import formats
    from tinydet.eval.wider import detections_to_wider

    if path.endswith(".json"):
        from tinydet.data.coco import label_category_ids

        formats.write_coco_results(path, detections, label_category_ids(records, classes))
    elif fmt == "wider":
        formats.write_wider_dets(path, detections_to_wider(detections, records))
    else:
        formats.write_voc_dets(path, detections, classes, image_set=split)
    _log(f"detections written to {path}")


def _run_model(args: argparse.Namespace) -> dict:
    from tinydet.data.records import resolve_data_cfg
    from tinydet.eval.wider import eval_wider_detections
    from tinydet.train.config import load_config, to_dict
    from tinydet.train.predict import predict

    if args.config is None:
        raise TinydetError("pass --dets FILE_OR_DIR --data DIR, or -c CONFIG with --ckpt, --onnx or --export")
    if not (args.ckpt or args.onnx or args.export):
        raise TinydetError("-c CONFIG needs the model to evaluate: --ckpt C, --onnx M.onnx or --export out/NAME")
    if (args.int8 or args.patched) and not args.export:
        raise TinydetError("--int8 and --patched need --export out/NAME")
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    cfg = load_config(args.config, overrides)
    split = args.split or cfg["eval"]["split"]
    if split not in ("train", "val", "test"):
        raise TinydetError(f"--split '{split}' must be one of train, val, test")
    data_cfg = resolve_data_cfg(to_dict(cfg["data"]), args.config)
    runner, source = _runner(args, cfg)
    _log(f"predicting {data_cfg['format']} split '{split}' with {source}")
    detections, records = predict(cfg, runner, split)
    result: dict = {"source": source, "data": data_cfg["root"], "format": data_cfg["format"], "split": split}
    if args.save_dets:
        _save_dets(args.save_dets, data_cfg["format"], detections, records, data_cfg["classes"], split)
    if data_cfg["format"] == "wider":
        # the official .mat subsets describe WIDER's val split only
        gt_dir = data_cfg["root"] if list(data_cfg[split]) == ["val"] else None
        result.update(eval_wider_detections(detections, records, gt_dir))
    else:
        result.update(score_voc(detections, records, data_cfg["classes"]))
    return result


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
    """A readable table: per-class AP and the means (VOC), or the three subsets (WIDER)."""
    print(f"{result['format']} {result.get('split', '')}: {result['n_images']} images, {result['source']}")
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
