"""``schedule.json`` of an export folder: writing, loading with version + checksum checks, and
adding files (the quantizer's ``*.int8.onnx``) with the checksums updated atomically.

Format version 2 writes every pad as a named object ``{"top", "left", "bottom", "right"}`` and
carries the per-layer arena (``arena_layer``) next to the patch one (``arena``). Version 1 folders
(pads as ``[left, right, top, bottom]`` lists, no ``arena_layer``) still load: :func:`load_export`
upgrades them in memory, so every reader sees version 2.

Every write goes through :mod:`tinydet.io.atomic` (temp file, fsync, ``os.replace``), so a reader
never sees a half-written file; ``schedule.json`` is always written last, after the files it describes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tinydet.errors import TinydetError
from tinydet.geometry import Pads
from tinydet.io.atomic import atomic_write_bytes, atomic_write_json
from tinydet.io.jsonfile import read_json
from tinydet.schedule.planner import FORMAT_VERSION as PLAN_FORMAT_VERSION

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SCHEDULE = "schedule.json"
REQUIRED = ("full.onnx", "stage1_patch.onnx", "stage2.onnx")
MODEL_PATTERNS = ("*.onnx", "*.tflite")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_schedule(folder: Path, schedule: Mapping[str, Any]) -> None:
    """Write ``schedule.json`` atomically (sorted nothing: key order is the documented order)."""
    atomic_write_json(Path(folder) / SCHEDULE, schedule)


def checksum_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """``{name: {sha256, bytes}}`` of every model file (``*.onnx``, ``*.tflite``) in ``folder``."""
    folder = Path(folder)
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in _model_files(folder)}


def _model_files(folder: Path) -> list[Path]:
    """The model files an export folder's checksums must cover."""
    return sorted(p for pattern in MODEL_PATTERNS for p in Path(folder).glob(pattern))


