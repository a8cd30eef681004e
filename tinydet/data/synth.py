"""Synthetic data sets in the exact on-disk layouts of Pascal VOC and WIDER Face.

The real sets cannot be downloaded on the build machines, so tests, the demo and benchmarks use
these. Images are drawn with OpenCV: class-specific shapes (VOC) or face-like ellipses with eyes and
mouth (WIDER) over cluttered backgrounds (gradients, noise, lines, irregular distractor blobs), with
varied sizes (down to ~8 px), overlap, occlusion and truncation. Every image comes from its own
``default_rng([seed, index])`` stream, so a seed fixes the data set. Output folders are written
under a temporary name and renamed into place, so a failed run never leaves half a data set.
"""
from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from tinydet.errors import TinydetError, closest
from tinydet.io.atomic import replace_dir
from tinydet.ops.boxes import box_iou

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring", "person")
DEFAULT_CLASSES = ("circle", "square", "triangle", "star", "cross")

WIDER_EVENTS = ("0--Parade", "1--Handshaking", "2--Demonstration", "3--Riot", "4--Dancing",
                "5--Car_Accident", "6--Funeral", "7--Cheering")

# Difficulty of a WIDER face from its height relative to the image's long side (the WIDER paper's
# small/medium/large scale bins, 10/50/300 px of ~1024 px images, rescaled) plus blur and occlusion.
# Each level's conditions include the next one's, so hard ⊇ medium ⊇ easy.
WIDER_LEVELS = {
    "easy": {"min_height": 0.125, "max_blur": 1, "max_occlusion": 0},
    "medium": {"min_height": 0.06, "max_blur": 1, "max_occlusion": 1},
    "hard": {"min_height": 0.025, "max_blur": 2, "max_occlusion": 2},
}


# ---------------------------------------------------------------------------------------------
# drawing helpers (pure: they only write into the arrays they are given)
# ---------------------------------------------------------------------------------------------
def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(width, height) with the long side ``size`` and a VOC-like aspect."""
    short = int(round(size * rng.choice([0.75, 0.75, 0.667, 1.0])))
    return (size, short) if rng.random() < 0.7 else (short, size)


def _random_colour(rng: np.random.Generator, sat: tuple[int, int] = (90, 255),
                   val: tuple[int, int] = (70, 255)) -> tuple[int, int, int]:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient + noise + lines + irregular blobs: clutter that is never an object."""
    c0 = np.asarray(_random_colour(rng, (0, 120), (40, 230)), np.float32)
    c1 = np.asarray(_random_colour(rng, (0, 120), (40, 230)), np.float32)
    t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h, dtype=np.float32)
    grad = c0 + (c1 - c0) * t[:, None]
    img = np.broadcast_to(grad[None, :, :], (h, w, 3)) if len(t) == w else \
        np.broadcast_to(grad[:, None, :], (h, w, 3))
    img = np.ascontiguousarray(img)
    img += rng.normal(0.0, rng.uniform(3, 14), size=(h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):  # irregular low-saturation blobs (distractors)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 0.2 * max(w, h))
        n = int(rng.integers(7, 13))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.35, 1.0, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], _random_colour(rng, (0, 90)),
                     cv2.LINE_AA, shift=4)
    _lines(rng, img, int(rng.integers(1, 7)))
    return img


def _lines(rng: np.random.Generator, img: np.ndarray, n: int, mask: np.ndarray | None = None) -> None:
    h, w = img.shape[:2]
    for _ in range(n):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        thick = int(rng.integers(1, 4))
        cv2.line(img, p0, p1, _random_colour(rng, (0, 255), (0, 255)), thick, cv2.LINE_AA)
        if mask is not None:
            cv2.line(mask, p0, p1, 1, thick)


