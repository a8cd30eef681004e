"""The LightningDataModules: records -> letterboxed (and, for training, augmented) batches.

Detection (:class:`DetectionDataModule`) and classification (:class:`ClassificationDataModule`,
``task: classify``: ``images`` and ``labels`` int64 [B]; training images are random resized crops,
evaluation images the centre crop of :func:`tinydet.data.transforms.classify_input`).

Batches are dicts: ``images`` float32 [B, 3, H, W] RGB in [0, 1]; ``targets`` a list of
``{boxes float32 [N, 4] xyxy network pixels, labels int64 [N], difficult bool [N]}``; ``meta`` a list
of ``{image_id, orig_size (h, w), scale, pad (left, top)}`` for :func:`transforms.unletterbox`.
Dataloaders use plain ``shuffle``/no sampler so Lightning can insert its DistributedSampler.
"""
from __future__ import annotations

import os
import random
from typing import Sequence

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tinydet.data.records import ImageRecord, check_image_complete, load_records, resolve_data_cfg
from tinydet.data.transforms import as_hw, build_train_transform, prepare_sample, resolve_augment
from tinydet.errors import TinydetError


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC; an undecodable file is a one-line TinydetError."""
    # annotations refer to the stored pixel grid: do not apply EXIF rotation
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imread(path, flags) if os.path.isfile(path) else None
    if img is None:
        raise TinydetError(f"{path}: unreadable image (missing or cannot be decoded)")
    try:  # OpenCV decodes a truncated JPEG into a half-grey image with only a warning
        check_image_complete(path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise TinydetError(f"{path}: unreadable image ({exc})") from None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _RecordDataset(Dataset):
    """A Dataset over ``self.records`` with an optional albumentations ``self.transform``."""

    records: list
    transform: object | None

    def reseed(self, seed: int) -> None:
        """Give this copy of the dataset (one per worker) its own augmentation random stream."""
        if self.transform is not None:
            self.transform.set_random_seed(seed % 2**32)

    def __len__(self) -> int:
        return len(self.records)


class DetectionDataset(_RecordDataset):
    """Images of ``records`` letterboxed to ``input_size``; with ``train`` also augmented and with
    difficult boxes dropped unless ``keep_difficult``."""

    def __init__(self, records: Sequence[ImageRecord], input_size: int | Sequence[int], train: bool,
                 augment: dict, keep_difficult: bool = True, seed: int = 0) -> None:
        self.records = list(records)
        self.input_size = as_hw(input_size)
        self.train = train
        self.augment = augment
        self.keep_difficult = keep_difficult
        self.transform = build_train_transform(augment, seed) if train and augment["enabled"] else None

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        img = read_rgb(rec.path)
        if img.shape[:2] != (rec.height, rec.width):
            raise TinydetError(f"{rec.path}: decoded size {img.shape[1]}x{img.shape[0]} differs from the "
                               f"annotated {rec.width}x{rec.height}")
        boxes, labels, difficult = rec.boxes, rec.labels, rec.difficult
        if self.train and not self.keep_difficult:
            keep = ~difficult
            boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
        chw, boxes, labels, difficult, meta = prepare_sample(
            img, boxes, labels, difficult, self.input_size, self.transform, self.augment)
        meta = {"image_id": rec.image_id, **meta}
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "difficult": torch.from_numpy(difficult)}
        return {"image": torch.from_numpy(chw), "target": target, "meta": meta}


def collate_detection(samples: list[dict]) -> dict:
    """Stack images; keep per-image targets and meta as lists (box counts differ)."""
    return {"images": torch.stack([s["image"] for s in samples]),
            "targets": [s["target"] for s in samples],
            "meta": [s["meta"] for s in samples]}


def _worker_init(worker_id: int) -> None:
    """Each worker gets its own augmentation stream, derived from torch's per-worker seed (which
    differs per worker and per epoch and follows the global seed, so runs stay reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


class ClassificationDataset(_RecordDataset):
    """Images of ``records`` (:class:`tinydet.data.imagefolder.ClassRecord`) at ``input_size``: with
    ``train`` and augmentation on, random resized crops, flips and colour jitter, else the centre crop."""

    def __init__(self, records: Sequence, input_size: int | Sequence[int], train: bool, augment: dict,
                 seed: int = 0) -> None:
        from tinydet.data.transforms import build_classify_transform

        self.records = list(records)
        self.input_size = as_hw(input_size)
        self.transform = build_classify_transform(augment, self.input_size, seed) \
            if train and augment["enabled"] else None

    def __getitem__(self, index: int) -> dict:
        from tinydet.data.transforms import classify_input

        rec = self.records[index]
        img = read_rgb(rec.path)
        if self.transform is not None:
            out = self.transform(image=img)["image"]
            chw = np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        else:
            chw = classify_input(img, self.input_size)
        return {"image": torch.from_numpy(chw), "label": rec.label, "index": index}


