"""``tinydet export``: full model, split stages and schedule.json of a trained detector (ONNX).

    tinydet export -c X.yaml --ckpt C --out out/NAME [--plan auto | --patches N | --grid RxC] [--split K] [--json]
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tinydet.commands.common import add_config_arguments, add_json_argument
from tinydet.errors import TinydetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=True, help="experiment YAML config")
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.ckpt)")
    parser.add_argument("--out", default=None, help="export folder (default: export.out or out/<name>)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--plan", default=None, help="'auto' (default): search grid and split under "
                       "export.sram_budget / export.max_overhead")
    group.add_argument("--patches", type=int, default=None, metavar="N", help="an N x N grid of patches")
    group.add_argument("--grid", default=None, metavar="RxC", help="a rows x cols grid of patches, e.g. 3x2")
    parser.add_argument("--split", type=int, default=None, metavar="K",
                        help="number of backbone blocks run per patch (stem = 1); default export.split")
    parser.add_argument("--check-images", type=int, default=2, metavar="N",
                        help="random images for the stitched-vs-full float check (default 2)")
    add_json_argument(parser)


def choose_plan(graph, cfg, args) -> tuple[tuple[int, int], int, str]:
    """(grid, split, how) from the flags, else the config's export section, else the planner's search."""
    from tinydet.schedule import parse_grid

    export_cfg = cfg["export"]
    split = args.split if args.split is not None else export_cfg.get("split")
    if args.patches is not None or args.grid is not None:
        grid = parse_grid(args.patches if args.patches is not None else args.grid)
        how = "fixed"
    elif args.plan is None and export_cfg.get("plan", "auto") != "auto" or args.plan not in (None, "auto"):
        plan = args.plan if args.plan is not None else export_cfg.get("plan")
        where = "--plan" if args.plan is not None else f"{getattr(cfg, 'source', 'config')}: export.plan"
        raise TinydetError(f"{where}: unknown plan {plan!r}; expected 'auto', or use --patches N / --grid RxC")
    elif args.plan is None and export_cfg.get("grid") is not None:
        grid = parse_grid(export_cfg["grid"])
        how = "config"
    else:
        return (*auto_plan(graph, cfg, split), "auto")
    if split is None:
        raise TinydetError("--split: a fixed grid needs the split (number of per-patch blocks): pass --split K "
                           "or set export.split in the config")
    return grid, int(split), how


def exportable_splits(graph) -> list[int]:
    """Splits the export can write: valid for the planner and leaving stage 2 at least one op."""
    from tinydet.export.onnx_writer import check_split

    valid = []
    for k in range(1, graph.num_blocks + 1):
        try:
            check_split(graph, k)
        except TinydetError:
            continue
        valid.append(k)
    return valid


def auto_plan(graph, cfg, split: int | None) -> tuple[tuple[int, int], int]:
    """Best (grid, split) of ``tinydet.schedule.search_plans`` under the config's budget.

    When plain per-layer execution wins (no patching needed), the folder still has the two
    stages: a 1x1 grid (stage 1 = the whole map, no MAC overhead) at the split with the lowest peak.
    """
    from tinydet.schedule import plan_patches, search_plans

    export_cfg = cfg["export"]
    budget, overhead = export_cfg.get("sram_budget"), export_cfg.get("max_overhead")
    splits = [split] if split is not None else exportable_splits(graph)
    best, _ = search_plans(graph, splits=splits, sram_budget=budget, max_overhead=overhead)
    if best is None:
        raise TinydetError(f"{getattr(cfg, 'source', 'config')}: export.sram_budget={budget} / "
                           f"export.max_overhead={overhead}: no patch plan fits; raise the budget or "
                           f"pass --patches N --split K")
    if best.split == 0:
        best = min((plan_patches(graph, 1, k) for k in splits), key=lambda p: (p.peak, p.split))
    return tuple(best.grid), int(best.split)


def detector_info(model, cfg) -> dict[str, Any]:
    """Anchors, strides, class names and decode parameters the C runtime and eval need."""
    names = list(getattr(model, "class_names", None) or [f"class{i}" for i in range(model.num_classes)])
    return {"num_classes": int(model.num_classes), "class_names": names,
            "anchors": model.anchors.tolist(), "strides": [int(s) for s in model.strides.tolist()],
            "conf_thresh": float(cfg["eval"]["conf_thresh"]), "nms_iou": float(cfg["eval"]["nms_iou"]),
            "max_det": int(cfg["eval"]["max_det"])}


def run(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from tinydet.export.folder import export_network
    from tinydet.io.checkpoint import load_detector
    from tinydet.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    model = load_detector(cfg, args.ckpt)
    graph = model.graph(cfg["model"]["resolution"])
    grid, split, how = choose_plan(graph, cfg, args)
    out = Path(args.out or cfg["export"].get("out") or Path("out") / cfg["name"])
    if args.check_images < 1:
        raise TinydetError(f"--check-images: expected a positive integer, got {args.check_images}")
    print(f"tinydet export: {graph.arch} {graph.resolution[0]}x{graph.resolution[1]}, grid {grid[0]}x{grid[1]}, "
          f"split {split} ({how}) -> {out}", file=sys.stderr)
    summary = export_network(model, graph, out, split, grid, detector=detector_info(model, cfg),
                             check_images=args.check_images)
    summary["plan"] = how
    return summary


def render(result: dict) -> None:
    print(f"export folder: {result['out']}")
    for name, path in result["files"].items():
        print(f"  {name:<20} {path}")
    print(f"grid {result['grid'][0]}x{result['grid'][1]}, split {result['split']} ({result['split_tensor']}), "
          f"{result['tiles']} tiles, plan {result.get('plan', '')}")
    print(f"peak SRAM: per-layer {result['peak_sram_per_layer']:,} B, patch {result['peak_sram_patch']:,} B; "
          f"MAC overhead {100 * result['mac_overhead']:.1f}%")
    print(f"float stitched vs full max abs diff: {result['float_stitched_max_abs_diff']:.3g}")
