"""COCO loader: an instances JSON (``images``, ``annotations``, ``categories``) and an image folder.

A config split entry is either a name ``N`` -- ``<root>/annotations/instances_N.json`` with images in
``<root>/images/N/`` (what ``tinydet data synth --format coco`` and ``tinydet data convert`` write)
or ``<root>/N/`` (the COCO 2017 release layout) -- or an explicit ``[annotation_json, image_folder]``
pair, relative to ``root`` unless absolute.

Categories are mapped to ``data.classes`` by *name* (the category ids of the file are kept in the
records' ``extra`` so results can be written back with them); without ``data.classes`` the classes
are the file's categories in id order. ``bbox`` is COCO's continuous 0-based ``[x, y, w, h]``, so
``x1 = x, x2 = x + w`` with no ``+1``. ``iscrowd: 1`` boxes are kept flagged ``difficult``: the
evaluation neither counts them as missed nor counts a detection on them as a false positive.
Record ``image_id`` = the COCO image id as a string (COCO results files use the integer id).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tinydet.data.records import BadInput, ImageRecord, clip_box, listed_image_size
from tinydet.errors import TinydetError, closest
from tinydet.io.jsonfile import read_json


@dataclass
class CocoSplit:
    """Where one config split entry's annotation file and images are."""

    annotations: str
    images: str


def coco_split(root: str, entry: Any, where: str = "data") -> CocoSplit:
    """The annotation JSON and image folder of one split ``entry`` (a name or a [json, folder] pair)."""
    if isinstance(entry, str):
        ann = os.path.join(root, "annotations", f"instances_{entry}.json")
        images = os.path.join(root, "images", entry)
        if not os.path.isdir(images) and os.path.isdir(os.path.join(root, entry)):
            images = os.path.join(root, entry)
        return CocoSplit(ann, images)
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(e, str) for e in entry):
        return CocoSplit(*(e if os.path.isabs(e) else os.path.join(root, e) for e in entry))
    raise TinydetError(f"{where}: entry {entry!r} must be a split name (annotations/instances_<name>.json) "
                       "or an [annotation_json, image_folder] pair")


def read_coco_json(path: str) -> dict:
    """The instances JSON at ``path`` with its top-level structure checked (one-line errors)."""
    data = read_json(path, "COCO annotation file")
    if not isinstance(data, dict):
        raise TinydetError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise TinydetError(f"{path}: field '{key}' must be a list (COCO instances format)")
    return data


