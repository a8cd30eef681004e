"""``tinydet search``: joint architecture + patch-schedule search under SRAM/Flash budgets.

    tinydet search -c configs/x.yaml --sram 256kB --flash 1MB [--max-overhead 0.1] --out search/NAME
                   [--resume] [--latency-table cycles.json] [--set search.generations=2] [--json]

Writes ``NAME/best_arch.yaml`` (a spec for ``model.arch``), ``schedule.json`` (grid, split, peaks),
``pareto.json``, ``pareto.png``, ``state.json`` (resumable) and ``supernet.ckpt``; the search itself
is :func:`tinydet.pipeline.search.run_search`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from tinydet.commands.common import add_config_arguments, add_json_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=True, help="experiment YAML (its data, model.head, train and search sections)")
    parser.add_argument("--sram", required=True, help="peak SRAM budget of the patch-based schedule, e.g. 256kB")
    parser.add_argument("--flash", required=True, help="Flash budget for int8 weights + bias + quant params, e.g. 1MB")
    parser.add_argument("--max-overhead", type=float, default=None,
                        help="largest MAC overhead of the patch schedule (default: the config's export.max_overhead)")
    parser.add_argument("--out", required=True, help="output folder, e.g. search/NAME")
    parser.add_argument("--resume", action="store_true", help="continue the search saved in OUT/state.json")
    parser.add_argument("--latency-table", default=None,
                        help="per-layer cycles JSON measured by deploy; latency is then cycles instead of MACs")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> dict | None:
    from tinydet.nas.constraints import parse_bytes
    from tinydet.pipeline.search import run_search

    sram = parse_bytes(args.sram, "--sram")
    flash = parse_bytes(args.flash, "--flash")
    # everything the search prints (Lightning, tqdm) goes to stderr: stdout carries the JSON only
    with contextlib.redirect_stdout(sys.stderr):
        return run_search(args.config, sram, flash, args.max_overhead, Path(args.out), args.resume,
                          args.latency_table, args.overrides)


def render(result: dict) -> None:
    print(f"best arch:      {result['arch']} ({result['resolution']}x{result['resolution']}, "
          f"grid {result['grid'][0]}x{result['grid'][1]}, split {result['split']})")
    print(f"peak SRAM:      {result['peak_sram_patch']:,} B (per-layer {result['peak_sram_per_layer']:,} B; "
          f"budget {result['sram_budget']:,} B)")
    print(f"Flash:          {result['flash_bytes']:,} B (budget {result['flash_budget']:,} B)")
    print(f"MACs:           {result['macs']:,} (patch overhead {result['mac_overhead']:.3f})")
    figure = "val_top1" if result.get("task") == "classify" else "val_map50"
    print(f"{figure.replace('_', ' ') + ':':<15} {result[figure]:.4f} (supernet, BN recalibrated)")
    print(f"evaluated:      {result['evaluated']} candidates, initial population + {result['generations']} generations; "
          f"Pareto front of {result['pareto_size']} in {result['out']}/pareto.json")
    print(json.dumps(result["candidate"]))
