"""Preset registry, modelled on timm's: presets register a factory under a name;
``get_spec`` takes a preset name or a spec file path, and suggests close names on a typo."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tinydet.arch.spec import ArchSpec, load_spec
from tinydet.errors import TinydetError, closest

_PRESETS: dict[str, Callable[[], ArchSpec]] = {}


def register(name: str) -> Callable[[Callable[[], ArchSpec]], Callable[[], ArchSpec]]:
    """Decorator: register a zero-argument factory returning an :class:`ArchSpec`."""

    def wrap(factory: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = factory
        return factory

    return wrap


def list_presets() -> list[str]:
    _load_builtin()
    return sorted(_PRESETS)


def get_spec(name_or_path: "str | Path | ArchSpec") -> ArchSpec:
    """A preset by name, a spec read from a .yaml/.yml/.json path, or an imported folder's spec.yaml."""
    if isinstance(name_or_path, ArchSpec):
        return name_or_path
    _load_builtin()
    text = str(name_or_path)
    if text in _PRESETS:
        return _PRESETS[text]()
    path = Path(text)
    if path.is_dir() and (path / "spec.yaml").is_file():
        path = path / "spec.yaml"  # a folder written by `tinydet import`
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.exists():
            raise TinydetError(f"arch: spec file '{path}' does not exist")
        return load_spec(path)
    raise TinydetError(f"arch: unknown architecture '{text}'{closest(text, _PRESETS)}; "
                       f"presets: {', '.join(sorted(_PRESETS))}, or a path to a .yaml/.json spec")


def _load_builtin() -> None:
    import tinydet.arch.presets  # noqa: F401  (registers on import)
