"""Letterbox (keep aspect, pad with grey 114) and the albumentations training pipeline.

Letterboxing is written once here and used by training, evaluation, export, deploy and the demo:
``letterbox_image`` feeds a model one image, ``letterbox_boxes`` / ``unletterbox`` map boxes between
original-image pixels and network-input pixels with the same ``meta``
(``{orig_size: (h, w), scale, pad: (left, top)}``): ``net = orig * scale + pad``.
The random augmentation (scale/translate as a crop, flip, colour) runs in albumentations on the
original image, with bbox params so boxes follow; letterboxing comes after it.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import cv2
import numpy as np

from tinydet.errors import TinydetError, closest

PAD_VALUE = 114  # grey, as YOLO letterboxing; in [0,1] inputs this is 114/255

#: Training augmentation settings (``data.augment`` overrides any of them; ``enabled: false`` = none).
AUGMENT_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "scale": [0.6, 1.5],        # random zoom: > 1 crops into the image, < 1 shrinks it with grey border
    "translate": 0.15,          # random shift, fraction of the image size (moves the crop window)
    "affine_p": 0.8,            # probability of the scale/translate step
    "hflip": 0.5,               # probability of a horizontal flip
    "brightness": 0.3,          # colour jitter ranges (ColorJitter factors 1 +- value)
    "contrast": 0.3,
    "saturation": 0.3,
    "hue": 0.02,
    "color_p": 0.8,             # probability of the colour jitter
    "min_visibility": 0.3,      # boxes keeping less of their area after the crop are dropped
    "min_box_size": 2.0,        # boxes narrower/shorter than this in network pixels are dropped
    "pad_value": PAD_VALUE,     # letterbox / border grey level (train and eval)
}


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``320`` or ``(240, 320)`` -> ``(H, W)``."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def letterbox_meta(orig_hw: Sequence[int], size: int | Sequence[int]) -> dict:
    """The letterbox geometry of an ``orig_hw`` image into ``size``: scale, padding, resized size."""
    h, w = int(orig_hw[0]), int(orig_hw[1])
    H, W = as_hw(size)
    scale = min(H / h, W / w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return {"orig_size": (h, w), "scale": float(scale), "pad": ((W - nw) // 2, (H - nh) // 2),
            "resized": (nh, nw)}


def letterbox_uint8(img: np.ndarray, size: int | Sequence[int], pad_value: int = PAD_VALUE
                    ) -> tuple[np.ndarray, dict]:
    """Resize ``img`` (uint8 HWC) keeping its aspect and pad it to ``size``; returns (uint8 HWC, meta)."""
    meta = letterbox_meta(img.shape[:2], size)
    H, W = as_hw(size)
    nh, nw = meta["resized"]
    left, top = meta["pad"]
    out = np.full((H, W, img.shape[2]), pad_value, dtype=np.uint8)
    interp = cv2.INTER_AREA if meta["scale"] < 1 else cv2.INTER_LINEAR
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=interp).reshape(nh, nw, -1)
    del meta["resized"]
    return out, meta


def letterbox_image(img: np.ndarray, size: int | Sequence[int], pad_value: int = PAD_VALUE
                    ) -> tuple[np.ndarray, dict]:
    """One RGB uint8 HWC image -> (float32 CHW in [0, 1], meta): the network input of export/deploy/demo."""
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"letterbox_image expects a uint8 HxWxC image, got {img.dtype} {img.shape}")
    out, meta = letterbox_uint8(img, size, pad_value)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0), meta


def _offsets(meta: dict) -> np.ndarray:
    left, top = meta["pad"]
    return np.asarray([left, top, left, top], np.float64)


def letterbox_boxes(boxes: np.ndarray, meta: dict) -> np.ndarray:
    """Original-image xyxy pixels -> network-input pixels (float32 [N, 4])."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes * meta["scale"] + _offsets(meta)).astype(np.float32)


def unletterbox(boxes: Any, meta: dict) -> Any:
    """Network-input xyxy pixels -> original-image pixels, clipped to the image.

    Works on numpy arrays and torch tensors alike (the result has the input's type and device).
    """
    h, w = meta["orig_size"]
    offsets = _offsets(meta)
    limits = np.asarray([w, h, w, h], np.float64)
    if hasattr(boxes, "new_tensor"):  # torch: stay on the tensor's device and dtype
        out = (boxes - boxes.new_tensor(offsets)) / meta["scale"]
        return out.clamp(min=boxes.new_zeros(4), max=boxes.new_tensor(limits))
    arr = np.asarray(boxes)
    out = (arr.astype(np.float64) - offsets) / meta["scale"]
    return np.clip(out, 0.0, limits).astype(arr.dtype if arr.dtype.kind == "f" else np.float32)


#: Classification training augmentation (``data.augment`` of a ``task: classify`` config):
#: torchvision's ImageNet recipe (RandomResizedCrop, flip, colour jitter) in albumentations.
CLASSIFY_AUGMENT_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "scale": [0.08, 1.0],       # RandomResizedCrop: crop area as a fraction of the image
    "ratio": [0.75, 1.3333],    # RandomResizedCrop: crop aspect (w / h) range
    "hflip": 0.5,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.0,
    "color_p": 0.8,
}
#: Classification evaluation: resize so the network input is the central 87.5% of the image
#: (torchvision's resize-to-size/0.875 then centre crop), the same in float eval, int8 and firmware.
EVAL_CROP = 0.875
_PAIR_KEYS = ("scale", "ratio")


