"""Ground-truth records shared by training and evaluation, and the format-independent loader.

``load_records(data_cfg, split, source)`` turns the config's ``data`` section into a list of
:class:`ImageRecord` (boxes as 0-based pixel xyxy in the original image) for one split, whatever
the on-disk format. Bad input is either a :class:`TinydetError` naming the file and line/field, or,
with ``skip_bad: true``, skipped and counted in a :class:`BadInputSummary` logged once to stderr.
"""
from __future__ import annotations

import copy
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from tinydet.errors import TinydetError, closest

VOC_CLASSES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

#: Defaults of the config's ``data`` section; the config loader merges user keys over these.
#: ``None`` means "the default of the chosen format" (see :data:`FORMAT_DEFAULTS`).
DATA_DEFAULTS: dict[str, Any] = {
    # "voc" (Pascal VOC devkit), "wider" (WIDER Face), "coco" (instances JSON + images) or "yolo"
    # (Ultralytics data YAML + images/ + labels/).
    "format": "voc",
    # Folder holding VOC<year>/ folders (voc), WIDER_train/, WIDER_val/, wider_face_split/ (wider),
    # annotations/ + images/ (coco), or the data YAML / a folder with data.yaml (yolo).
    "root": None,
    # voc: list of [year, imageset] pairs joined in order, e.g. [[2007, trainval], [2012, trainval]];
    # wider: list of split names, e.g. [train]; coco: split names (annotations/instances_<name>.json)
    # or [annotation_json, image_folder] pairs; yolo: split keys of the data YAML (train, val, test).
    "train": None,
    "val": None,
    "test": None,
    # Class names in label order (voc; coco / yolo map their categories to these by name, default:
    # the annotation file's categories in id order / the data YAML's names); wider is always ["face"].
    "classes": None,
    # true: skip bad files/boxes and log a summary; false: stop at the first with a one-line error.
    "skip_bad": False,
    # wider: training faces smaller than this (width or height, original pixels) are dropped.
    "min_size": 0,
    # Boxes overhanging the image border by at most this many pixels are clipped to it instead of
    # being bad input (hand annotations, WIDER's among them, sometimes cross the border a little).
    "clip_tolerance": 0,
    # voc: keep boxes marked difficult in the *training* targets (evaluation always keeps them).
    "keep_difficult": False,
    # Training augmentation overrides (see tinydet.data.transforms.AUGMENT_DEFAULTS); false = none.
    "augment": {},
}

FORMAT_DEFAULTS: dict[str, dict[str, Any]] = {
    "voc": {
        "root": "data/VOCdevkit",
        "train": [[2007, "trainval"], [2012, "trainval"]],
        "val": [[2007, "test"]],
        "test": [[2007, "test"]],
        "classes": VOC_CLASSES,
    },
    "wider": {
        "root": "data/WIDER",
        "train": ["train"],
        "val": ["val"],
        "test": ["val"],  # WIDER test labels are not public: evaluate on val
        "classes": ["face"],
    },
    "coco": {"root": "data/coco", "train": ["train"], "val": ["val"], "test": ["val"], "classes": None},
    "yolo": {"root": "data/yolo", "train": ["train"], "val": ["val"], "test": ["val"], "classes": None},
}

SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    """One annotated image. ``boxes`` are float32 [N, 4] xyxy, 0-based pixel edges in the original
    image (a VOC box xmin..xmax, 1-based inclusive, becomes x1 = xmin - 1, x2 = xmax)."""

    image_id: str
    path: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.difficult)):
            raise ValueError(f"{self.image_id}: boxes, labels and difficult differ in length")


@dataclass
class BadInputSummary:
    """Bad inputs skipped under ``skip_bad: true``: a count per reason and the first examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, reason: str, message: str) -> None:
        """Count one skipped item of kind ``reason``; ``message`` names its file and line/field."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < self.max_examples:
            bucket.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts), "examples": copy.deepcopy(self.examples)}

    def log(self, what: str, stream: TextIO | None = None) -> None:
        """Write the summary (nothing when empty) to stderr, one line per reason."""
        if not self.counts:
            return
        stream = stream or sys.stderr
        print(f"tinydet: {what}: skipped {self.total} bad input(s) (data.skip_bad: true):", file=stream)
        for reason in sorted(self.counts):
            print(f"  {reason}: {self.counts[reason]}, e.g. {self.examples[reason][0]}", file=stream)


