"""Pascal VOC devkit loader: ``<root>/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}``.

Several ``[year, imageset]`` pairs are joined in order (e.g. 07+12 trainval). VOC boxes are 1-based
inclusive pixel indices; records hold 0-based pixel edges: x1 = xmin - 1, x2 = xmax (so the
devkit's ``xmax - xmin + 1`` width is ``x2 - x1``, and writing back ``x1 + 1, x2`` is exact).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Sequence

import numpy as np

from tinydet.data.records import BadInput, ImageRecord, clip_box, finite, listed_image_size
from tinydet.errors import closest
from tinydet.io.textfile import read_text_lines


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def parse_voc_xml(ann: str, image_dir: str, classes: Sequence[str], bad: BadInput,
                  image_id: str, tolerance: float = 0.0) -> ImageRecord | None:
    """Parse one devkit annotation; returns None when the whole image is skipped as bad.
    Boxes crossing the border by at most ``tolerance`` pixels are clipped to the image."""
    try:
        root = ET.parse(ann).getroot()
    except (ET.ParseError, OSError) as exc:
        bad("malformed_xml", f"{ann}: malformed XML ({exc})")
        return None
    filename = _text(root, "filename") or f"{image_id}.jpg"
    path = os.path.join(image_dir, filename)
    size = listed_image_size(path, bad, f"{ann}: field filename names image {path}, which does not exist",
                             f"annotation {ann}")
    if size is None:
        return None
    width, height = size
    size = root.find("size")
    if size is not None:
        try:
            w_xml, h_xml = int(finite(_text(size, "width") or 0)), int(finite(_text(size, "height") or 0))
        except ValueError:
            bad("malformed_xml", f"{ann}: field size/width or size/height is not a number")
            return None
        # Some tools write 0 when unknown; otherwise the header and the XML must agree.
        if w_xml and h_xml and (w_xml, h_xml) != (width, height):
            bad("size_mismatch", f"{ann}: field size says {w_xml}x{h_xml} but {path} is {width}x{height}")
            return None

    boxes, labels, difficult, truncated, poses = [], [], [], [], []
    for i, obj in enumerate(root.findall("object")):
        where = f"{ann}: object[{i}]"
        name = _text(obj, "name") or ""
        if name not in classes:
            bad("unknown_class", f"{where}/name '{name}' is not in data.classes{closest(name, classes)}")
            continue
        bndbox = obj.find("bndbox")
        try:
            if bndbox is None:
                raise ValueError("bndbox")
            xmin, ymin, xmax, ymax = (finite(_text(bndbox, t) or "x") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            bad("malformed_xml", f"{where}/bndbox: expected numeric xmin, ymin, xmax, ymax (finite numbers), got "
                                 + ",".join(str(_text(bndbox, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                                 if bndbox is not None else f"{where}: no bndbox")
            continue
        if xmax < xmin or ymax < ymin:
            bad("box_inverted", f"{where}/bndbox: xmax < xmin or ymax < ymin "
                                f"({xmin:g},{ymin:g},{xmax:g},{ymax:g})")
            continue
        clipped = clip_box(xmin - 1.0, ymin - 1.0, xmax, ymax, width, height, tolerance)  # 1-based -> edges
        if clipped is None:
            bad("box_outside_image", f"{where}/bndbox ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) is outside "
                                     f"the {width}x{height} image (expected 1 <= x <= width, 1 <= y <= height)")
            continue
        try:
            diff = int(_text(obj, "difficult") or 0)
            trunc = int(_text(obj, "truncated") or 0)
        except ValueError:
            bad("malformed_xml", f"{where}: fields difficult/truncated must be 0 or 1")
            continue
        boxes.append(clipped)
        labels.append(list(classes).index(name))
        difficult.append(bool(diff))
        truncated.append(bool(trunc))
        poses.append(_text(obj, "pose") or "Unspecified")
    return ImageRecord(
        image_id=image_id, path=path, width=width, height=height,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
        difficult=np.asarray(difficult, bool),
        extra={"truncated": np.asarray(truncated, bool), "pose": np.asarray(poses, dtype=object)},
    )


def load_voc(root: str, sets: Sequence[Sequence], classes: Sequence[str], bad: BadInput,
             source: str = "config", field: str = "data", tolerance: float = 0.0) -> list[ImageRecord]:
    """Records of all ``[year, imageset]`` pairs in ``sets`` under the devkit folder ``root``."""
    records: list[ImageRecord] = []
    for year, imageset in sets:
        base = os.path.join(root, f"VOC{year}")
        list_file = os.path.join(base, "ImageSets", "Main", f"{imageset}.txt")
        try:
            lines = read_text_lines(list_file, "VOC image set file")
        except OSError:
            bad("empty_split", f"{list_file}: image set file of {field} entry [{year}, {imageset}] "
                               f"(from {source}) does not exist")
            continue
        ids = [(n, line.split()[0]) for n, line in enumerate(lines, 1) if line.strip()]
        if not ids:
            bad("empty_split", f"{list_file}: image set of {field} entry [{year}, {imageset}] is empty")
            continue
        for lineno, image_id in ids:
            ann = os.path.join(base, "Annotations", f"{image_id}.xml")
            if not os.path.isfile(ann):
                bad("missing_annotation", f"{list_file}:{lineno}: image '{image_id}' has no annotation {ann}")
                continue
            record = parse_voc_xml(ann, os.path.join(base, "JPEGImages"), classes, bad, image_id, tolerance)
            if record is not None:
                record.extra.update(year=str(year), imageset=str(imageset))
                records.append(record)
    return records


def discover_voc(root: str, imageset: str = "trainval") -> tuple[list[list], list[str]]:
    """The ``[year, imageset]`` pairs present under ``root`` and the class names their
    annotations use (sorted): for commands given only a folder, not a config."""
    import glob

    sets = []
    for list_file in sorted(glob.glob(os.path.join(root, "VOC*", "ImageSets", "Main", f"{imageset}.txt"))):
        year = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(list_file))))[3:]
        sets.append([int(year) if year.isdigit() else year, imageset])
    names: set[str] = set()
    for year, _ in sets:
        for ann in glob.glob(os.path.join(root, f"VOC{year}", "Annotations", "*.xml")):
            try:
                names.update(n.text.strip() for n in ET.parse(ann).getroot().iter("name")
                             if n.text and n.text.strip())
            except ET.ParseError:
                continue  # reported with file and line when the loader reads it
    return sets, sorted(names)
