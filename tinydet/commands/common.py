"""Arguments shared by several verbs, defined once so they read the same everywhere."""
from __future__ import annotations

import argparse


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """``--json``: print exactly one JSON object on stdout (logs go to stderr)."""
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def add_config_arguments(parser: argparse.ArgumentParser, required: bool, help: str = "experiment YAML config") -> None:
    """``-c CONFIG`` and ``--set KEY=VALUE ...`` (YAML-parsed values, repeatable) into ``args.overrides``."""
    parser.add_argument("-c", "--config", required=required, default=None, help=help)
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set train.epochs=3 eval.conf_thresh=0.01")
