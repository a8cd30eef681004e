"""YOLO (Ultralytics) loader: a data YAML with ``names`` and ``images/`` + ``labels/`` folders.

``data.root`` is the data YAML, or a folder holding ``data.yaml``. The YAML's ``path`` (default: the
YAML's folder; relative to it) is the set's root; each split key (``train``, ``val``, ``test``) is
an image folder, a ``.txt`` list of image paths, or a list of those, relative to ``path``. A config
split entry names one of those keys. ``names`` is a list or an ``{index: name}`` mapping.

An image ``.../images/<rel>/x.jpg`` has its labels in ``.../labels/<rel>/x.txt``: one line ``class
cx cy w h`` per object, all four numbers normalised by the image width / height. A missing or empty
label file is an image without objects (Ultralytics' background images). Labels are mapped to
``data.classes`` by name (default: ``names``). Boxes are continuous 0-based pixels:
``x1 = (cx - w / 2) * W``. Record ``image_id`` = the image path relative to ``path``, without the
extension.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tinydet.data.records import BadInput, ImageRecord, clip_box, listed_image_size
from tinydet.errors import TinydetError, closest
from tinydet.io.textfile import read_text_lines

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_KEYS = ("train", "val", "test")


@dataclass
class YoloData:
    """A parsed data YAML: its file, the set's root, per split the image sources, the class names."""

    yaml_path: str
    root: str
    splits: dict[str, list[str]]
    names: list[str]


def find_data_yaml(root: str) -> str:
    """The data YAML named by ``root`` (the file itself, or ``<root>/data.yaml``)."""
    if os.path.isfile(root):
        return root
    path = os.path.join(root, "data.yaml")
    if os.path.isfile(path):
        return path
    raise TinydetError(f"{root}: expected a YOLO data YAML (data.root: the .yaml file, or a folder with data.yaml)")


def read_data_yaml(root: str) -> YoloData:
    """Parse and check the data YAML of ``root`` (see :func:`find_data_yaml`)."""
    import yaml

    path = find_data_yaml(root)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise TinydetError(f"{path}: cannot read the YOLO data YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise TinydetError(f"{path}: expected a mapping with path, train, val and names")
    names = doc.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise TinydetError(f"{path}: field names: expected indices 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise TinydetError(f"{path}: field names must be a non-empty list (or index mapping) of class names")
    if len(set(names)) != len(names):
        raise TinydetError(f"{path}: field names repeats a class name: {names}")
    base = os.path.dirname(os.path.abspath(path))
    set_root = doc.get("path") or base
    if not isinstance(set_root, str):
        raise TinydetError(f"{path}: field path must be a folder name, got {set_root!r}")
    set_root = set_root if os.path.isabs(set_root) else os.path.normpath(os.path.join(base, set_root))
    splits: dict[str, list[str]] = {}
    for key in SPLIT_KEYS:
        value = doc.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in items):
            raise TinydetError(f"{path}: field {key} must be a folder, a .txt list file, or a list of those")
        splits[key] = [v if os.path.isabs(v) else os.path.join(set_root, v) for v in items]
    return YoloData(path, set_root, splits, list(names))


def label_path(image_path: str) -> str:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    head, sep, tail = image_path.rpartition(os.sep + "images" + os.sep)
    if not sep:
        raise TinydetError(f"{image_path}: a YOLO image must lie under an images/ folder (labels/ beside it)")
    return os.path.splitext(head + os.sep + "labels" + os.sep + tail)[0] + ".txt"


def _split_images(source: str, bad: BadInput, where: str) -> list[str]:
    if source.endswith(".txt"):
        try:
            lines = [ln.strip() for ln in read_text_lines(source, "YOLO image list") if ln.strip()]
        except OSError:
            bad("empty_split", f"{source}: image list of {where} does not exist")
            return []
        base = os.path.dirname(source)
        return [ln if os.path.isabs(ln) else os.path.normpath(os.path.join(base, ln)) for ln in lines]
    if not os.path.isdir(source):
        bad("empty_split", f"{source}: image folder of {where} does not exist")
        return []
    out = []
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        out += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTS)]
    return out


def parse_yolo_labels(path: str, width: int, height: int, names: Sequence[str], classes: Sequence[str],
                      bad: BadInput, tolerance: float = 0.0) -> tuple[np.ndarray, np.ndarray] | None:
    """(boxes xyxy pixels [N, 4], labels [N]) of one label file (none when absent); None = skip image."""
    if not os.path.isfile(path):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    try:
        lines = read_text_lines(path, "YOLO label file")
    except OSError as exc:
        bad("malformed_label", f"{path}: unreadable label file ({exc})")
        return None
    except TinydetError as exc:  # not UTF-8
        bad("malformed_label", str(exc))
        return None
    boxes, labels = [], []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if len(fields) != 5:
            bad("malformed_label", f"{where}: expected 'class cx cy w h' (5 fields), got {len(fields)}")
            continue
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            bad("malformed_label", f"{where}: expected an integer class and 4 numbers, got '{line.strip()[:60]}'")
            continue
        if not 0 <= cls < len(names):
            bad("unknown_class", f"{where}: class {cls} is not an index of names (0..{len(names) - 1})")
            continue
        if names[cls] not in classes:
            bad("unknown_class", f"{where}: class '{names[cls]}' is not in data.classes{closest(names[cls], classes)}")
            continue
        if not all(np.isfinite([cx, cy, w, h])) or w <= 0 or h <= 0:
            bad("box_inverted", f"{where}: width and height must be > 0, got {w:g} {h:g}")
            continue
        x1, y1, x2, y2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        clipped = clip_box(x1, y1, x2, y2, width, height, tolerance)
        if clipped is None:
            bad("box_outside_image", f"{where}: box ({cx:g} {cy:g} {w:g} {h:g}) is outside the image "
                                     f"(expected 0 <= cx -+ w/2 <= 1 and 0 <= cy -+ h/2 <= 1 of {width}x{height})")
            continue
        boxes.append(clipped)
        labels.append(list(classes).index(names[cls]))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64)


def load_yolo(root: str, entries: Sequence[str], classes: Sequence[str], bad: BadInput, field: str = "data",
              tolerance: float = 0.0) -> list[ImageRecord]:
    """Records of the data YAML's splits named by ``entries`` (see the module doc), joined in order."""
    data = read_data_yaml(root)
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for entry in entries:
        if entry not in data.splits:
            raise TinydetError(f"{data.yaml_path}: {field} entry '{entry}' is not a split of the data YAML "
                               f"(it has {sorted(data.splits)})")
        for source in data.splits[entry]:
            for image in _split_images(source, bad, f"{field} entry '{entry}'"):
                image_id = os.path.splitext(os.path.relpath(image, data.root))[0].replace(os.sep, "/")
                if image_id in seen:
                    continue  # listed twice (e.g. a folder and a list file): one record
                size = listed_image_size(image, bad, f"{source}: lists image {image}, which does not exist")
                if size is None:
                    continue
                width, height = size
                labels = parse_yolo_labels(label_path(image), width, height, data.names, classes, bad, tolerance)
                if labels is None:
                    continue
                seen.add(image_id)
                records.append(ImageRecord(image_id, image, width, height, labels[0], labels[1],
                                           np.zeros(len(labels[1]), bool), extra={"split": entry}))
    return records