def finite(text: "str | float") -> float:
    """``float(text)``, refusing NaN and infinities like any other non-number (ValueError):
    every range check downstream is False for NaN, so it must stop at parsing."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


#: Bytes an image file of each kind ends with when it is complete (trailing NUL padding aside).
_END_MARKERS = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND\xaeB`\x82"}


def _ends_complete(path: str) -> bool:
    """Cheap completeness test: a JPEG ends with its EOI marker, a PNG with its IEND chunk."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64))
        tail = fh.read().rstrip(b"\x00")
    return any(head.startswith(magic) and tail.endswith(end) for magic, end in _END_MARKERS.items())


def check_image_complete(path: str) -> None:
    """Raise OSError when the image's data stops before the image ends (a truncated download:
    decoders fill the rest with grey and train on it). Files that do not end with their format's
    end marker are decoded fully to decide."""
    if _ends_complete(path):
        return
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # somebody allowed truncation globally: not here
        raise OSError("image file does not end with its end marker (truncated?)")
    with Image.open(path) as im:
        im.load()


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of a complete image (header + :func:`check_image_complete`); raises OSError
    when unreadable, truncated, or when the header claims more pixels than PIL decodes safely."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:
        raise OSError(f"the header claims more pixels than PIL decodes safely: {exc}") from None
    check_image_complete(path)
    return size


def listed_image_size(path: str, bad: "BadInput", missing: str, listed_at: str = "") -> tuple[int, int] | None:
    """(width, height) of an image a loader's annotation lists, or None once it is reported as bad:
    ``missing`` (the loader's own sentence, naming where it is listed) when the file does not
    exist, ``PATH: unreadable image (...)`` + ``; listed_at`` when its header cannot be read."""
    if not os.path.isfile(path):
        bad("missing_image", missing)
        return None
    try:
        return image_size(path)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises SyntaxError for some corrupt headers
        bad("unreadable_image", f"{path}: unreadable image ({exc})" + (f"; {listed_at}" if listed_at else ""))
        return None


def clip_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float,
             tolerance: float = 0.0) -> tuple[float, float, float, float] | None:
    """A continuous xyxy box clipped to the image, or None when it overhangs the border by more
    than ``tolerance`` pixels or nothing of it is left (the loaders' one border rule)."""
    t = tolerance
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return None
    box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    return box if box[2] > box[0] and box[3] > box[1] else None


class BadInput:
    """Routes one bad input either to an error (strict) or to the summary (``skip_bad``)."""

    def __init__(self, skip_bad: bool, summary: BadInputSummary) -> None:
        self.skip_bad = skip_bad
        self.summary = summary

    def __call__(self, reason: str, message: str) -> None:
        """Raise ``TinydetError(message)``, or count it when skipping is allowed."""
        if not self.skip_bad:
            raise TinydetError(message)
        self.summary.add(reason, message)


