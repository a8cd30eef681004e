"""Published networks into tinydet: MCUNet/OFA net configs, torchvision and timm MobileNetV2.

    imported = import_network("torchvision", "mobilenet_v2", weights="IMAGENET1K_V2")
    write_import(imported, "zoo/mbv2")        # zoo/mbv2/spec.yaml + zoo/mbv2/weights.pt

``spec.yaml`` loads with :func:`tinydet.arch.load_spec` (and works wherever a preset name does);
``weights.pt`` is a state_dict that ``tinydet.arch.build(spec)`` loads with strict=True. Weight
files and hub downloads are read here too (:func:`load_state`), for ``model.pretrained``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from tinydet.errors import TinydetError
from tinydet.zoo.convert import IMAGENET_MEAN, IMAGENET_STD, Imported, SourceNet, convert

SOURCES = ("mcunet", "torchvision", "timm")
TORCHVISION_MODELS = ("mobilenet_v2",)
SPEC_FILE, WEIGHTS_FILE = "spec.yaml", "weights.pt"


def load_state(path: str | Path) -> dict:
    """A state_dict from a .pth/.pt (optionally under 'state_dict' or 'model', 'module.' prefixes
    stripped) or a .safetensors file; errors name the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TinydetError(f"{path}: weights file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a damaged file
        raise TinydetError(f"{path}: cannot read weights ({type(exc).__name__}); expected a state_dict saved with "
                           f"torch.save (tensors only) or a .safetensors file") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TinydetError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _require(module: str, package: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TinydetError(f"{what} needs the '{package}' package: pip install {package}") from None


def _hub_error(url: str, exc: Exception, what: str) -> TinydetError:
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return TinydetError(f"{what}: cannot download {url} ({type(exc).__name__}); on an offline machine place "
                        f"that file at {target}")


def torchvision_model(name: str, weights: str | None):
    """The torchvision model (random init, a named weights enum value, or a weights file)."""
    tv = _require("torchvision.models", "torchvision", "tinydet import torchvision")
    if name not in TORCHVISION_MODELS:
        raise TinydetError(f"torchvision model '{name}' is not supported; expected one of {', '.join(TORCHVISION_MODELS)}")
    if weights is None or Path(weights).suffix in (".pth", ".pt", ".safetensors"):
        model = tv.get_model(name, weights=None)
        if weights is not None:
            _load_source_state(model, load_state(weights), weights)
        return model, weights or "none (random initialisation)"
    try:
        enum = tv.get_model_weights(name)[weights]
    except KeyError:
        names = ", ".join(w.name for w in tv.get_model_weights(name))
        raise TinydetError(f"--weights: '{weights}' is neither a weights file nor a torchvision weights name "
                           f"of {name} ({names})") from None
    try:
        model = tv.get_model(name, weights=enum)
    except Exception as exc:  # URLError, HTTPError, socket errors
        raise _hub_error(enum.url, exc, f"torchvision {name} {weights}") from None
    return model, f"torchvision {enum}"


def timm_model(name: str, weights: str | None):
    """The timm model (random init, hub weights with ``weights='hub'``, or a weights file)."""
    timm = _require("timm", "timm", "tinydet import timm")
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        raise TinydetError(f"timm: {str(exc).splitlines()[0]}") from None
    if weights == "hub":
        cfg = model.pretrained_cfg
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:
            where = f"https://huggingface.co/{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg.get("url", "?")
            raise TinydetError(f"timm {name}: cannot download the pretrained weights ({type(exc).__name__}); on an "
                               f"offline machine download the weights file (model.safetensors) from {where} and give it as "
                               f"timm:{name}:FILE (model.pretrained) or --weights FILE (tinydet import)") from None
        return model, f"timm hub {cfg.get('hf_hub_id') or cfg.get('url')}"
    if weights is not None:
        _load_source_state(model, load_state(weights), weights)
    return model, weights or "none (random initialisation)"


def _load_source_state(model, state: dict, path: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TinydetError(f"{path}: the weights do not fit the model ({str(exc).splitlines()[1].strip()[:200]})") from None


def import_network(source: str, name: str, weights: str | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> Imported:
    """Import ``name`` from ``source`` (mcunet: ``name`` is the net_config JSON path)."""
    from tinydet.zoo import mcunet, torch_models

    if source not in SOURCES:
        raise TinydetError(f"import: unknown source '{source}'; expected one of {', '.join(SOURCES)}")
    if (mean is None) != (std is None):
        raise TinydetError("import: give both --mean and --std, or neither")
    if source == "mcunet":
        net = mcunet.parse_net_config(mcunet.read_net_config(name), name, mean or mcunet.MCUNET_MEAN,
                                      std or mcunet.MCUNET_STD)
        return convert(net, load_state(weights) if weights else None, weights or "none (tinydet initialisation)")
    if source == "torchvision":
        model, origin = torchvision_model(name, weights)
        net = torch_models.torchvision_mobilenet_v2(model, name, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    else:
        model, origin = timm_model(name, weights)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        net = torch_models.timm_mobilenet_v2(model, name, mean or cfg.get("mean", IMAGENET_MEAN),
                                             std or cfg.get("std", IMAGENET_STD))
    return convert(net, model.state_dict(), origin)


def import_torch_module(source: str, model, name: str, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Imported:
    """Import an already built torchvision/timm module (what the tests and ``model.pretrained`` use)."""
    from tinydet.zoo import torch_models

    walk = {"torchvision": torch_models.torchvision_mobilenet_v2, "timm": torch_models.timm_mobilenet_v2}[source]
    net: SourceNet = walk(model, name, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    return convert(net, model.state_dict(), f"{source} module")


def write_import(imported: Imported, out: str | Path) -> Path:
    """Write ``out/spec.yaml`` and ``out/weights.pt`` (each atomically: a crash leaves no half file)."""
    from tinydet.arch.spec import save_spec
    from tinydet.io.atomic import atomic_torch_save

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TinydetError(f"--out: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    save_spec(imported.spec, out / SPEC_FILE)
    atomic_torch_save(imported.state_dict, out / WEIGHTS_FILE)
    return out
