"""Training run folders (``train.out_dir``): never overwrite a run's checkpoints.

A folder that already holds checkpoints is either continued (``--resume auto`` / a checkpoint
path) or left alone: :func:`check_run_dir` refuses a fresh run (or a fine-tuning run) into it
with one line that offers ``--resume auto``, ``--new`` and another ``train.out_dir``.
``--new`` (:func:`new_run_dir`) picks the first free numbered sibling ``NAME-2``, ``NAME-3``, ...
and creates it at once, so two runs started together never share one. Under DDP every rank runs
the command: the first process records its choice in ``TINYDET_RUN_DIR`` (which the ranks it
launches inherit) and they reuse it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from tinydet.errors import TinydetError

CHECKPOINTS = ("last.ckpt", "best.ckpt")
RUN_DIR_ENV = "TINYDET_RUN_DIR"
_RANK_ENVS = ("LOCAL_RANK", "NODE_RANK", "RANK", "GLOBAL_RANK")


def is_launched_rank() -> bool:
    """True in a process that a distributed launcher started for a rank other than 0."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in _RANK_ENVS)


def run_checkpoints(out_dir: "str | Path") -> list[str]:
    """The checkpoint files (``last.ckpt``, ``best.ckpt``) of the run folder ``out_dir``."""
    return [name for name in CHECKPOINTS if (Path(out_dir) / name).is_file()]


def check_run_dir(out_dir: "str | Path", resume: str | None, init_ckpt: str | None = None) -> None:
    """Refuse (TinydetError) a run that would overwrite the checkpoints in ``out_dir``: a fresh
    or fine-tuning run (``resume`` None), or ``--resume auto`` with a ``best.ckpt`` but no
    ``last.ckpt`` to continue from. Ranks other than 0 leave the check to rank 0."""
    if is_launched_rank():
        return
    have = run_checkpoints(out_dir)
    if not have or (resume is not None and not (resume == "auto" and "last.ckpt" not in have)):
        return
    what = "with --ckpt " + str(init_ckpt) if init_ckpt is not None and resume is None else "from scratch"
    offer = "--resume auto" if "last.ckpt" in have else f"--resume {Path(out_dir) / have[0]}"
    raise TinydetError(f"train.out_dir {out_dir}: already holds a run ({', '.join(have)}); training {what} would "
                       f"overwrite it: continue it with {offer}, start a fresh numbered run with --new, or set "
                       f"train.out_dir to another folder")


def new_run_dir(out_dir: "str | Path") -> Path:
    """``out_dir`` itself when it holds no run, else the first free ``NAME-N`` sibling (N >= 2),
    created now; inherited by launched ranks through ``TINYDET_RUN_DIR``."""
    chosen = os.environ.get(RUN_DIR_ENV)
    if chosen and is_launched_rank():
        return Path(chosen)
    out_dir = Path(out_dir)
    if not run_checkpoints(out_dir):
        path = out_dir
    else:
        m = re.match(r"^(.*)-(\d+)$", out_dir.name)
        stem, n = (m.group(1), int(m.group(2)) + 1) if m else (out_dir.name, 2)
        while True:
            path = out_dir.with_name(f"{stem}-{n}")
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
    os.environ[RUN_DIR_ENV] = str(path)
    return path
