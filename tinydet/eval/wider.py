"""WIDER Face AP on the easy / medium / hard subsets, as the official evaluation defines it.

The official evaluation (``eval_tools``: ``wider_eval.m`` and its Python port ``evaluation.py``),
reimplemented here:

- ground truth: ``wider_face_val.mat`` holds every face box (``x, y, w, h``) per event and image;
  ``wider_{easy,medium,hard}_val.mat`` hold ``gt_list``, the 1-based indices of the faces that
  *count* in that subset. The other faces are ignored: a detection that matches one is neither TP
  nor FP, and they are never missed;
- scores are normalised by the global min and max over all predictions (the running max starts
  at ``realmin('single')`` and the min at ``realmax('single')`` as in ``norm_score.m``, so they are
  the predictions' own extremes);
- per image, predictions are visited by score, descending (a stable sort; the MATLAB reader sorts,
  the Python port assumes sorted files). Each takes the face with the best IoU (the first on a
  tie); IoU is ``boxoverlap.m``'s: the ``+1`` rule on corners ``x2 = x + w``, areas included.
  If the IoU is ``>= 0.5``: an ignored face makes the prediction ignored, an unrecalled counted
  face is recalled, a recalled one leaves the prediction a false positive. Images without any
  face or without predictions add nothing (their predictions are not counted as false
  positives), but their counted faces are in the recall denominator;
- for each of 1000 thresholds ``1 - (t + 1) / 1000`` the proposals (non-ignored predictions) and
  recalled faces of the predictions scoring ``>=`` it are summed over all images; precision =
  recalled / proposals, recall = recalled / counted faces, AP = the VOC all-point area
  (:func:`tinydet.eval.voc.voc_ap`).

Predictions are keyed by event folder and ``.txt`` file name, and an image without a prediction
file -- or with an empty (0-byte) one, which ``read_pred.m`` reports as an invalid format and
skips -- has no predictions, as in the MATLAB ``read_pred.m`` (the Python port keys by the file's
first line and raises KeyError on a missing file). Where the official code fails: when all scores are
equal they are normalised to 1 (it divides by zero); a threshold with no proposal has precision 0
(NaN officially — it sits at recall 0, so the area is the same).

Without the ``.mat`` files (a custom data set) the subsets come from a rule on face height, see
:data:`HEIGHT_RULE`; the result says which through ``difficulty_source``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.eval.boxes import Detections, GroundTruthRecord, as_detection_arrays
from tinydet.eval.voc import voc_ap
from tinydet.ops.boxes import box_xyxy_to_xywh

SETTINGS = ("easy", "medium", "hard")
MAT_FILES = {"all": "wider_face_val.mat", "easy": "wider_easy_val.mat",
             "medium": "wider_medium_val.mat", "hard": "wider_hard_val.mat"}
#: Where the .mat files are looked for, relative to the data/gt folder (the official archives put
#: wider_face_val.mat in wider_face_split/ and all four in eval_tools/ground_truth/).
MAT_DIRS = (".", "ground_truth", "eval_tools/ground_truth", "wider_face_split")
#: Fallback subsets without the .mat files: a face counts in a subset when its box height is at
#: least this many pixels (WIDER's own scale bins start at 10 px for "small" and 50 px for
#: "medium"); smaller faces are ignored like the faces outside an official subset. This only
#: approximates the official subsets (defined by EdgeBox detection rates), so numbers are not
#: comparable with published WIDER results.
HEIGHT_RULE = {"easy": 50.0, "medium": 25.0, "hard": 10.0}
THRESH_NUM = 1000

#: event -> image file stem -> float [N, 5] rows ``x, y, w, h, score`` (original-image pixels).
WiderPredictions = Mapping[str, Mapping[str, np.ndarray]]


@dataclass
class WiderGroundTruth:
    """Face boxes per event and image, and per subset the 0-based indices of the faces that count."""

    events: list[str]
    files: list[list[str]]  # per event: image file stems (no extension)
    boxes: list[list[np.ndarray]]  # per event, per image: float [M, 4] x, y, w, h
    keep: dict[str, list[list[np.ndarray]]]  # setting -> per event, per image: int indices
    source: str  # "official_mat" or "height_rule"
    rule: str  # one line saying how the subsets were defined


def find_wider_mats(gt_dir: str) -> dict[str, str] | None:
    """Paths of the four official .mat files under ``gt_dir`` (see :data:`MAT_DIRS`), or None."""
    found: dict[str, str] = {}
    for key, name in MAT_FILES.items():
        for sub in MAT_DIRS:
            path = os.path.normpath(os.path.join(gt_dir, sub, name))
            if os.path.isfile(path):
                found[key] = path
                break
    return found if len(found) == len(MAT_FILES) else None


def _cell_str(value: object) -> str:
    """A MATLAB string as loadmat returns it inside cells (nested object arrays of 1 element)."""
    a = np.asarray(value)
    while a.dtype == object and a.size:
        a = np.asarray(a.flat[0])
    return str(a.flat[0]) if a.size else ""


def _cells(value: object) -> list:
    """The elements of a MATLAB cell array (any shape) in MATLAB's column-major order."""
    return list(np.asarray(value, dtype=object).ravel(order="F"))