def resolve_augment(augment: dict | bool | None, source: str = "config",
                    defaults: dict[str, Any] = AUGMENT_DEFAULTS) -> dict:
    """Merge ``augment`` over ``defaults`` (detection's :data:`AUGMENT_DEFAULTS`, or
    :data:`CLASSIFY_AUGMENT_DEFAULTS`); ``False`` disables augmentation."""
    cfg = copy.deepcopy(defaults)
    if augment is False:
        cfg["enabled"] = False
        return cfg
    for key, value in (augment or {}).items():
        if key not in defaults:
            raise TinydetError(f"{source}: unknown key data.augment.{key}{closest(key, defaults)}")
        cfg[key] = value
    if not isinstance(cfg["enabled"], bool):
        raise TinydetError(f"{source}: data.augment.enabled must be true or false, got {cfg['enabled']!r}")
    for key in _PAIR_KEYS:
        pair = cfg.get(key)
        if key in cfg and not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_number(v) for v in pair)
                               and 0 < pair[0] <= pair[1]):
            raise TinydetError(f"{source}: data.augment.{key} must be [low, high] with 0 < low <= high, got {pair!r}")
    for key, value in cfg.items():
        if key == "enabled" or key in _PAIR_KEYS:
            continue
        upper = 1.0 if key.endswith("_p") or key in ("hflip", "min_visibility", "hue") else \
            (255.0 if key == "pad_value" else float("inf"))
        if not (_is_number(value) and 0 <= value <= upper):
            raise TinydetError(f"{source}: data.augment.{key} must be a number in [0, {upper:g}], got {value!r}")
    return cfg


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build_train_transform(augment: dict, seed: int | None = None):
    """The albumentations pipeline (on original images, pascal_voc pixel boxes) for training."""
    import albumentations as A

    steps = []
    if augment["enabled"]:
        steps = [
            A.Affine(scale=tuple(augment["scale"]), keep_ratio=True,
                     translate_percent={"x": (-augment["translate"], augment["translate"]),
                                        "y": (-augment["translate"], augment["translate"])},
                     border_mode=cv2.BORDER_CONSTANT, fill=augment["pad_value"], p=augment["affine_p"]),
            A.HorizontalFlip(p=augment["hflip"]),
            A.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"],
                          saturation=augment["saturation"], hue=augment["hue"], p=augment["color_p"]),
        ]
    return A.Compose(
        steps,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"],
                                 min_visibility=float(augment["min_visibility"]), clip=True,
                                 filter_invalid_bboxes=True),
        seed=seed,
    )


def prepare_sample(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, difficult: np.ndarray,
                   size: int | Sequence[int], transform=None, augment: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Augment (when ``transform`` is given) then letterbox one RGB uint8 image and its boxes.

    Returns (float32 CHW in [0, 1], boxes float32 [N, 4] in network pixels, labels, difficult, meta).
    ``meta`` maps network pixels back to the *original* image only when no transform ran.
    """
    augment = augment or AUGMENT_DEFAULTS
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    difficult = np.asarray(difficult, bool).reshape(-1)
    if transform is not None:
        h, w = img.shape[:2]
        # albumentations rejects boxes touching nothing; clip first so edge rounding never trips it
        boxes = np.clip(boxes, 0, np.asarray([w, h, w, h], np.float32))
        out = transform(image=img, bboxes=boxes, labels=labels, difficult=difficult)
        img = out["image"]
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], np.int64).reshape(-1)
        difficult = np.asarray(out["difficult"], bool).reshape(-1)
    lb, meta = letterbox_uint8(img, size, int(augment["pad_value"]))
    boxes = letterbox_boxes(boxes, meta)
    if transform is not None and len(boxes):
        H, W = as_hw(size)
        boxes = np.clip(boxes, 0, np.asarray([W, H, W, H], np.float32))
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= float(augment["min_box_size"])).all(axis=1)
        boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
    chw = np.ascontiguousarray(lb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return chw, boxes, labels, difficult, meta


def build_classify_transform(augment: dict, size: int | Sequence[int], seed: int | None = None):
    """The albumentations pipeline of classification training: random resized crop to ``size``,
    horizontal flip, colour jitter (``augment`` resolved with :data:`CLASSIFY_AUGMENT_DEFAULTS`)."""
    import albumentations as A

    H, W = as_hw(size)
    return A.Compose([
        A.RandomResizedCrop(size=(H, W), scale=tuple(augment["scale"]), ratio=tuple(augment["ratio"])),
        A.HorizontalFlip(p=augment["hflip"]),
        A.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"],
                      saturation=augment["saturation"], hue=augment["hue"], p=augment["color_p"]),
    ], seed=seed)


def center_crop_uint8(img: np.ndarray, size: int | Sequence[int], crop: float = EVAL_CROP) -> np.ndarray:
    """Classification eval geometry: scale ``img`` (uint8 HWC) so ``size`` covers ``crop`` of it in
    both directions, then cut the centre ``size`` window; returns uint8 H x W x C."""
    H, W = as_hw(size)
    h, w = img.shape[:2]
    scale = max(H / h, W / w) / crop
    nh, nw = max(H, int(round(h * scale))), max(W, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp).reshape(nh, nw, -1)
    top, left = (nh - H) // 2, (nw - W) // 2
    return np.ascontiguousarray(resized[top:top + H, left:left + W])


def classify_input(img: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """One RGB uint8 HWC image -> the classifier's input, float32 CHW in [0, 1] (centre crop)."""
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"classify_input expects a uint8 HxWxC image, got {img.dtype} {img.shape}")
    out = center_crop_uint8(img, size)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