def _unit_polygon(shape: str) -> list[np.ndarray]:
    """Outline(s) of ``shape`` in [-1, 1]^2; a ring is (outer, inner)."""
    if shape in ("circle", "ring"):
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        outer = np.stack([np.cos(a), np.sin(a)], 1)
        return [outer, 0.55 * outer] if shape == "ring" else [outer]
    if shape == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)]
    if shape in ("triangle", "hexagon"):
        k = 3 if shape == "triangle" else 6
        a = -np.pi / 2 + 2 * np.pi * np.arange(k) / k
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if shape == "star":
        a = -np.pi / 2 + np.pi * np.arange(10) / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if shape == "person":  # upright silhouette: head, shoulders, arms, legs (y grows downwards)
        a = np.linspace(np.pi * 0.62, np.pi * 2.38, 20)
        head = np.stack([0.21 * np.cos(a), -0.76 + 0.21 * np.sin(a)], 1)
        body = np.array([[0.09, -0.53], [0.42, -0.45], [0.47, 0.12], [0.33, 0.12], [0.3, -0.22], [0.26, 0.12],
                         [0.29, 1.0], [0.08, 1.0], [0.0, 0.32], [-0.08, 1.0], [-0.29, 1.0], [-0.26, 0.12],
                         [-0.3, -0.22], [-0.33, 0.12], [-0.47, 0.12], [-0.42, -0.45], [-0.09, -0.53]], float)
        return [np.concatenate([head, body], 0)]
    if shape == "cross":
        t = 0.33
        return [np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                          [-t, t], [-1, t], [-1, -t], [-t, -t]], float)]
    raise ValueError(shape)


def _place(shape: str, cx: float, cy: float, size: float, aspect: float, angle: float) -> list[np.ndarray]:
    """The outline(s) of ``shape`` scaled to a ``size``-px box, stretched, rotated and moved."""
    sx, sy = size / 2 * math.sqrt(aspect), size / 2 / math.sqrt(aspect)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [(poly * [sx, sy]) @ rot.T + [cx, cy] for poly in _unit_polygon(shape)]


