"""Reading tinydet checkpoints: the one reader, used by export, eval, quantize and training.

A training checkpoint is Lightning's dict plus ``checkpoint["tinydet"]`` = {config, arch (the spec
dict), class_names, format_version}; the LightningModule's state dict holds the model under
``model.`` and, when EMA is on, the averaged copy under ``ema.module.``. Reading needs neither
Lightning nor the training package: :func:`load_detector` rebuilds the exact network from
``tinydet.arch`` and ``tinydet.models`` alone. Writing is training's job
(``tinydet.train.module`` fills the entry, :func:`tinydet.io.atomic.atomic_torch_save` writes).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from tinydet.errors import TinydetError

#: version of the ``checkpoint["tinydet"]`` entry
FORMAT_VERSION = 1
EMA_PREFIX, MODEL_PREFIX = "ema.module.", "model."


def load_torch_file(path: "str | Path", what: str = "checkpoint") -> Any:
    """``torch.load`` on the CPU with one-line errors for a missing or unreadable file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TinydetError(f"{path}: {what} file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for truncated/foreign files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TinydetError(f"{path}: not a readable {what} ({type(exc).__name__}: {first})") from None


def read_checkpoint(path: "str | Path") -> dict:
    """Load a tinydet training checkpoint dict; unreadable or foreign files raise TinydetError."""
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "tinydet" not in ckpt:
        raise TinydetError(f"{path}: not a tinydet training checkpoint (no 'state_dict'/'tinydet' entries)")
    return ckpt


def model_state(state: Mapping[str, Any], prefer_ema: bool = True) -> dict[str, Any]:
    """The detector's weights in a LightningModule state dict: the EMA copy (``ema.module.*``) when
    there is one and ``prefer_ema``, else ``model.*``, else the dict itself (a bare state dict)."""
    prefixes = (EMA_PREFIX, MODEL_PREFIX) if prefer_ema else (MODEL_PREFIX,)
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def _describe(arch: dict) -> str:
    return f"'{arch.get('name')}' (width {arch.get('width_mult')}, {len(arch.get('blocks', []))} blocks)"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_detector(cfg: Any, ckpt: "str | Path", prefer_ema: bool = True):
    """Rebuild the trained :class:`tinydet.models.Detector` from ``ckpt`` (eval mode, EMA weights
    when the checkpoint has them and ``prefer_ema``).

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
    state = model_state(data["state_dict"], prefer_ema)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TinydetError(f"{ckpt_path}: weights do not fit the architecture {_describe(meta['arch'])} "
                           f"({str(exc).splitlines()[0]})") from None
    model.class_names = class_names
    return model.eval()
