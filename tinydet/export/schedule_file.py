"""``schedule.json`` of an export folder: writing, loading with version, checksum and value
checks, and adding files (the quantizer's ``*.int8.onnx``) as one atomic change of the folder.

Format version 2 writes every pad as a named object ``{"top", "left", "bottom", "right"}`` and
carries the per-layer arena (``arena_layer``) next to the patch one (``arena``). Version 3 records
fusion: every ``rules`` object has ``fused_blocks`` (the inverted residuals run fused and
row-streamed, :mod:`tinydet.schedule.fusion`; ``[]`` = none) and each arena step ``fused_ops`` /
``input_from`` (a fused block is one step). Version 1 folders (pads as ``[left, right, top,
bottom]`` lists, no ``arena_layer``) and version 2 folders (no fusion) still load:
:func:`load_export` upgrades them in memory, so every reader sees version 3.

Checksums: ``manifest.json`` (:mod:`tinydet.io.manifest`) lists every file of the folder,
schedule.json and the recorded ``config.yaml`` included; folders from before it carried the
model files' checksums in ``schedule.json: files`` and still load. The folder is only ever
changed as a whole (:func:`tinydet.io.atomic.staged_dir` / ``update_dir``: staged, then swapped
in one rename), so readers see the old folder or the new one, never a mix.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from tinydet.errors import TinydetError
from tinydet.export.schedule_check import check_schedule
from tinydet.geometry import Pads
from tinydet.io.atomic import update_dir, write_file
from tinydet.io.jsonfile import read_json
from tinydet.io.manifest import MANIFEST, Manifest, read_manifest, sha256_bytes, sha256_file, write_manifest
from tinydet.schedule.planner import FORMAT_VERSION as PLAN_FORMAT_VERSION

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SCHEDULE = "schedule.json"
REQUIRED = ("full.onnx", "stage1_patch.onnx", "stage2.onnx")
MODEL_PATTERNS = ("*.onnx", "*.tflite")
CONFIG_FILE = "config.yaml"  # the resolved config `tinydet export` was given
QUANT_INFO = "quant.json"


def write_schedule(folder: Path, schedule: Mapping[str, Any]) -> None:
    """Write ``schedule.json`` into a folder being staged (key order is the documented order)."""
    write_file(Path(folder) / SCHEDULE, (json.dumps(schedule, indent=1) + "\n").encode())


def _model_files(folder: Path) -> list[Path]:
    """The model files an export folder's checksums must cover."""
    return sorted(p for pattern in MODEL_PATTERNS for p in Path(folder).glob(pattern))


# the command that rewrites a file of an export folder (named in the errors about that file)
def repair_hint(name: str, root: Path) -> str:
    if name.endswith(".tflite"):
        return f"re-run `tinydet tflite {root}`"
    if name.endswith(".int8.onnx") or name == QUANT_INFO:
        return f"re-run `tinydet quantize {root}` (it repairs the folder)"
    return "re-export the folder with `tinydet export`"


@dataclass
class ExportFolder:
    """A verified export folder: ``schedule`` is the parsed schedule.json in the current format
    (upgraded in memory from ``source_version``, the version on disk), with ``files`` (every
    file's ``{sha256, bytes}`` but schedule.json's) filled in from ``manifest.json``. ``broken`` names the optional
    files (int8 models, quant.json, TFLite) that fail their check in a folder loaded with
    ``strict=False``: :meth:`path` refuses them, the float part stays usable."""

    root: Path
    schedule: dict
    source_version: int = FORMAT_VERSION
    broken: dict = field(default_factory=dict)
    has_manifest: bool = True

    def path(self, name: str) -> Path:
        """Path of a listed file; a file the folder does not list is a TinydetError naming it."""
        if name in self.broken:
            raise TinydetError(f"{self.root}: {self.broken[name]}: {name}; {repair_hint(name, self.root)}")
        if name not in self.schedule["files"]:
            have = ", ".join(sorted(self.schedule["files"]))
            hint = " (run `tinydet quantize` on the folder first)" if name.endswith(".int8.onnx") else ""
            raise TinydetError(f"{self.root}: no {name} in the export folder{hint}; it has {have}")
        return self.root / name

    def has(self, name: str) -> bool:
        return name in self.schedule["files"] and name not in self.broken

    @property
    def config_path(self) -> Path | None:
        """The config `tinydet export` recorded (``config.yaml``, covered by the manifest), if any."""
        return self.root / CONFIG_FILE if self.has(CONFIG_FILE) else None

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


