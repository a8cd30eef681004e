"""Detection file formats, read and write: VOC ``comp4`` files, COCO results JSON, WIDER submissions.

- VOC devkit: a folder of ``comp4_det_<set>_<class>.txt`` files, one line per detection
  ``image_id score xmin ymin xmax ymax`` with the devkit's 1-based inclusive pixel boxes
  (``xmin = x1 + 1, xmax = x2`` from internal continuous xyxy, see :mod:`tinydet.eval.boxes`).
- COCO results: a JSON list of ``{image_id, category_id, bbox: [x, y, w, h], score}`` with
  ``category_id = label + 1``; ``image_id`` is written as an integer when the id is a canonical
  decimal number (``"42"``), otherwise as the id string (VOC ids such as ``"000042"`` keep their
  zeros); on reading, an integer also matches a zero-padded id of the set (``42`` -> ``"000042"``).
- WIDER Face submission: ``<folder>/<event>/<stem>.txt`` holding the image name, the number of
  boxes, then one ``x y w h score`` line per box.

Numbers are written with the shortest representation that reads back to the same value, so a
write/read round trip scores exactly like the in-memory detections. Every reader reports a bad
file with its path and line (or JSON entry) and what was expected.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from tinydet.errors import TinydetError, closest
from tinydet.eval.boxes import Detections, as_detection_arrays
from tinydet.eval.voc import ClassDetections
from tinydet.io.atomic import atomic_write_text
from tinydet.io.jsonfile import read_json
from tinydet.io.textfile import read_text_lines

VOC_FILE_RE = re.compile(r"^(comp\d+)_det_([^_]+)_(.+)\.txt$")


def _num(value: float | np.floating) -> str:
    """Shortest decimal that reads back to exactly ``value`` (in its own float precision)."""
    value = value if isinstance(value, np.floating) else np.float64(value)
    return np.format_float_positional(value, unique=True, trim="-")


def _parse_floats(fields: Sequence[str], where: str, what: str) -> list[float]:
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise TinydetError(f"{where}: expected {what}, got '{' '.join(fields)}'") from None
    if not all(math.isfinite(v) for v in values):
        raise TinydetError(f"{where}: expected finite numbers in {what}, got '{' '.join(fields)}'")
    return values


# --------------------------------------------------------------------------------------- VOC


def write_voc_dets(folder: str, detections: Detections, class_names: Sequence[str],
                   image_set: str = "test", comp: str = "comp4") -> list[str]:
    """Write ``comp4_det_<image_set>_<class>.txt`` for every class (empty file when none).

    Within a file, lines follow the ``Detections`` order (images, then boxes), which
    :func:`read_voc_dets` keeps, so score ties stay in the same order. Returns the paths.
    """
    if "_" in image_set:
        raise TinydetError(f"image set name '{image_set}' must not contain '_' (it separates the file name fields)")
    lines: list[list[str]] = [[] for _ in class_names]
    for image_id, item in detections.items():
        if any(ch.isspace() for ch in image_id):
            raise TinydetError(f"detections: image id '{image_id}' contains white space, "
                               "which the comp4 line format cannot hold")
        boxes, _, labels = as_detection_arrays(image_id, item)
        raw_scores = np.asarray(item[1]).reshape(-1)
        for box, score, label in zip(boxes, raw_scores, labels):
            if not 0 <= label < len(class_names):
                raise TinydetError(f"detections: image '{image_id}' has label {label}, "
                                   f"expected 0..{len(class_names) - 1}")
            x1, y1, x2, y2 = box
            lines[label].append(f"{image_id} {_num(score)} {_num(x1 + 1)} {_num(y1 + 1)} {_num(x2)} {_num(y2)}")
    paths = []
    for c, name in enumerate(class_names):
        path = os.path.join(folder, f"{comp}_det_{image_set}_{name}.txt")
        atomic_write_text(path, "".join(line + "\n" for line in lines[c]))
        paths.append(path)
    return paths


def find_voc_det_files(folder: str, image_set: str | None = None) -> dict[str, str]:
    """class name -> path of the devkit detection files in ``folder`` (one image set only)."""
    found: dict[tuple[str, str], str] = {}
    for name in sorted(os.listdir(folder)):
        m = VOC_FILE_RE.match(name)
        if m and os.path.isfile(os.path.join(folder, name)):
            if image_set is None or m.group(2) == image_set:
                key = (m.group(2), m.group(3))
                if key in found:
                    raise TinydetError(f"{folder}: two detection files for class '{m.group(3)}' of image set "
                                       f"'{m.group(2)}': {os.path.basename(found[key])} and {name}")
                found[key] = os.path.join(folder, name)
    sets = sorted({s for s, _ in found})
    if len(sets) > 1:
        raise TinydetError(f"{folder}: detection files of several image sets {sets}; expected one "
                           "(choose one with --split)")
    return {cls: path for (_, cls), path in found.items()}


def read_voc_dets(folder: str, class_names: Sequence[str], image_ids: Iterable[str] | None = None,
                  image_set: str | None = None) -> list[ClassDetections]:
    """Per class (in ``class_names`` order) the detections of the ``comp*_det_*`` files, in line order.

    A file for a class not in ``class_names`` is an error; a class without a file has no
    detections. With ``image_ids``, a line naming another image is an error (file and line).
    """
    files = find_voc_det_files(folder, image_set)
    if not files:
        raise TinydetError(f"{folder}: no VOC detection files (expected comp4_det_<set>_<class>.txt)")
    for cls, path in files.items():
        if cls not in class_names:
            raise TinydetError(f"{path}: class '{cls}' is not one of the data set's classes"
                               f"{closest(cls, class_names)}")
    known = set(image_ids) if image_ids is not None else None
    out: list[ClassDetections] = []
    for name in class_names:
        ids: list[str] = []
        rows: list[list[float]] = []
        path = files.get(name)
        if path is not None:
            try:
                lines = read_text_lines(path, "VOC detection file")
            except OSError as exc:
                raise TinydetError(f"{path}: cannot read VOC detection file ({exc.strerror})") from None
            for lineno, line in enumerate(lines, 1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{path}:{lineno}"
                if len(fields) != 6:
                    raise TinydetError(f"{where}: expected 'image_id score xmin ymin xmax ymax' "
                                       f"(6 fields), got {len(fields)}")
                score, xmin, ymin, xmax, ymax = _parse_floats(fields[1:], where, "score xmin ymin xmax ymax")
                if xmax < xmin - 1 or ymax < ymin - 1:
                    raise TinydetError(f"{where}: box ({xmin:g},{ymin:g},{xmax:g},{ymax:g}) has "
                                       "xmax < xmin - 1 or ymax < ymin - 1")
                if known is not None and fields[0] not in known:
                    raise TinydetError(f"{where}: image id '{fields[0]}' is not in the evaluated set"
                                       f"{closest(fields[0], known)}")
                ids.append(fields[0])
                rows.append([score, xmin - 1, ymin - 1, xmax, ymax])
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        out.append((ids, arr[:, 0], arr[:, 1:]))
    return out


def class_detections_to_detections(per_class: Sequence[ClassDetections]) -> dict[str, tuple]:
    """Per-class detection lists back to ``Detections`` (images in order of first appearance)."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for label, (ids, scores, boxes) in enumerate(per_class):
        for n, image_id in enumerate(ids):
            parts.setdefault(image_id, []).append((boxes[n], scores[n], label))
    return {image_id: (np.asarray([p[0] for p in items], np.float64).reshape(-1, 4),
                       np.asarray([p[1] for p in items], np.float64),
                       np.asarray([p[2] for p in items], np.int64))
            for image_id, items in parts.items()}


