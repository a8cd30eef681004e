"""Build the Lightning Trainer from a config and run training (what ``tinydet train`` calls).

Checkpoints in ``train.out_dir``: ``last.ckpt`` (every ``ckpt_every_n_steps`` optimizer steps and
at every epoch end), ``best.ckpt`` (highest val map50). All writes go through
:class:`AtomicCheckpointIO`, so a SIGKILL at any moment leaves the previous complete file.
Multi-GPU / multi-node is Lightning's own DDP, configured by train.{accelerator, devices,
strategy, num_nodes}.
"""
from __future__ import annotations

import copy
import sys
import warnings
import time
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_torch_save
from tinydet.io.checkpoint import read_checkpoint
from tinydet.io.rundir import check_run_dir
from tinydet.config import Config, to_dict


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic writes (:func:`tinydet.io.atomic.atomic_torch_save`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` every ``every_n_steps`` optimizer steps (mid-epoch) and at each epoch
    end. A plain Callback (Lightning runs Checkpoint subclasses after all others), so callbacks
    placed after it see the file already written."""

    def __init__(self, path: Path, every_n_steps: int = 0):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)  # full state: --resume needs it

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class Throughput(Callback):
    """Training images per second, counting only time inside training batches' epochs (not val)."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.images += int(batch["images"].shape[0]) * trainer.world_size

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def resolve_resume(resume: str | None, out_dir: Path) -> str | None:
    """``--resume``: None (fresh), ``auto`` (out_dir/last.ckpt when it exists), or a path."""
    if resume is None:
        return None
    if resume == "auto":
        last = out_dir / "last.ckpt"
        if last.is_file():
            return str(last)
        print(f"tinydet train: no {last} yet, starting from scratch", file=sys.stderr)
        return None
    if not Path(resume).is_file():
        raise TinydetError(f"--resume {resume}: checkpoint file does not exist")
    return resume


def _check_resume_matches(cfg: Config, ckpt_path: str) -> None:
    """Resuming a run with a different architecture would fail deep inside torch: say it here."""
    load_trained(cfg, ckpt_path)


def load_trained(cfg: Config, ckpt_path: str):
    """The trained network of ``ckpt_path`` for ``cfg``'s task (detector or classifier)."""
    if cfg.task == "classify":
        from tinydet.models.classifier import load_classifier

        return load_classifier(cfg, ckpt_path)
    from tinydet.io.checkpoint import load_detector

    return load_detector(cfg, ckpt_path)


def _loggers(cfg: Config, out_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    made = []  # one version_N folder per invocation, so a resumed run never overwrites earlier logs
    for name in cfg.train.loggers:
        if name == "csv":
            made.append(CSVLogger(save_dir=str(out_dir), name="logs/csv"))
        else:
            made.append(TensorBoardLogger(save_dir=str(out_dir), name="logs/tb"))
    return made


def build_trainer(cfg: Config, callbacks: Sequence[Callback] = (), monitor: str = "val/map50"
                  ) -> tuple[pl.Trainer, Throughput]:
    """The Trainer for ``cfg``: atomic checkpoints, last/best (highest ``monitor``), loggers, DDP from config."""
    train = cfg.train
    out_dir = Path(train.out_dir)
    # the EMA copy is in eval mode on purpose; Lightning's generic warning about it only confuses
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    throughput = Throughput()
    best = ModelCheckpoint(dirpath=str(out_dir), filename="best", monitor=monitor, mode="max",
                           save_top_k=1, save_last=False, auto_insert_metric_name=False,
                           enable_version_counter=False, save_on_train_epoch_end=False)
    all_callbacks = [LastCheckpoint(out_dir / "last.ckpt", train.ckpt_every_n_steps), throughput,
                     *callbacks, best]
    loggers = _loggers(cfg, out_dir)
    trainer = pl.Trainer(
        max_epochs=train.epochs, max_steps=train.max_steps,
        accelerator=train.accelerator, devices=train.devices, strategy=train.strategy,
        num_nodes=train.num_nodes, precision=train.precision,
        callbacks=all_callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
        check_val_every_n_epoch=train.check_val_every_n_epoch, num_sanity_val_steps=0,
        enable_progress_bar=train.progress_bar, enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=str(out_dir), deterministic=False,
    )
    return trainer, throughput


def train(cfg: Config, resume: str | None = None, init_ckpt: str | None = None,
          callbacks: Sequence[Callback] = ()) -> dict:
    """Train the detector (or, ``task: classify``, the classifier) ``cfg`` describes; returns a
    summary (paths, best map50 or top1, throughput).

    ``resume``: None | 'auto' | checkpoint path (restores weights, EMA, optimizer, epoch, step).
    ``init_ckpt``: start from a checkpoint's weights only (fine-tuning), the rest fresh.
    ``callbacks``: extra Lightning callbacks (tests inject faults here).
    """
    train_cfg = cfg.train
    out_dir = Path(train_cfg.out_dir)
    check_run_dir(out_dir, resume, init_ckpt)  # a run folder's checkpoints are never overwritten
    _cpu_threads(train_cfg)
    pl.seed_everything(train_cfg.seed, workers=True, verbose=False)
    ckpt_path = resolve_resume(resume, out_dir)
    resumed_step = None
    if ckpt_path is not None:
        _check_resume_matches(cfg, ckpt_path)
        resumed_step = checkpoint_step(ckpt_path)
    build = _classifier_parts if cfg.task == "classify" else _detector_parts
    module, dm, cfg = build(cfg, init_ckpt, fresh=init_ckpt is None and ckpt_path is None)
    trainer, throughput = build_trainer(cfg, callbacks, module.monitor)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    wall = time.perf_counter() - t0
    best_cb = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    score = best_cb.best_model_score
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if hasattr(v, "item") and v.numel() == 1}
    figure = module.monitor.split("/")[-1]  # map50 (detect) or top1 (classify)
    return {
        "name": cfg.name,
        "task": cfg.task,
        "out_dir": str(out_dir),
        "last_ckpt": str(out_dir / "last.ckpt"),
        "best_ckpt": best_cb.best_model_path or None,
        f"best_{figure}": float(score) if score is not None else None,
        f"val_{figure}": metrics.get(module.monitor),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "resumed_from": ckpt_path,
        "resumed_step": resumed_step,
        "train_images_per_s": throughput.images_per_s,
        "wall_s": wall,
        "global_rank": trainer.global_rank,
    }


def _detector_parts(cfg: Config, init_ckpt: str | None, fresh: bool):
    """DetectorModule + DetectionDataModule, the weights from ``init_ckpt`` or (``fresh``: neither
    resumed nor initialised) ``model.pretrained``; returns (module, datamodule, cfg as adjusted for QAT)."""
    from tinydet.data.datamodule import DetectionDataModule
    from tinydet.models.detector import detector_from_config, load_pretrained
    from tinydet.train.module import DetectorModule

    train_cfg = cfg.train
    dm = DetectionDataModule(to_dict(cfg.data), cfg.model.resolution, batch_size=train_cfg.batch_size,
                             num_workers=train_cfg.num_workers, seed=train_cfg.seed, source=cfg.source)
    model = detector_from_config(cfg, len(dm.class_names))
    if fresh:
        load_pretrained(model, cfg)  # model.pretrained (a resumed or fine-tuned run has its own weights)
    if init_ckpt is not None:
        model.load_state_dict(load_trained(cfg, init_ckpt).state_dict())
    if cfg.quant.qat:
        # QAT fine-tunes (usually from --ckpt float weights) for quant.qat_epochs at quant.qat_lr;
        # the model is prepared before the module exists so the EMA copy has the same layers
        model = _prepare_qat(model, cfg)
        cfg = copy.deepcopy(cfg)
        cfg.train.epochs, cfg.train.lr, cfg.train.warmup_epochs = cfg.quant.qat_epochs, cfg.quant.qat_lr, 0.0
    return DetectorModule(to_dict(cfg), model, dm.class_names, model.spec.to_dict()), dm, cfg


def _classifier_parts(cfg: Config, init_ckpt: str | None, fresh: bool):
    """ClassifierModule (+ its distillation teacher) + ClassificationDataModule."""
    from tinydet.data.datamodule import ClassificationDataModule
    from tinydet.models.classifier import classifier_from_config, load_classifier
    from tinydet.train.module import ClassifierModule

    if cfg.quant.qat:
        raise TinydetError(f"{cfg.source}: quant.qat applies to task detect; classifiers are quantized after "
                           "training (tinydet quantize)")
    train_cfg = cfg.train
    dm = ClassificationDataModule(to_dict(cfg.data), cfg.model.resolution, batch_size=train_cfg.batch_size,
                                  num_workers=train_cfg.num_workers, seed=train_cfg.seed, source=cfg.source)
    model = classifier_from_config(cfg, len(dm.class_names))
    if fresh and cfg.model.pretrained:
        from tinydet.zoo.pretrained import load_into, resolve

        load_into(model, resolve(cfg.model.pretrained, cfg.source))
    if init_ckpt is not None:
        model.load_state_dict(load_trained(cfg, init_ckpt).state_dict())
    teacher = None
    if train_cfg.distill.teacher:
        teacher = load_classifier(None, train_cfg.distill.teacher)
        if list(teacher.class_names) != list(dm.class_names):
            raise TinydetError(f"{cfg.source}: train.distill.teacher {train_cfg.distill.teacher} has classes "
                               f"{teacher.class_names}, the data set {dm.class_names}")
    module = ClassifierModule(to_dict(cfg), model, dm.class_names, model.spec.to_dict(), teacher)
    return module, dm, cfg


def _cpu_threads(train_cfg) -> None:
    """On the CPU leave one core per data-loading worker: OpenMP threads competing with the
    loaders (or with each other) spin-wait and train several times slower. An explicit
    OMP_NUM_THREADS wins."""
    import os

    import torch

    if train_cfg.accelerator == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - int(train_cfg.num_workers)))


def _prepare_qat(model, cfg: Config):
    """Quantization-aware training comes from tinydet.quant (the quantization package)."""
    try:
        from tinydet.quant.qat import prepare_qat
    except ImportError:
        raise TinydetError(f"{cfg.source}: quant.qat is true but quantization-aware training is unavailable "
                           "(tinydet.quant.qat.prepare_qat is not installed); set quant.qat=false") from None
    return prepare_qat(model, cfg)


def checkpoint_step(path: "str | Path") -> int:
    """The global step stored in a checkpoint (for reports and tests)."""
    return int(read_checkpoint(path)["global_step"])


__all__ = ["train", "build_trainer", "AtomicCheckpointIO", "LastCheckpoint", "resolve_resume", "checkpoint_step"]
