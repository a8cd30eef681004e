"""Deployment targets and their memory budgets: the fit check that runs before compiling.

Budgets come from ``deploy/targets/<name>/target.json`` (read by :mod:`tinydet.deploy.toolchain`):
STM32F746 320 kB SRAM / 1 MB Flash, STM32H743 512 kB AXI SRAM / 2 MB Flash, QEMU mps2-an500
4 MB / 4 MB. ``host`` has no budget. ``--sram`` / ``--flash`` override them (a board variant, or
a tighter budget for the application around the model).
"""
from __future__ import annotations

from dataclasses import dataclass

from tinydet.deploy import toolchain
from tinydet.errors import TinydetError

DEPLOY_TARGETS = ("host", "qemu-mps2-an500", "stm32f746", "stm32h743")
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


def parse_size(text: "str | int | None", what: str) -> int | None:
    """``"320k"``, ``"1M"``, ``"4096"`` -> bytes (k = 1024)."""
    if text is None or isinstance(text, int):
        return text
    s = str(text).strip().lower().removesuffix("b")
    mult = 1
    if s and s[-1] in "km":
        mult, s = (1024 if s[-1] == "k" else 1024 * 1024), s[:-1]
    try:
        value = int(float(s) * mult)
    except ValueError:
        raise TinydetError(f"{what}: expected a size such as 320k, 1M or 65536, got '{text}'") from None
    if value <= 0:
        raise TinydetError(f"{what}: expected a positive size, got '{text}'")
    return value


def _stack_bytes(target: toolchain.Target) -> int:
    if target.linker_script is None:
        return 0
    import re

    text = target.linker_script.read_text()
    m = re.search(r"STACK_SIZE\s*:\s*(0x[0-9a-fA-F]+|\d+)", text)
    return int(m.group(1), 0) if m else 0


def budget(target: str, sram: "str | int | None" = None, flash: "str | int | None" = None) -> Budget:
    """The budget of ``target`` with optional overrides."""
    if target not in DEPLOY_TARGETS:
        from tinydet.errors import closest

        raise TinydetError(f"--target: expected one of {', '.join(DEPLOY_TARGETS)}, got '{target}'"
                           f"{closest(target, list(DEPLOY_TARGETS))}")
    t = toolchain.get_target(target)
    s = parse_size(sram, "--sram")
    f = parse_size(flash, "--flash")
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
