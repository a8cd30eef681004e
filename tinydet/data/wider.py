"""WIDER Face loader: ``<root>/WIDER_<split>/images/<event>/*.jpg`` and
``<root>/wider_face_split/wider_face_<split>_bbx_gt.txt`` (official text format).

Each image entry is a file-name line, a count line, then one ``x y w h blur expression illumination
invalid occlusion pose`` line per face (one all-zero line when the count is 0). Faces flagged
invalid, and zero-sized ones, are dropped; ``min_size`` drops small faces (training only).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tinydet.data.records import BadInput, ImageRecord, finite, listed_image_size
from tinydet.io.textfile import read_text_lines

ATTRS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
INVALID = 4 + ATTRS.index("invalid")  # column of the invalid flag in a face line


def gt_path(root: str, split: str) -> str:
    """The official ground-truth text file of ``split`` ('train' | 'val')."""
    return os.path.join(root, "wider_face_split", f"wider_face_{split}_bbx_gt.txt")


def _is_name(line: str) -> bool:
    return line.strip().lower().endswith((".jpg", ".jpeg", ".png"))


def parse_wider_gt(gt_file: str, bad: BadInput) -> list[tuple[str, int, np.ndarray]]:
    """Parse the official gt text: a list of (relative image path, name line number, faces [K, 10]).

    A count line that promises more faces than follow (end of file, or the next file name comes
    first) is a 'truncated_gt' bad input naming the file and the count line.
    """
    try:
        lines = read_text_lines(gt_file, "WIDER ground-truth file")
    except OSError:
        bad("empty_split", f"{gt_file}: WIDER ground-truth file does not exist")
        return []
    entries = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        name, name_line = lines[i].strip(), i + 1
        if not _is_name(name):
            bad("malformed_gt", f"{gt_file}:{name_line}: expected an image file name, got '{name[:40]}'")
            i += 1
            while i < n and not _is_name(lines[i]):  # resynchronise on the next file name
                i += 1
            continue
        if i + 1 >= n:
            bad("truncated_gt", f"{gt_file}:{name_line}: file ends after image name {name}, expected a count line")
            break
        try:
            count = int(lines[i + 1].split()[0])
            if count < 0:
                raise ValueError
        except (ValueError, IndexError):
            bad("malformed_gt", f"{gt_file}:{i + 2}: expected the face count of {name}, got '{lines[i + 1][:40]}'")
            i += 2
            while i < n and not _is_name(lines[i]):
                i += 1
            continue
        count_line = i + 2
        expected = max(count, 1)  # the official file writes one all-zero line for 0 faces
        j = i + 2
        faces = []
        truncated = False
        for k in range(expected):
            if j >= n or _is_name(lines[j]):
                end = "the file ends" if j >= n else f"line {j + 1} starts the next image"
                bad("truncated_gt", f"{gt_file}:{count_line}: count line says {count} faces for {name} "
                                    f"but {end} after {k}")
                truncated = True
                break
            values = lines[j].split()
            j += 1
            try:
                row = [finite(v) for v in values[:10]]
                if len(row) != 10:
                    raise ValueError
            except ValueError:
                bad("malformed_gt", f"{gt_file}:{j}: expected 10 finite numbers "
                                    "'x y w h blur expression illumination invalid occlusion pose'")
                continue
            faces.append(row)
        i = j
        if truncated:
            continue
        arr = np.asarray(faces[:count] if count else [], np.float32).reshape(-1, 10)
        entries.append((name, name_line, arr))
    return entries


def load_wider(root: str, splits: Sequence[str], bad: BadInput, min_size: float = 0.0,
               tolerance: float = 0.0) -> list[ImageRecord]:
    """Records of the WIDER Face ``splits`` under ``root`` (faces as xyxy 0-based pixels); faces
    crossing the border by at most ``tolerance`` pixels are clipped to the image."""
    records: list[ImageRecord] = []
    for split in splits:
        gt_file = gt_path(root, split)
        entries = parse_wider_gt(gt_file, bad)
        if not entries:
            if os.path.isfile(gt_file):
                bad("empty_split", f"{gt_file}: WIDER ground truth lists no image")
            continue
        image_dir = os.path.join(root, f"WIDER_{split}", "images")
        for name, line, faces in entries:
            path = os.path.join(image_dir, name)
            size = listed_image_size(path, bad, f"{gt_file}:{line}: image {path} does not exist",
                                     f"listed at {gt_file}:{line}")
            if size is None:
                continue
            width, height = size
            keep = []
            for k, (x, y, w, h) in enumerate(faces[:, :4]):
                where = f"{gt_file}:{line + 2 + k}"
                if faces[k, INVALID] >= 1 or w == 0 or h == 0:  # invalid flag, or no extent
                    keep.append(False)
                elif w < 0 or h < 0:
                    bad("box_inverted", f"{where}: face has negative width or height (w={w:g}, h={h:g})")
                    keep.append(False)
                elif (x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance
                      or min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)):
                    bad("box_outside_image", f"{where}: face ({x:g},{y:g},{w:g},{h:g}) is outside the "
                                             f"{width}x{height} image {path}")
                    keep.append(False)
                else:
                    keep.append(w >= min_size and h >= min_size)
            sel = faces[np.asarray(keep, bool)] if len(faces) else faces
            xywh = sel[:, :4]
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], np.float32))
            extra = {a: sel[:, 4 + k].astype(np.int64) for k, a in enumerate(ATTRS)}
            extra.update(event=name.split("/")[0], split=split)
            records.append(ImageRecord(
                image_id=os.path.splitext(name)[0], path=path, width=width, height=height, boxes=boxes,
                labels=np.zeros(len(sel), np.int64), difficult=np.zeros(len(sel), bool), extra=extra))
    return records
