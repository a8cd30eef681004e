"""Deployment targets and their memory budgets: the fit check that runs before compiling.

The targets and their budgets are ``deploy/targets/<name>/target.json`` (``flash_bytes``,
``sram_bytes``; read by :mod:`tinydet.deploy.toolchain`, the only place that knows them) plus
``host``, which has no budget. ``--sram`` / ``--flash`` override them (a board variant, or a
tighter budget for the application around the model), parsed by :func:`tinydet.units.parse_bytes`.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinydet.deploy import toolchain
from tinydet.errors import TinydetError
from tinydet.units import parse_bytes

# what the firmware around the model needs besides the arena and scratch: runtime .data/.bss,
# newlib buffers, the decode candidates (added by the caller) -- a conservative allowance so the
# refusal happens here, with numbers, rather than as a linker error
RUNTIME_SRAM_ALLOWANCE = 4096
RUNTIME_FLASH_ALLOWANCE = 64 * 1024


@dataclass(frozen=True)
class Budget:
    """SRAM / Flash bytes available to the firmware (None = unlimited, the host)."""

    target: str
    sram: int | None
    flash: int | None
    stack: int


def _stack_bytes(target: toolchain.Target) -> int:
    if target.linker_script is None:
        return 0
    import re

    text = target.linker_script.read_text()
    m = re.search(r"STACK_SIZE\s*:\s*(0x[0-9a-fA-F]+|\d+)", text)
    return int(m.group(1), 0) if m else 0


def budget(target: str, sram: "str | int | None" = None, flash: "str | int | None" = None) -> Budget:
    """The budget of ``target`` with optional overrides."""
    names = toolchain.list_targets()
    if target not in names:
        from tinydet.errors import closest

        raise TinydetError(f"--target: expected one of {', '.join(names)}, got '{target}'{closest(target, names)}")
    t = toolchain.get_target(target)
    s = None if sram is None else parse_bytes(sram, "--sram")
    f = None if flash is None else parse_bytes(flash, "--flash")
    return Budget(target, s if s is not None else t.sram_bytes, f if f is not None else t.flash_bytes,
                  _stack_bytes(t))


def check_fits(b: Budget, arena: int, scratch: int, static_extra: int, const_bytes: int, model: str) -> dict:
    """Raise TinydetError (with the numbers) when the model cannot fit ``b``; returns the estimate."""
    sram_need = arena + scratch + static_extra + b.stack + RUNTIME_SRAM_ALLOWANCE
    flash_need = const_bytes + RUNTIME_FLASH_ALLOWANCE
    if b.sram is not None and sram_need > b.sram:
        raise TinydetError(f"{model} does not fit {b.target}: needs {sram_need} B SRAM (arena {arena} + kernel "
                           f"scratch {scratch} + decode {static_extra} + stack {b.stack} + runtime "
                           f"{RUNTIME_SRAM_ALLOWANCE}) but the target has {b.sram} B; pick a smaller model, "
                           f"a patch plan with a lower peak (`tinydet export --plan auto`), or a bigger target")
    if b.flash is not None and flash_need > b.flash:
        raise TinydetError(f"{model} does not fit {b.target}: needs {flash_need} B Flash (weights and "
                           f"quantization parameters {const_bytes} + code {RUNTIME_FLASH_ALLOWANCE}) but the target "
                           f"has {b.flash} B; pick a smaller model or a bigger target")
    return {"sram_needed_bytes": sram_need, "flash_needed_bytes": flash_need, "sram_budget_bytes": b.sram,
            "flash_budget_bytes": b.flash}
