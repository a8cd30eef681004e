"""Files the package ships beside its Python code (the C runtime, the targets, the demo firmware
sources, the configs), found with :mod:`importlib.resources` so that they are the same files in a
git checkout (``tinydet/_share/*`` link to ``deploy/`` and ``configs/``) and in an installed wheel
(where they are package data).

    resource_path("runtime") / "include"      # deploy/runtime/include
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from tinydet.errors import TinydetError

SHARED = ("runtime", "targets", "demo", "configs")


def resource_path(name: str) -> Path:
    """The folder of shared files ``name`` (one of :data:`SHARED`) as a file system path."""
    if name not in SHARED:
        raise TinydetError(f"resource '{name}': expected one of {', '.join(SHARED)}")
    path = Path(str(resources.files("tinydet").joinpath("_share", name)))
    if not path.is_dir():
        raise TinydetError(f"{path}: the installed tinydet has no {name} files; reinstall the package "
                           f"(`pip install .` ships them as package data)")
    return path