# -------------------------------------------------------------------------------------- COCO


def _coco_image_id(image_id: str) -> int | str:
    return int(image_id) if image_id.isdigit() and str(int(image_id)) == image_id else image_id


def write_coco_results(path: str, detections: Detections, category_ids: Sequence[int] | None = None) -> None:
    """Write ``Detections`` as a COCO results JSON list (``category_id = category_ids[label]``,
    default ``label + 1``)."""
    entries = []
    for image_id, item in detections.items():
        boxes, _, labels = as_detection_arrays(image_id, item)
        raw_scores = np.asarray(item[1]).reshape(-1)
        for box, score, label in zip(boxes, raw_scores, labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            cat = int(label) + 1 if category_ids is None else int(category_ids[int(label)])
            entries.append({"image_id": _coco_image_id(image_id), "category_id": cat,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    # json writes floats with repr: the shortest text that reads back to the same double
    atomic_write_text(path, json.dumps(entries) + "\n")


def read_coco_results(path: str, image_ids: Sequence[str], n_classes: int,
                      category_ids: Sequence[int] | None = None) -> dict[str, tuple]:
    """A COCO results JSON as ``Detections`` over the set ``image_ids`` (entries in file order).

    ``image_id`` may be the id string or an integer (matching ``"42"`` or a zero-padded
    ``"000042"``); ``category_id`` must be in 1..``n_classes`` (label = id - 1), or, with
    ``category_ids`` (the id of each label, a COCO ground truth's), one of those; a bad entry is an
    error naming it.
    """
    label_of = {c: i for i, c in enumerate(category_ids)} if category_ids is not None else \
        {c: c - 1 for c in range(1, n_classes + 1)}
    data = read_json(path, "COCO results file")
    if not isinstance(data, list):
        raise TinydetError(f"{path}: expected a JSON list of {{image_id, category_id, bbox, score}}, "
                           f"got a {type(data).__name__}")
    known = set(image_ids)
    by_int: dict[int, str] = {}
    for i in image_ids:
        if i.isdigit():
            if int(i) in by_int:
                raise TinydetError(f"{path}: image ids '{by_int[int(i)]}' and '{i}' are the same number; "
                                   "use string image_id values")
            by_int[int(i)] = i
    parts: dict[str, list[list[float]]] = {}
    for n, entry in enumerate(data):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(entry):
            raise TinydetError(f"{where}: expected an object with image_id, category_id, bbox, score")
        raw_id = entry["image_id"]
        if isinstance(raw_id, str) and raw_id in known:
            image_id = raw_id
        elif isinstance(raw_id, int) and not isinstance(raw_id, bool) and raw_id in by_int:
            image_id = by_int[raw_id]
        else:
            raise TinydetError(f"{where}: image_id {raw_id!r} is not in the evaluated set")
        cat = entry["category_id"]
        if not isinstance(cat, int) or isinstance(cat, bool) or cat not in label_of:
            expected = f"1..{n_classes}" if category_ids is None else f"one of {sorted(label_of)}"
            raise TinydetError(f"{where}: category_id {cat!r} must be an integer in {expected}")
        bbox = entry["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise TinydetError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        score = entry["score"]
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            raise TinydetError(f"{where}: score must be a finite number, got {score!r}")
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            raise TinydetError(f"{where}: bbox [x, y, w, h] must be finite with w, h >= 0, got {bbox!r}")
        parts.setdefault(image_id, []).append([x, y, x + w, y + h, float(score), label_of[cat]])
    out = {}
    for image_id, rows in parts.items():
        arr = np.asarray(rows, dtype=np.float64)
        out[image_id] = (arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))
    return out


# ------------------------------------------------------------------------------------- WIDER


def write_wider_dets(folder: str, pred: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """Write WIDER predictions (event -> stem -> [N, 5] x, y, w, h, score) in the submission layout."""
    paths = []
    for event, images in pred.items():
        for stem, rows in images.items():
            rows = np.asarray(rows).reshape(-1, 5)
            text = f"{stem}\n{len(rows)}\n" + "".join(" ".join(_num(v) for v in row) + "\n" for row in rows)
            path = os.path.join(folder, event, f"{stem}.txt")
            atomic_write_text(path, text)
            paths.append(path)
    return paths


def _read_wider_file(path: str) -> np.ndarray:
    """The [N, 5] rows of one WIDER prediction file; an empty (0-byte) file has none.

    The official ``read_pred.m`` reports an empty file as an invalid format and scores the image
    as one without predictions; so does this reader, with a warning. Any other malformed file is
    an error naming the line (the MATLAB reader would silently drop it too).
    """
    if os.path.getsize(path) == 0:
        warnings.warn(f"{path}: empty prediction file, scored as an image without predictions "
                      "(as the official read_pred.m does)", stacklevel=3)
        return np.zeros((0, 5), dtype=np.float64)
    try:
        lines = read_text_lines(path, "WIDER prediction file")
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read WIDER prediction file ({exc.strerror})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise TinydetError(f"{path}: expected the image name, the number of boxes, then 'x y w h score' "
                           f"lines; the file has {len(lines)} line(s)")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise TinydetError(f"{path}:2: expected the number of boxes, got '{lines[1].strip()}'") from None
    body = lines[2:]
    if count < 0 or len(body) != count:
        raise TinydetError(f"{path}:2: the box count says {count} but {len(body)} box line(s) follow")
    rows = []
    for n, line in enumerate(body, 3):
        fields = line.split()
        if len(fields) != 5:
            raise TinydetError(f"{path}:{n}: expected 'x y w h score' (5 fields), got {len(fields)}")
        row = _parse_floats(fields, f"{path}:{n}", "x y w h score")
        if row[2] < 0 or row[3] < 0:
            raise TinydetError(f"{path}:{n}: box width and height must be >= 0, got {row[2]:g} {row[3]:g}")
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_wider_dets(folder: str) -> dict[str, dict[str, np.ndarray]]:
    """A WIDER submission folder as event -> stem -> [N, 5] (stem = the .txt name, as the MATLAB
    evaluation reads it; the first line, the image name, is not used)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for event in sorted(os.listdir(folder)):
        event_dir = os.path.join(folder, event)
        if not os.path.isdir(event_dir):
            continue
        for name in sorted(os.listdir(event_dir)):
            if name.endswith(".txt"):
                out.setdefault(event, {})[name[:-4]] = _read_wider_file(os.path.join(event_dir, name))
    if not out:
        raise TinydetError(f"{folder}: no WIDER prediction files (expected <event>/<image>.txt)")
    return out


# ------------------------------------------------------------------------------- coverage


def check_coverage(dets: str, set_ids: Iterable, predicted_ids: Iterable, stream=None) -> dict:
    """Compare the images a detections file names (``predicted_ids``, each with a prediction entry,
    possibly empty) with the evaluated set (``set_ids``): a warning on stderr with the count of set
    images without predictions (scored as detecting nothing) and of predicted images the set does
    not have (ignored, as the official tools do); an error when predictions exist but none names
    an image of the set (the wrong split or data set). Returns the two counts."""
    import sys

    known, named = set(set_ids), set(predicted_ids)
    without, unknown = known - named, named - known
    if named and not named & known:
        raise TinydetError(f"{dets}: no prediction matched any image of the evaluated set ({len(known)} images; "
                           f"the detections name {len(unknown)} other images, e.g. {_example(unknown)}): "
                           "scored against the wrong split or data set?")
    stream = stream or sys.stderr
    if without:
        print(f"tinydet: warning: {dets}: {len(without)} of {len(known)} images of the evaluated set have no "
              f"prediction (scored as detecting nothing), e.g. {_example(without)}", file=stream)
    if unknown:
        print(f"tinydet: warning: {dets}: predictions for {len(unknown)} images that the evaluated set does not "
              f"have were ignored, e.g. {_example(unknown)}", file=stream)
    return {"n_images_without_predictions": len(without), "n_unmatched_predictions": len(unknown)}


def _example(ids: set) -> str:
    first = sorted(ids, key=str)[0]
    return "/".join(first) if isinstance(first, tuple) else str(first)


# -------------------------------------------------------------------------------- detection


def detect_format(path: str) -> str:
    """'coco' (a JSON file), 'voc' (comp*_det_* files) or 'wider' (<event>/*.txt) from what is there."""
    if os.path.isfile(path):
        if path.endswith(".json"):
            return "coco"
        raise TinydetError(f"{path}: a detections file must be a COCO results .json; VOC and WIDER "
                           "detections are folders")
    if not os.path.isdir(path):
        raise TinydetError(f"{path}: detections file or folder does not exist")
    entries = os.listdir(path)
    has_voc = any(VOC_FILE_RE.match(e) for e in entries)
    has_wider = any(os.path.isdir(os.path.join(path, e)) and
                    any(f.endswith(".txt") for f in os.listdir(os.path.join(path, e))) for e in entries)
    if has_voc and has_wider:
        raise TinydetError(f"{path}: holds both VOC comp*_det_* files and WIDER <event>/*.txt folders; "
                           "pass --format voc or --format wider")
    if has_voc:
        return "voc"
    if has_wider:
        return "wider"
    raise TinydetError(f"{path}: expected VOC comp4_det_<set>_<class>.txt files or WIDER <event>/<image>.txt "
                       "folders, found neither")
