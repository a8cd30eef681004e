"""Shared helpers of the training tests: a tiny synthetic VOC set and a tiny config."""
from __future__ import annotations

from pathlib import Path

import yaml

TINY_ANCHORS = [[[8, 8], [14, 14], [22, 22]], [[30, 30], [44, 44], [60, 60]]]


def make_voc(root: Path, images: int = 20, seed: int = 0) -> Path:
    """A 20-image synthetic VOC2007 set (train 12 / val 4 / test 4) at 96 px."""
    from tinydet.data.synth import synth_voc

    if not (root / "VOC2007").is_dir():
        synth_voc(str(root), images=images, seed=seed, size=96)
    return root


def tiny_config(tmp: Path, data_root: Path, out_dir: Path, **train) -> Path:
    """A config for a ~1 s/epoch CPU run: 64 px, 16-channel head, batch 4 (3 steps per epoch)."""
    cfg = {
        "name": "tiny",
        "model": {"arch": "mbv2-w0.35", "resolution": 64, "head": {"channels": 16, "num_anchors": 3, "kernel": 3},
                  "anchors": TINY_ANCHORS},
        "data": {"format": "voc", "root": str(data_root), "train": [[2007, "train"]], "val": [[2007, "val"]],
                 "test": [[2007, "test"]], "classes": ["circle", "square", "triangle", "star", "cross"]},
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                  "out_dir": str(out_dir), "warmup_epochs": 0.5, "progress_bar": False, "optimizer": "adamw",
                  "lr": 0.002, "ema": {"enabled": True, "decay": 0.99, "tau": 5.0}, **train},
        "eval": {"conf_thresh": 0.01},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
