"""``tinydet data convert``: move a detection set between the VOC, WIDER, COCO and YOLO layouts.

Every source is read through its tinydet loader (same bad-input checks), so the records in between
are continuous 0-based xyxy boxes (docs/CONTRACTS.md); each writer is the exact inverse of its
loader:

- COCO ``bbox = [x1, y1, x2 - x1, y2 - y1]``; ``iscrowd = difficult``; COCO sources keep their image,
  annotation and category ids, other sources number them from 1 (categories in class order);
- YOLO ``cx = (x1 + x2) / 2 / W`` ... written with 17 significant digits (reads back to the same
  double); YOLO has no ignore flag, so difficult / crowd boxes become ordinary boxes (counted in the
  result's ``difficult_as_objects``);
- VOC ``xmin = x1 + 1, xmax = x2`` (1-based inclusive pixels), written as integers when within
  1e-6 px of one (VOC's own pixel grid), else with 10 significant digits.

Output layouts: coco ``annotations/instances_<split>.json`` + ``images/<split>/``; yolo ``data.yaml``
+ ``images/<split>/`` + ``labels/<split>/``; voc ``VOC<year>/{Annotations, JPEGImages,
ImageSets/Main/<split>.txt}``. Images are hard-linked when possible, else copied. The output folder
is built beside its final place and moved there in one rename: an interrupted run leaves no
half-written set.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

from tinydet.data.records import ImageRecord, load_records
from tinydet.errors import TinydetError
from tinydet.io.atomic import replace_dir

SOURCE_FORMATS = ("voc", "wider", "coco", "yolo")
TARGET_FORMATS = ("coco", "yolo", "voc")
VOC_INT_TOL = 1e-6


@dataclass
class SplitRecords:
    """One split of a source set: its name, records and class names."""

    name: str
    records: list[ImageRecord]
    classes: list[str]


def source_splits(fmt: str, root: str) -> list[str]:
    """The split names a source set has (what is converted when none are named)."""
    if fmt == "voc":
        base = _voc_year_dir(root)
        main = os.path.join(base, "ImageSets", "Main")
        names = [s for s in ("train", "val", "test") if os.path.isfile(os.path.join(main, f"{s}.txt"))]
        return names or (["trainval"] if os.path.isfile(os.path.join(main, "trainval.txt")) else [])
    if fmt == "wider":
        from tinydet.data.wider import gt_path

        return [s for s in ("train", "val") if os.path.isfile(gt_path(root, s))]
    if fmt == "coco":
        folder = os.path.join(root, "annotations")
        names = sorted(f[len("instances_"):-5] for f in os.listdir(folder)
                       if f.startswith("instances_") and f.endswith(".json")) if os.path.isdir(folder) else []
        return names
    from tinydet.data.yolo import read_data_yaml

    return list(read_data_yaml(root).splits)


def _voc_year_dir(root: str) -> str:
    import re

    root = os.path.normpath(root)
    if re.match(r"^VOC\w+$", os.path.basename(root)):
        return root
    years = sorted(e for e in os.listdir(root) if re.match(r"^VOC\w+$", e)) if os.path.isdir(root) else []
    if len(years) != 1:
        raise TinydetError(f"{root}: expected one VOC<year>/ folder (or pass the VOC<year> folder itself), "
                           f"found {years or 'none'}")
    return os.path.join(root, years[0])


def read_source(fmt: str, root: str, splits: Sequence[str] | None = None,
                classes: Sequence[str] | None = None, skip_bad: bool = False) -> list[SplitRecords]:
    """Records of each split of the source set (all its splits when ``splits`` is None)."""
    if fmt not in SOURCE_FORMATS:
        raise TinydetError(f"convert: --from must be one of {', '.join(SOURCE_FORMATS)}, got '{fmt}'")
    if not os.path.exists(root):
        raise TinydetError(f"{root}: source data set does not exist")
    names = list(splits) if splits else source_splits(fmt, root)
    if not names:
        raise TinydetError(f"{root}: no splits found for format {fmt}")
    cfg: dict = {"format": fmt, "root": root, "skip_bad": skip_bad}
    if fmt == "voc":
        from tinydet.data.voc import discover_voc

        base = _voc_year_dir(root)
        year = os.path.basename(base)[3:]
        cfg["root"] = os.path.dirname(base)
        if classes is None:
            _, found = discover_voc(cfg["root"], names[0])
            classes = found
        entries = {n: [year, n] for n in names}
    else:
        entries = {n: n for n in names}
    if classes is not None:
        cfg["classes"] = list(classes)
    out = []
    for name in names:
        split_cfg = dict(cfg, train=[entries[name]], val=[entries[name]], test=[entries[name]])
        records, class_names, _ = load_records(split_cfg, "test", root)
        out.append(SplitRecords(name, records, class_names))
    return out


def _image_name(record: ImageRecord) -> str:
    """The image's path inside the output's per-split image folder."""
    if "file_name" in record.extra:
        return str(record.extra["file_name"])
    if "event" in record.extra:  # WIDER: keep the event folder
        return f"{record.extra['event']}/{os.path.basename(record.path)}"
    return os.path.basename(record.path)


def _place_image(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_names(split: SplitRecords) -> list[str]:
    names = [_image_name(r) for r in split.records]
    seen: dict[str, str] = {}
    for r, n in zip(split.records, names):
        if n in seen:
            raise TinydetError(f"convert: split '{split.name}': images {seen[n]} and {r.path} would both be "
                               f"written as {n}")
        seen[n] = r.path
    return names


def coco_dict(split: SplitRecords, names: Sequence[str]) -> dict:
    """The COCO instances dict of one split (see the module doc for the id rules)."""
    first = split.records[0].extra.get("categories") if split.records else None
    by_name = {v: k for k, v in first.items()} if first else {}
    if not all(c in by_name for c in split.classes):
        by_name = {c: i + 1 for i, c in enumerate(split.classes)}
    cat_ids = [by_name[c] for c in split.classes]
    images, annotations = [], []
    next_ann = 1 + max([a for r in split.records for a in r.extra.get("annotation_ids", []) if isinstance(a, int)],
                       default=0)
    for n, (r, name) in enumerate(zip(split.records, names), 1):
        image_id = int(r.extra.get("coco_id", n))
        images.append({"id": image_id, "file_name": name, "width": int(r.width), "height": int(r.height)})
        ann_ids = list(r.extra.get("annotation_ids", []))
        for k, (box, label, diff) in enumerate(zip(r.boxes.astype(np.float64), r.labels, r.difficult)):
            if k < len(ann_ids) and isinstance(ann_ids[k], int):
                ann_id = ann_ids[k]
            else:
                ann_id, next_ann = next_ann, next_ann + 1
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_ids[int(label)],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(bool(diff))})
    categories = [{"id": i, "name": c} for c, i in sorted(zip(split.classes, cat_ids), key=lambda t: t[1])]
    return {"images": images, "annotations": annotations, "categories": categories}


def yolo_lines(record: ImageRecord) -> str:
    """The label file text of one record (``class cx cy w h`` normalised, 17 significant digits)."""
    lines = []
    w, h = float(record.width), float(record.height)
    for (x1, y1, x2, y2), label in zip(record.boxes.astype(np.float64), record.labels):
        vals = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
        lines.append(f"{int(label)} " + " ".join(f"{v:.17g}" for v in vals))
    return "".join(line + "\n" for line in lines)


def _voc_num(value: float) -> str:
    r = round(value)
    return str(int(r)) if abs(value - r) <= VOC_INT_TOL else f"{value:.10g}"


def voc_annotation(record: ImageRecord, filename: str, classes: Sequence[str], folder: str) -> str:
    """The devkit XML of one record (``xmin = x1 + 1, xmax = x2``)."""
    truncated = record.extra.get("truncated")
    objs = []
    for k, ((x1, y1, x2, y2), label, diff) in enumerate(zip(record.boxes.astype(np.float64), record.labels,
                                                            record.difficult)):
        trunc = int(bool(truncated[k])) if truncated is not None and len(truncated) == len(record.labels) else 0
        objs.append(f"  <object>\n    <name>{escape(classes[int(label)])}</name>\n    <pose>Unspecified</pose>\n"
                    f"    <truncated>{trunc}</truncated>\n    <difficult>{int(bool(diff))}</difficult>\n"
                    f"    <bndbox>\n      <xmin>{_voc_num(x1 + 1)}</xmin>\n      <ymin>{_voc_num(y1 + 1)}</ymin>\n"
                    f"      <xmax>{_voc_num(x2)}</xmax>\n      <ymax>{_voc_num(y2)}</ymax>\n    </bndbox>\n"
                    "  </object>\n")
    return (f"<annotation>\n  <folder>{escape(folder)}</folder>\n  <filename>{escape(filename)}</filename>\n"
            f"  <size>\n    <width>{record.width}</width>\n    <height>{record.height}</height>\n"
            f"    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n" + "".join(objs) + "</annotation>\n")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_set(fmt: str, splits: Sequence[SplitRecords], out: str, year: str = "2007") -> dict:
    """Write ``splits`` in layout ``fmt`` under the (new, empty) folder ``out``; returns counts."""
    if fmt not in TARGET_FORMATS:
        raise TinydetError(f"convert: --to must be one of {', '.join(TARGET_FORMATS)}, got '{fmt}'")
    classes = splits[0].classes
    for s in splits:
        if s.classes != classes:
            raise TinydetError(f"convert: split '{s.name}' has classes {s.classes}, split '{splits[0].name}' "
                               f"{classes}; convert them separately or pass --classes")
    counts = {"images": 0, "boxes": 0, "difficult_as_objects": 0}
    voc_ids: dict[str, list[str]] = {}
    for split in splits:
        names = _check_names(split)
        for r, name in zip(split.records, names):
            counts["images"] += 1
            counts["boxes"] += len(r.labels)
            if fmt == "coco" or fmt == "yolo":
                _place_image(r.path, os.path.join(out, "images", split.name, name))
            if fmt == "yolo":
                counts["difficult_as_objects"] += int(np.sum(r.difficult))
                _write(os.path.join(out, "labels", split.name, os.path.splitext(name)[0] + ".txt"), yolo_lines(r))
            elif fmt == "voc":
                image_id = os.path.splitext(name)[0].replace("/", "_")
                filename = image_id + os.path.splitext(name)[1]
                base = os.path.join(out, f"VOC{year}")
                _place_image(r.path, os.path.join(base, "JPEGImages", filename))
                _write(os.path.join(base, "Annotations", f"{image_id}.xml"),
                       voc_annotation(r, filename, classes, f"VOC{year}"))
                voc_ids.setdefault(split.name, []).append(image_id)
        if fmt == "coco":
            _write(os.path.join(out, "annotations", f"instances_{split.name}.json"),
                   json.dumps(coco_dict(split, names)) + "\n")
    if fmt == "yolo":
        import yaml

        doc = {"path": ".", **{s.name: f"images/{s.name}" for s in splits}, "names": dict(enumerate(classes))}
        _write(os.path.join(out, "data.yaml"), yaml.safe_dump(doc, sort_keys=False))
    if fmt == "voc":
        main = os.path.join(out, f"VOC{year}", "ImageSets", "Main")
        os.makedirs(main, exist_ok=True)
        for name, ids in voc_ids.items():
            _write(os.path.join(main, f"{name}.txt"), "".join(f"{i}\n" for i in ids))
    if fmt != "yolo":
        counts.pop("difficult_as_objects")
    return counts


def convert(src_fmt: str, src: str, dst_fmt: str, out: str, splits: Sequence[str] | None = None,
            classes: Sequence[str] | None = None, overwrite: bool = False, skip_bad: bool = False,
            year: str = "2007") -> dict:
    """Convert the set at ``src`` (layout ``src_fmt``) to ``out`` (layout ``dst_fmt``), atomically."""
    out = os.path.normpath(out)
    if os.path.exists(out) and not overwrite:
        raise TinydetError(f"{out}: already exists (pass --overwrite to replace it)")
    if os.path.abspath(out) == os.path.abspath(src):
        raise TinydetError(f"{out}: the output folder must differ from the source")
    data = read_source(src_fmt, src, splits, classes, skip_bad)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        counts = write_set(dst_fmt, data, os.path.join(tmp, "set"), year)
        replace_dir(os.path.join(tmp, "set"), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"from": src_fmt, "to": dst_fmt, "source": src, "path": out, "classes": data[0].classes,
            "splits": {s.name: len(s.records) for s in data}, **counts}
