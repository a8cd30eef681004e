"""``tinydet train -c X.yaml [--set k=v ...] [--resume [CKPT|auto] | --new] [--ckpt INIT]``.

A ``train.out_dir`` that holds checkpoints is never overwritten: continue it (``--resume``),
or ``--new`` writes to the first free numbered sibling (``tinydet.io.rundir``)."""
from __future__ import annotations

import argparse

from tinydet.commands.common import add_config_arguments, declare_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=True, help="experiment YAML (configs/*.yaml)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT|auto",
                        help="continue a run: 'auto' (default) = <out_dir>/last.ckpt, or a checkpoint path")
    parser.add_argument("--ckpt", default=None, metavar="INIT_WEIGHTS",
                        help="initialise the weights from this checkpoint (optimizer and schedule start fresh)")
    parser.add_argument("--new", action="store_true", help="train.out_dir holds a run: write this one to the first "
                        "free numbered sibling (runs/NAME-2, ...) instead of refusing")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    declare_inputs(parser, ckpt="file")


def run(args: argparse.Namespace) -> dict | None:
    from tinydet.config import load_config
    from tinydet.train.run import train

    cfg = load_config(args.config, args.overrides)
    if args.new:
        import sys

        from tinydet.errors import TinydetError
        from tinydet.io.rundir import new_run_dir

        if args.resume is not None:
            raise TinydetError("--new starts a fresh run; it cannot be combined with --resume")
        out_dir = new_run_dir(cfg.train.out_dir)
        if str(out_dir) != str(cfg.train.out_dir):
            print(f"tinydet train: {cfg.train.out_dir} holds a run; --new: writing to {out_dir}", file=sys.stderr)
        cfg.train.out_dir = str(out_dir)
    result = train(cfg, resume=args.resume, init_ckpt=args.ckpt)
    # under DDP every rank runs this command; only rank 0 reports, so stdout has one summary
    return result if result["global_rank"] == 0 else None


def render(result: dict) -> None:
    figure = "top1" if result.get("task") == "classify" else "map50"
    best = result[f"best_{figure}"]
    print(f"trained {result['name']}: {result['epochs']} epochs, {result['global_step']} steps, "
          f"{result['train_images_per_s']:.1f} train images/s")
    val = result[f"val_{figure}"]
    print(f"val {figure}: {val:.4f}" if val is not None else f"val {figure}: n/a",
          f"(best {best:.4f})" if best is not None else "")
    print(f"checkpoints: {result['last_ckpt']}, {result['best_ckpt']}")
