"""``model.pretrained``: start a detector's backbone from published (or tinydet-trained) weights.

Accepted values (paths relative to the cwd, else to the config's folder, else to the repository root):

* ``torchvision:IMAGENET1K_V2`` (or ``torchvision:mobilenet_v2:IMAGENET1K_V2``): torchvision's
  download into torch's hub cache; offline, the error names the file and the folder to put it in;
* ``timm:<name>`` (the hub, timm's cache) or ``timm:<name>:<file.safetensors|.pth>``;
* ``mcunet:<net_config.json>[:<weights.pth>]`` (default: the .pth beside the JSON, as the zoo ships them);
* an imported folder (``tinydet import ... --out DIR``: DIR/spec.yaml + DIR/weights.pt);
* a tinydet checkpoint ``.ckpt`` (its EMA weights when it has them).

The source's backbone must be the detector's (same blocks, widths, shortcuts, BN eps and input
normalisation, up to the last tapped block), every backbone tensor is loaded, and the only
tensors the source lacks may be the head's: a typo or a mismatch never trains from scratch.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tinydet.arch.spec import ArchSpec
from tinydet.errors import TinydetError

SCHEMES = ("torchvision", "timm", "mcunet")
DETECTOR_ONLY = ("heads.", "anchors", "strides")


@dataclass
class Pretrained:
    """What a ``model.pretrained`` value resolved to: the source's spec and state_dict."""

    spec: ArchSpec
    state_dict: dict
    origin: str


def _path(text: str, config_path: str | None) -> Path:
    """``text`` relative to the cwd, else to the config's folder, else to the repository root
    (as ``model.arch`` is resolved, so the shipped configs' ``weights/`` works from anywhere)."""
    path = Path(text)
    if path.is_absolute() or path.exists():
        return path
    bases = ([Path(config_path).parent] if config_path else []) + [Path(__file__).resolve().parents[2]]
    return next((base / text for base in bases if (base / text).exists()), path)


def check_value(value: str, where: str) -> None:
    """Syntax check for config validation (files are looked up when the weights are loaded)."""
    scheme, _, rest = value.partition(":")
    if scheme in SCHEMES:
        if not rest:
            raise TinydetError(f"{where}: '{value}' names no {scheme} weights; expected e.g. "
                               f"torchvision:IMAGENET1K_V2, timm:mobilenetv2_100, mcunet:net.json[:net.pth]")
        return
    if ":" in value and not Path(value).exists():
        raise TinydetError(f"{where}: unknown scheme '{scheme}:'; expected one of {', '.join(s + ':' for s in SCHEMES)}, "
                           f"an imported folder or a .ckpt file")