@dataclass
class ExportFolder:
    """A verified export folder: ``schedule`` is the parsed schedule.json in the current format
    (upgraded in memory from ``source_version``, the version on disk)."""

    root: Path
    schedule: dict
    source_version: int = FORMAT_VERSION

    def path(self, name: str) -> Path:
        """Path of a listed file; a file the folder does not list is a TinydetError naming it."""
        if name not in self.schedule["files"]:
            have = ", ".join(sorted(self.schedule["files"]))
            hint = " (run `tinydet quantize` on the folder first)" if name.endswith(".int8.onnx") else ""
            raise TinydetError(f"{self.root}: no {name} in the export folder{hint}; it has {have}")
        return self.root / name

    def has(self, name: str) -> bool:
        return name in self.schedule["files"]

    @property
    def split(self) -> int:
        return int(self.schedule["split"])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.schedule["grid"])

    @property
    def outputs(self) -> list[str]:
        return list(self.schedule["outputs"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.schedule["input"]["shape"])


def load_export(folder: "str | Path", verify: bool = True) -> ExportFolder:
    """Read ``folder/schedule.json``; check its format version and, with ``verify``, that every
    listed file exists with its recorded sha256 and that no unlisted ONNX file is present."""
    root = Path(folder)
    if not root.is_dir():
        raise TinydetError(f"{root}: export folder does not exist (expected the --out folder of `tinydet export`)")
    sched_path = root / SCHEDULE
    if not sched_path.is_file():
        raise TinydetError(f"{root}: schedule.json is missing; expected an export folder written by `tinydet export`")
    schedule = read_json(sched_path, "schedule.json", hint="the file was modified after export")
    if not isinstance(schedule, dict):
        raise TinydetError(f"{sched_path}: expected a JSON object, got {type(schedule).__name__}")
    version = schedule.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise TinydetError(f"{sched_path}: format_version: expected one of {', '.join(map(str, READABLE_VERSIONS))}, "
                           f"got {version!r}; re-export the model with this tinydet")
    files = schedule.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise TinydetError(f"{sched_path}: files: expected {{name: {{sha256, bytes}}}}, got {files!r}")
    for name in REQUIRED:
        if name not in files:
            raise TinydetError(f"{sched_path}: files: {name} is not listed; expected {', '.join(REQUIRED)}")
    if verify:
        for name, entry in files.items():
            path = root / name
            if not path.is_file():
                raise TinydetError(f"{root}: {name} is missing (listed in schedule.json); re-export the folder")
            if sha256_file(path) != entry["sha256"]:
                raise TinydetError(f"{root}: checksum mismatch: {name} was modified after export")
        extra = sorted(p.name for p in _model_files(root) if p.name not in files)
        if extra:
            raise TinydetError(f"{root}: {extra[0]} is not listed in schedule.json; add files with "
                               f"tinydet.export.add_files so their checksums are recorded")
    if version == 1:
        schedule = upgrade_v1(schedule, str(sched_path))
    return ExportFolder(root, schedule, version)


def _named_pads(value: Any, where: str) -> dict[str, int]:
    try:
        return Pads.load(value).to_dict()
    except (KeyError, TypeError, ValueError):
        raise TinydetError(f"{where}: expected pads [left, right, top, bottom] (format version 1) or "
                           f"{{top, left, bottom, right}}, got {value!r}") from None


def _upgrade_tile_pads(tile: dict, where: str) -> None:
    """A v1 tile (schedule.json ``tiles`` or the plan's) with its pad lists named, in place."""
    if "pad" in tile:
        tile["pad"] = _named_pads(tile["pad"], f"{where}: pad")
    for name, region in tile.get("regions", {}).items():
        region["pad"] = _named_pads(region["pad"], f"{where}: regions: {name}: pad")
    for key in ("pads", "shortcut_crop"):
        if key in tile:
            tile[key] = {op: _named_pads(v, f"{where}: {key}: {op}") for op, v in tile[key].items()}


def layer_arena(schedule: Mapping[str, Any], where: str = SCHEDULE) -> dict[str, Any]:
    """The per-layer ArenaPlan (``to_dict()``) of the network ``schedule`` describes: its arch spec
    lowered at its input size and allocated with its memory rules. Only version-1 folders need
    this; from version 2 on export writes it as ``arena_layer``."""
    from tinydet.arch.graph import lower
    from tinydet.arch.spec import HeadSpec, spec_from_dict
    from tinydet.schedule.arena import allocate
    from tinydet.schedule.memory import MemoryRules

    try:
        arch = schedule["arch"]
        spec = spec_from_dict(arch["spec"], f"{where}: arch.spec")
        head = HeadSpec(**arch["head"]) if arch.get("head") else None
        _, h, w = schedule["input"]["shape"]
        rules = MemoryRules.from_dict(schedule.get("memory", {}).get("rules", {}))
        names = [op["name"] for op in schedule["ops"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise TinydetError(f"{where}: cannot rebuild the per-layer arena ({type(exc).__name__}: {exc}); "
                           f"expected arch, input and ops as `tinydet export` writes them") from None
    arena = allocate(lower(spec, (int(h), int(w)), head=head), None, rules).to_dict()
    if [s["op"] for s in arena["steps"]] != names:
        raise TinydetError(f"{where}: ops differ from the network its arch spec lowers to; re-export the folder")
    return arena


def upgrade_v1(schedule: dict, where: str = SCHEDULE) -> dict:
    """A format-version-1 schedule.json mapping in the current format: pads named, the per-layer
    arena added (the ONNX files and their checksums are the same in both versions)."""
    out = json.loads(json.dumps(schedule))  # a deep copy: the caller's mapping stays as read
    for i, tile in enumerate(out.get("tiles", [])):
        _upgrade_tile_pads(tile, f"{where}: tiles[{i}]")
    plan = out.get("memory", {}).get("plan")
    if isinstance(plan, dict):
        for i, tile in enumerate(plan.get("tiles", [])):
            _upgrade_tile_pads(tile, f"{where}: memory.plan.tiles[{i}]")
        plan["format_version"] = PLAN_FORMAT_VERSION
    out["arena_layer"] = layer_arena(out, where)
    out["format_version"] = FORMAT_VERSION
    return out


def add_files(folder: "str | Path", files: Mapping[str, bytes]) -> ExportFolder:
    """Add (or replace) files in a verified export folder and record their checksums.

    Each file is written atomically, then schedule.json (last) with the new ``files`` entries, so
    an interrupted call leaves either the old folder or one whose checks name the stale file.
    """
    export = load_export(folder)
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or name in (SCHEDULE, "") or name.startswith("."):
            raise TinydetError(f"add_files: file name {name!r}: expected a plain file name other than schedule.json")
        if name in REQUIRED:
            raise TinydetError(f"add_files: {name} is written by `tinydet export` and cannot be replaced")
    entries = dict(export.schedule["files"])
    for name, data in files.items():
        atomic_write_bytes(export.root / name, bytes(data))
        entries[name] = {"sha256": sha256_bytes(bytes(data)), "bytes": len(data)}
    export.schedule["files"] = entries
    write_schedule(export.root, export.schedule)
    return export
