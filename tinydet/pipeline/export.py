"""Export of a trained detector (``tinydet export``): the patch plan, the detector entry of
schedule.json, and the export folder itself (:func:`tinydet.export.folder.export_network`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tinydet.errors import TinydetError


def choose_plan(graph, cfg, *, plan: str | None = None, patches: int | None = None, grid: str | None = None,
                split: int | None = None) -> tuple[tuple[int, int], int, str]:
    """(grid, split, how) of an export: the explicit choices (``tinydet export``'s ``--plan``,
    ``--patches``, ``--grid``, ``--split``), else the config's export section, else the planner's
    search (:func:`auto_plan`). ``how`` is ``fixed``, ``config`` or ``auto``."""
    from tinydet.schedule import parse_grid

    export_cfg = cfg["export"]
    split = split if split is not None else export_cfg.get("split")
    if patches is not None or grid is not None:
        grid = parse_grid(patches if patches is not None else grid)
        how = "fixed"
    elif plan is None and export_cfg.get("plan", "auto") != "auto" or plan not in (None, "auto"):
        where = "--plan" if plan is not None else f"{getattr(cfg, 'source', 'config')}: export.plan"
        plan = plan if plan is not None else export_cfg.get("plan")
        raise TinydetError(f"{where}: unknown plan {plan!r}; expected 'auto', or use --patches N / --grid RxC")
    elif plan is None and export_cfg.get("grid") is not None:
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
    best, _ = search_plans(graph, splits=splits, sram_budget=budget, max_overhead=overhead,
                           fusion=bool(export_cfg.get("fusion", False)))
    if best is None:
        raise TinydetError(f"{getattr(cfg, 'source', 'config')}: export.sram_budget={budget} / "
                           f"export.max_overhead={overhead}: no patch plan fits; raise the budget or "
                           f"pass --patches N --split K")
    if best.split == 0:
        best = min((plan_patches(graph, 1, k) for k in splits), key=lambda p: (p.peak, p.split))
    return tuple(best.grid), int(best.split)


def detector_info(model, cfg) -> dict[str, Any] | None:
    """Anchors, strides, class names and decode parameters the C runtime and eval need (None for a
    classifier: its folder has no detector entry)."""
    if getattr(model, "mode", None) == "classifier":
        return None
    names = list(getattr(model, "class_names", None) or [f"class{i}" for i in range(model.num_classes)])
    return {"num_classes": int(model.num_classes), "class_names": names,
            "anchors": model.anchors.tolist(), "strides": [int(s) for s in model.strides.tolist()],
            "conf_thresh": float(cfg["eval"]["conf_thresh"]), "nms_iou": float(cfg["eval"]["nms_iou"]),
            "max_det": int(cfg["eval"]["max_det"])}



def export_checkpoint(cfg, ckpt: "str | Path", out: "str | Path | None" = None, *, plan: str | None = None,
                      patches: int | None = None, grid: str | None = None, split: int | None = None,
                      check_images: int = 2) -> dict[str, Any]:
    """Export the detector (``task: classify``: the classifier) of ``ckpt`` (checked against
    ``cfg``) to ``out`` (default ``export.out``, else ``out/<name>``) with the plan
    :func:`choose_plan` picks; returns the folder summary plus ``plan`` (how the plan was chosen)."""
    from tinydet.export.folder import export_network
    from tinydet.io.checkpoint import load_detector

    if check_images < 1:
        raise TinydetError(f"--check-images: expected a positive integer, got {check_images}")
    if getattr(cfg, "task", "detect") == "classify":
        from tinydet.models.classifier import load_classifier

        model = load_classifier(cfg, ckpt)
    else:
        model = load_detector(cfg, ckpt)
    graph = model.graph(cfg["model"]["resolution"])
    grid, split, how = choose_plan(graph, cfg, plan=plan, patches=patches, grid=grid, split=split)
    out = Path(out or cfg["export"].get("out") or Path("out") / cfg["name"])
    print(f"tinydet export: {graph.arch} {graph.resolution[0]}x{graph.resolution[1]}, grid {grid[0]}x{grid[1]}, "
          f"split {split} ({how}) -> {out}", file=sys.stderr)
    from tinydet.config import to_dict

    rules = None
    if cfg["export"].get("fusion"):
        from tinydet.schedule import plan_fused

        rules = plan_fused(graph, grid, split).rules  # the blocks this grid and split need fused
    summary = export_network(model, graph, out, split, grid, rules=rules, detector=detector_info(model, cfg),
                             check_images=check_images, config=to_dict(cfg),
                             config_source=getattr(cfg, "source", None))
    summary["plan"] = how
    return summary