def resolve_data_cfg(data_cfg: dict | None, source: str = "config") -> dict:
    """Merge ``data_cfg`` over :data:`DATA_DEFAULTS` and the format's defaults; check the keys.

    Unknown keys and wrong types raise a one-line error naming ``source`` and ``data.<key>``.
    """
    data_cfg = dict(data_cfg or {})
    for key in data_cfg:
        if key not in DATA_DEFAULTS:
            raise TinydetError(f"{source}: unknown key data.{key}{closest(key, DATA_DEFAULTS)}")
    cfg = copy.deepcopy(DATA_DEFAULTS)
    cfg.update({k: copy.deepcopy(v) for k, v in data_cfg.items()})
    fmt = cfg["format"]
    if fmt not in FORMAT_DEFAULTS:
        raise TinydetError(f"{source}: data.format is '{fmt}', expected one of {sorted(FORMAT_DEFAULTS)}"
                           f"{closest(str(fmt), FORMAT_DEFAULTS)}")
    for key, value in FORMAT_DEFAULTS[fmt].items():
        if cfg.get(key) is None:
            cfg[key] = copy.deepcopy(value)
    if cfg["classes"] is None:  # coco / yolo: the set's own category names
        try:
            cfg["classes"] = dataset_classes(fmt, str(cfg["root"]), cfg["train"], source)
        except TinydetError as exc:
            raise TinydetError(f"{source}: data.classes is not set and cannot be read from the set ({exc})") from None
    if fmt == "wider" and list(cfg["classes"]) != ["face"]:
        raise TinydetError(f"{source}: data.classes is {cfg['classes']}, expected ['face'] for format wider")
    if not isinstance(cfg["classes"], (list, tuple)) or not cfg["classes"] or \
            not all(isinstance(c, str) for c in cfg["classes"]):
        raise TinydetError(f"{source}: data.classes must be a non-empty list of class names")
    if len(set(cfg["classes"])) != len(cfg["classes"]):
        raise TinydetError(f"{source}: data.classes has duplicate names: {cfg['classes']}")
    for split in SPLITS:
        entries = cfg[split]
        if not isinstance(entries, (list, tuple)) or not entries:
            raise TinydetError(f"{source}: data.{split} must be a non-empty list, got {entries!r}")
        for entry in entries:
            if fmt == "voc" and not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                raise TinydetError(f"{source}: data.{split} entry {entry!r} must be [year, imageset], "
                                   "e.g. [2007, trainval]")
            if fmt == "wider" and entry not in ("train", "val"):
                raise TinydetError(f"{source}: data.{split} entry {entry!r} must be 'train' or 'val'")
            if fmt == "yolo" and entry not in ("train", "val", "test"):
                raise TinydetError(f"{source}: data.{split} entry {entry!r} must be a data YAML split: "
                                   "train, val or test")
            if fmt == "coco" and not (isinstance(entry, str) or (
                    isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(e, str) for e in entry))):
                raise TinydetError(f"{source}: data.{split} entry {entry!r} must be a split name or an "
                                   "[annotation_json, image_folder] pair")
    for key in ("skip_bad", "keep_difficult"):
        if not isinstance(cfg[key], bool):
            raise TinydetError(f"{source}: data.{key} must be true or false, got {cfg[key]!r}")
    for key in ("min_size", "clip_tolerance"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise TinydetError(f"{source}: data.{key} must be a number >= 0, got {cfg[key]!r}")
    if cfg["augment"] is not False and not isinstance(cfg["augment"], dict):
        raise TinydetError(f"{source}: data.augment must be a mapping or false, got {cfg['augment']!r}")
    cfg["root"] = str(cfg["root"])
    return cfg


def dataset_classes(fmt: str, root: str, train_entries: list, source: str = "config") -> list[str]:
    """The class names a coco / yolo set declares: the categories of the first training annotation
    file in id order (coco) or the data YAML's ``names`` (yolo)."""
    if fmt == "coco":
        from tinydet.data.coco import coco_categories, coco_split

        path = coco_split(root, train_entries[0], f"{source}: data.train").annotations \
            if isinstance(train_entries, (list, tuple)) and train_entries else root
        return list(coco_categories(path).values())
    if fmt == "yolo":
        from tinydet.data.yolo import read_data_yaml

        return read_data_yaml(root).names
    raise TinydetError(f"{source}: data.classes must be set for format {fmt}")


def load_records(data_cfg: dict, split: str, source: str = "config"
                 ) -> tuple[list[ImageRecord], list[str], BadInputSummary]:
    """Load the ground truth of ``split`` ('train' | 'val' | 'test') described by ``data_cfg``.

    ``source`` names the config file in error messages. Returns the records (difficult boxes always
    kept, flagged; the DataModule drops them from training targets unless ``keep_difficult``), the
    class names, and the summary of skipped bad inputs (already logged to stderr once).
    """
    if split not in SPLITS:
        raise TinydetError(f"{source}: split '{split}' is not one of {list(SPLITS)}{closest(split, SPLITS)}")
    cfg = resolve_data_cfg(data_cfg, source)
    summary = BadInputSummary()
    bad = BadInput(cfg["skip_bad"], summary)
    if cfg["format"] == "voc":
        from tinydet.data.voc import load_voc

        records = load_voc(cfg["root"], cfg[split], cfg["classes"], bad, source, f"data.{split}",
                           float(cfg["clip_tolerance"]))
    elif cfg["format"] == "coco":
        from tinydet.data.coco import load_coco

        records = load_coco(cfg["root"], cfg[split], cfg["classes"], bad, f"data.{split}",
                            float(cfg["clip_tolerance"]))
    elif cfg["format"] == "yolo":
        from tinydet.data.yolo import load_yolo

        records = load_yolo(cfg["root"], cfg[split], cfg["classes"], bad, f"data.{split}",
                            float(cfg["clip_tolerance"]))
    else:
        from tinydet.data.wider import load_wider

        min_size = float(cfg["min_size"]) if split == "train" else 0.0
        records = load_wider(cfg["root"], cfg[split], bad, min_size, float(cfg["clip_tolerance"]))
    summary.log(f"{cfg['format']} {split} split under {cfg['root']}")
    if not records:
        raise TinydetError(f"{source}: data.{split} {cfg[split]} under {cfg['root']} holds no usable image")
    return records, list(cfg["classes"]), summary
