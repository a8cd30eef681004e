"""Write a whole export folder (docs/export_format.md) atomically and check it right away.

Everything goes to a hidden temporary sibling folder (:func:`tinydet.io.atomic.staged_dir`):
the models, the recorded config, schedule.json and the manifest of them all; the
stitched-vs-full float check runs there; only then the folder is swapped in at ``out`` in one
atomic exchange (an existing ``out`` is the old folder until that instant). Any failure removes
the temporary folder, so ``out`` is never half-written; a killed run's leftover is removed by
the next write next to it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tinydet import __version__
from tinydet.arch.graph import Graph
from tinydet.errors import TinydetError
from tinydet.export.fold import FoldedGraph, fold_network
from tinydet.export.onnx_writer import full_model, split_tensor, stage1_model, stage1_ops, stage2_model, tile_inputs
from tinydet.export.runtime import float_stitched_max_abs_diff
from tinydet.export.schedule_check import check_schedule
from tinydet.export.schedule_file import CONFIG_FILE, FORMAT_VERSION, load_export, write_schedule
from tinydet.export.tiles import tile_pads
from tinydet.io.atomic import staged_dir, write_file
from tinydet.io.manifest import MANIFEST, write_manifest
from tinydet.schedule.memory import layer_working_sets

STITCH_TOLERANCE = 1e-4


def _op_entry(op, split: int) -> dict[str, Any]:
    return {"name": op.name, "kind": op.kind, "role": op.role, "block": op.block, "input": op.inputs[0],
            "output": op.output, "in_shape": list(op.in_shape), "out_shape": list(op.out_shape),
            "kernel": op.kernel, "stride": op.stride, "padding": op.padding, "groups": op.groups, "act": op.act,
            "add": op.add, "bias": op.bias, "macs": op.macs, "stage": 1 if 0 <= op.block < split else 2,
            **({"inputs": list(op.inputs)} if len(op.inputs) > 1 else {})}  # add/concat: every input


def _tiles(graph: Graph, split: int, plan) -> list[dict[str, Any]]:
    """schedule.json ``tiles``: the plan's rectangles plus the ONNX Pad vectors derived from them
    (pads as named objects; ``onnx_pads`` are the stage-1 model's int64[8] inputs as ONNX wants them)."""
    last = split_tensor(graph, split)
    inputs = tile_inputs(graph, split)
    out = []
    for tile in plan.tiles:
        where = f"patch plan tile ({tile.row}, {tile.col})"
        out_rects = {name: region.out_rect for name, region in tile.regions.items()}
        pads = tile_pads(graph, split, tile.in_rect, out_rects, where)
        if out_rects[last] != tile.out_rect:
            raise TinydetError(f"{where}: region of '{last}' {out_rects[last].to_list()} differs from the tile's "
                               f"output rectangle {tile.out_rect.to_list()}")
        out.append({
            "row": tile.row, "col": tile.col, "in_rect": tile.in_rect.to_list(), "out_rect": tile.out_rect.to_list(),
            "regions": {name: r.to_dict() for name, r in tile.regions.items()},
            "onnx_pads": {name: p.to_onnx() for name, p in pads.items()},
            "pads": {op: pads[name].to_dict() for name, op, kind in inputs if kind == "pads"},
            "shortcut_crop": {op: pads[name].to_dict() for name, op, kind in inputs if kind == "shortcut_pads"},
        })
    return out


def build_schedule(folded: FoldedGraph, split: int, plan, arena, rules, detector: Mapping[str, Any] | None,
                   spec_dict: Mapping[str, Any], head: Mapping[str, Any] | None, arena_layer=None) -> dict[str, Any]:
    """The schedule.json mapping (without ``files``, added once the ONNX files are on disk).
    ``arena`` is the patch plan's ArenaPlan, ``arena_layer`` the per-layer one (allocated here
    when not given), so the firmware generator reads both instead of re-running the allocator."""
    from tinydet.schedule.arena import allocate

    graph = folded.graph
    if list(plan.stage1_ops) != [op.name for op in stage1_ops(graph, split)]:
        raise TinydetError(f"patch plan: stage-1 ops {list(plan.stage1_ops)[:3]}... differ from blocks 0..{split - 1} "
                           f"of the graph; expected the plan to be made for split {split}")
    plan_dict = plan.to_dict()
    arena_layer = arena_layer if arena_layer is not None else allocate(graph, None, rules)
    return {
        "format_version": FORMAT_VERSION,
        "tinydet_version": __version__,
        "arch": {"name": graph.arch, "spec": dict(spec_dict), "head": dict(head) if head else None, "mode": graph.mode},
        "input": {"name": graph.input, "shape": list(graph.tensors[graph.input].shape), "layout": "NCHW",
                  "range": [0.0, 1.0]},
        "tensors": {name: list(t.shape) for name, t in graph.tensors.items()},
        "ops": [_op_entry(op, split) for op in graph.ops],
        "outputs": list(graph.outputs),
        "split": split,
        "split_tensor": split_tensor(graph, split),
        "stage1_ops": [op.name for op in stage1_ops(graph, split)],
        "grid": list(plan.grid),
        "tile_inputs": [{"name": name, "op": op, "kind": kind} for name, op, kind in tile_inputs(graph, split)],
        "tiles": _tiles(graph, split, plan),
        "memory": {"rules": rules.to_dict(), "peak_sram_per_layer": int(plan.peak_sram_per_layer),
                   "peak_sram_patch": int(plan.peak_sram_patch),
                   "layer_working_sets": {op.name: int(ws) for op, ws in zip(graph.ops, layer_working_sets(graph, rules))},
                   "plan": plan_dict},
        "macs": {"per_layer": int(graph.macs), "patch": int(plan.macs_patch), "mac_overhead": float(plan.mac_overhead)},
        "arena": arena.to_dict(),
        "arena_layer": arena_layer.to_dict(),
        "detector": dict(detector) if detector else None,
        "float_stitched_max_abs_diff": None,
    }


def config_yaml(config: Mapping[str, Any], source: str | None = None) -> bytes:
    """``config.yaml`` of an export folder: the resolved experiment config (every key), loadable
    with :func:`tinydet.config.load_config` (paths in it are as the user wrote them)."""
    import yaml

    head = f"# the resolved config `tinydet export` was given ({source})\n" if source else ""
    return (head + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)).encode("utf-8")