def coco_categories(path: str, data: dict | None = None) -> dict[int, str]:
    """category id -> name of the instances file ``path``, in id order; duplicates are errors."""
    data = read_coco_json(path) if data is None else data
    out: dict[int, str] = {}
    for n, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str) \
                or not cat["name"]:
            raise TinydetError(f"{path}: categories[{n}] must have an integer id and a non-empty name")
        if cat["id"] in out:
            raise TinydetError(f"{path}: categories[{n}] repeats category id {cat['id']}")
        if cat["name"] in out.values():
            raise TinydetError(f"{path}: categories[{n}] repeats category name '{cat['name']}'")
        out[cat["id"]] = cat["name"]
    return dict(sorted(out.items()))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_coco(path: str, image_dir: str, classes: Sequence[str], bad: BadInput, tolerance: float = 0.0,
               require_images: bool = True) -> list[ImageRecord]:
    """Records of one instances file (images in ``image_dir``), in the file's image order.

    ``require_images=False`` takes the sizes from the JSON without opening the images (scoring
    against a ground-truth JSON alone). Bad images / annotations go to ``bad``, named by file and id.
    """
    data = read_coco_json(path)
    categories = coco_categories(path, data)
    images: dict[int, dict] = {}
    order: list[int] = []
    for n, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            bad("malformed_annotation", f"{path}: images[{n}] must have an integer id and a file_name")
            continue
        if img["id"] in images:
            bad("malformed_annotation", f"{path}: images[{n}] repeats image id {img['id']}")
            continue
        if not (_is_int(img.get("width")) and _is_int(img.get("height")) and img["width"] > 0 and img["height"] > 0):
            bad("malformed_annotation", f"{path}: image id {img['id']}: width and height must be positive integers")
            continue
        images[img["id"]] = img
        order.append(img["id"])
    per_image: dict[int, list[tuple]] = {i: [] for i in order}
    for n, ann in enumerate(data["annotations"]):
        aid = ann.get("id", f"#{n}") if isinstance(ann, dict) else f"#{n}"
        where = f"{path}: annotation id {aid}"
        if not isinstance(ann, dict):
            bad("malformed_annotation", f"{where}: expected an object")
            continue
        if ann.get("image_id") not in per_image:
            bad("malformed_annotation", f"{where}: image_id {ann.get('image_id')!r} is not in images")
            continue
        cat = ann.get("category_id")
        if cat not in categories:
            bad("malformed_annotation", f"{where}: category_id {cat!r} is not in categories")
            continue
        name = categories[cat]
        if name not in classes:
            bad("unknown_class", f"{where}: category '{name}' is not in data.classes{closest(name, classes)}")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            bad("malformed_annotation", f"{where}: bbox must be [x, y, w, h] numbers, got {bbox!r}")
            continue
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            bad("malformed_annotation", f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        img = images[ann["image_id"]]
        width, height = img["width"], img["height"]
        if w <= 0 or h <= 0:
            bad("box_inverted", f"{where}: bbox {bbox} has a width or height <= 0")
            continue
        clipped = clip_box(x, y, x + w, y + h, width, height, tolerance)
        if clipped is None:
            bad("box_outside_image", f"{where}: bbox {bbox} is outside the {width}x{height} image "
                                     "(expected 0 <= x, x + w <= width, 0 <= y, y + h <= height)")
            continue
        per_image[ann["image_id"]].append((clipped, list(classes).index(name), bool(crowd), aid, cat))
    records = []
    for image_id in order:
        img = images[image_id]
        file_path = os.path.join(image_dir, img["file_name"])
        width, height = img["width"], img["height"]
        if require_images:
            size = listed_image_size(file_path, bad, f"{path}: image id {image_id}: file_name names {file_path}, "
                                                     "which does not exist", f"image id {image_id} of {path}")
            if size is None:
                continue
            if size != (width, height):
                bad("size_mismatch", f"{path}: image id {image_id}: width x height says {width}x{height} "
                                     f"but {file_path} is {size[0]}x{size[1]}")
                continue
        objs = per_image[image_id]
        records.append(ImageRecord(
            image_id=str(image_id), path=file_path, width=width, height=height,
            boxes=np.asarray([o[0] for o in objs], np.float32).reshape(-1, 4),
            labels=np.asarray([o[1] for o in objs], np.int64), difficult=np.asarray([o[2] for o in objs], bool),
            extra={"coco_id": image_id, "file_name": img["file_name"], "annotation_ids": [o[3] for o in objs],
                   "category_ids": np.asarray([o[4] for o in objs], np.int64), "categories": categories}))
    return records


def load_coco(root: str, entries: Sequence, classes: Sequence[str], bad: BadInput, field: str = "data",
              tolerance: float = 0.0) -> list[ImageRecord]:
    """Records of all split ``entries`` (see the module doc) under ``root``, joined in order."""
    records: list[ImageRecord] = []
    for entry in entries:
        split = coco_split(root, entry, field)
        if not os.path.isfile(split.annotations):
            bad("empty_split", f"{split.annotations}: COCO annotation file of {field} entry {entry!r} does not exist")
            continue
        records += parse_coco(split.annotations, split.images, classes, bad, tolerance)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise TinydetError(f"{field}: the entries {list(entries)} repeat COCO image ids; join sets with distinct ids")
    return records


def label_category_ids(records: Sequence[ImageRecord], classes: Sequence[str]) -> list[int] | None:
    """The COCO category id of each label (by name, from the records' source file), or None when
    the records do not come from a COCO file that has every class."""
    cats = next((r.extra["categories"] for r in records if "categories" in r.extra), None)
    if not cats:
        return None
    by_name = {name: cid for cid, name in cats.items()}
    return [by_name[c] for c in classes] if all(c in by_name for c in classes) else None


def load_coco_ground_truth(path: str, classes: Sequence[str] | None = None) -> tuple[list[ImageRecord], list[str]]:
    """Records of a COCO ground-truth JSON alone (sizes from the file, images not opened) and the
    class names (default: its categories in id order), for scoring results against it."""
    from tinydet.data.records import BadInputSummary

    names = list(classes) if classes else list(coco_categories(path).values())
    records = parse_coco(path, os.path.dirname(path), names, BadInput(False, BadInputSummary()),
                         require_images=False)
    if not records:
        raise TinydetError(f"{path}: the COCO ground truth has no images")
    return records, names
