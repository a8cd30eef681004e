"""Accuracy estimation for the search: train the supernet once, then score sub-networks.

Training (:class:`SupernetModule`, a minimal LightningModule around the project's
:class:`~tinydet.models.loss.YoloLoss`): each step runs the sandwich of sub-networks (largest,
smallest, random ones), each at its own input resolution: the batch, letterboxed at the
largest resolution of the space, is resized to the sub-network's resolution and its boxes scaled
with it. Anchors are given in pixels at ``model.resolution``, so at resolution r they are scaled
by r / model.resolution (objects shrink with the image; the anchors must too).

Scoring (:class:`SubnetEvaluator`): BatchNorm recalibration of the candidate on a few fixed train
batches (no augmentation), then val ``map50`` with the project's decode + NMS and VOC metric on
the val split letterboxed at the candidate's resolution.

``task: classify``: the supernet ends in a classifier; training uses label-smoothed cross-entropy
on random resized crops at the largest resolution (resized per sub-network), and
:class:`SubnetClassifyEvaluator` scores val top-1 on the centre crops at the candidate's resolution.

Training goes through Lightning's Trainer with the config's ``train.accelerator / devices /
strategy / num_nodes``: DDP shards the batches over the processes (Lightning's
DistributedSampler) and averages the gradients; every rank draws the same sandwich of
sub-networks (one seeded stream), so every rank runs the same graph each step.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_torch_save
from tinydet.io.checkpoint import load_torch_file
from tinydet.nas.space import Candidate
from tinydet.nas.supernet import Supernet, sandwich


def scaled_anchors(anchors: Any, resolution: int, base_resolution: int) -> torch.Tensor:
    """Anchors (pixels at ``base_resolution``) for a network input of ``resolution``."""
    return torch.as_tensor(anchors, dtype=torch.float32) * (float(resolution) / float(base_resolution))


def head_strides_of(supernet: Supernet) -> list[float]:
    from tinydet.models.detector import head_strides

    return [float(s) for s in head_strides(supernet.max_spec)]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square ``images`` resized to ``size`` (antialiased when shrinking)."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < images.shape[-1])


def resize_batch(images: torch.Tensor, targets: Sequence[dict], size: int) -> tuple[torch.Tensor, list[dict]]:
    """Resize square letterboxed ``images`` to ``size`` and scale the targets' boxes with them."""
    scale = size / images.shape[-1]
    return resize_images(images, size), [{**t, "boxes": t["boxes"] * scale} for t in targets]