def resolve(value: str, config_path: str | None = None) -> Pretrained:
    """Load the weights ``value`` names (see the module docstring)."""
    from tinydet.zoo import SPEC_FILE, WEIGHTS_FILE, import_network, load_state

    scheme, _, rest = value.partition(":")
    if scheme == "torchvision":
        parts = rest.split(":")
        name, weights = (parts[0], parts[1]) if len(parts) == 2 else ("mobilenet_v2", parts[0])
        imported = import_network("torchvision", name, weights)
        return Pretrained(imported.spec, imported.state_dict, imported.weights)
    if scheme == "timm":
        name, _, file = rest.partition(":")
        imported = import_network("timm", name, str(_path(file, config_path)) if file else "hub")
        return Pretrained(imported.spec, imported.state_dict, imported.weights)
    if scheme == "mcunet":
        config, _, weights = rest.partition(":")
        config_file = _path(config, config_path)
        weights_file = _path(weights, config_path) if weights else config_file.with_suffix(".pth")
        if not weights_file.is_file():
            raise TinydetError(f"model.pretrained: no weights for {config_file}: give mcunet:{config}:WEIGHTS.pth or "
                               f"place {weights_file.name} (from https://hanlab.mit.edu/projects/tinyml/mcunet/release/"
                               f"{weights_file.name}) at {weights_file}")
        imported = import_network("mcunet", str(config_file), str(weights_file))
        return Pretrained(imported.spec, imported.state_dict, imported.weights)
    path = _path(value, config_path)
    if path.is_dir():
        from tinydet.arch.spec import load_spec

        if not (path / SPEC_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise TinydetError(f"model.pretrained: {path} is not an imported folder (expected {SPEC_FILE} and "
                               f"{WEIGHTS_FILE}, written by tinydet import)")
        return Pretrained(load_spec(path / SPEC_FILE), load_state(path / WEIGHTS_FILE), str(path))
    if path.suffix == ".ckpt":
        from tinydet.arch.spec import spec_from_dict
        from tinydet.io.checkpoint import model_state, read_checkpoint

        data = read_checkpoint(path)
        return Pretrained(spec_from_dict(data["tinydet"]["arch"], f"{path} (arch)"), model_state(data["state_dict"]),
                          str(path))
    raise TinydetError(f"model.pretrained: '{value}' is neither a {'/'.join(SCHEMES)} source, an imported folder "
                       f"nor a .ckpt file (looked for {path})")


def _backbone(spec: ArchSpec, upto: int) -> list[tuple]:
    """Per block what the weights depend on: type, channels, kernel, stride, expand, shortcut."""
    return [(b.type, spec.channels(i), spec.in_channels_of(i), b.kernel, b.stride, b.expand, spec.has_residual(i))
            for i, b in enumerate(spec.blocks[: upto + 1])]


def check_same_backbone(source: ArchSpec, target: ArchSpec, origin: str, upto: int | None = None) -> None:
    """The source network must compute the target's backbone: up to block ``upto`` (default: the
    detector's last tapped block; a classifier passes its last block)."""
    upto = max(target.head_from) if upto is None else upto
    mine, theirs = _backbone(target, upto), _backbone(source, upto)
    names = ("type", "out channels", "in channels", "kernel", "stride", "expand", "shortcut")
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            k = next(j for j in range(len(a)) if a[j] != b[j])
            raise TinydetError(f"model.pretrained {origin}: block {i} {names[k]} is {b[k]} in the source but "
                               f"{a[k]} in model.arch {target.name}; set model.arch to the source's spec "
                               f"(tinydet import ... --out DIR, then model.arch: DIR)")
    if len(theirs) < len(mine):
        raise TinydetError(f"model.pretrained {origin}: the source has {len(source.blocks)} blocks, model.arch "
                           f"{target.name} taps block {upto}")
    for field in ("bn_eps", "input_mean", "input_std", "in_channels"):
        if getattr(source, field) != getattr(target, field):
            raise TinydetError(f"model.pretrained {origin}: {field} is {getattr(source, field)} in the source but "
                               f"{getattr(target, field)} in model.arch {target.name}; set model.arch to the "
                               f"source's spec (tinydet import ... --out DIR, then model.arch: DIR)")


@dataclass
class LoadReport:
    """What :func:`load_into` did: tensor names loaded, source tensors left out, target tensors fresh."""

    loaded: list[str]
    skipped: list[str]
    fresh: list[str]

    def summary(self, origin: str, used_blocks: int, backbone: int) -> str:
        def names(keys: list[str]) -> str:
            groups: dict[str, int] = {}
            for k in keys:
                part = k.split(".")
                group = f"blocks.{part[1]}+" if part[0] == "blocks" else ".".join(part[:2])
                groups[group] = groups.get(group, 0) + 1
            return ", ".join(f"{g} ({n})" for g, n in groups.items()) or "none"

        return (f"tinydet: model.pretrained {origin}: loaded {backbone} backbone tensors (blocks 0.."
                f"{used_blocks - 1}){' + ' + str(len(self.loaded) - backbone) + ' classifier' if len(self.loaded) > backbone else ''}; skipped {len(self.skipped)} source tensors: {names(self.skipped)}; "
                f"{len(self.fresh)} tensors start fresh: {names(self.fresh)}")


def load_into(model, pretrained: Pretrained) -> int:
    """Load the backbone tensors of ``pretrained`` into ``model`` (a detector, or a classifier of
    ``task: classify``); returns how many; logs what was loaded, skipped and left fresh.

    Raises unless every backbone tensor of the target is loaded. Only the detector's head (and
    anchors) and a classifier's ``classifier.*`` may start fresh; a classifier takes the source's
    ``classifier.fc`` too when its shape fits (same number of classes). Every source tensor left
    over must belong to blocks the target does not use or to the source's classifier.
    """
    used = len(model.blocks)
    is_classifier = getattr(model, "classifier", None) is not None
    check_same_backbone(pretrained.spec, model.spec, pretrained.origin, used - 1 if is_classifier else None)
    target = model.state_dict()
    own = DETECTOR_ONLY + (("classifier.",) if is_classifier else ())
    take = {k: v for k, v in pretrained.state_dict.items() if k in target and not k.startswith(own)}
    for key, value in take.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise TinydetError(f"model.pretrained {pretrained.origin}: tensor '{key}' has shape {tuple(value.shape)}, "
                               f"the target's is {tuple(target[key].shape)}")
    missing = [k for k in target if k not in take and not k.startswith(own)]
    if missing:
        raise TinydetError(f"model.pretrained {pretrained.origin}: {len(missing)} backbone tensors are missing in the "
                           f"source (first: '{missing[0]}'); the weights do not match model.arch")
    extra = [k for k in pretrained.state_dict if k not in target and not (
        k.startswith("classifier.") or k.startswith(DETECTOR_ONLY)
        or (k.startswith("blocks.") and int(k.split(".")[1]) >= used))]
    if extra:
        raise TinydetError(f"model.pretrained {pretrained.origin}: source tensor '{extra[0]}' has no place in the "
                           f"target; the weights do not match model.arch")
    backbone = len(take)
    if is_classifier:  # the source's classifier when it has this many classes
        head = {k: v for k, v in pretrained.state_dict.items() if k.startswith("classifier.") and k in target}
        if head and all(tuple(v.shape) == tuple(target[k].shape) for k, v in head.items()):
            take.update(head)
    model.load_state_dict(take, strict=False)
    report = LoadReport(loaded=list(take), skipped=[k for k in pretrained.state_dict if k not in take],
                        fresh=[k for k in target if k not in take and not k.startswith(("anchors", "strides"))])
    print(report.summary(pretrained.origin, used, backbone), file=sys.stderr)
    return backbone