def collate_classification(samples: list[dict]) -> dict:
    """Stack images and labels; ``index`` is each sample's position in its split (deduplicates the
    samples a DistributedSampler repeats)."""
    return {"images": torch.stack([s["image"] for s in samples]),
            "labels": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64)}


class _LoaderMixin:
    """Train/val/test dataloaders over ``self.dataset(split)`` (Lightning inserts its
    DistributedSampler under DDP: plain ``shuffle``, no sampler)."""

    collate = staticmethod(collate_detection)

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=train,
                          num_workers=self.num_workers, collate_fn=self.collate,
                          worker_init_fn=_worker_init, persistent_workers=self.num_workers > 0,
                          generator=generator, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ClassificationDataModule(_LoaderMixin, L.LightningDataModule):
    """Dataloaders of a ``task: classify`` config's ``data`` section (imagefolder or vww).

    ``augment`` overrides ``data_cfg['augment']`` (``None`` keeps it; ``False`` disables it);
    ``class_names`` are the labels in order; ``records(split)`` the split's ClassRecords.
    """

    collate = staticmethod(collate_classification)

    def __init__(self, data_cfg: dict, input_size: int | Sequence[int], batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, augment: dict | bool | None = None,
                 source: str = "config") -> None:
        from tinydet.data.imagefolder import resolve_classify_data_cfg
        from tinydet.data.transforms import CLASSIFY_AUGMENT_DEFAULTS

        super().__init__()
        self.source = source
        self.data_cfg = resolve_classify_data_cfg(data_cfg, source)
        aug = self.data_cfg["augment"] if augment is None else augment
        self.augment = resolve_augment(aug, source, CLASSIFY_AUGMENT_DEFAULTS)
        self.input_size = as_hw(input_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.class_names: list[str] = list(self.data_cfg["classes"])
        self._records: dict[str, list] = {}
        self.bad_inputs: dict[str, dict] = {}

    def records(self, split: str) -> list:
        """The ClassRecords of ``split``, loaded once."""
        from tinydet.data.imagefolder import load_class_records

        if split not in self._records:
            records, _, summary = load_class_records(self.data_cfg, split, self.source)
            self._records[split] = records
            self.bad_inputs[split] = summary.to_dict()
        return self._records[split]

    @property
    def val_records(self) -> list:
        return self.records("val")

    def setup(self, stage: str | None = None) -> None:
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ("train", "val", "test")):
            self.records(split)

    def dataset(self, split: str) -> ClassificationDataset:
        return ClassificationDataset(self.records(split), self.input_size, split == "train", self.augment, self.seed)


class DetectionDataModule(_LoaderMixin, L.LightningDataModule):
    """Train/val/test dataloaders of the config's ``data`` section at network size ``input_size``.

    ``augment`` overrides ``data_cfg['augment']`` (``None`` keeps it; ``False`` disables it).
    ``val_records`` are the val ImageRecords in val-dataloader order; ``class_names`` the labels.
    """

    def __init__(self, data_cfg: dict, input_size: int | Sequence[int], batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, augment: dict | bool | None = None,
                 source: str = "config") -> None:
        super().__init__()
        self.source = source
        self.data_cfg = resolve_data_cfg(data_cfg, source)
        aug = self.data_cfg["augment"] if augment is None else augment
        self.augment = resolve_augment(aug, source)
        self.input_size = as_hw(input_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.class_names: list[str] = list(self.data_cfg["classes"])
        self._records: dict[str, list[ImageRecord]] = {}
        self.bad_inputs: dict[str, dict] = {}

    def records(self, split: str) -> list[ImageRecord]:
        """The ImageRecords of ``split``, loaded once."""
        if split not in self._records:
            records, _, summary = load_records(self.data_cfg, split, self.source)
            self._records[split] = records
            self.bad_inputs[split] = summary.to_dict()
        return self._records[split]

    @property
    def train_records(self) -> list[ImageRecord]:
        return self.records("train")

    @property
    def val_records(self) -> list[ImageRecord]:
        return self.records("val")

    @property
    def test_records(self) -> list[ImageRecord]:
        return self.records("test")

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.records("train")
        if stage in (None, "fit", "validate"):
            self.records("val")
        if stage in (None, "test"):
            self.records("test")

    def dataset(self, split: str) -> DetectionDataset:
        """The Dataset of ``split`` (augmented only for 'train')."""
        train = split == "train"
        return DetectionDataset(self.records(split), self.input_size, train, self.augment,
                                keep_difficult=self.data_cfg["keep_difficult"] if train else True,
                                seed=self.seed)