def load_wider_mat(gt_dir: str) -> WiderGroundTruth:
    """The official ground truth from the four .mat files under ``gt_dir``."""
    from scipy.io import loadmat

    paths = find_wider_mats(gt_dir)
    if paths is None:
        names = ", ".join(MAT_FILES.values())
        raise TinydetError(f"{gt_dir}: expected the WIDER Face ground truth files {names} "
                           f"(in one of {', '.join(MAT_DIRS)})")
    try:
        full = loadmat(paths["all"])
        subsets = {s: loadmat(paths[s]) for s in SETTINGS}
    except (OSError, ValueError) as exc:
        raise TinydetError(f"{gt_dir}: unreadable WIDER .mat file ({exc})") from exc
    for key, mat, field_names in [("all", full, ("event_list", "file_list", "face_bbx_list"))] + \
            [(s, subsets[s], ("gt_list",)) for s in SETTINGS]:
        for f in field_names:
            if f not in mat:
                raise TinydetError(f"{paths[key]}: field '{f}' is missing (expected the official WIDER layout)")
    events = [_cell_str(e) for e in _cells(full["event_list"])]
    file_cells = _cells(full["file_list"])
    box_cells = _cells(full["face_bbx_list"])
    if not (len(file_cells) == len(box_cells) == len(events)):
        raise TinydetError(f"{paths['all']}: event_list, file_list and face_bbx_list differ in length")
    files, boxes = [], []
    for i, event in enumerate(events):
        names = [_cell_str(f) for f in _cells(file_cells[i])]
        per_image = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in _cells(box_cells[i])]
        if len(names) != len(per_image):
            raise TinydetError(f"{paths['all']}: event '{event}' has {len(names)} files but "
                               f"{len(per_image)} box lists")
        files.append(names)
        boxes.append(per_image)
    keep: dict[str, list[list[np.ndarray]]] = {}
    for s in SETTINGS:
        gt_cells = _cells(subsets[s]["gt_list"])
        if len(gt_cells) != len(events):
            raise TinydetError(f"{paths[s]}: gt_list has {len(gt_cells)} events, expected {len(events)}")
        keep[s] = []
        for i, event in enumerate(events):
            lists = [np.asarray(k).reshape(-1).astype(np.int64) - 1 for k in _cells(gt_cells[i])]
            if len(lists) != len(files[i]):
                raise TinydetError(f"{paths[s]}: event '{event}' has {len(lists)} gt lists, "
                                   f"expected {len(files[i])}")
            for j, idx in enumerate(lists):
                if idx.size and (idx.min() < 0 or idx.max() >= len(boxes[i][j])):
                    raise TinydetError(f"{paths[s]}: gt_list of {event}/{files[i][j]} indexes face "
                                       f"{int(idx.max()) + 1}, but the image has {len(boxes[i][j])}")
            keep[s].append(lists)
    return WiderGroundTruth(events, files, boxes, keep, "official_mat",
                            "official subsets from " + ", ".join(MAT_FILES.values()))