def write_export(folded: FoldedGraph, out: "str | Path", split: int, plan, arena, rules, *,
                 spec_dict: Mapping[str, Any], head: Mapping[str, Any] | None = None,
                 detector: Mapping[str, Any] | None = None, check_images: int = 2, seed: int = 0,
                 config: Mapping[str, Any] | None = None, config_source: str | None = None) -> dict[str, Any]:
    """Write the folder for ``folded`` with ``plan`` (a ``tinydet.schedule`` PatchPlan) to ``out``;
    ``config`` (a plain dict) is recorded as ``config.yaml`` for the later steps.

    Returns the summary: paths, peaks, MACs overhead, grid, split and the stitched float check on
    ``check_images`` random images. Raises TinydetError (leaving ``out`` untouched) on any failure.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TinydetError(f"--out {out}: exists and is not a folder; expected a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / "schedule.json").is_file():
        raise TinydetError(f"--out {out}: a folder with other files (no schedule.json); expected a new folder or "
                           f"an export folder, which the export replaces")
    schedule = build_schedule(folded, split, plan, arena, rules, detector, spec_dict, head)
    models = {"full.onnx": full_model(folded), "stage1_patch.onnx": stage1_model(folded, split),
              "stage2.onnx": stage2_model(folded, split)}
    with staged_dir(out) as tmp:  # out is replaced only once the folder checks out
        for name, model in models.items():
            write_file(tmp / name, model.SerializeToString())
        check_schedule(schedule, tmp, hint="", where=f"export {out}: schedule.json")  # before anything reads it
        if config is not None:
            write_file(tmp / CONFIG_FILE, config_yaml(config, config_source))
        write_schedule(tmp, schedule)
        write_manifest(tmp)
        c, h, w = schedule["input"]["shape"]
        images = np.random.default_rng(seed).random((check_images, c, h, w), dtype=np.float32)
        diff = float_stitched_max_abs_diff(tmp, images)
        if not diff <= STITCH_TOLERANCE:
            raise TinydetError(f"export {out}: stitched stages differ from full.onnx by {diff:.3g} "
                               f"(> {STITCH_TOLERANCE}); the patch plan does not match the network")
        schedule["float_stitched_max_abs_diff"] = diff
        write_schedule(tmp, schedule)
        write_manifest(tmp)
        load_export(tmp)
    return {
        "out": str(out),
        "files": {name: str(out / name) for name in [*models, "schedule.json", *([CONFIG_FILE] if config else []),
                                                     MANIFEST]},
        "arch": folded.graph.arch, "resolution": list(folded.graph.resolution),
        "grid": schedule["grid"], "split": split, "split_tensor": schedule["split_tensor"],
        "tiles": len(schedule["tiles"]),
        "peak_sram_per_layer": schedule["memory"]["peak_sram_per_layer"],
        "peak_sram_patch": schedule["memory"]["peak_sram_patch"],
        "arena_bytes": schedule["arena"]["arena_bytes"],
        "macs": schedule["macs"]["per_layer"], "macs_patch": schedule["macs"]["patch"],
        "mac_overhead": schedule["macs"]["mac_overhead"],
        "float_stitched_max_abs_diff": schedule["float_stitched_max_abs_diff"],
    }


def export_network(model, graph: Graph, out: "str | Path", split: int, grid, *, rules=None,
                   detector: Mapping[str, Any] | None = None, check_images: int = 2,
                   config: Mapping[str, Any] | None = None, config_source: str | None = None) -> dict[str, Any]:
    """Fold ``model`` and export it with the plan ``tinydet.schedule.plan_patches(graph, grid, split)``."""
    from tinydet.schedule import MemoryRules, allocate, plan_patches

    rules = rules or MemoryRules()
    folded = fold_network(model, graph)
    plan = plan_patches(graph, grid, split, rules)
    arena = allocate(graph, plan, rules)
    spec = getattr(model, "spec", None)
    head = getattr(model, "head_spec", None)
    return write_export(folded, out, split, plan, arena, rules, spec_dict=spec.to_dict() if spec else {},
                        head=asdict(head) if head else None, detector=detector, check_images=check_images,
                        config=config, config_source=config_source)