_LEGACY_NOTED: set[Path] = set()


def _describe(name: str, problem: str, where: str, export: bool) -> str:
    """``checksum mismatch: NAME was modified after export (listed in WHERE)`` and the like."""
    if problem == "missing":
        return f"{name} is missing (listed in {where})"
    if problem == "not listed":
        return f"{name} is not listed in {where}"
    return f"checksum mismatch: {name} was modified after {'export' if export else 'it was written'} (listed in {where})"


def _file_problem(root: Path, name: str, entry: Mapping[str, Any], manifest: Manifest | None) -> str | None:
    if manifest is not None:
        return manifest.problem(root, name)
    path = root / name
    if not path.is_file():
        return "missing"
    return "checksum mismatch" if sha256_file(path) != entry["sha256"] else None


def load_export(folder: "str | Path", verify: bool = True, strict: bool = True) -> ExportFolder:
    """Read ``folder/schedule.json``; check ``manifest.json`` (schedule.json and the recorded
    config first), the format version and, with ``verify``, that every listed file exists with
    its recorded sha256 and that no unlisted model file is present; then the schedule's values
    (:func:`tinydet.export.schedule_check.check_schedule`). ``strict=False`` lets a folder whose
    optional files (int8, quant.json, TFLite) fail their check load with them in ``broken``
    (float evaluation, and ``tinydet quantize``, which rewrites them). Folders from before
    manifests (checksums in schedule.json, schedule.json itself unchecked) still load, with a
    note on stderr."""
    root = Path(folder)
    if not root.is_dir():
        raise TinydetError(f"{root}: export folder does not exist (expected the --out folder of `tinydet export`)")
    sched_path = root / SCHEDULE
    if not sched_path.is_file():
        raise TinydetError(f"{root}: schedule.json is missing; expected an export folder written by `tinydet export`")
    manifest = read_manifest(root, hint="re-export the folder with `tinydet export`")
    if manifest is not None and verify:
        for name in (SCHEDULE, CONFIG_FILE):
            problem = manifest.problem(root, name)
            if problem is not None and not (problem == "not listed" and name == CONFIG_FILE):
                raise TinydetError(f"{root}: {_describe(name, problem, MANIFEST, export=True)}; "
                                   f"re-export the folder with `tinydet export`")
    schedule = read_json(sched_path, "schedule.json", hint="the file was modified after export")
    if not isinstance(schedule, dict):
        raise TinydetError(f"{sched_path}: expected a JSON object, got {type(schedule).__name__}")
    version = schedule.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise TinydetError(f"{sched_path}: format_version: expected one of {', '.join(map(str, READABLE_VERSIONS))}, "
                           f"got {version!r}; re-export the model with this tinydet")
    if manifest is not None:
        schedule["files"] = {n: e.to_dict() for n, e in manifest.files.items() if n != SCHEDULE}
    elif root.resolve() not in _LEGACY_NOTED:
        _LEGACY_NOTED.add(root.resolve())
        print(f"tinydet: {root}: no manifest.json (written by an older tinydet): schedule.json is not checksummed; "
              f"`tinydet quantize {root}` adds the manifest", file=sys.stderr)
    files = schedule.get("files")
    where = MANIFEST if manifest is not None else f"{SCHEDULE}: files"
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise TinydetError(f"{sched_path}: files: expected {{name: {{sha256, bytes}}}}, got {files!r}")
    for name in REQUIRED:
        if name not in files:
            raise TinydetError(f"{root / where}: {name} is not listed; expected {', '.join(REQUIRED)}")
    broken: dict[str, str] = {}
    if verify:
        for name, entry in files.items():
            problem = _file_problem(root, name, entry, manifest)
            if problem is None:
                continue
            if strict or name in REQUIRED:
                raise TinydetError(f"{root}: {_describe(name, problem, where, export=name in REQUIRED)}; "
                                   f"{repair_hint(name, root)}")
            broken[name] = problem
        extra = sorted(p.name for p in _model_files(root) if p.name not in files)
        if extra:
            raise TinydetError(f"{root}: {extra[0]} is not listed in {where} (not written by tinydet, or left by an "
                               f"interrupted run); remove it, or {repair_hint(extra[0], root)}")
    if version == 1:
        schedule = upgrade_v1(schedule, str(sched_path))
    elif version == 2:
        schedule = upgrade_v2(schedule)
    check_schedule(schedule, root, verify)
    return ExportFolder(root, schedule, version, broken, manifest is not None)


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
    out["arena_layer"] = layer_arena(out, where)
    return upgrade_v2(out)


