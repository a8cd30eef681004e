"""``tinydet eval`` of a classifier (``task: classify``): top-1 / top-5 / per-class accuracy.

Every backend sees the same inputs: the split's images through the classification eval geometry
(:func:`tinydet.data.transforms.classify_input`, the centre crop), in file order, so the PyTorch
checkpoint, the ONNX model and the int8 engines of an export folder compare image for image. The
runner of an ONNX file or export folder is :func:`tinydet.pipeline.eval.model_runner`'s (the
logits are the model's one output); scoring is :func:`tinydet.eval.classify.classify_metrics`.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from tinydet.errors import TinydetError
from tinydet.pipeline.predict import Runner


def classifier_torch_runner(cfg: Any, ckpt: str) -> Runner:
    """The checkpoint's classifier (EMA weights when present) as ``images [B,3,H,W] -> [logits]``."""
    import torch

    from tinydet.models.classifier import load_classifier

    model = load_classifier(cfg, ckpt)

    def run(images: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))]

    run.model = model  # type: ignore[attr-defined]
    return run


def classify_scores(cfg: Any, runner: Runner, split: str = "val", batch_size: int = 16
                    ) -> tuple[np.ndarray, np.ndarray, list]:
    """(scores [N, C], labels [N], records) of ``runner`` on ``split`` of the config's data."""
    from torch.utils.data import DataLoader

    from tinydet.config import to_dict
    from tinydet.data.datamodule import ClassificationDataModule, collate_classification

    dm = ClassificationDataModule(to_dict(cfg["data"]), cfg["model"]["resolution"], batch_size=batch_size,
                                  num_workers=0, source=getattr(cfg, "source", "config"))
    dataset = dm.dataset(split)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_classification)
    scores, labels = [], []
    for batch in loader:
        outputs = runner(batch["images"].numpy())
        logits = np.asarray(outputs[-1], np.float64).reshape(len(batch["labels"]), -1)
        if logits.shape[1] != len(dm.class_names):
            raise TinydetError(f"the model outputs {logits.shape[1]} scores per image but the data set has "
                               f"{len(dm.class_names)} classes {dm.class_names}")
        scores.append(logits)
        labels.append(batch["labels"].numpy())
    return np.concatenate(scores), np.concatenate(labels), list(dataset.records)


def evaluate_classifier(cfg: Any, *, ckpt: str | None = None, onnx: str | None = None, export: str | None = None,
                        int8: bool = False, patched: bool = False, split: str | None = None,
                        engine: str = "reference") -> dict:
    """Top-1 / top-5 / per-class accuracy of one classifier on the config's ``split`` (default
    eval.split): a checkpoint (PyTorch), an ONNX file, or an export folder (float, or ``int8`` on
    ``engine``)."""
    from tinydet.data.imagefolder import resolve_classify_data_cfg
    from tinydet.config import to_dict
    from tinydet.eval.classify import classify_metrics

    split = split or cfg["eval"]["split"]
    if split not in ("train", "val", "test"):
        raise TinydetError(f"--split '{split}' must be one of train, val, test")
    data_cfg = resolve_classify_data_cfg(to_dict(cfg["data"]), getattr(cfg, "source", "config"))
    if ckpt:
        runner, source = classifier_torch_runner(cfg, ckpt), f"checkpoint:{ckpt}"
    else:
        from tinydet.pipeline.eval import model_runner

        runner, source = model_runner(cfg, onnx=onnx, export=export, int8=int8, patched=patched, engine=engine)
    print(f"tinydet: classifying {data_cfg['format']} split '{split}' with {source}", file=sys.stderr)
    try:
        scores, labels, _ = classify_scores(cfg, runner, split)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    result: dict = {"task": "classify", "source": source, "data": data_cfg["root"], "format": data_cfg["format"],
                    "split": split}
    if int8:
        result["engine"] = engine
    if hasattr(runner, "figures"):
        result["device"] = runner.figures()
    result.update(classify_metrics(scores, labels, data_cfg["classes"]).to_dict())
    return result
