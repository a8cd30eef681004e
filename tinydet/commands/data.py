"""``tinydet data synth`` (synthetic VOC / WIDER Face / COCO / YOLO / ImageFolder sets), ``tinydet data
convert`` (between the detection layouts), ``tinydet data vww`` (Visual Wake Words split files from
COCO annotations) and ``tinydet data anchors`` (k-means)."""
from __future__ import annotations

import argparse
import sys
from tinydet.commands.common import add_json_argument, declare_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>")
    sub.required = True
    p = sub.add_parser("synth", help="write a synthetic data set in the real VOC, WIDER Face, COCO, YOLO or "
                                     "ImageFolder layout")
    p.add_argument("--format", choices=["voc", "wider", "coco", "yolo", "imagefolder"], required=True)
    p.add_argument("--out", required=True,
                   help="output folder (the VOCdevkit, WIDER, COCO, YOLO or ImageFolder root)")
    p.add_argument("--images", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=320, help="long side of the images in pixels")
    p.add_argument("--classes", nargs="+", default=None,
                   help="voc, coco, yolo, imagefolder: shape classes (circle square triangle star cross hexagon "
                        "ring person); person draws human silhouettes (coco + person: a set for tinydet data vww)")
    p.add_argument("--year", type=int, default=2007, help="voc: writes VOC<year>/ (2007 also gets a test split)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    add_json_argument(p)

    p = sub.add_parser("convert", help="convert a data set between the VOC, WIDER, COCO and YOLO layouts")
    p.add_argument("--from", dest="src_format", choices=["voc", "wider", "coco", "yolo"], required=True)
    p.add_argument("--src", required=True,
                   help="source set: VOCdevkit or VOC<year> folder, WIDER root, COCO root, YOLO data YAML or folder")
    p.add_argument("--to", dest="dst_format", choices=["coco", "yolo", "voc"], required=True)
    p.add_argument("--out", required=True, help="output folder (created; written atomically)")
    p.add_argument("--splits", nargs="+", default=None,
                   help="source splits to convert (default: all: VOC image sets train/val/test, WIDER train/val, "
                        "COCO annotations/instances_*.json, YOLO data YAML keys)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names in label order (default: the source's own: VOC annotation names sorted, "
                        "COCO categories by id, YOLO names)")
    p.add_argument("--year", default="2007", help="--to voc: writes VOC<year>/")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad source inputs instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_json_argument(p)

    p = sub.add_parser("vww", help="Visual Wake Words split files from COCO instances annotations "
                                   "(the official visualwakewords rule)")
    p.add_argument("--coco", required=True,
                   help="COCO folder: annotations/instances_<split>.json and <split>/ (or images/<split>/) images")
    p.add_argument("--out", required=True, help="output folder (labels.txt, <split>.txt, official JSON; atomic)")
    p.add_argument("--splits", nargs="+", default=["train2014", "val2014"],
                   help="COCO splits to label (default: train2014 val2014 -> train, val)")
    p.add_argument("--minival-ids", default=None,
                   help="mscoco_minival_ids.txt: val = those images, train = both splits minus them (the VWW "
                        "challenge / MCUNet split)")
    p.add_argument("--threshold", type=float, default=0.005,
                   help="label 1 iff a person annotation's area / image area is above this (default 0.005)")
    p.add_argument("--foreground", default="person", help="COCO category name of label 1 (default person)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_json_argument(p)

    p = sub.add_parser("anchors", help="k-means (IoU distance) anchors on the training boxes")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-config", help="YAML config; its data section names the set and train split")
    src.add_argument("--root", help="data set folder (with --format)")
    declare_inputs(p, data_config="file", root="path")
    p.add_argument("--format", choices=["voc", "wider", "coco", "yolo"], default="voc")
    p.add_argument("--k", type=int, default=6, help="number of anchors")
    p.add_argument("--scales", type=int, default=2, help="head scales the anchors are split across")
    p.add_argument("--resolution", default=None,
                   help="network input, '320' or 'HxW' (default: the config's model.resolution or 320)")
    p.add_argument("--seed", type=int, default=0)
    add_json_argument(p)


def _resolution(text: str | None, cfg: dict) -> tuple[int, int]:
    from tinydet.errors import TinydetError

    value = text if text is not None else (cfg.get("model") or {}).get("resolution", 320)
    try:
        if isinstance(value, (list, tuple)):
            h, w = (int(v) for v in value)
        elif isinstance(value, int):
            h = w = value
        else:
            parts = str(value).lower().split("x")
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, TypeError):
        raise TinydetError(f"anchors: --resolution must be '320' or 'HxW', got {value!r}") from None
    return h, w


def _anchors(args: argparse.Namespace) -> dict:
    import yaml

    from tinydet.data.anchors import anchor_stats, kmeans_anchors, network_box_sizes, split_by_scale
    from tinydet.data.records import load_records
    from tinydet.data.voc import discover_voc
    from tinydet.errors import TinydetError

    cfg: dict = {}
    if args.data_config:
        try:
            with open(args.data_config, encoding="utf-8") as fh:
                cfg = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TinydetError(f"{args.data_config}: cannot read the YAML config ({str(exc).splitlines()[0]})") from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
            raise TinydetError(f"{args.data_config}: expected a mapping with a 'data' section")
        data_cfg, source = cfg["data"], args.data_config
    elif args.format == "voc":
        sets, classes = discover_voc(args.root)
        if not sets:
            raise TinydetError(f"{args.root}: no VOC<year>/ImageSets/Main/trainval.txt found")
        data_cfg = {"format": "voc", "root": args.root, "train": sets, "val": sets, "test": sets, "classes": classes}
        source = args.root
    else:
        data_cfg, source = {"format": args.format, "root": args.root}, args.root
    size = _resolution(args.resolution, cfg)
    records, _, _ = load_records(data_cfg, "train", source)
    keep_difficult = bool(data_cfg.get("keep_difficult", False))
    wh = network_box_sizes(records, size, include_difficult=keep_difficult)
    anchors = kmeans_anchors(wh, args.k, seed=args.seed)
    return {"anchors": split_by_scale(anchors, args.scales), "resolution": list(size), "k": args.k,
            "images": len(records), **anchor_stats(wh, anchors)}


def run(args: argparse.Namespace) -> dict:
    if args.action == "synth":
        from tinydet.data.synth import synth_voc, synth_wider

        print(f"tinydet: writing {args.images} synthetic {args.format} images to {args.out}", file=sys.stderr)
        if args.format == "voc":
            return synth_voc(args.out, args.images, args.seed, args.size, args.classes, args.year, args.overwrite)
        if args.format == "imagefolder":
            from tinydet.data.synth import synth_imagefolder

            return synth_imagefolder(args.out, args.images, args.seed, args.size, args.classes,
                                     overwrite=args.overwrite)
        if args.format in ("coco", "yolo"):
            from tinydet.data.synth import synth_coco_yolo

            return synth_coco_yolo(args.format, args.out, args.images, args.seed, args.size, args.classes,
                                   args.overwrite)
        if args.classes not in (None, ["face"]):
            from tinydet.errors import TinydetError

            raise TinydetError("synth: --classes applies to --format voc, coco, yolo (wider has the single class face)")
        return synth_wider(args.out, args.images, args.seed, args.size, overwrite=args.overwrite)
    if args.action == "vww":
        from tinydet.data.vww import build_vww

        print(f"tinydet: labelling {' '.join(args.splits)} of {args.coco} (Visual Wake Words) into {args.out}",
              file=sys.stderr)
        return build_vww(args.coco, args.out, args.splits, args.minival_ids, args.threshold, args.foreground,
                         args.overwrite)
    if args.action == "convert":
        from tinydet.data.convert import convert

        print(f"tinydet: converting {args.src_format} {args.src} to {args.dst_format} {args.out}", file=sys.stderr)
        return convert(args.src_format, args.src, args.dst_format, args.out, args.splits, args.classes,
                       args.overwrite, args.skip_bad, args.year)
    return _anchors(args)


def render(result: dict) -> None:
    if "anchors" in result:
        print(f"anchors (w, h in network pixels at {result['resolution'][0]}x{result['resolution'][1]}, "
              f"from {result['boxes']} boxes of {result['images']} images):")
        for i, group in enumerate(result["anchors"]):
            print(f"  scale {i}: " + ", ".join(f"{w:g}x{h:g}" for w, h in group))
        print(f"mean best IoU {result['mean_best_iou']:.3f}, boxes with IoU >= 0.5: {result['recall_iou50']:.1%}")
        return
    if "to" in result:
        print(f"converted {result['images']} images, {result['boxes']} boxes ({result['from']} -> {result['to']}) "
              f"to {result['path']}")
        for key in ("splits", "classes", "difficult_as_objects"):
            if key in result:
                print(f"  {key}: {result[key]}")
        return
    print(f"wrote {result['images']} images to {result['path']}")
    for key, value in result.items():
        if key not in ("path", "images"):
            print(f"  {key}: {value}")