def upgrade_v2(schedule: dict) -> dict:
    """A format-version-2 schedule.json mapping (no fusion) in the current format: every ``rules``
    gets ``fused_blocks: []`` and every arena step ``fused_ops`` / ``input_from`` null."""
    out = json.loads(json.dumps(schedule))
    memory = out.get("memory", {})
    plan = memory.get("plan")
    arenas = [out.get(key) for key in ("arena", "arena_layer")]
    for holder in [memory, plan, *arenas]:
        if isinstance(holder, dict) and isinstance(holder.get("rules"), dict):
            holder["rules"].setdefault("fused_blocks", [])
    for arena in arenas:
        if isinstance(arena, dict):
            for step in [*arena.get("steps", []), *(s for t in arena.get("tiles", []) for s in t)]:
                if isinstance(step, dict):
                    step.setdefault("fused_ops", None)
                    step.setdefault("input_from", None)
    if isinstance(plan, dict):
        plan["format_version"] = PLAN_FORMAT_VERSION
    out["format_version"] = FORMAT_VERSION
    return out


def add_files(folder: "str | Path", files: Mapping[str, bytes], drop: Iterable[str] = (),
              strict: bool = True) -> ExportFolder:
    """Add (or replace) files in a verified export folder, remove ``drop``, and record the new
    manifest: the new folder is staged (hard links of the unchanged files) and swapped in with
    one atomic exchange (:func:`tinydet.io.atomic.update_dir`), so at every instant the folder
    is the old one or the new one. ``strict=False`` accepts a folder whose optional files are
    broken (:func:`load_export`); those not rewritten here are dropped. A folder without a
    manifest gets one (and schedule.json loses its ``files``, which the manifest replaces)."""
    export = load_export(folder, strict=strict)
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or name in (SCHEDULE, MANIFEST, CONFIG_FILE, "") \
                or name.startswith("."):
            raise TinydetError(f"add_files: file name {name!r}: expected a plain file name other than "
                               f"{SCHEDULE}, {MANIFEST} and {CONFIG_FILE}")
        if name in REQUIRED:
            raise TinydetError(f"add_files: {name} is written by `tinydet export` and cannot be replaced")
    gone = (set(drop) | set(export.broken)) - set(files)
    with update_dir(export.root, drop=sorted(gone | {MANIFEST})) as stage:
        if not export.has_manifest:
            raw = read_json(stage / SCHEDULE, "schedule.json")
            raw.pop("files", None)
            write_schedule(stage, raw)
        for name, data in files.items():
            write_file(stage / name, bytes(data))
        write_manifest(stage)
    return load_export(export.root)
