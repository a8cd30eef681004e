"""Images of a config's data split as the network sees them (the eval transform: the letterbox of
detection, the centre crop of ``task: classify``): calibration (``train``), validation and deploy
checks (``val``).
"""
from __future__ import annotations

import numpy as np

from tinydet.errors import TinydetError


def split_images(cfg, count: int, size: "tuple[int, int]", source: str = "config",
                 split: str = "train", classes: "list[str] | None" = None,
                 classes_of: str = "the model") -> list[np.ndarray]:
    """``count`` images of the config's ``split`` (train for calibration), spread evenly over it,
    through the eval transform to ``size`` (H, W): ``[3, H, W]`` float32 in [0, 1].
    ``classes``: the data set must have these classes (in order), else a TinydetError naming
    ``classes_of`` (another data set's config would calibrate on the wrong images)."""
    from PIL import Image

    if count < 1:
        raise TinydetError(f"{source}: expected at least 1 image from data.{split}, got {count}")
    if getattr(cfg, "task", "detect") == "classify":
        from tinydet.config import to_dict
        from tinydet.data.imagefolder import load_class_records, resolve_classify_data_cfg
        from tinydet.data.transforms import classify_input

        records, names, _ = load_class_records(resolve_classify_data_cfg(to_dict(cfg["data"]), source), split, source)
        transform = classify_input
    else:
        from tinydet.data.records import load_records
        from tinydet.data.transforms import letterbox_image

        records, names, _ = load_records(cfg["data"], split, source)

        def transform(rgb, hw):
            return letterbox_image(rgb, hw)[0]
    if not records:
        what = "the calibration set" if split == "train" else f"the {split} image set"
        raise TinydetError(f"{source}: data.{split}: {what} is empty; expected at least one "
                           f"image (data.root = {cfg['data'].get('root')!r})")
    if classes is not None and list(names) != list(classes):
        raise TinydetError(f"{source}: data classes {list(names)} differ from the classes {list(classes)} of "
                           f"{classes_of}; expected the config of the data set the model was trained on")
    # evenly spread over the split so a sorted data set does not calibrate on one class only
    picks = np.unique(np.linspace(0, len(records) - 1, min(count, len(records))).round().astype(int))
    images = []
    for i in picks:
        try:
            with Image.open(records[int(i)].path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise TinydetError(f"{records[int(i)].path}: cannot read calibration image ({exc})") from None
        images.append(transform(rgb, size))
    return images
