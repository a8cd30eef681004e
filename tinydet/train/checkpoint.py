"""Checkpoint files: atomic writes, reading with clear errors, and ``load_detector``.

A training checkpoint is Lightning's dict plus ``checkpoint["tinydet"]`` = {config, arch (the spec
dict), class_names, format_version}; the LightningModule's state dict holds the model under
``model.`` and, when EMA is on, the averaged copy under ``ema.module.``. ``load_detector`` needs
nothing else (no Lightning import), so export and eval rebuild the exact network.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tinydet.errors import TinydetError

FORMAT_VERSION = 1


def read_checkpoint(path: "str | Path") -> dict:
    """Load a checkpoint dict on the CPU; unreadable or foreign files raise TinydetError."""
    path = Path(path)
    if not path.is_file():
        raise TinydetError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for truncated/foreign files
        raise TinydetError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "tinydet" not in ckpt:
        raise TinydetError(f"{path}: not a tinydet training checkpoint (no 'state_dict'/'tinydet' entries)")
    return ckpt


def _model_state(ckpt: dict, prefer_ema: bool = True) -> dict:
    state = ckpt["state_dict"]
    prefix = "ema.module." if prefer_ema and any(k.startswith("ema.module.") for k in state) else "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _describe(arch: dict) -> str:
    return f"'{arch.get('name')}' (width {arch.get('width_mult')}, {len(arch.get('blocks', []))} blocks)"


def load_detector(cfg: Any, ckpt: "str | Path", prefer_ema: bool = True):
    """Rebuild the trained :class:`tinydet.models.Detector` from ``ckpt`` (eval mode, EMA weights
    when the checkpoint has them).

    ``cfg`` None uses the config stored in the checkpoint. With a config, its architecture (arch,
    width, head, anchors, classes) must be the checkpoint's, else a TinydetError names both.
    """
    from tinydet.arch.spec import spec_from_dict
    from tinydet.models.detector import detector_from_config, resolve_spec

    ckpt_path = Path(ckpt)
    data = read_checkpoint(ckpt_path)
    meta = data["tinydet"]
    stored_cfg = meta["config"]
    spec = spec_from_dict(meta["arch"], f"{ckpt_path} (arch)")
    class_names = list(meta["class_names"])
    use_cfg = stored_cfg if cfg is None else cfg
    if cfg is not None:
        source = getattr(cfg, "source", "config")
        # a detector never uses the spec's classifier, so num_classes does not count
        want = replace(resolve_spec(cfg["model"]["arch"], cfg["model"].get("width_mult"), source), num_classes=0)
        if want.to_dict() != replace(spec, num_classes=0).to_dict():
            raise TinydetError(f"{ckpt_path}: checkpoint architecture {_describe(meta['arch'])} does not match "
                               f"{source} model.arch {_describe(want.to_dict())}")
        for key in ("head", "anchors"):
            if _plain(cfg["model"][key]) != _plain(stored_cfg["model"][key]):
                raise TinydetError(f"{ckpt_path}: checkpoint model.{key} {_plain(stored_cfg['model'][key])} does not "
                                   f"match {source} model.{key} {_plain(cfg['model'][key])}")
    model = detector_from_config(use_cfg, len(class_names), spec=spec)
    if stored_cfg.get("quant", {}).get("qat"):
        from tinydet.quant.qat import prepare_qat  # a QAT run stores fake-quant layers

        model = prepare_qat(model, stored_cfg)
    state = _model_state(data, prefer_ema)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TinydetError(f"{ckpt_path}: weights do not fit the architecture {_describe(meta['arch'])} "
                           f"({str(exc).splitlines()[0]})") from None
    model.class_names = class_names
    return model.eval()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
