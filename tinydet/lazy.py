"""Lazy package namespaces: a package lists ``name -> submodule`` and its public names import the
submodule only when first used (so ``import tinydet.quant`` pulls in neither torch nor onnxruntime)."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, api: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` resolving ``api[name]`` (a submodule name)."""
    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")
    return __getattr__
