"""Experiment configs: YAML file + ``--set a.b=value`` overrides -> validated :class:`Config`.

The schema is the ``DEFAULTS`` tree below: every key a user may write exists there, so an unknown
key is an error that names the file, the key path and the closest valid key. A key's type is its
default's type (an int default also accepts nothing but ints, a float default accepts ints);
keys whose default is ``null`` declare their accepted types in ``NULLABLE``. Sections other
engineers own (quant, export, deploy, search) may be extended here additively.
"""
from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from tinydet.errors import TinydetError, closest

TASKS = ("detect", "classify")

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    # detect: boxes (YOLO-style head, mAP); classify: one label per image (global average pool +
    # fully connected, top-1 / top-5; data.format imagefolder or vww)
    "task": "detect",
    "model": {
        "arch": "mbv2-w0.35",          # preset name or path to a spec .yaml/.json
        "width_mult": None,            # null = the spec's own
        # backbone weights to start from (tinydet.zoo.pretrained): torchvision:IMAGENET1K_V2,
        # timm:<name>[:<file>], mcunet:<net_config.json>[:<weights.pth>], an imported folder, a .ckpt
        "pretrained": None,
        "resolution": 320,             # int or [H, W]
        "head": {"channels": 64, "num_anchors": 3, "kernel": 3},
        # per head scale (stride 16, then 32, ...) a list of [w, h] anchors in input pixels
        "anchors": [[[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    },
    "data": {},  # tinydet.data.DATA_DEFAULTS is merged in when importable
    "train": {
        "epochs": 100,
        "max_steps": -1,               # -1 = no step limit
        "batch_size": 32,
        "lr": 0.01,
        "weight_decay": 0.0005,
        "momentum": 0.937,
        "optimizer": "sgd",            # sgd | adamw
        "warmup_epochs": 3.0,
        "cosine": True,                # cosine decay to lr * final_lr_frac after warm-up (else constant)
        "final_lr_frac": 0.01,
        "num_workers": 2,
        "seed": 0,
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",
        "num_nodes": 1,
        "precision": "32-true",
        "ema": {"enabled": True, "decay": 0.9999, "tau": 2000.0},
        "out_dir": None,               # null = runs/<name>
        "loggers": ["csv", "tensorboard"],
        "check_val_every_n_epoch": 1,
        "ckpt_every_n_steps": 0,       # 0 = only at epoch ends
        "progress_bar": True,
        # (training augmentation is data.augment, owned by tinydet.data)
        # YOLOv5-style loss (see tinydet.models.loss)
        "loss": {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0, "box_iou": "ciou", "balance": None},
        # task classify: cross-entropy label smoothing, and knowledge distillation from a teacher
        # checkpoint (loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T))
        "label_smoothing": 0.1,
        "distill": {"teacher": None, "alpha": 0.5, "temperature": 4.0},
    },
    "eval": {"conf_thresh": 0.001, "nms_iou": 0.6, "max_det": 100, "split": "val"},
    "quant": {"qat": False, "calib": 64, "method": "minmax", "qat_epochs": 1, "qat_lr": 0.0005},
    "export": {"plan": "auto", "grid": None, "split": None, "sram_budget": None, "max_overhead": 0.1, "out": None,
               "fusion": False},  # fusion: fuse the inverted residuals the plan's peak needs (schedule.json v3)
    "deploy": {"target": "qemu-mps2-an500", "mode": "patch", "images": 4},
    "search": {
        "population": 16, "generations": 4, "mutation_prob": 0.1, "crossover_prob": 0.5,
        "supernet_epochs": 1, "seed": 0, "kernels": [3, 5, 7], "expands": [3, 4, 6],
        "widths": [0.35, 0.5, 0.75], "resolutions": [96, 128, 160], "grids": [2, 3, 4],
        # tinydet.nas: per-stage depth choices (null = MobileNetV2-like defaults), split range,
        # sandwich size, BN-recalibration batches, rejection-sampling tries, parents kept
        "depths": None, "head_stages": None, "max_split_stage": 3, "min_split": 2, "n_random": 2, "recal_batches": 4,
        "max_tries": 2000, "parent_ratio": 0.25, "max_val_images": 0, "supernet_max_steps": -1,
        # candidates' peak SRAM with the inverted residuals their peak needs fused (tinydet.schedule.fusion)
        "fusion": False,
    },
}

# keys whose default is null (or that take several types): the types they accept
NULLABLE: dict[str, tuple[type, ...]] = {
    "model.width_mult": (float, type(None)),
    "model.pretrained": (str, type(None)),
    "model.resolution": (int, list),
    "train.out_dir": (str, type(None)),
    "train.devices": (int, str, list),
    "train.precision": (str, int),
    "train.loss.balance": (list, type(None)),
    "train.distill.teacher": (str, type(None)),
    "export.grid": (int, list, type(None)),
    "export.split": (int, type(None)),
    "export.sram_budget": (int, type(None)),
    "export.out": (str, type(None)),
    "search.depths": (list, type(None)),
    "search.head_stages": (list, type(None)),
    "data.augment": (dict, bool),
}

# mappings whose keys are free-form (validated by their owner: tinydet.data checks data.augment)
FREE_SECTIONS = {"data.augment"}



@dataclass(frozen=True)
class Range:
    """The accepted values of a numeric key: ``lo``/``hi`` bounds (``None`` = unbounded; open
    bounds exclude the value itself) plus ``also`` (sentinels such as -1 = no limit)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()

    def accepts(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))

    def describe(self, what: str = "a number") -> str:
        if self.lo is not None and self.hi is not None:
            text = f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            text = f"{what} {'<' if self.hi_open else '<='} {self.hi:g}"
        return text + "".join(f" or {v}" for v in self.also)


POSITIVE, NON_NEGATIVE, FRACTION = Range(0, lo_open=True), Range(0), Range(0, 1)
COUNT = Range(1)  # integers >= 1

#: The numeric range of every number in the schema, checked in one place (:func:`check_ranges`)
#: before anything (Lightning, the model builder, the planner) sees a value. A list-valued key
#: applies its range to every element. Keys that take null accept it besides their range.
RANGES: dict[str, Range] = {
    "model.width_mult": POSITIVE,
    "model.head.channels": COUNT, "model.head.num_anchors": COUNT, "model.head.kernel": COUNT,
    "train.epochs": COUNT, "train.max_steps": Range(1, also=(-1,)), "train.batch_size": COUNT,
    "train.lr": POSITIVE, "train.weight_decay": NON_NEGATIVE, "train.momentum": Range(0, 1, hi_open=True),
    "train.warmup_epochs": NON_NEGATIVE, "train.final_lr_frac": FRACTION, "train.num_workers": NON_NEGATIVE,
    "train.seed": Range(0, 2 ** 32 - 1), "train.num_nodes": COUNT,
    "train.ema.decay": Range(0, 1, lo_open=True, hi_open=True), "train.ema.tau": POSITIVE,
    "train.check_val_every_n_epoch": COUNT, "train.ckpt_every_n_steps": NON_NEGATIVE,
    "train.loss.box": NON_NEGATIVE, "train.loss.obj": NON_NEGATIVE, "train.loss.cls": NON_NEGATIVE,
    "train.loss.anchor_t": POSITIVE, "train.loss.balance": POSITIVE,
    "train.label_smoothing": Range(0, 1, hi_open=True), "train.distill.alpha": FRACTION,
    "train.distill.temperature": POSITIVE,
    "eval.conf_thresh": FRACTION, "eval.nms_iou": FRACTION, "eval.max_det": COUNT,
    "quant.calib": COUNT, "quant.qat_epochs": COUNT, "quant.qat_lr": POSITIVE,
    "export.grid": COUNT, "export.split": COUNT, "export.sram_budget": COUNT, "export.max_overhead": NON_NEGATIVE,
    "deploy.images": COUNT,
    "search.population": COUNT, "search.generations": COUNT, "search.mutation_prob": FRACTION,
    "search.crossover_prob": FRACTION, "search.supernet_epochs": COUNT, "search.seed": Range(0, 2 ** 32 - 1),
    "search.kernels": COUNT, "search.expands": POSITIVE, "search.widths": POSITIVE,
    "search.resolutions": COUNT, "search.grids": COUNT, "search.max_split_stage": COUNT,
    "search.min_split": COUNT, "search.n_random": NON_NEGATIVE, "search.recal_batches": NON_NEGATIVE,
    "search.max_tries": COUNT, "search.parent_ratio": Range(0, 1, lo_open=True),
    "search.max_val_images": NON_NEGATIVE, "search.supernet_max_steps": Range(1, also=(-1,)),
}

#: Lightning's precision names (lightning.fabric.connector._PRECISION_INPUT), accepted as given.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a mapping", type(None): "null"}


class Config(dict):
    """A nested dict with attribute access (``cfg.train.lr``); ``source`` is the file it came from."""

    source: str = "<config>"

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "source":
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def __deepcopy__(self, memo):
        out = Config({k: copy.deepcopy(v, memo) for k, v in self.items()})
        out.source = self.source
        return out

    def __reduce__(self):  # picklable (DDP spawn, checkpoints) as a plain nested dict
        return (_rebuild, (to_dict(self), self.source))

    def to_dict(self) -> dict:
        return to_dict(self)


def _rebuild(data: dict, source: str) -> Config:
    cfg = _wrap(data)
    cfg.source = source
    return cfg


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Config({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def to_dict(value: Any) -> Any:
    """Plain dicts/lists (for YAML, JSON and checkpoints)."""
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dict(v) for v in value]
    return value


def defaults() -> dict:
    """The full default tree, with the data section's defaults when tinydet.data is importable."""
    tree = copy.deepcopy(DEFAULTS)
    try:
        from tinydet.data.records import DATA_DEFAULTS
    except ImportError:
        DATA_DEFAULTS = None
    if DATA_DEFAULTS is not None:
        tree["data"] = copy.deepcopy(dict(DATA_DEFAULTS))
    return tree


def _suggest(key: str, allowed: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid keys: {', '.join(sorted(allowed))})"


def _check_type(value: Any, default: Any, path: str, source: str) -> Any:
    kinds = NULLABLE.get(path)
    if kinds is None:
        if default is None:
            return value
        kinds = (type(default),)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise TinydetError(f"{source}: {path}: expected {expected}, got {value!r}")
    return value


def merge(base: dict, update: dict, source: str, prefix: str = "") -> dict:
    """Merge ``update`` into a copy of ``base``; unknown keys and wrong types raise TinydetError."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        where = prefix.rstrip(".") or "top level"
        raise TinydetError(f"{source}: {where}: expected a mapping, got {update!r}")
    for key, value in update.items():
        path = f"{prefix}{key}"
        # free-form mappings, and the data section while tinydet.data does not declare its defaults
        if prefix.rstrip(".") in FREE_SECTIONS or (not base and prefix):
            out[key] = value
            continue
        if key not in base:
            raise TinydetError(f"{source}: unknown key '{path}'{_suggest(str(key), base)}")
        default = base[key]
        if isinstance(default, dict) and path not in NULLABLE:
            out[key] = merge(default, value, source, path + ".")
        else:
            out[key] = _check_type(value, default, path, source)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], YAML-parsed value)."""
    if "=" not in text:
        raise TinydetError(f"--set {text}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise TinydetError(f"--set {text}: expected a dotted key such as train.epochs, got {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise TinydetError(f"--set {text}: value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return parts, value


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for p in reversed(parts):
        out = {p: out}
    return out


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}:" if mark is not None else ""
        raise TinydetError(f"{path}:{at} malformed YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TinydetError(f"{path}: expected a mapping of sections (model, data, train, ...), got {type(data).__name__}")
    return data


def from_dict(data: dict, source: str = "<config>", overrides: Iterable[str] = ()) -> Config:
    """Validate a config mapping (e.g. stored in a checkpoint) plus overrides."""
    tree = merge(defaults(), data, source)
    origins: dict[str, str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        tree = merge(tree, _nest(parts, value), f"--set {text}")
        origins[".".join(parts)] = f"--set {text}"
    _check_semantics(tree, Origin(source, origins))
    if tree["train"]["out_dir"] is None:
        tree["train"]["out_dir"] = str(Path("runs") / tree["name"])
    cfg = _wrap(tree)
    cfg.source = source
    return cfg


def load_config(path: "str | Path", overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (YAML), apply ``--set`` overrides, validate, fill defaults."""
    path = Path(path)
    data = _read_yaml(path)
    return from_dict(data, str(path), overrides)


class Origin:
    """Names where a key's value came from in error messages: the ``--set`` override that set it
    (or a section above it), else the config file."""

    def __init__(self, source: str, overrides: dict[str, str]) -> None:
        self.source, self.overrides = source, overrides

    def __call__(self, path: str) -> str:
        """The origin of ``path``; for a section, the file plus the overrides inside it."""
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.overrides:
                return self.overrides[".".join(parts[:n])]
        inside = [text for key, text in self.overrides.items() if key.startswith(path + ".")]
        return self.source + "".join(f" with {text}" for text in inside)

    def check_section(self, section: str, check: Callable[[str], Any]) -> Any:
        """Run a section's own validator (``check(source)``, which names ``source``); an error
        about a ``section.key`` that an override set is re-attributed to that override."""
        try:
            return check(self.source)
        except TinydetError as exc:
            message = str(exc)
            if not message.startswith(self.source + ": "):
                raise
            keys = re.findall(rf"\b{re.escape(section)}\.\w+", message)
            key = next((k for k in keys if self(k) != self.source and not self(k).startswith(self.source)), None)
            origin = self(key) if key else self(section)
            raise TinydetError(origin + message[len(self.source):]) from None


def _lookup(tree: dict, path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_ranges(tree: dict, where: "Origin | str") -> None:
    """Every number of :data:`RANGES` within its range (list values element by element); NaN and
    infinities are out of every range. ``where`` names the file (or override) in the error."""
    origin = where if isinstance(where, Origin) else Origin(where, {})
    for path, rng in RANGES.items():
        value = _lookup(tree, path)
        values = list(value) if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, list):  # export.grid [rows, cols], nested lists of search choices
                values.extend(v)
                continue
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not rng.accepts(v):
                raise TinydetError(f"{origin(path)}: {path}: expected {rng.describe(_number_kind(path))}, "
                                   f"got {value!r}")


def _number_kind(path: str) -> str:
    """'an integer' for keys that take only integers, else 'a number' (for range messages)."""
    default = _lookup(DEFAULTS, path)
    if isinstance(default, list) and default:
        default = default[0]
    kinds = NULLABLE.get(path, (type(default),))
    return "an integer" if int in kinds and float not in kinds else "a number"


def _check_trainer_flags(train: dict, origin: Origin) -> None:
    """Lightning's own flags, checked here so Lightning never raises on a config value."""
    if train["precision"] not in PRECISIONS:
        raise TinydetError(f"{origin('train.precision')}: train.precision: expected one of "
                           f"{', '.join(dict.fromkeys(str(p) for p in PRECISIONS))}, got {train['precision']!r}"
                           f"{closest(str(train['precision']), [str(p) for p in PRECISIONS])}")
    if train["accelerator"] not in ACCELERATORS:
        raise TinydetError(f"{origin('train.accelerator')}: train.accelerator: expected one of "
                           f"{', '.join(ACCELERATORS)}, got {train['accelerator']!r}")
    devices = train["devices"]
    if isinstance(devices, str) and devices != "auto":
        items = devices.split(",")
        ok = all(i.strip().isdigit() for i in items) or devices.strip() == "-1"
        ok = ok and (len(items) > 1 or devices.strip() == "-1" or int(devices) >= 1)
    elif isinstance(devices, list):
        ok = bool(devices) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices) \
            and len(set(devices)) == len(devices)
    elif isinstance(devices, int):
        ok = devices >= 1 or devices == -1
    else:
        ok = devices == "auto"
    if not ok:
        raise TinydetError(f"{origin('train.devices')}: train.devices: expected auto, a device count >= 1, "
                           f"-1 (all), or a list of device indices, got {devices!r}")


def _check_semantics(tree: dict, origin: Origin) -> None:
    """Checks beyond key/type: values in range and consistent with each other."""
    from tinydet.arch.graph import parse_resolution

    model, train = tree["model"], tree["train"]
    if tree["task"] not in TASKS:
        raise TinydetError(f"{origin('task')}: task: expected one of {', '.join(TASKS)}, got {tree['task']!r}")
    check_ranges(tree, origin)
    _check_trainer_flags(train, origin)
    if model["head"]["kernel"] % 2 == 0:
        raise TinydetError(f"{origin('model.head.kernel')}: model.head.kernel: expected an odd kernel size "
                           f"(the head's depthwise conv keeps the map size), got {model['head']['kernel']}")
    try:
        parse_resolution(model["resolution"])
    except TinydetError as exc:
        raise TinydetError(f"{origin('model.resolution')}: model.{exc}") from None
    if model["pretrained"] is not None:
        from tinydet.zoo.pretrained import check_value

        check_value(model["pretrained"], f"{origin('model.pretrained')}: model.pretrained")
    if train["optimizer"] not in ("sgd", "adamw"):
        raise TinydetError(f"{origin('train.optimizer')}: train.optimizer: expected sgd or adamw, got {train['optimizer']!r}")
    if train["loss"]["box_iou"] not in ("ciou", "giou"):
        raise TinydetError(f"{origin('train.loss.box_iou')}: train.loss.box_iou: expected ciou or giou, got {train['loss']['box_iou']!r}")
    for logger in train["loggers"]:
        if logger not in ("csv", "tensorboard"):
            raise TinydetError(f"{origin('train.loggers')}: train.loggers: expected entries csv or tensorboard, got {logger!r}")
    anchors = model["anchors"]
    ok = isinstance(anchors, list) and anchors and all(
        isinstance(scale, list) and scale and all(
            isinstance(a, list) and len(a) == 2 and all(isinstance(v, (int, float)) and 0 < v < math.inf for v in a)
            for a in scale) for scale in anchors)
    if not ok:
        raise TinydetError(f"{origin('model.anchors')}: model.anchors: expected per head scale a list of [w, h] pairs "
                           f"of positive numbers, got {anchors!r}")
    counts = {len(scale) for scale in anchors}
    if counts != {model["head"]["num_anchors"]}:
        raise TinydetError(f"{origin('model.anchors')}: model.anchors: every scale needs model.head.num_anchors="
                           f"{model['head']['num_anchors']} anchors, got {sorted(counts)}")
    try:
        from tinydet.data.records import resolve_data_cfg
    except ImportError:
        resolve_data_cfg = None
    if tree["task"] == "classify":
        from tinydet.data.imagefolder import resolve_classify_data_cfg

        origin.check_section("data", lambda source: resolve_classify_data_cfg(tree["data"], source))
    elif resolve_data_cfg is not None:
        origin.check_section("data", lambda source: resolve_data_cfg(tree["data"], source))
