"""The ``tinydet`` command: parses arguments and dispatches to one module per verb.

Each verb lives in ``tinydet.commands.<module>`` with ``add_arguments(parser)`` and
``run(args) -> dict | None``. Modules import heavy libraries (torch, onnx) inside ``run`` so that
``--help`` is instant. With ``--json`` the returned dict is printed as exactly one JSON object on
stdout; without it the module prints its readable report itself (``render(result)``).
User errors (:class:`tinydet.errors.TinydetError`) print one line and exit with status 2; so do
the generic failures every verb can meet (a full disk, a missing input file named by a path
argument). Ctrl-C exits with 130 and one line (also when Lightning turns it into ``exit(1)``); a
closed stdout (``tinydet profile ... | head``) ends the command quietly with 141, like other Unix
tools killed by SIGPIPE.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import signal
import sys
from typing import Any, Sequence

from tinydet import __version__
from tinydet.errors import TinydetError

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "data": ("tinydet.commands.data", "generate synthetic data sets (synth) and compute anchors (anchors)"),
    "train": ("tinydet.commands.train", "train a detector from a YAML config"),
    "eval": ("tinydet.commands.eval", "evaluate a checkpoint, an ONNX model or a detections file (mAP)"),
    "profile": ("tinydet.commands.profile", "per-layer shapes, MACs and SRAM of an architecture"),
    "plan": ("tinydet.commands.plan", "search the patch-based schedule (grid, split) under SRAM/overhead limits"),
    "search": ("tinydet.commands.search", "joint architecture + schedule search under SRAM/Flash budgets"),
    "quantize": ("tinydet.commands.quantize", "int8 post-training quantization of an export folder"),
    "export": ("tinydet.commands.export", "export full model, split stages and schedule.json to ONNX"),
    "validate": ("tinydet.commands.validate", "check an export folder in onnxruntime and the int8 reference"),
    "tflite": ("tinydet.commands.tflite", "write the int8 TFLite model of an export folder and check it in LiteRT"),
    "deploy": ("tinydet.commands.deploy", "generate C, build firmware, run and validate it"),
    "board": ("tinydet.commands.board", "stream images or a webcam to a board over its serial link (board protocol)"),
    "import": ("tinydet.commands.import_model", "import an MCUNet/torchvision/timm network as spec + weights"),
}


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(result: dict) -> None:
    """Print ``result`` as exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(_clean(result), default=_json_default) + "\n")
    sys.stdout.flush()


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only ``verb``'s module is imported (all of them when ``verb`` is None)."""
    parser = argparse.ArgumentParser(prog="tinydet", description="tinydet: object detection for microcontrollers.")
    parser.add_argument("--version", action="version", version=f"tinydet {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for name, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if verb is None or name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def check_inputs(args: argparse.Namespace) -> None:
    """The path arguments a verb declared (``commands.common.input_argument``) exist, checked
    before the verb imports anything heavy: a mistyped path fails in milliseconds."""
    from tinydet.commands.common import missing_input

    for dest, flag, kind in getattr(args, "_inputs", ()):
        message = missing_input(getattr(args, dest, None), flag, kind)
        if message:
            raise TinydetError(message)


class _Interrupt:
    """Remembers a Ctrl-C, so that a library catching KeyboardInterrupt and exiting with its own
    status (Lightning: ``sys.exit(1)``) still ends the command with 130."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum, frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self)
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _stdout_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (Linux reports POLLERR on its write end):
    tells a closed ``| head`` apart from a broken pipe to a child process."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by a non-file (tests)
        pass


def _deliver(args: argparse.Namespace, result: Any) -> int:
    if isinstance(result, int):
        return result
    if result is not None:
        if getattr(args, "json", False):
            print_json(result)
        elif hasattr(args._module, "render"):
            args._module.render(result)
        else:
            for key, value in result.items():
                print(f"{key}: {value}")
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else "")
    args = parser.parse_args(argv)
    with _Interrupt().installed() as interrupt:
        try:
            check_inputs(args)
            return _deliver(args, args._module.run(args))
        except TinydetError as exc:
            print(f"tinydet: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("tinydet: interrupted", file=sys.stderr)
            return 130
        except SystemExit:
            if interrupt.seen:
                print("tinydet: interrupted", file=sys.stderr)
                return 130
            raise
        except BrokenPipeError:
            if not _stdout_broken():
                raise
            _quiet_stdout()
            return 128 + signal.SIGPIPE
        except OSError as exc:
            from tinydet.io.atomic import DiskFullError, is_disk_full

            if not is_disk_full(exc):
                raise
            print(f"tinydet: error: {DiskFullError(exc.filename or 'an output file')}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