def image_key(path: str) -> tuple[str, str]:
    """(event, file stem) of an image path ``.../<event>/<stem>.jpg``, WIDER's two-level key."""
    return os.path.basename(os.path.dirname(path)), os.path.splitext(os.path.basename(path))[0]


def wider_gt_from_records(records: Iterable[GroundTruthRecord],
                          rule: Mapping[str, float] | None = None) -> WiderGroundTruth:
    """Ground truth of ``records`` with subsets from the face-height ``rule`` (:data:`HEIGHT_RULE`).

    Boxes are converted back to WIDER's ``x, y, w, h`` (``w = x2 - x1``, inverse of the loader's
    ``x2 = x + w``). Faces flagged ``difficult`` never count (ignored in every subset).
    """
    rule = dict(HEIGHT_RULE if rule is None else rule)
    events: list[str] = []
    files: list[list[str]] = []
    boxes: list[list[np.ndarray]] = []
    keep: dict[str, list[list[np.ndarray]]] = {s: [] for s in SETTINGS}
    position: dict[str, int] = {}
    for r in records:
        event, stem = image_key(r.path)
        if event not in position:
            position[event] = len(events)
            events.append(event)
            files.append([])
            boxes.append([])
            for s in SETTINGS:
                keep[s].append([])
        i = position[event]
        b = np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)
        xywh = box_xyxy_to_xywh(b)
        difficult = np.asarray(r.difficult, dtype=bool).reshape(-1)
        files[i].append(stem)
        boxes[i].append(xywh)
        for s in SETTINGS:
            keep[s][i].append(np.nonzero((xywh[:, 3] >= rule[s]) & ~difficult)[0])
    text = "face height rule (no official .mat files): " + ", ".join(f"{s} >= {rule[s]:g} px" for s in SETTINGS)
    return WiderGroundTruth(events, files, boxes, keep, "height_rule", text)


#: The official ``norm_score.m`` starts its running max at ``realmin('single')`` and its running min
#: at ``realmax('single')``, so the extremes are exactly those of the predictions (the Python port
#: starts at 0 and 1 instead, which moves the min when every score exceeds 1).
SCORE_MAX_START = float(np.finfo(np.float32).tiny)
SCORE_MIN_START = float(np.finfo(np.float32).max)


