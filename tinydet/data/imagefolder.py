"""Classification data: one label per image, from an ImageNet-style folder or a Visual Wake Words set.

* ``imagefolder``: ``<root>/<split>/<class>/<image>`` (torchvision's ImageFolder convention: the
  classes are the sorted sub-folder names of the first training split, files are taken by
  extension, case-insensitively, in sorted order; hidden files and folders are ignored).
* ``vww``: the split files ``tinydet data vww`` writes (:mod:`tinydet.data.vww`): ``<root>/<split>.txt``
  with ``<image path relative to root> <label>`` lines and ``<root>/labels.txt`` (``0:background``,
  ``1:person``).

:func:`resolve_classify_data_cfg` is the ``data`` section of a ``task: classify`` config (the
detection formats are :func:`tinydet.data.records.resolve_data_cfg`); :func:`load_class_records`
lists one split as :class:`ClassRecord` s.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Sequence

from tinydet.data.records import DATA_DEFAULTS, BadInput, BadInputSummary
from tinydet.errors import TinydetError, closest

#: file extensions torchvision's ImageFolder accepts (compared lower-case)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASSIFY_FORMATS = ("imagefolder", "vww")
VWW_CLASSES = ("background", "person")
#: the data keys a classification set uses (the rest of DATA_DEFAULTS is detection-only)
CLASSIFY_KEYS = ("format", "root", "train", "val", "test", "classes", "skip_bad", "augment")
FORMAT_DEFAULTS = {
    "imagefolder": {"root": "data/imagenet", "train": ["train"], "val": ["val"]},
    "vww": {"root": "data/vww", "train": ["train"], "val": ["val"]},
}


@dataclass(frozen=True)
class ClassRecord:
    """One labelled image: ``path`` on disk, ``label`` the index into the class names."""

    path: str
    label: int


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def folder_classes(split_dir: str) -> list[str]:
    """The class names of an ImageFolder split: its sorted (non-hidden) sub-folders."""
    if not os.path.isdir(split_dir):
        raise TinydetError(f"{split_dir}: no such folder (expected <root>/<split>/<class>/*.jpg)")
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise TinydetError(f"{split_dir}: no class folders (expected <root>/<split>/<class>/*.jpg)")
    return names


def vww_classes(root: str) -> list[str]:
    """The class names of a VWW set from ``<root>/labels.txt`` (``<index>:<name>`` lines)."""
    path = os.path.join(root, "labels.txt")
    try:
        lines = [ln.strip() for ln in open(path, encoding="utf-8") if ln.strip()]
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read the VWW label file ({exc.strerror}); "
                           "build the set with tinydet data vww") from None
    names: dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        index, sep, name = line.partition(":")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise TinydetError(f"{path}:{n}: expected '<index>:<name>', got {line!r}")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(len(names))):
        raise TinydetError(f"{path}: label indices must be 0..{len(names) - 1}, got {sorted(names)}")
    return [names[i] for i in range(len(names))]


def dataset_class_names(fmt: str, root: str, train_entries: Sequence[str]) -> list[str]:
    """The class names the set on disk declares (sorted folders, or labels.txt)."""
    if fmt == "vww":
        return vww_classes(root)
    return folder_classes(os.path.join(root, str(train_entries[0])))


def resolve_classify_data_cfg(data_cfg: dict | None, source: str = "config") -> dict:
    """The ``data`` section of a classification config, merged over the defaults and checked.

    ``data.classes`` null reads the set's classes; given, it must name the same set (its order
    is then the label order). ``test`` defaults to ``val``.
    """
    data_cfg = dict(data_cfg or {})
    for key, value in data_cfg.items():
        if key not in CLASSIFY_KEYS and not (key in DATA_DEFAULTS and value == DATA_DEFAULTS[key]):
            raise TinydetError(f"{source}: data.{key} does not apply to task classify"
                               f"{closest(key, CLASSIFY_KEYS)} (keys: {', '.join(CLASSIFY_KEYS)})")
    cfg = {k: copy.deepcopy(data_cfg.get(k, DATA_DEFAULTS[k])) for k in CLASSIFY_KEYS}
    fmt = cfg["format"]
    if fmt not in CLASSIFY_FORMATS:
        raise TinydetError(f"{source}: data.format is '{fmt}', expected one of {', '.join(CLASSIFY_FORMATS)} "
                           f"for task classify{closest(str(fmt), CLASSIFY_FORMATS)}")
    for key, value in FORMAT_DEFAULTS[fmt].items():
        if cfg[key] is None:
            cfg[key] = copy.deepcopy(value)
    if cfg["test"] is None:
        cfg["test"] = copy.deepcopy(cfg["val"])
    cfg["root"] = str(cfg["root"])
    for split in ("train", "val", "test"):
        entries = cfg[split]
        if not isinstance(entries, (list, tuple)) or not entries or not all(isinstance(e, str) for e in entries):
            raise TinydetError(f"{source}: data.{split} must be a non-empty list of split names "
                               f"(folders under data.root for imagefolder, <name>.txt for vww), got {entries!r}")
    if not isinstance(cfg["skip_bad"], bool):
        raise TinydetError(f"{source}: data.skip_bad must be true or false, got {cfg['skip_bad']!r}")
    if cfg["augment"] is not False and not isinstance(cfg["augment"], dict):
        raise TinydetError(f"{source}: data.augment must be a mapping or false, got {cfg['augment']!r}")
    on_disk = None
    if os.path.isdir(cfg["root"]):
        on_disk = dataset_class_names(fmt, cfg["root"], cfg["train"])
    if cfg["classes"] is None and on_disk is None and fmt == "vww":
        on_disk = list(VWW_CLASSES)  # the labels tinydet data vww writes; checked against labels.txt once built
        cfg["classes"] = on_disk
    if cfg["classes"] is None:
        if on_disk is None:
            raise TinydetError(f"{source}: data.root {cfg['root']} does not exist, so data.classes cannot be read "
                               f"from it; point data.root at the {fmt} set or list data.classes")
        cfg["classes"] = on_disk
    classes = cfg["classes"]
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise TinydetError(f"{source}: data.classes must be a non-empty list of class names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise TinydetError(f"{source}: data.classes has duplicate names: {list(classes)}")
    if on_disk is not None and sorted(on_disk) != sorted(classes):
        extra, missing = sorted(set(classes) - set(on_disk)), sorted(set(on_disk) - set(classes))
        raise TinydetError(f"{source}: data.classes does not match the set at {cfg['root']} "
                           f"(not in the set: {extra}, in the set but not listed: {missing})")
    cfg["classes"] = list(classes)
    return cfg


def _imagefolder_split(root: str, split: str, classes: Sequence[str], bad: BadInput) -> list[ClassRecord]:
    split_dir = os.path.join(root, split)
    present = folder_classes(split_dir)
    unknown = [c for c in present if c not in classes]
    if unknown:
        raise TinydetError(f"{split_dir}: class folder '{unknown[0]}' is not a training class "
                           f"(classes: {list(classes)})")
    records = []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue  # a val split may lack a class
        files = sorted(e.name for e in os.scandir(class_dir) if e.is_file() and _is_image(e.name))
        if not files:
            bad("empty class folder", f"{class_dir}: no image files ({', '.join(IMG_EXTENSIONS)})")
        records += [ClassRecord(os.path.join(class_dir, f), label) for f in files]
    return records


def _vww_split(root: str, split: str, classes: Sequence[str], bad: BadInput) -> list[ClassRecord]:
    path = os.path.join(root, f"{split}.txt")
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read the VWW split file ({exc.strerror}); "
                           "build the set with tinydet data vww") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, _, label = line.rpartition(" ")
        if not name or not label.isdigit() or int(label) >= len(classes):
            bad("bad split line", f"{path}:{n}: expected '<image path> <label 0..{len(classes) - 1}>', got {line!r}")
            continue
        image = os.path.normpath(os.path.join(root, name))
        if not os.path.isfile(image):
            bad("missing image", f"{path}:{n}: image {image} does not exist")
            continue
        records.append(ClassRecord(image, int(label)))
    return records


def load_class_records(data_cfg: dict, split: str, source: str = "config"
                       ) -> tuple[list[ClassRecord], list[str], BadInputSummary]:
    """The records of ``split`` (train | val | test: its entries joined in order) of a resolved
    classification ``data_cfg``; bad inputs raise, or are counted with ``skip_bad``."""
    summary = BadInputSummary()
    bad = BadInput(bool(data_cfg["skip_bad"]), summary)
    classes = list(data_cfg["classes"])
    read = _vww_split if data_cfg["format"] == "vww" else _imagefolder_split
    records = [r for entry in data_cfg[split] for r in read(data_cfg["root"], entry, classes, bad)]
    summary.log(f"{data_cfg['format']} {split} split under {data_cfg['root']}")
    if not records:
        raise TinydetError(f"{source}: data.{split} {data_cfg[split]} under {data_cfg['root']} holds no images")
    return records, classes, summary