class SupernetModule(L.LightningModule):
    """Trains a :class:`Supernet` with the sandwich rule and the project's detection loss (or, for
    a classifier supernet, label-smoothed cross-entropy; ``anchors`` is then unused)."""

    def __init__(self, supernet: Supernet, anchors: Any, base_resolution: int, num_classes: int,
                 train_cfg: dict, seed: int = 0, n_random: int = 2, steps_per_epoch: int = 1, epochs: int = 1):
        super().__init__()
        self.supernet = supernet
        self.anchors = torch.as_tensor(anchors if anchors is not None else [], dtype=torch.float32)
        self.base_resolution = int(base_resolution)
        self.num_classes = num_classes
        self.train_cfg = dict(train_cfg)
        self.rng = random.Random(seed)
        self.n_random = n_random
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, steps_per_epoch * epochs)
        self.strides = [] if supernet.is_classifier else head_strides_of(supernet)
        self._losses: dict[int, Any] = {}

    def loss_fn(self, resolution: int):
        if resolution not in self._losses:
            from tinydet.models.loss import YoloLoss

            loss_cfg = dict(self.train_cfg.get("loss", {}))
            self._losses[resolution] = YoloLoss(scaled_anchors(self.anchors, resolution, self.base_resolution),
                                                self.strides, self.num_classes, (resolution, resolution), **loss_cfg)
        return self._losses[resolution]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        cands = sandwich(self.supernet.space, self.rng, self.n_random)
        total = images.new_zeros(())
        for cand in cands:
            if self.supernet.is_classifier:
                logits = self.supernet(resize_images(images, cand.resolution), cand)[-1]
                loss = F.cross_entropy(logits, batch["labels"],
                                       label_smoothing=float(self.train_cfg.get("label_smoothing", 0.0)))
            else:
                x, t = resize_batch(images, batch["targets"], cand.resolution)
                loss, _ = self.loss_fn(cand.resolution)(self.supernet(x, cand), t)
            total = total + loss
        total = total / len(cands)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=images.shape[0])
        return total

    def configure_optimizers(self):
        # the training config's optimiser and schedule (tinydet.train.module), applied to the supernet
        from tinydet.train.module import WarmupCosine

        cfg = self.train_cfg
        decay, no_decay = [], []
        for p in self.supernet.parameters():
            # no weight decay on BatchNorm and biases (as the detector's training)
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": float(cfg["weight_decay"])},
                  {"params": no_decay, "weight_decay": 0.0}]
        if cfg["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=float(cfg["lr"]), momentum=float(cfg["momentum"]), nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=float(cfg["lr"]), betas=(float(cfg["momentum"]), 0.999))
        # under DDP each process runs its shard: the Trainer knows the real number of steps
        total = min(self.total_steps, max(1, int(self.trainer.estimated_stepping_batches)))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1)) if self.trainer.max_steps < 0 else \
            self.steps_per_epoch
        warmup = min(total // 2, int(float(cfg["warmup_epochs"]) * per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total, warmup, bool(cfg["cosine"]),
                                                                      float(cfg["final_lr_frac"])))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_supernet(supernet: Supernet, datamodule: Any, anchors: Any, base_resolution: int, num_classes: int,
                   train_cfg: dict, epochs: int, seed: int, n_random: int = 2, max_steps: int = -1,
                   progress: bool = True) -> dict:
    """Train ``supernet`` in place on ``datamodule``'s train split with Lightning (``train_cfg``'s
    accelerator, devices, strategy, num_nodes: DDP included); returns a small summary with the
    process's ``global_rank`` (under DDP every process returns; only rank 0 should write)."""
    L.seed_everything(seed, workers=True, verbose=False)
    loader = datamodule.train_dataloader()
    steps = len(loader) if max_steps < 0 else min(len(loader) * epochs, max_steps)
    module = SupernetModule(supernet, anchors, base_resolution, num_classes, train_cfg, seed, n_random,
                            steps_per_epoch=len(loader), epochs=epochs if max_steps < 0 else 1)
    if max_steps >= 0:
        module.total_steps = max(1, steps)
    trainer = L.Trainer(max_epochs=epochs, max_steps=max_steps, accelerator=train_cfg.get("accelerator", "cpu"),
                        devices=train_cfg.get("devices", 1), strategy=train_cfg.get("strategy", "auto"),
                        num_nodes=int(train_cfg.get("num_nodes", 1)), precision=train_cfg.get("precision", "32-true"),
                        logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False, deterministic=True, gradient_clip_val=10.0,
                        num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    supernet.cpu()  # scoring and extraction run on the host, whatever the training device
    return {"steps": int(trainer.global_step), "epochs": epochs, "world_size": int(trainer.world_size),
            "global_rank": int(trainer.global_rank),
            "final_loss": float(trainer.callback_metrics.get("train/loss", float("nan")))}


def save_supernet(supernet: Supernet, path: "str | Path", meta: dict, training: dict | None = None) -> None:
    """Write the supernet weights (+ what made them, + ``training``: the run's steps, processes
    and final loss from :func:`train_supernet`) atomically."""
    atomic_torch_save({"state_dict": supernet.state_dict(), "meta": meta, "training": training}, path)


def load_supernet(supernet: Supernet, path: "str | Path", meta: dict) -> bool:
    """Load weights saved by :func:`save_supernet` if they were made with the same ``meta``."""
    path = Path(path)
    if not path.exists():
        return False
    data = load_torch_file(path, "supernet checkpoint (delete it to train the supernet again)")
    if not isinstance(data, dict) or "state_dict" not in data:
        raise TinydetError(f"{path}: not a supernet checkpoint written by `tinydet search` (no 'state_dict')")
    if data.get("meta") != meta:
        return False
    supernet.load_state_dict(data["state_dict"])
    return True


class _FixedBatches:
    """The evaluators' fixed batches per resolution: BatchNorm-recalibration images (train split,
    no augmentation, one seeded shuffle) and the val batches. Subclasses set ``_dm`` (resolution ->
    DataModule), ``_collate``, ``recal_batches``, ``batch_size``, ``seed`` and ``_val_count``."""

    _collate: Any

    def _val_count(self, val: Any) -> int:
        return len(val)

    def _batches(self, r: int) -> tuple[list[torch.Tensor], list[dict]]:
        """Recalibration images (fixed shuffled train batches) and val batches at resolution r."""
        if r not in self._val:
            dm = self._dm(r)
            train = dm.dataset("train")
            order = list(range(len(train)))
            random.Random(self.seed).shuffle(order)
            order = order[: self.recal_batches * self.batch_size]
            self._recal[r] = [self._collate([train[i] for i in order[k:k + self.batch_size]])["images"]
                              for k in range(0, len(order), self.batch_size)]
            val = dm.dataset("val")
            n = self._val_count(val)
            self._val[r] = [self._collate([val[i] for i in range(k, min(n, k + self.batch_size))])
                            for k in range(0, n, self.batch_size)]
        return self._recal[r], self._val[r]

    def recal_images(self, r: int) -> list[torch.Tensor]:
        """The fixed BatchNorm-recalibration batches at resolution ``r``."""
        return self._batches(r)[0]


class SubnetEvaluator(_FixedBatches):
    """``evaluator(cand) -> val map50`` of the sub-network ``cand`` of a trained supernet."""

    def __init__(self, supernet: Supernet, data_cfg: dict, anchors: Any, base_resolution: int,
                 eval_cfg: dict, recal_batches: int = 4, batch_size: int = 16, seed: int = 0,
                 source: str = "config", max_val_images: int = 0):
        from tinydet.data.datamodule import DetectionDataModule

        self.supernet = supernet
        self.anchors = anchors
        self.base_resolution = int(base_resolution)
        self.eval_cfg = dict(eval_cfg)
        self.recal_batches, self.batch_size, self.seed = recal_batches, batch_size, seed
        self.strides = head_strides_of(supernet)
        self._dm = lambda r: DetectionDataModule(data_cfg, r, batch_size=batch_size, num_workers=0, seed=seed,
                                                 augment=False, source=source)
        self.max_val_images = max_val_images
        self._val: dict[int, list[dict]] = {}
        self._recal: dict[int, list[torch.Tensor]] = {}
        dm = self._dm(base_resolution)
        self.class_names = dm.class_names
        records = dm.val_records
        self.val_records = records[:max_val_images] if max_val_images > 0 else records

    @staticmethod
    def _collate(samples: list) -> dict:
        from tinydet.data.datamodule import collate_detection

        return collate_detection(samples)

    def _val_count(self, val: Any) -> int:
        return len(self.val_records)

    @torch.no_grad()
    def __call__(self, cand: Candidate) -> float:
        from tinydet.data.transforms import unletterbox
        from tinydet.eval.voc import eval_voc
        from tinydet.models.decode import postprocess

        r = cand.resolution
        recal, val = self._batches(r)
        self.supernet.recalibrate(cand, recal)
        self.supernet.eval()
        anchors = scaled_anchors(self.anchors, r, self.base_resolution)
        detections: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for batch in val:
            outs = self.supernet(batch["images"], cand)
            dets = postprocess(outs, anchors, self.strides, (r, r), float(self.eval_cfg.get("conf_thresh", 0.001)),
                               float(self.eval_cfg.get("nms_iou", 0.6)), int(self.eval_cfg.get("max_det", 100)))
            for (boxes, scores, labels), meta in zip(dets, batch["meta"]):
                detections[meta["image_id"]] = (unletterbox(boxes, meta).numpy(), scores.numpy(), labels.numpy())
        result = eval_voc(detections, self.val_records, self.class_names)
        return float(result["map50"] or 0.0)


class SubnetClassifyEvaluator(_FixedBatches):
    """``evaluator(cand) -> val top-1`` of the sub-network ``cand`` of a classifier supernet:
    BatchNorm recalibration on fixed train centre crops, then top-1 on the val centre crops, both
    at the candidate's resolution."""

    def __init__(self, supernet: Supernet, data_cfg: dict, recal_batches: int = 4, batch_size: int = 16,
                 seed: int = 0, source: str = "config", max_val_images: int = 0):
        from tinydet.data.datamodule import ClassificationDataModule

        self.supernet = supernet
        self.recal_batches, self.batch_size, self.seed = recal_batches, batch_size, seed
        self._dm = lambda r: ClassificationDataModule(data_cfg, r, batch_size=batch_size, num_workers=0, seed=seed,
                                                      augment=False, source=source)
        self.max_val_images = max_val_images
        self._val: dict[int, list[dict]] = {}
        self._recal: dict[int, list[torch.Tensor]] = {}
        self.class_names = self._dm(64).class_names

    @staticmethod
    def _collate(samples: list) -> dict:
        from tinydet.data.datamodule import collate_classification

        return collate_classification(samples)

    def _val_count(self, val: Any) -> int:
        return min(len(val), self.max_val_images) if self.max_val_images > 0 else len(val)

    @torch.no_grad()
    def __call__(self, cand: Candidate) -> float:
        from tinydet.eval.classify import topk_accuracy

        recal, val = self._batches(cand.resolution)
        self.supernet.recalibrate(cand, recal)
        self.supernet.eval()
        scores = [self.supernet(batch["images"], cand)[-1].numpy() for batch in val]
        labels = [batch["labels"].numpy() for batch in val]
        return float(topk_accuracy(np.concatenate(scores), np.concatenate(labels), 1) or 0.0)
