"""Visual Wake Words (Chowdhery et al. 2019) from COCO instances annotations: ``tinydet data vww``.

The labelling rule is the official script's (tensorflow/models research/slim/datasets/
build_visualwakewords_data_lib.py, ``_filter_annotations``), read through pycocotools: an image is
label 1 (``person``) when at least one annotation of the foreground category (found by name, as
the script does) has ``area / (image height * width) > threshold`` (0.005), else label 0
(``background``). Two details the paper's wording ("a bounding box ... greater than 0.5% of the
image area") hides: the script compares the annotation's ``area`` field, which COCO computes from
the segmentation mask (smaller than the box), and the comparison is strict; crowd annotations
count like any other. :func:`vww_label` is that rule, alone.

Splits: each COCO split keeps its images (``train2014`` -> ``train``, ``val2014`` -> ``val``, as the
TF script); with ``minival_ids`` (``mscoco_minival_ids.txt``, the 8059 ids of the VWW challenge
and of MCUNet's figures) the training split is train2014 + val2014 minus those ids and ``val`` is
the minival images, as pyvww's ``create_coco_train_minival_split.py`` does.

Output folder (written under a temporary name, then renamed into place):
``labels.txt`` (``0:background`` / ``1:person``, the script's label file), ``<split>.txt`` (one
``<image path relative to the folder> <label>`` line per image, what ``data.format: vww`` reads),
``instances_visualwakewords_<split>.json`` (the script's annotation file: images, per image id the
kept objects and the label, the foreground category) and ``vww.json`` (rule and counts).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence

from tinydet.errors import TinydetError

THRESHOLD = 0.005
FOREGROUND = "person"


def vww_label(annotations: Sequence[dict], width: float, height: float, foreground_id: int,
              threshold: float = THRESHOLD) -> tuple[int, list[dict]]:
    """The official rule for one image: (label, the foreground annotations that made it 1)."""
    image_area = float(width) * float(height)
    kept = [a for a in annotations
            if int(a["category_id"]) == foreground_id and float(a["area"]) / image_area > threshold]
    return (1 if kept else 0), kept


@dataclass
class VwwImage:
    """One image of the built set: its COCO entry, file on disk, label and kept objects."""

    info: dict
    path: str
    label: int
    objects: list[dict]


def _split_name(coco_split: str) -> str:
    """``train2014`` -> ``train`` (the TF script's names); other names stay."""
    return re.sub(r"\d{4}$", "", coco_split) or coco_split


def _image_dir(coco_dir: str, split: str) -> str:
    for cand in (os.path.join(coco_dir, split), os.path.join(coco_dir, "images", split)):
        if os.path.isdir(cand):
            return cand
    raise TinydetError(f"{coco_dir}: no image folder for split {split} (expected {split}/ or images/{split}/)")


def label_split(coco_dir: str, split: str, foreground: str = FOREGROUND, threshold: float = THRESHOLD
                ) -> tuple[list[VwwImage], dict]:
    """Label every image of ``annotations/instances_<split>.json`` with pycocotools; returns the
    images (file order of the annotation file) and the foreground category."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    ann_file = os.path.join(coco_dir, "annotations", f"instances_{split}.json")
    if not os.path.isfile(ann_file):
        raise TinydetError(f"{ann_file}: COCO annotation file does not exist (expected "
                           f"{coco_dir}/annotations/instances_<split>.json, e.g. instances_train2014.json)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
            coco = COCO(ann_file)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise TinydetError(f"{ann_file}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
    cats = [c for c in coco.loadCats(coco.getCatIds()) if c.get("name") == foreground]
    if not cats:
        raise TinydetError(f"{ann_file}: no category named '{foreground}' (categories: "
                           f"{sorted(c.get('name') for c in coco.dataset.get('categories', []))})")
    cat = cats[0]
    image_dir = _image_dir(coco_dir, split)
    images = []
    for entry in coco.dataset.get("images", []):
        for key in ("id", "file_name", "width", "height"):
            if key not in entry:
                raise TinydetError(f"{ann_file}: image entry {entry!r} has no '{key}'")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[entry["id"]], iscrowd=None))
        label, kept = vww_label(anns, entry["width"], entry["height"], cat["id"], threshold)
        images.append(VwwImage(entry, os.path.join(image_dir, entry["file_name"]), label,
                               [{"area": a["area"], "bbox": a["bbox"]} for a in kept]))
    return images, cat


def read_minival_ids(path: str) -> set[int]:
    """The image ids of ``mscoco_minival_ids.txt`` (one integer per line)."""
    try:
        lines = [ln.strip() for ln in open(path, encoding="utf-8") if ln.strip()]
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read the minival id list ({exc.strerror})") from None
    bad = next((ln for ln in lines if not ln.isdigit()), None)
    if bad is not None:
        raise TinydetError(f"{path}: expected one image id per line, got {bad!r}")
    return {int(ln) for ln in lines}


def build_vww(coco_dir: str, out: str, splits: Sequence[str] = ("train2014", "val2014"),
              minival_ids: str | None = None, threshold: float = THRESHOLD, foreground: str = FOREGROUND,
              overwrite: bool = False) -> dict:
    """Write the VWW split files for the COCO set at ``coco_dir`` into ``out`` (see the module doc);
    returns a summary (per split: images, person, background)."""
    if not 0 < threshold < 1:
        raise TinydetError(f"vww: --threshold must be in (0, 1), got {threshold}")
    if os.path.exists(out) and not overwrite:
        raise TinydetError(f"{out}: already exists (pass --overwrite to replace it)")
    labelled = {}
    category = None
    for split in splits:
        labelled[split], category = label_split(coco_dir, split, foreground, threshold)
    if minival_ids is not None:
        ids = read_minival_ids(minival_ids)
        if len(splits) != 2:
            raise TinydetError("vww: --minival-ids needs exactly two --splits (the train and val annotation files)")
        train_split, val_split = splits
        out_splits = {"train": labelled[train_split] + [i for i in labelled[val_split] if i.info["id"] not in ids],
                      "val": [i for i in labelled[val_split] if i.info["id"] in ids]}
        if not out_splits["val"]:
            raise TinydetError(f"{minival_ids}: none of its ids is an image of {val_split}")
    else:
        out_splits = {}
        for split in splits:
            name = _split_name(split)
            if name in out_splits:
                raise TinydetError(f"vww: splits {list(splits)} map to the same output name '{name}'")
            out_splits[name] = labelled[split]
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".vww-", dir=parent)
    summary = {"path": out, "coco": coco_dir, "threshold": threshold, "foreground": foreground,
               "rule": "label 1 iff some foreground annotation has area / (height * width) > threshold",
               "minival_ids": minival_ids, "splits": {}}
    try:
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"0:background\n1:{foreground}\n")
        for name, images in out_splits.items():
            rel_base = os.path.abspath(out)
            lines = [f"{os.path.relpath(os.path.abspath(i.path), rel_base)} {i.label}\n" for i in images]
            with open(os.path.join(tmp, f"{name}.txt"), "w", encoding="utf-8") as fh:
                fh.writelines(lines)
            doc = {"images": [i.info for i in images],
                   "annotations": {str(i.info["id"]): {"label": i.label, "objects": i.objects} for i in images},
                   "categories": {str(category["id"]): category}}
            with open(os.path.join(tmp, f"instances_visualwakewords_{name}.json"), "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            positives = sum(i.label for i in images)
            summary["splits"][name] = {"images": len(images), "person": positives,
                                       "background": len(images) - positives}
        with open(os.path.join(tmp, "vww.json"), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1)
        from tinydet.io.atomic import replace_dir

        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["images"] = sum(s["images"] for s in summary["splits"].values())
    return summary
