"""LightningModules: the shared base (optimizer, warm-up + cosine schedule, EMA, checkpoint entry),
the detector's (YOLO loss, val map50) and the classifier's (label-smoothed cross-entropy, optional
knowledge distillation from a teacher checkpoint, val top-1).

Validation under DDP: every rank decodes its share of the val set, then the per-image detections
are all-gathered (``torch.distributed.all_gather_object``) so every rank holds all of them and
computes the same map50 (image ids deduplicate the samples the DistributedSampler repeats to even
out the shards). Every rank therefore logs the same number and ModelCheckpoint's "best" is the
same on all of them, with no extra reduction.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from tinydet.models.decode import postprocess
from tinydet.models.detector import Detector
from tinydet.models.loss import YoloLoss


class ModelEMA(nn.Module):
    """Exponential moving average of a model's weights (YOLOv5's ramp: the decay grows as
    ``decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not over-smoothed).

    A submodule of the LightningModule, so its weights and ``updates`` are in every checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-float(self.updates) / self.tau))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])

    def train(self, mode: bool = True) -> "ModelEMA":
        # the averaged copy always runs in eval mode (BN running stats, no dropout)
        super().train(False)
        return self


def map50_of(data_cfg: dict, detections: dict, records: Sequence[Any], class_names: Sequence[str]) -> float:
    """The validation figure that picks best.ckpt, through the eval package: VOC07 11-point
    mAP@0.5 for VOC sets; for WIDER Face the official 'hard' AP (all faces; the official .mat
    subsets when the data set ships eval_tools/ground_truth, else the face-height rule)."""
    if data_cfg["format"] == "wider":
        from pathlib import Path

        from tinydet.eval.wider import eval_wider_detections

        gt_dir = Path(str(data_cfg["root"])) / "eval_tools" / "ground_truth"
        value = eval_wider_detections(detections, records, str(gt_dir) if gt_dir.is_dir() else None)["hard"]
    else:
        from tinydet.eval.voc import eval_voc

        value = eval_voc(detections, records, class_names)["map50"]
    return float(value) if value is not None else 0.0


