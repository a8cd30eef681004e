"""``tinydet export``: full model, split stages and schedule.json of a trained detector (ONNX).

    tinydet export -c X.yaml --ckpt C --out out/NAME [--plan auto | --patches N | --grid RxC] [--split K] [--json]
"""
from __future__ import annotations

import argparse

from tinydet.commands.common import add_config_arguments, add_json_argument, declare_inputs


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

    declare_inputs(parser, ckpt="file")

def run(args: argparse.Namespace) -> dict:
    from tinydet.pipeline.export import export_checkpoint
    from tinydet.config import load_config

    cfg = load_config(args.config, args.overrides)
    return export_checkpoint(cfg, args.ckpt, args.out, plan=args.plan, patches=args.patches, grid=args.grid,
                             split=args.split, check_images=args.check_images)


def render(result: dict) -> None:
    print(f"export folder: {result['out']}")
    for name, path in result["files"].items():
        print(f"  {name:<20} {path}")
    print(f"grid {result['grid'][0]}x{result['grid'][1]}, split {result['split']} ({result['split_tensor']}), "
          f"{result['tiles']} tiles, plan {result.get('plan', '')}")
    print(f"peak SRAM: per-layer {result['peak_sram_per_layer']:,} B, patch {result['peak_sram_patch']:,} B; "
          f"MAC overhead {100 * result['mac_overhead']:.1f}%")
    print(f"float stitched vs full max abs diff: {result['float_stitched_max_abs_diff']:.3g}")
