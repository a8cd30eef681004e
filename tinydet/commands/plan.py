"""``tinydet plan``: search grid sizes and split points for the patch-based schedule.

Best schedule: with ``--sram-budget`` the lowest MAC overhead whose peak fits the budget (and
the overhead limit, if given); otherwise the lowest peak within ``--max-overhead``. Plain
per-layer execution is a candidate too. Grid, split and per-block fusion (fused row-streamed
inverted residuals, :mod:`tinydet.schedule.fusion`) are searched jointly; ``--no-fusion`` keeps
every block unfused (MCUNetV2's schedules). JSON keys: arch, resolution, mode, sram_budget,
max_overhead, fusion, rules, peak_sram_per_layer (unfused), best (grid, split, patched, peak_sram,
peak_sram_patch, peak_sram_stage1, peak_sram_stage2, peak_sram_per_layer, macs_per_layer,
macs_patch, mac_overhead, input_streamed, max_tile_input, split_shape, fused_blocks, arena_bytes,
peak_at {peak, stage, op, tile, bound, parts}, tiles), pareto (the same figures, no tiles, by
increasing peak), plot (path or null).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tinydet.commands.profile import add_common

    add_common(parser)
    parser.add_argument("--sram-budget", default=None, help="SRAM limit: 262144, 256kB or 0.5MB (kB = 1024 B)")
    parser.add_argument("--max-overhead", type=float, default=None, help="MAC overhead limit as a fraction (0.1 = +10%%)")
    parser.add_argument("--grids", default="2,3,4,5,6,7,8", help="grids to try: N or RxC, comma separated")
    parser.add_argument("--splits", default=None, help="splits to try, comma separated (default: all valid)")
    parser.add_argument("--no-fusion", action="store_true",
                        help="run no inverted residual fused (row-streamed); default: fuse the blocks the peak needs")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write the memory picture of the best schedule")


def _int_list(text: str, field: str) -> list[int]:
    from tinydet.errors import TinydetError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TinydetError(f"{field}: expected comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> dict:
    from tinydet.commands.profile import load_graph
    from tinydet.errors import TinydetError
    from tinydet.schedule import allocate, check_split, parse_grid, peak_breakdown, peak_sram_per_layer, plot_memory, search_plans
    from tinydet.schedule.profile import kb, parse_bytes

    _, graph, rules = load_graph(args)
    budget = parse_bytes(args.sram_budget, "--sram-budget") if args.sram_budget is not None else None
    if args.max_overhead is not None and args.max_overhead < 0:
        raise TinydetError(f"--max-overhead: expected a fraction >= 0 (0.1 = +10%), got {args.max_overhead}")
    grids = [parse_grid(g.strip()) for g in args.grids.split(",") if g.strip()]
    if not grids:
        raise TinydetError("--grids: expected at least one grid such as 4 or 2x3")
    splits = None
    if args.splits is not None:
        splits = _int_list(args.splits, "--splits")
        for s in splits:
            check_split(graph, s)
    best, front = search_plans(graph, grids=grids, splits=splits, sram_budget=budget,
                               max_overhead=args.max_overhead, rules=rules, fusion=not args.no_fusion)
    if best is None:
        lowest = front[0]
        limits = " and ".join(x for x in (f"SRAM budget {kb(budget)}" if budget else "",
                                          f"MAC overhead {args.max_overhead:g}" if args.max_overhead is not None else "") if x)
        raise TinydetError(f"plan: no schedule of arch {graph.arch} at {graph.resolution[0]}x{graph.resolution[1]} "
                           f"meets {limits}; the lowest peak is {kb(lowest.peak)} at {lowest.mac_overhead * 100:+.1f}% MACs "
                           f"(grid {lowest.grid[0]}x{lowest.grid[1]}, split {lowest.split})")
    plot = None
    if args.plot:
        plot = str(plot_memory(graph, best, args.plot))
    summary = best.summary()
    summary["arena_bytes"] = allocate(graph, best).arena_bytes
    summary["peak_at"] = peak_breakdown(graph, best).to_dict()
    summary["tiles"] = [{"row": t.row, "col": t.col, "in_rect": t.in_rect.to_list(), "out_rect": t.out_rect.to_list(),
                         "pad": t.pad.to_dict()} for t in best.tiles]
    return {"arch": graph.arch, "resolution": list(graph.resolution), "mode": graph.mode,
            "sram_budget": budget, "max_overhead": args.max_overhead, "fusion": not args.no_fusion,
            "rules": rules.to_dict(), "peak_sram_per_layer": peak_sram_per_layer(graph, rules), "best": summary,
            "pareto": [p.summary() for p in front], "plot": plot}


def render(result: dict) -> None:
    from tinydet.schedule.profile import kb

    h, w = result["resolution"]
    b = result["best"]
    print(f"{result['arch']} @ {h}x{w} ({result['mode']}): per-layer peak {kb(result['peak_sram_per_layer'])}")
    if b["patched"]:
        print(f"best: grid {b['grid'][0]}x{b['grid'][1]}, split {b['split']}: peak {kb(b['peak_sram'])} "
              f"(stage 1 {kb(b['peak_sram_stage1'])}, stage 2 {kb(b['peak_sram_stage2'])}), "
              f"MACs {b['mac_overhead'] * 100:+.1f}%, tile input up to {b['max_tile_input'][0]}x{b['max_tile_input'][1]}")
    else:
        print(f"best: per-layer execution, peak {kb(b['peak_sram'])}")
    if b["fused_blocks"]:
        print(f"fused blocks: {', '.join(str(v) for v in b['fused_blocks'])}")
    at = b["peak_at"]
    where = f", tile {at['tile'][0]},{at['tile'][1]}" if at["tile"] else ""
    print(f"peak at {at['op']} ({at['stage']}{where}), bounded by {at['bound']} ({kb(at['parts'][at['bound']])})")
    print("pareto front (peak SRAM vs MAC overhead):")
    print(f"  {'grid':>6} {'split':>5} {'peak':>12} {'overhead':>9}  fused blocks")
    for p in result["pareto"]:
        grid = f"{p['grid'][0]}x{p['grid'][1]}" if p["patched"] else "-"
        fused = ",".join(str(v) for v in p["fused_blocks"]) or "-"
        print(f"  {grid:>6} {p['split'] if p['patched'] else '-':>5} {kb(p['peak_sram']):>12} "
              f"{p['mac_overhead'] * 100:>+8.1f}%  {fused}")
    if result["plot"]:
        print(f"plot: {result['plot']}")