class TrainModule(pl.LightningModule):
    """What every tinydet training shares: the model and its EMA copy, the optimizer with its
    warm-up + cosine schedule, and the ``checkpoint["tinydet"]`` entry. Subclasses add the loss,
    the validation figure and ``monitor``, the name of the metric that picks best.ckpt."""

    monitor = "val/map50"

    def __init__(self, cfg: dict, model: nn.Module, class_names: Sequence[str], arch: dict):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.class_names = list(class_names)
        self.arch = arch
        train = cfg["train"]
        self.ema = ModelEMA(model, train["ema"]["decay"], train["ema"]["tau"]) if train["ema"]["enabled"] else None

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model(images)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def log_lr(self, batch_size: int) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False, batch_size=batch_size)

    def all_ranks(self, part: dict) -> dict:
        """Under DDP, the union of every rank's ``part`` (all_gather_object); else ``part``."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, part)
            return {k: v for piece in gathered for k, v in piece.items()}
        return part

    def configure_optimizers(self):
        train = self.cfg["train"]
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # BN weights and biases are not regularised (YOLOv5 / torchvision practice)
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        if train["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=train["lr"], momentum=train["momentum"], nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=train["lr"], betas=(train["momentum"], 0.999))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = int(train["warmup_epochs"] * per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total, warmup, train["cosine"], train["final_lr_frac"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from tinydet.io.checkpoint import FORMAT_VERSION

        checkpoint["tinydet"] = {"config": self.cfg, "arch": self.arch, "class_names": self.class_names,
                                 "format_version": FORMAT_VERSION}


class DetectorModule(TrainModule):
    """Trains a :class:`Detector`; ``cfg`` is the resolved config (a plain nested dict)."""

    def __init__(self, cfg: dict, model: Detector, class_names: Sequence[str], arch: dict):
        super().__init__(cfg, model, class_names, arch)
        loss = cfg["train"]["loss"]
        self.loss_fn = YoloLoss(model.anchors, model.strides.tolist(), model.num_classes, model.input_size,
                                box=loss["box"], obj=loss["obj"], cls=loss["cls"], anchor_t=loss["anchor_t"],
                                box_iou=loss["box_iou"], balance=loss["balance"])
        self._val_dets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.val_records: Sequence[Any] | None = None  # set by the runner (the data module's val records)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.model(batch["images"])
        loss, parts = self.loss_fn(outputs, batch["targets"])
        bs = batch["images"].shape[0]
        self.log("train/loss", loss / bs, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log_lr(bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_dets = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        from tinydet.data.transforms import unletterbox

        model = self.eval_model()
        ev = self.cfg["eval"]
        outputs = model(batch["images"])
        dets = postprocess(outputs, model.anchors, model.strides.tolist(), batch["images"].shape[-2:],
                           ev["conf_thresh"], ev["nms_iou"], ev["max_det"])
        for (boxes, scores, labels), meta in zip(dets, batch["meta"]):
            boxes = unletterbox(boxes.float().cpu().numpy(), meta)
            self._val_dets[str(meta["image_id"])] = (boxes, scores.float().cpu().numpy(), labels.cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        dets = self.all_ranks(self._val_dets)
        records = self.val_records if self.val_records is not None else self.trainer.datamodule.val_records
        covered = [r for r in records if r.image_id in dets]
        value = map50_of(self.cfg["data"], dets, covered, self.class_names) if covered else 0.0
        self.log("val/map50", value, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self._val_dets = {}


class ClassifierModule(TrainModule):
    """Trains a classifier (:func:`tinydet.models.classifier.classifier_from_config`).

    Loss: cross-entropy with ``train.label_smoothing``; with ``train.distill.teacher`` (a classifier
    checkpoint with the same classes) ``(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T)``
    (Hinton et al.; the T^2 keeps the soft term's gradients on the CE scale). The teacher is frozen,
    runs in eval mode and is not part of the checkpoint. Validation: top-1 of the EMA model, every
    rank's predictions gathered (deduplicated by sample index) so all ranks log the same value.
    """

    monitor = "val/top1"

    def __init__(self, cfg: dict, model: nn.Module, class_names: Sequence[str], arch: dict,
                 teacher: nn.Module | None = None):
        super().__init__(cfg, model, class_names, arch)
        train = cfg["train"]
        self.label_smoothing = float(train["label_smoothing"])
        self.alpha = float(train["distill"]["alpha"]) if teacher is not None else 0.0
        self.temperature = float(train["distill"]["temperature"])
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: kept out of state_dict and optimizer
        self._val: dict[int, tuple[list[int], int]] = {}

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        import torch.nn.functional as F

        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if self.teacher is None or self.alpha == 0.0:
            return ce, {"ce": ce.detach()}
        with torch.no_grad():
            soft = F.softmax(self.teacher(images)[-1] / self.temperature, dim=1)
        kd = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft, reduction="batchmean")
        kd = kd * self.temperature ** 2
        return (1 - self.alpha) * ce + self.alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        logits = self.model(images)[-1]
        loss, parts = self.loss(logits, batch["labels"], images)
        bs = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log_lr(bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.eval_model()(batch["images"])[-1].float()
        k = min(5, logits.shape[1])
        top = torch.topk(logits, k, dim=1).indices.cpu().tolist()
        for index, ranked, label in zip(batch["index"].tolist(), top, batch["labels"].tolist()):
            self._val[index] = (ranked, label)

    def on_validation_epoch_end(self) -> None:
        val = self.all_ranks(self._val)
        top1 = sum(ranked[0] == label for ranked, label in val.values()) / len(val) if val else 0.0
        top5 = sum(label in ranked for ranked, label in val.values()) / len(val) if val else 0.0
        self.log("val/top1", float(top1), prog_bar=True, sync_dist=False, rank_zero_only=False)
        if len(self.class_names) > 5:
            self.log("val/top5", float(top5), sync_dist=False, rank_zero_only=False)
        self._val = {}


class WarmupCosine:
    """Step -> lr factor: linear warm-up from 0.1% over ``warmup`` steps, then cosine from 1 to
    ``final`` at ``total`` steps (or constant). A class, not a closure, so it pickles (DDP spawn)."""

    def __init__(self, total: int, warmup: int, cosine: bool, final: float):
        self.total, self.warmup, self.cosine, self.final = total, warmup, cosine, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return 0.001 + (1 - 0.001) * step / self.warmup
        if not self.cosine:
            return 1.0
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))