def normalise_scores(pred: WiderPredictions) -> dict[str, dict[str, np.ndarray]]:
    """A copy of ``pred`` with scores mapped to [0, 1] by the global min/max (see module doc)."""
    lo, hi = SCORE_MIN_START, SCORE_MAX_START
    out: dict[str, dict[str, np.ndarray]] = {}
    for event, images in pred.items():
        out[event] = {}
        for name, rows in images.items():
            rows = np.array(rows, dtype=np.float64).reshape(-1, 5)
            out[event][name] = rows
            if len(rows):
                lo, hi = min(lo, float(rows[:, 4].min())), max(hi, float(rows[:, 4].max()))
    for images in out.values():
        for rows in images.values():
            if len(rows):
                rows[:, 4] = (rows[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def wider_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU [N, M] of ``x, y, w, h`` boxes exactly as the official ``boxoverlap.m``.

    Both box sets are first turned into corners ``x2 = x + w`` (as ``evaluation.m`` does), then
    every length is ``x2 - x1 + 1`` (inclusive pixels) -- areas included: ``(w + 1) * (h + 1)``
    is the same number mathematically but not in floating point, and the last bit decides matches
    that sit exactly at the IoU threshold. Pairs whose intersection width or height is ``<= 0``
    get 0.

    This protocol's own rule (the official evaluation's), kept here on purpose:
    every other IoU in the package is :func:`tinydet.ops.boxes.box_iou` (continuous, no ``+1``).
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    p_x1, p_y1, p_x2, p_y2 = p[:, 0], p[:, 1], p[:, 0] + p[:, 2], p[:, 1] + p[:, 3]
    g_x1, g_y1, g_x2, g_y2 = g[:, 0], g[:, 1], g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = np.minimum(p_x2[:, None], g_x2[None, :]) - np.maximum(p_x1[:, None], g_x1[None, :]) + 1
    ih = np.minimum(p_y2[:, None], g_y2[None, :]) - np.maximum(p_y1[:, None], g_y1[None, :]) + 1
    inter = iw * ih
    area_p = (p_x2 - p_x1 + 1) * (p_y2 - p_y1 + 1)
    area_g = (g_x2 - g_x1 + 1) * (g_y2 - g_y1 + 1)
    union = area_g[None, :] + area_p[:, None] - inter
    valid = (iw > 0) & (ih > 0)
    return np.where(valid, inter / np.where(valid & (union > 0), union, 1.0), 0.0)


def image_pr(pred: np.ndarray, gt_boxes: np.ndarray, counted: np.ndarray, iou: float = 0.5,
             thresh_num: int = THRESH_NUM) -> np.ndarray:
    """Per-threshold (proposals, recalled faces) [thresh_num, 2] of one image.

    ``pred`` [N, 5] x, y, w, h, normalised score; ``counted`` bool [M], the faces of the subset.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5)
    pred = pred[np.argsort(-pred[:, 4], kind="stable")]
    overlaps = wider_iou(pred[:, :4], gt_boxes)
    best = overlaps.argmax(axis=1)  # first face on a tie
    hit = overlaps.max(axis=1) >= iou
    ignored = hit & ~counted[best]
    candidates = np.nonzero(hit & counted[best])[0]
    newly = np.zeros(len(pred))
    _, first = np.unique(best[candidates], return_index=True)  # a face is recalled once
    newly[candidates[first]] = 1.0
    recalled = np.cumsum(newly)
    proposals = np.cumsum(~ignored)
    thresholds = 1.0 - (np.arange(thresh_num) + 1) / thresh_num
    # scores are sorted descending: the predictions at or above t are the first n_above of them
    n_above = np.searchsorted(-pred[:, 4], -thresholds, side="right")
    out = np.zeros((thresh_num, 2))
    some = n_above > 0
    out[some, 0] = proposals[n_above[some] - 1]
    out[some, 1] = recalled[n_above[some] - 1]
    return out


def restrict_gt(gt: WiderGroundTruth, keys: set[tuple[str, str]]) -> WiderGroundTruth:
    """``gt`` limited to the (event, file stem) images in ``keys``, subsets kept as they are."""
    events, files, boxes = [], [], []
    keep: dict[str, list[list[np.ndarray]]] = {s: [] for s in gt.keep}
    for i, event in enumerate(gt.events):
        idx = [j for j, name in enumerate(gt.files[i]) if (event, name) in keys]
        if not idx:
            continue
        events.append(event)
        files.append([gt.files[i][j] for j in idx])
        boxes.append([gt.boxes[i][j] for j in idx])
        for s in gt.keep:
            keep[s].append([gt.keep[s][i][j] for j in idx])
    return WiderGroundTruth(events, files, boxes, keep, gt.source, gt.rule)


def eval_wider(pred: WiderPredictions, gt_dir: str | None = None, *, gt: WiderGroundTruth | None = None,
               records: Sequence[GroundTruthRecord] | None = None, iou: float = 0.5,
               thresh_num: int = THRESH_NUM, records_only: bool = False) -> dict:
    """WIDER Face AP: ``{"easy", "medium", "hard", "difficulty_source", "difficulty_rule", ...}``.

    Ground truth: ``gt`` if given, else the official .mat files under ``gt_dir``, else (no .mat
    files) ``records`` with the :data:`HEIGHT_RULE` subsets. A subset with no counted face has AP
    None. Also returned: ``n_images`` (ground-truth images), ``n_faces`` per subset,
    ``n_images_without_predictions`` and ``n_unmatched_predictions`` (prediction images not in the
    ground truth; not scored, as officially). ``records_only``: score only the images of ``records``
    (a held-out subset) instead of every image of the official ground truth.
    """
    if gt is None:
        if gt_dir is not None and find_wider_mats(gt_dir) is not None:
            gt = load_wider_mat(gt_dir)
        elif records is not None:
            gt = wider_gt_from_records(records)
        else:
            names = ", ".join(MAT_FILES.values())
            raise TinydetError(f"{gt_dir}: no WIDER Face ground truth: expected {names} there, "
                               "or the data set's records for the face-height rule")
    if records_only and records is not None:
        gt = restrict_gt(gt, {image_key(r.path) for r in records})
    norm = normalise_scores(pred)
    gt_keys = {(e, f) for i, e in enumerate(gt.events) for f in gt.files[i]}
    unmatched = sum(1 for e, images in norm.items() for f in images if (e, f) not in gt_keys)
    without = sum(1 for i, e in enumerate(gt.events) for f in gt.files[i] if len(norm.get(e, {}).get(f, ())) == 0)
    result: dict = {}
    n_faces: dict[str, int] = {}
    for s in SETTINGS:
        curve = np.zeros((thresh_num, 2))
        count = 0
        for i, event in enumerate(gt.events):
            for j, name in enumerate(gt.files[i]):
                keep = gt.keep[s][i][j]
                count += len(keep)
                faces = gt.boxes[i][j]
                rows = norm.get(event, {}).get(name)
                if len(faces) == 0 or rows is None or len(rows) == 0:
                    continue
                counted = np.zeros(len(faces), dtype=bool)
                counted[keep] = True
                curve += image_pr(rows, faces, counted, iou, thresh_num)
        n_faces[s] = count
        if count == 0:
            result[s] = None
            continue
        precision = np.divide(curve[:, 1], curve[:, 0], out=np.zeros(thresh_num), where=curve[:, 0] > 0)
        recall = curve[:, 1] / count
        result[s] = voc_ap(recall, precision, use_07_metric=False)
    result.update(difficulty_source=gt.source, difficulty_rule=gt.rule,
                  n_images=sum(len(f) for f in gt.files), n_faces=n_faces,
                  n_images_without_predictions=without, n_unmatched_predictions=unmatched)
    return result


def detections_to_wider(detections: Detections, records: Sequence[GroundTruthRecord],
                        where: str = "detections") -> dict[str, dict[str, np.ndarray]]:
    """``Detections`` (xyxy, any label) as WIDER predictions keyed by the records' event and stem.

    Every record gets an entry (empty when it has no detections); ``x, y, w, h`` = ``x1, y1,
    x2 - x1, y2 - y1``, the inverse of the loader's conversion.
    """
    by_id = {r.image_id: r for r in records}
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in records:
        event, stem = image_key(r.path)
        out.setdefault(event, {})[stem] = np.zeros((0, 5))
    for image_id, item in detections.items():
        if image_id not in by_id:
            raise TinydetError(f"{where}: image id '{image_id}' is not in the evaluated set")
        boxes, scores, _ = as_detection_arrays(image_id, item, where)
        event, stem = image_key(by_id[image_id].path)
        out[event][stem] = np.column_stack([box_xyxy_to_xywh(boxes), scores])
    return out


def eval_wider_detections(detections: Detections, records: Sequence[GroundTruthRecord],
                          gt_dir: str | None = None, iou: float = 0.5, records_only: bool = False) -> dict:
    """:func:`eval_wider` of ``Detections`` (xyxy) on ``records`` (WIDER loader records).

    The official .mat subsets are used when ``gt_dir`` holds them, else the face-height rule.
    """
    return eval_wider(detections_to_wider(detections, records), gt_dir, records=records, iou=iou,
                      records_only=records_only)