def _fill(mask: np.ndarray, polys: list[np.ndarray]) -> None:
    cv2.fillPoly(mask, [np.round(polys[0] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    if len(polys) > 1:  # ring: cut the hole
        cv2.fillPoly(mask, [np.round(polys[1] * 16).astype(np.int32)], 0, cv2.LINE_8, shift=4)


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` with a random colour, sometimes striped or checked with a second colour."""
    colour = np.asarray(_random_colour(rng), np.uint8)
    sel = mask.astype(bool)
    style = rng.random()
    if style < 0.6:
        img[sel] = colour
        return
    ys, xs = np.nonzero(sel)
    period = int(rng.integers(3, 9))
    if style < 0.85:
        pattern = ((xs * rng.choice([1, 0, 1]) + ys) // period) % 2 == 0
    else:
        pattern = ((xs // period) + (ys // period)) % 2 == 0
    second = np.asarray(_random_colour(rng), np.uint8)
    img[ys, xs] = np.where(pattern[:, None], colour, second)


#: skin tones (RGB) of the synthetic persons' heads: the local cue a small network learns first
SKIN_TONES = ((255, 224, 189), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 51, 23))


def _paint_person(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Clothes in a random colour (or pattern), the head (top 22% of the silhouette) in a skin tone."""
    _paint(rng, img, mask)
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return
    head = mask.astype(bool).copy()
    head[rows[0] + max(1, int(round(0.22 * (rows[-1] - rows[0] + 1)))):] = False
    tone = np.asarray(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float32)
    img[head] = np.clip(tone + rng.normal(0, 8, 3), 0, 255).astype(np.uint8)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive pixel bbox (x0, y0, x1, y1) of a boolean mask, None when empty."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if not len(cols):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    return float(box_iou([a], [b])[0, 0])


# ---------------------------------------------------------------------------------------------
# VOC
# ---------------------------------------------------------------------------------------------
@dataclass
class VocObject:
    name: str
    box: tuple[int, int, int, int]  # 1-based inclusive xmin, ymin, xmax, ymax (as in the XML)
    truncated: bool
    difficult: bool
    pose: str = "Unspecified"


def render_voc_image(seed: int, index: int, size: int, classes: Sequence[str]
                     ) -> tuple[np.ndarray, list[VocObject]]:
    """One synthetic VOC image (RGB uint8) and its objects; a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    w, h = _image_size(rng, size)
    img = _background(rng, w, h)
    owner = np.full((h, w), -1, np.int16)  # which object is visible at each pixel
    placed: list[tuple[str, float, tuple, float, bool]] = []
    n_obj = int(rng.integers(1, 9))
    for _ in range(n_obj):
        name = str(rng.choice(list(classes)))
        for _attempt in range(8):
            # log-uniform size from ~8 px to half the long side: many small objects, a few large
            s = float(np.exp(rng.uniform(np.log(8.0), np.log(0.55 * size))))
            aspect = float(rng.uniform(0.7, 1.45))
            margin = -0.3 * s if rng.random() < 0.12 else 0.55 * s  # some objects cross the border
            if w - 2 * margin <= 0 or h - 2 * margin <= 0:
                continue
            cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
            ext = (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
            if all(_iou(ext, p[2]) < 0.5 for p in placed):
                break
        else:
            continue
        # a square rotated 45° would be a diamond; persons stand roughly upright
        max_angle = 0.35 if name in ("square", "person") else np.pi
        polys = _place(name, cx, cy, s, aspect, float(rng.uniform(-max_angle, max_angle)))
        mask = np.zeros((h, w), np.uint8)
        _fill(mask, polys)
        area = abs(cv2.contourArea(polys[0].astype(np.float32)))
        if len(polys) > 1:
            area -= abs(cv2.contourArea(polys[1].astype(np.float32)))
        xs, ys = polys[0][:, 0], polys[0][:, 1]
        outside = xs.min() < 0 or ys.min() < 0 or xs.max() > w - 1 or ys.max() > h - 1
        (_paint_person if name == "person" else _paint)(rng, img, mask)
        owner[mask.astype(bool)] = len(placed)
        placed.append((name, area, ext, s, bool(outside)))
    occluders = np.zeros((h, w), np.uint8)
    if rng.random() < 0.3:  # lines drawn over objects: partial occlusion by clutter
        _lines(rng, img, int(rng.integers(1, 3)), occluders)
        owner[occluders.astype(bool)] = -1
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0.0, rng.uniform(0, 6), size=img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    objects = []
    for i, (name, area, _ext, _s, outside) in enumerate(placed):
        vis = owner == i
        box = _bbox(vis)
        n_vis = int(vis.sum())
        if box is None or n_vis < max(12.0, 0.15 * area):  # hidden: not annotated, as in VOC
            continue
        x0, y0, x1, y1 = box
        frac = n_vis / max(area, 1.0)
        tiny = max(x1 - x0 + 1, y1 - y0 + 1) < 10
        objects.append(VocObject(name, (x0 + 1, y0 + 1, x1 + 1, y1 + 1), truncated=outside,
                                 difficult=bool(tiny or frac < 0.4)))
    return img, objects


def voc_xml(year: int | str, filename: str, width: int, height: int, objects: Sequence[VocObject]) -> str:
    """A devkit-style annotation XML."""
    parts = [
        "<annotation>",
        f"\t<folder>VOC{year}</folder>",
        f"\t<filename>{filename}</filename>",
        "\t<source>",
        f"\t\t<database>The VOC{year} Database</database>",
        f"\t\t<annotation>PASCAL VOC{year}</annotation>",
        "\t\t<image>tinydet synthetic</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        xmin, ymin, xmax, ymax = o.box
        parts += [
            "\t<object>",
            f"\t\t<name>{o.name}</name>",
            f"\t\t<pose>{o.pose}</pose>",
            f"\t\t<truncated>{int(o.truncated)}</truncated>",
            f"\t\t<difficult>{int(o.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _check_classes(classes: Sequence[str] | None) -> list[str]:
    classes = list(classes or DEFAULT_CLASSES)
    for c in classes:
        if c not in SHAPES:
            raise TinydetError(f"synth: class '{c}' is not a synthetic shape; expected some of "
                               f"{list(SHAPES)}{closest(c, SHAPES)}")
    if len(set(classes)) != len(classes):
        raise TinydetError(f"synth: classes {classes} contain duplicates")
    return classes


def _write_jpeg(path: str, rgb: np.ndarray, quality: int = 90) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise TinydetError(f"{path}: JPEG encoding failed")
    buf.tofile(path)


def _split_ids(ids: list[str], rng: np.random.Generator, fractions: dict[str, float]) -> dict[str, list[str]]:
    """Shuffle ``ids`` and cut them into the named fractions (the last split gets the rest)."""
    order = [ids[i] for i in rng.permutation(len(ids))]
    out, start = {}, 0
    names = list(fractions)
    for k, name in enumerate(names):
        n = len(order) - start if k == len(names) - 1 else int(round(fractions[name] * len(order)))
        out[name] = sorted(order[start:start + n])
        start += n
    return out


class _Staging:
    """Write top-level folders under a temporary directory in ``out``, then rename them into place."""

    def __init__(self, out: str, names: Sequence[str], overwrite: bool) -> None:
        self.out, self.names, self.overwrite = out, list(names), overwrite
        for name in self.names:
            target = os.path.join(out, name)
            if os.path.exists(target) and not overwrite:
                raise TinydetError(f"{target}: already exists (pass --overwrite to replace it)")
        os.makedirs(out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".synth-", dir=out)

    def path(self, *parts: str) -> str:
        return os.path.join(self.tmp, *parts)

    def commit(self) -> None:
        for name in self.names:
            replace_dir(self.path(name), os.path.join(self.out, name))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def synth_voc(out: str, images: int, seed: int = 0, size: int = 320, classes: Sequence[str] | None = None,
              year: int = 2007, overwrite: bool = False) -> dict:
    """Write ``out/VOC<year>/`` (Annotations, JPEGImages, ImageSets/Main) with ``images`` images.

    Splits: VOC2007 gets train/val/test (60/20/20 %), other years train/val (75/25 %) like the
    public 2012 release; trainval = train + val. Per-class ``<cls>_<split>.txt`` files mark each
    image 1 (has a non-difficult instance), 0 (only difficult ones) or -1 (none), as the devkit.
    Returns a summary (counts per class, difficult, truncated, path).
    """
    classes = _check_classes(classes)
    if images < 1:
        raise TinydetError(f"synth: --images must be >= 1, got {images}")
    if size < 32:
        raise TinydetError(f"synth: --size must be >= 32, got {size}")
    folder = f"VOC{year}"
    stage = _Staging(out, [folder], overwrite)
    try:
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            os.makedirs(stage.path(folder, sub))
        ids = [f"{i + 1:06d}" if str(year) == "2007" else f"{year}_{i + 1:06d}" for i in range(images)]
        per_image: dict[str, list[VocObject]] = {}
        counts = {c: 0 for c in classes}
        n_difficult = n_truncated = 0
        for index, image_id in enumerate(ids):
            img, objects = render_voc_image(seed, index, size, classes)
            h, w = img.shape[:2]
            _write_jpeg(stage.path(folder, "JPEGImages", f"{image_id}.jpg"), img)
            with open(stage.path(folder, "Annotations", f"{image_id}.xml"), "w", encoding="utf-8") as fh:
                fh.write(voc_xml(year, f"{image_id}.jpg", w, h, objects))
            per_image[image_id] = objects
            for o in objects:
                counts[o.name] += 1
                n_difficult += o.difficult
                n_truncated += o.truncated
        fractions = {"train": 0.6, "val": 0.2, "test": 0.2} if str(year) == "2007" else {"train": 0.75, "val": 0.25}
        splits = _split_ids(ids, np.random.default_rng([seed, 1 << 30]), fractions)
        splits["trainval"] = sorted(splits["train"] + splits["val"])
        main = stage.path(folder, "ImageSets", "Main")
        for split, members in splits.items():
            with open(os.path.join(main, f"{split}.txt"), "w", encoding="utf-8") as fh:
                fh.writelines(f"{i}\n" for i in members)
            for cls in classes:
                with open(os.path.join(main, f"{cls}_{split}.txt"), "w", encoding="utf-8") as fh:
                    for i in members:
                        objs = [o for o in per_image[i] if o.name == cls]
                        flag = 1 if any(not o.difficult for o in objs) else (0 if objs else -1)
                        fh.write(f"{i} {flag:2d}\n")
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    return {"format": "voc", "path": os.path.join(out, folder), "images": images, "classes": classes,
            "objects": counts, "difficult": int(n_difficult), "truncated": int(n_truncated),
            "splits": {k: len(v) for k, v in splits.items()}}


# ---------------------------------------------------------------------------------------------
# WIDER Face
# ---------------------------------------------------------------------------------------------
SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125), (92, 56, 30))


def _draw_face(rng: np.random.Generator, img: np.ndarray, x: int, y: int, fw: int, fh: int,
               attrs: dict[str, int]) -> None:
    """A face-like head in the box (x, y, fw, fh): hair, skin ellipse, eyes, mouth, then the
    attribute effects (pose shifts features, illumination darkens/brightens, occlusion, blur)."""
    h_img, w_img = img.shape[:2]
    pad = max(2, fw // 2)
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(w_img, x + fw + pad), min(h_img, y + fh + pad)
    roi = img[y0:y1, x0:x1].copy()
    cx, cy = x - x0 + fw / 2, y - y0 + fh / 2
    s = 16  # sub-pixel drawing (shift=4) so tiny faces keep their layout

    def ell(c, axes, colour, start=0, end=360):
        cv2.ellipse(roi, (int(c[0] * s), int(c[1] * s)), (max(1, int(axes[0] * s)), max(1, int(axes[1] * s))),
                    0, start, end, colour, -1, cv2.LINE_AA, 4)

    skin = np.asarray(SKIN[int(rng.integers(len(SKIN)))], float) * rng.uniform(0.85, 1.15)
    if attrs["illumination"]:
        skin *= rng.choice([0.35, 1.6])
    skin = tuple(int(v) for v in np.clip(skin, 0, 255))
    hair = _random_colour(rng, (0, 120), (10, 90))
    shift = (rng.choice([-1, 1]) * 0.17 * fw) if attrs["pose"] else 0.0
    ell((cx, cy - 0.1 * fh), (0.55 * fw, 0.5 * fh), hair, 180, 360)       # hair on top
    ell((cx, cy + 0.04 * fh), (0.47 * fw, 0.48 * fh), skin)              # face
    eye = (20, 20, 20)
    for side in (-1, 1):
        ell((cx + shift + side * 0.2 * fw, cy - 0.06 * fh), (0.08 * fw, 0.05 * fh), eye)
    if attrs["expression"]:
        ell((cx + shift, cy + 0.27 * fh), (0.13 * fw, 0.09 * fh), (90, 20, 30))  # open mouth
    else:
        ell((cx + shift, cy + 0.25 * fh), (0.16 * fw, 0.04 * fh), (150, 50, 60))
    if attrs["occlusion"]:
        frac = rng.uniform(0.12, 0.3) if attrs["occlusion"] == 1 else rng.uniform(0.4, 0.65)
        colour = _random_colour(rng)
        ox, oy = int(x - x0), int(y - y0)
        if rng.random() < 0.5:  # from below (a hand, a scarf) or from a side (another head)
            cv2.rectangle(roi, (ox - 1, oy + int(fh * (1 - frac))), (ox + fw, oy + fh + 1), colour, -1)
        else:
            cv2.rectangle(roi, (ox + int(fw * (1 - frac)), oy - 1), (ox + fw + 1, oy + fh), colour, -1)
    if attrs["blur"]:
        sigma = max(0.6, (0.05 if attrs["blur"] == 1 else 0.14) * fw)
        roi = cv2.GaussianBlur(roi, (0, 0), sigma)
    img[y0:y1, x0:x1] = roi


def render_wider_image(seed: int, index: int, size: int, crowd: float = 1.0, empty: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic WIDER image (RGB uint8) and its faces [K, 10] as in the gt file
    (x y w h blur expression illumination invalid occlusion pose); ``empty``: no face at all."""
    rng = np.random.default_rng([seed, index])
    w, h = _image_size(rng, size)
    img = _background(rng, w, h)
    r = rng.random()
    # mostly a few faces, sometimes a crowd of many small ones
    n = 0 if empty else (int(rng.integers(1, 7)) if r < 0.7 else int(rng.integers(8, 8 + 24 * crowd)))
    small_bias = 2.2 if n > 7 else 1.3
    faces, boxes = [], []
    for _ in range(n):
        for _attempt in range(10):
            # many tiny faces as in WIDER: sizes skewed towards ~5 px, up to ~45 % of the long side
            u = rng.random() ** small_bias
            fw = int(round(math.exp(math.log(5) + u * (math.log(0.45 * size) - math.log(5)))))
            fh = int(round(fw * rng.uniform(1.1, 1.35)))
            if fw >= w or fh >= h:
                continue
            x, y = int(rng.integers(0, w - fw + 1)), int(rng.integers(0, h - fh + 1))
            box = (x, y, x + fw, y + fh)
            if all(_iou(box, b) < 0.15 for b in boxes):
                break
        else:
            continue
        attrs = {
            "blur": int(rng.choice(3, p=[0.55, 0.3, 0.15])),
            "expression": int(rng.random() < 0.15),
            "illumination": int(rng.random() < 0.1),
            "occlusion": int(rng.choice(3, p=[0.7, 0.2, 0.1])),
            "pose": int(rng.random() < 0.15),
        }
        attrs["invalid"] = int(fw < 4 or (attrs["blur"] == 2 and attrs["occlusion"] == 2))
        boxes.append(box)
        faces.append((x, y, fw, fh, attrs))
    # draw far (small) faces first so nearer, larger ones overlap them
    for x, y, fw, fh, attrs in sorted(faces, key=lambda f: f[2]):
        _draw_face(rng, img, x, y, fw, fh, attrs)
    noise = rng.normal(0.0, rng.uniform(0, 5), size=img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    rows = [[x, y, fw, fh, a["blur"], a["expression"], a["illumination"], a["invalid"], a["occlusion"], a["pose"]]
            for x, y, fw, fh, a in faces]
    return img, np.asarray(rows, np.int64).reshape(-1, 10)


def wider_levels(faces: np.ndarray, long_side: int) -> dict[str, np.ndarray]:
    """1-based indices of the faces (rows of the gt file) counted by each difficulty level."""
    out = {}
    for level, rule in WIDER_LEVELS.items():
        keep = ((faces[:, 7] == 0) & (faces[:, 3] >= rule["min_height"] * long_side)
                & (faces[:, 4] <= rule["max_blur"]) & (faces[:, 8] <= rule["max_occlusion"]))
        out[level] = np.flatnonzero(keep) + 1
    return out


def _gt_text(entries: Sequence[tuple[str, np.ndarray]]) -> str:
    lines = []
    for name, faces in entries:
        lines.append(name)
        lines.append(str(len(faces)))
        rows = faces if len(faces) else np.zeros((1, 10), np.int64)  # official: one zero line
        lines += [" ".join(str(int(v)) for v in row) + " " for row in rows]
    return "\n".join(lines) + "\n"


#: The integer class of the numbers in the synthetic .mat files (boxes, labels, gt_list indices).
WIDER_MAT_INT = np.int32


def _cell(items: Sequence) -> np.ndarray:
    """A MATLAB column cell array (n x 1) for scipy.io.savemat."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


def _savemat(path: str, variables: dict) -> None:
    """``scipy.io.savemat`` with a fixed 116-byte header text (scipy writes the creation time
    there, which would make the same seed give different files)."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables)
    data = buf.getvalue()
    header = b"MATLAB 5.0 MAT-file, written by tinydet synth".ljust(116)
    with open(path, "wb") as fh:
        fh.write(header + data[116:])


def write_wider_mats(path_dir: str, entries: Sequence[tuple[str, np.ndarray, int]]) -> None:
    """The official evaluation ground truth: wider_face_val.mat and wider_{easy,medium,hard}_val.mat.

    ``entries``: (relative image path '<event>/<file>.jpg', faces [K, 10], long side) of the val set.
    Numbers are stored with an integer class (:data:`WIDER_MAT_INT`) like the official files: the
    Python port of the evaluation indexes with ``gt_list`` (``ignore[keep_index - 1]``), which numpy
    refuses for floating-point arrays.
    """
    events = sorted({e[0].split("/")[0] for e in entries}, key=lambda n: int(n.split("--")[0]))
    by_event = {ev: [e for e in entries if e[0].split("/")[0] == ev] for ev in events}
    event_list = _cell(events)
    file_list = _cell([_cell([os.path.splitext(os.path.basename(n))[0] for n, _, _ in by_event[ev]])
                       for ev in events])
    face_bbx_list = _cell([_cell([f[:, :4].astype(WIDER_MAT_INT).reshape(-1, 4) for _, f, _ in by_event[ev]])
                           for ev in events])
    full = {"event_list": event_list, "file_list": file_list, "face_bbx_list": face_bbx_list}
    for k, attr in enumerate(("blur", "expression", "illumination", "invalid", "occlusion", "pose")):
        full[f"{attr}_label_list"] = _cell([_cell([f[:, 4 + k].astype(WIDER_MAT_INT).reshape(-1, 1)
                                                   for _, f, _ in by_event[ev]]) for ev in events])
    _savemat(os.path.join(path_dir, "wider_face_val.mat"), full)
    for level in WIDER_LEVELS:
        gt_list = _cell([_cell([wider_levels(f, L)[level].astype(WIDER_MAT_INT).reshape(-1, 1)
                                for _, f, L in by_event[ev]]) for ev in events])
        _savemat(os.path.join(path_dir, f"wider_{level}_val.mat"),
                {"event_list": event_list, "file_list": file_list, "face_bbx_list": face_bbx_list,
                 "gt_list": gt_list})


def synth_wider(out: str, images: int, seed: int = 0, size: int = 320, val_fraction: float = 0.25,
                overwrite: bool = False) -> dict:
    """Write a WIDER Face layout with ``images`` images under ``out``: WIDER_train/, WIDER_val/,
    wider_face_split/ (official gt text files) and eval_tools/ground_truth/ (official .mat files)."""
    if images < 2:
        raise TinydetError(f"synth: --images must be >= 2 for wider (train and val), got {images}")
    if size < 32:
        raise TinydetError(f"synth: --size must be >= 32, got {size}")
    try:
        import scipy.io  # noqa: F401  (the evaluation ground truth is written with it)
    except ImportError as exc:
        raise TinydetError(f"synth: writing WIDER .mat ground truth needs scipy ({exc})") from exc
    names = ["WIDER_train", "WIDER_val", "wider_face_split", "eval_tools"]
    stage = _Staging(out, names, overwrite)
    try:
        os.makedirs(stage.path("wider_face_split"))
        os.makedirs(stage.path("eval_tools", "ground_truth"))
        rng = np.random.default_rng([seed, 1 << 30])
        n_val = min(images - 1, max(1, int(round(val_fraction * images))))
        is_val = np.zeros(images, bool)
        is_val[rng.permutation(images)[:n_val]] = True
        entries: dict[str, list] = {"train": [], "val": []}
        counts = {"train": 0, "val": 0}
        for index in range(images):
            k = index % len(WIDER_EVENTS)
            event = WIDER_EVENTS[k]
            crowd = 0.4 + 0.15 * k  # each event has its typical crowd density
            # every 20th image has no face, so both splits exercise the official 0-count entry
            img, faces = render_wider_image(seed, index, size, crowd, empty=index % 20 == 3)
            short = event.split("--")[1]
            name = f"{event}/{k}_{short}_{short.lower()}_{k}_{index}.jpg"
            split = "val" if is_val[index] else "train"
            path = stage.path(f"WIDER_{split}", "images", event)
            os.makedirs(path, exist_ok=True)
            _write_jpeg(os.path.join(path, os.path.basename(name)), img)
            entries[split].append((name, faces, max(img.shape[:2])))
            counts[split] += len(faces)
        for split in ("train", "val"):
            # the official files list images event by event
            entries[split].sort(key=lambda e: (int(e[0].split("--")[0]), int(e[0][:-4].rsplit("_", 1)[1])))
            with open(stage.path("wider_face_split", f"wider_face_{split}_bbx_gt.txt"), "w", encoding="utf-8") as fh:
                fh.write(_gt_text([(n, f) for n, f, _ in entries[split]]))
        write_wider_mats(stage.path("eval_tools", "ground_truth"), entries["val"])
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    all_faces = np.concatenate([f for s in entries.values() for _, f, _ in s] or [np.zeros((0, 10))])
    return {"format": "wider", "path": out, "images": images,
            "splits": {s: len(v) for s, v in entries.items()}, "faces": counts,
            "tiny_faces": int((all_faces[:, 2] < 16).sum()), "invalid": int(all_faces[:, 7].sum())}


# ---------------------------------------------------------------------------------------------
# COCO / YOLO: the VOC shapes set, converted
# ---------------------------------------------------------------------------------------------
def synth_coco_yolo(fmt: str, out: str, images: int, seed: int = 0, size: int = 320,
                    classes: Sequence[str] | None = None, overwrite: bool = False) -> dict:
    """The synthetic shapes set of :func:`synth_voc` in the COCO or YOLO layout at ``out``
    (train / val / test splits, written through :func:`tinydet.data.convert.convert`)."""
    from tinydet.data.convert import convert

    if fmt not in ("coco", "yolo"):
        raise TinydetError(f"synth: format must be coco or yolo here, got '{fmt}'")
    if os.path.exists(out) and not overwrite:
        raise TinydetError(f"{out}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synth-", dir=parent)
    try:
        voc = synth_voc(tmp, images, seed, size, classes)
        summary = convert("voc", voc["path"], fmt, out, classes=voc["classes"], overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"format": fmt, "path": out, "images": images, "classes": voc["classes"], "objects": voc["objects"],
            "difficult": voc["difficult"], "splits": summary["splits"]}


# ---------------------------------------------------------------------------------------------
# ImageFolder: one labelled shape per image (classification)
# ---------------------------------------------------------------------------------------------
def render_class_image(seed: int, index: int, size: int, shape: str, others: Sequence[str] = (),
                       hue: int | None = None) -> np.ndarray:
    """One classification image (RGB uint8, ``size`` x ``size``): a large ``shape`` over clutter,
    sometimes with a small distractor of another class; a pure function of its arguments.
    ``hue`` (OpenCV 0..179) gives the shape a colour family (+-12) instead of a random colour."""
    rng = np.random.default_rng([seed, index, 7])
    img = _background(rng, size, size)
    s = float(rng.uniform(0.35, 0.8) * size)
    cx, cy = (float(rng.uniform(0.5 * s, size - 0.5 * s)) for _ in range(2))
    max_angle = 0.35 if shape in ("square", "person") else np.pi
    mask = np.zeros((size, size), np.uint8)
    _fill(mask, _place(shape, cx, cy, s, float(rng.uniform(0.75, 1.35)), float(rng.uniform(-max_angle, max_angle))))
    if hue is None:
        _paint(rng, img, mask)
    else:
        hsv = np.uint8([[[(hue + int(rng.integers(-12, 13))) % 180, rng.integers(150, 256), rng.integers(120, 256)]]])
        img[mask.astype(bool)] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    if others and rng.random() < 0.5:
        other = str(rng.choice(list(others)))
        d = float(rng.uniform(0.08, 0.16) * size)
        dm = np.zeros((size, size), np.uint8)
        _fill(dm, _place(other, float(rng.uniform(d, size - d)), float(rng.uniform(d, size - d)), d, 1.0,
                         float(rng.uniform(-0.3, 0.3))))
        _paint(rng, img, dm)
    noise = rng.normal(0.0, rng.uniform(0, 6), size=img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def synth_imagefolder(out: str, images: int, seed: int = 0, size: int = 96, classes: Sequence[str] | None = None,
                      val_fraction: float = 0.25, overwrite: bool = False) -> dict:
    """Write ``out/train/<class>/*.jpg`` and ``out/val/<class>/*.jpg`` (torchvision's ImageFolder
    layout): ``images`` images in all, classes in turn, split per class. Returns a summary.

    Each class has its shape and a colour family (hues spread over the circle): a tiny network
    trained from scratch for a few epochs on a few hundred images learns colour long before
    shape under clutter, and tests and demos need a set that a short run learns."""
    classes = _check_classes(classes)
    if images < 2 * len(classes):
        raise TinydetError(f"synth: --images {images} is too few for {len(classes)} classes (need >= {2 * len(classes)})")
    stage = _Staging(out, ["train", "val"], overwrite)
    counts = {"train": {c: 0 for c in classes}, "val": {c: 0 for c in classes}}
    try:
        for index in range(images):
            label = index % len(classes)
            name = classes[label]
            k = index // len(classes)
            per_class = (images - label + len(classes) - 1) // len(classes)
            split = "val" if k >= per_class - max(1, int(round(val_fraction * per_class))) else "train"
            folder = stage.path(split, name)
            os.makedirs(folder, exist_ok=True)
            others = [c for c in classes if c != name]
            _write_jpeg(os.path.join(folder, f"{name}_{index:06d}.jpg"),
                        render_class_image(seed, index, size, name, others, hue=label * 180 // len(classes)))
            counts[split][name] += 1
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    return {"format": "imagefolder", "path": out, "images": images, "classes": classes, "splits": counts}
