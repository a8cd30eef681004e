"""Classification metrics as pure functions of scores and labels (numpy only, no model).

Conventions: ``scores`` float [N, C] (logits or probabilities: only their order matters),
``labels`` int [N]. Top-k counts an image correct when its label is among its k highest scores;
ties rank the lower class index first (a stable sort), so the figures do not depend on the
platform. Per-class accuracy is the recall of each class (correct / images of that class);
``mean_class_accuracy`` is their mean over classes that have images (balanced accuracy, the figure
a skewed set such as Visual Wake Words needs beside top-1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be [N, C] with N = len(labels), got {scores.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be in 0..{scores.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    return scores, labels


def ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices per image from the highest score down (ties: lower index first)."""
    return np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: is the label among the ``k`` highest scores."""
    scores, labels = _check(scores, labels)
    return (ranking(scores)[:, :k] == labels[:, None]).any(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float | None:
    """Fraction of images whose label is in their top ``k`` (None for no images)."""
    correct = topk_correct(scores, labels, k)
    return float(correct.mean()) if correct.size else None


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = true class, column = predicted class."""
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return out


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Recall of each class from a confusion matrix (None for a class without images)."""
    totals = confusion.sum(axis=1)
    return [float(confusion[c, c] / totals[c]) if totals[c] else None for c in range(len(totals))]


@dataclass
class ClassifyMetrics:
    """What ``tinydet eval`` reports for a classifier."""

    top1: float | None
    top5: float | None              # None when there are 5 classes or fewer (it would always be 1)
    mean_class_accuracy: float | None
    per_class: dict[str, dict]      # name -> {accuracy, images, correct}
    confusion: list[list[int]]      # [true][predicted]
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def classify_metrics(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> ClassifyMetrics:
    """Top-1, top-5, per-class accuracy and the confusion matrix of ``scores`` against ``labels``."""
    scores, labels = _check(scores, labels)
    num_classes = len(class_names)
    if scores.shape[1] != num_classes:
        raise ValueError(f"scores have {scores.shape[1]} classes, class_names {num_classes}")
    predictions = ranking(scores)[:, 0] if len(labels) else np.zeros(0, np.int64)
    conf = confusion_matrix(predictions, labels, num_classes)
    recall = per_class_accuracy(conf)
    present = [r for r in recall if r is not None]
    per_class = {name: {"accuracy": recall[c], "images": int(conf[c].sum()), "correct": int(conf[c, c])}
                 for c, name in enumerate(class_names)}
    return ClassifyMetrics(
        top1=topk_accuracy(scores, labels, 1),
        top5=topk_accuracy(scores, labels, 5) if num_classes > 5 else None,
        mean_class_accuracy=float(np.mean(present)) if present else None,
        per_class=per_class, confusion=conf.tolist(), n_images=int(len(labels)))
