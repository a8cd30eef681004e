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
    declare_inputs(parser, config="file")


def declare_inputs(parser: argparse.ArgumentParser, **kinds: str) -> None:
    """Mark already added arguments (by dest) as input paths of kind ``file``, ``dir`` or ``path``
    (either); ``tinydet.cli`` checks they exist before the verb runs, i.e. before torch is imported."""
    flags = {a.dest: (a.option_strings[-1] if a.option_strings else a.dest) for a in parser._actions}
    declared = list(parser.get_default("_inputs") or [])
    declared += [(dest, flags[dest], kind) for dest, kind in kinds.items()]
    parser.set_defaults(_inputs=tuple(declared))


def missing_input(value: "str | None", flag: str, kind: str) -> "str | None":
    """The one-line error for an input path that is absent or of the wrong kind, else None."""
    import os

    if value is None:
        return None
    where = f"{flag} {value}" if flag.startswith("-") else value
    if not os.path.exists(value):
        return f"{where}: no such {'folder' if kind == 'dir' else 'file'}"
    if kind == "file" and os.path.isdir(value):
        return f"{where}: is a folder, expected a file"
    if kind == "dir" and not os.path.isdir(value):
        return f"{where}: is a file, expected a folder"
    return None


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (``--timeout -1`` is refused at parse time)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value
