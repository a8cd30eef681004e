"""The classifier of ``task: classify``: the spec's backbone + global average pool + fully connected
(:class:`tinydet.arch.modules.Network` with ``classifier=True``; module paths ``classifier.fc`` etc.
equal the op names of ``tinydet.arch.lower(..., classifier=True)``), and reading it back from a
training checkpoint.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tinydet.arch import ArchSpec, parse_resolution
from tinydet.arch.modules import Network
from tinydet.errors import TinydetError


def classifier_from_config(cfg: Any, num_classes: int, spec: ArchSpec | None = None) -> Network:
    """The classifier a config describes: ``model.arch`` (``spec`` overrides it) with ``num_classes``
    outputs; ``input_size`` (H, W) is ``model.resolution``."""
    from tinydet.models.detector import resolve_spec

    if num_classes < 2:
        raise TinydetError(f"data: a classifier needs at least two classes, got {num_classes}")
    if spec is None:
        model = cfg["model"]
        spec = resolve_spec(model["arch"], model.get("width_mult"), getattr(cfg, "source", None))
    net = Network(replace(spec, num_classes=num_classes), classifier=True)
    net.input_size = parse_resolution(cfg["model"]["resolution"])
    return net


def load_classifier(cfg: Any, ckpt: "str | Path", prefer_ema: bool = True) -> Network:
    """Rebuild a trained classifier from a ``task: classify`` checkpoint (eval mode; the EMA weights
    when present and ``prefer_ema``). ``cfg`` None uses the checkpoint's config; given, its
    ``model.arch`` must be the checkpoint's (else a TinydetError names both)."""
    from tinydet.arch.spec import spec_from_dict
    from tinydet.io.checkpoint import model_state, read_checkpoint
    from tinydet.models.detector import resolve_spec

    path = Path(ckpt)
    data = read_checkpoint(path)
    meta = data["tinydet"]
    stored = meta["config"]
    if stored.get("task", "detect") != "classify":
        raise TinydetError(f"{path}: a detector checkpoint (task detect), not a classifier; "
                           "evaluate it with a task: detect config")
    spec = spec_from_dict(meta["arch"], f"{path} (arch)")
    if cfg is not None:
        source = getattr(cfg, "source", "config")
        want = resolve_spec(cfg["model"]["arch"], cfg["model"].get("width_mult"), source)
        if replace(want, num_classes=0).to_dict() != replace(spec, num_classes=0).to_dict():
            raise TinydetError(f"{path}: checkpoint architecture '{spec.name}' does not match {source} "
                               f"model.arch '{want.name}'")
    class_names = list(meta["class_names"])
    net = classifier_from_config(stored if cfg is None else cfg, len(class_names), spec)
    try:
        net.load_state_dict(model_state(data["state_dict"], prefer_ema))
    except RuntimeError as exc:
        raise TinydetError(f"{path}: weights do not fit the architecture '{spec.name}' "
                           f"({str(exc).splitlines()[0]})") from None
    net.class_names = class_names
    return net.eval()
