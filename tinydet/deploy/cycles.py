"""Cortex-M7 cycle and latency estimates from instruction counts (QEMU ``-icount``), per kernel.

QEMU counts instructions, not cycles. The Cortex-M7 issues up to two instructions per cycle (one
load/store beside one ALU/MAC op, in-order, 6-stage pipeline; single-cycle 16x16 / dual 16x16
multiply-accumulates; ARM Cortex-M7 Technical Reference Manual r1p2, "Processor pipeline" and
"Instruction timing"), while data that misses the caches waits for the bus. This module is the
small model that turns the per-layer instruction counts the firmware reports into cycles:

    cycles = instructions * cpi[kind] + weight_bytes / line_bytes * flash_line_wait

* ``cpi[kind]``: cycles per instruction of a kernel's instruction mix with data in SRAM/DTCM and
  code in the I-cache / ITCM. The inner loops are load + SXTB16 + SMLAD/SMLABB mixes: a load pairs
  with a multiply in one cycle, but a load's result is needed two instructions later and SMLAD
  chains on one accumulator stall, so dual issue is only partly used. The default values (conv
  0.80, depthwise 0.90, elementwise add 1.00, everything else 1.10) are ASSUMPTIONS from that
  instruction mix and the TRM's timings, not measurements of this code on a board; ``CoreModel``
  takes other values.
* weights stream from internal Flash once per layer call: every D-cache line (32 bytes) of weights
  pays ``flash_line_wait`` cycles beyond the instruction time. STM32F746 at 216 MHz runs its Flash
  with 7 wait states (reference manual RM0385, Flash access latency vs HCLK); a 32-byte miss is
  taken as about 8 cycles. STM32H743 at 480 MHz: Flash on the 240 MHz AXI bus with its own wait
  states; taken as about 6 core cycles per 32-byte miss. Activations live in SRAM (the arena): no
  waits modelled for them beyond the CPI.

Calibration: the board firmware can print the DWT cycle counter (CYCCNT) per layer; the ratio of
measured cycles to this estimate for each kernel kind is what to put into ``CoreModel.cpi`` for a
specific board, compiler and memory placement. Until then the figures are estimates (+-30%).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tinydet.errors import TinydetError

KINDS = ("conv", "dwconv", "dwconv_inplace", "add", "other")

_DEFAULT_CPI = {"conv": 0.80, "dwconv": 0.90, "dwconv_inplace": 0.90, "add": 1.00, "other": 1.10}


@dataclass(frozen=True)
class CoreModel:
    """A Cortex-M7 part: clock, Flash wait per 32-byte line of streamed weights, CPI per kernel kind."""
    name: str
    mhz: float
    flash_line_wait: float
    line_bytes: int = 32
    cpi: dict = field(default_factory=lambda: dict(_DEFAULT_CPI))


STM32F746 = CoreModel("stm32f746", 216.0, flash_line_wait=8.0)
STM32H743 = CoreModel("stm32h743", 480.0, flash_line_wait=6.0)
CORES = {c.name: c for c in (STM32F746, STM32H743)}


@dataclass(frozen=True)
class KernelCount:
    """One kernel call as measured: its kind (one of KINDS), instructions, MACs and weight bytes."""
    kind: str
    instructions: int
    macs: int = 0
    weight_bytes: int = 0


def kernel_cycles(k: KernelCount, core: CoreModel = STM32F746) -> float:
    """Estimated cycles of one kernel call on ``core`` (see the module docstring for the model)."""
    if k.kind not in core.cpi:
        raise TinydetError(f"kernel kind {k.kind!r}: expected one of {sorted(core.cpi)}")
    if k.instructions < 0 or k.weight_bytes < 0:
        raise TinydetError(f"kernel counts must be >= 0, got instructions={k.instructions}, "
                         f"weight_bytes={k.weight_bytes}")
    lines = -(-k.weight_bytes // core.line_bytes)
    return k.instructions * core.cpi[k.kind] + lines * core.flash_line_wait


def latency_ms(kernels: list[KernelCount], core: CoreModel = STM32F746, other_instructions: int = 0) -> float:
    """Estimated latency in ms of one inference: the kernels plus ``other_instructions`` (executor,
    decode, NMS: CPI of kind "other") at the core's clock."""
    cyc = sum(kernel_cycles(k, core) for k in kernels) + other_instructions * core.cpi["other"]
    return cyc / (core.mhz * 1e3)


def latency_table(kernels: list[KernelCount], other_instructions: int = 0) -> dict[str, float]:
    """``{"stm32f746_216mhz_ms": ..., "stm32h743_480mhz_ms": ...}`` for a whole inference."""
    return {f"{c.name}_{int(c.mhz)}mhz_ms": round(latency_ms(kernels, c, other_instructions), 2)
            for c in CORES.values()}
