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

Calibration on a board: the board demo firmware (deploy/demo/board_main.c, built by
``tinydet.deploy.build.build_board_demo`` for stm32f746 / stm32h743) enables the DWT cycle counter
(CYCCNT) and prints one ``layer <i> <name> <cycles>`` line per layer over the UART. Capture that
console text, then::

    log = cycles.parse_board_log(text)                       # BoardLog: cycles per layer
    core = cycles.calibrate(log, layers, cycles.STM32F746)   # layers: LayerCount per layer name

``layers`` are the same layers' instruction counts (the ``layer`` lines of ``tinydet deploy --run``
on qemu-mps2-an500, same export and mode), kinds and weight bytes; ``calibrate`` fits each kind's
CPI (cycles net of the Flash term / instructions) and returns the CoreModel to use for that board,
compiler and memory placement. The board glue runs at the reset clock (HSI, no PLL, Flash at zero
wait states), so a log taken that way calibrates the CPI; the Flash term of the target clock stays
the model's. Until calibrated the figures are estimates (+-30%).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class BoardLog:
    """The counters a board demo firmware printed (deploy/demo/board_main.c)."""
    counter: str
    instructions_per_tick: float  # 0: the ticks are core cycles (DWT CYCCNT)
    layer_ticks: dict             # layer name -> ticks of one inference
    total_ticks: int
    input_ticks: int
    detect_ticks: int


def parse_board_log(text: str, source: str = "board log") -> BoardLog:
    """The banner, ``layer`` lines and summary of a board demo's console output (``source`` names it
    in errors)."""
    head = re.search(r"counter=(\S+) instructions_per_tick_x1000=(\d+)", text)
    tail = re.search(r"tinydet demo: \d+ detections, (\d+) ticks, input (\d+), detect (\d+)", text)
    if head is None or tail is None:
        raise TinydetError(f"{source}: no 'tinydet demo:' banner and summary line (expected the console output of "
                           f"the board demo firmware, deploy/demo/board_main.c)")
    layers = {m.group(2): int(m.group(3)) for m in re.finditer(r"^layer (\d+) (\S+) (\d+)\s*$", text, re.M)}
    if not layers:
        raise TinydetError(f"{source}: no 'layer <i> <name> <ticks>' lines")
    return BoardLog(counter=head.group(1), instructions_per_tick=int(head.group(2)) / 1000.0, layer_ticks=layers,
                    total_ticks=int(tail.group(1)), input_ticks=int(tail.group(2)), detect_ticks=int(tail.group(3)))


@dataclass(frozen=True)
class LayerCount:
    """One layer of an inference as counted on QEMU: its kernel kind, instructions and the weight
    bytes it streams per inference (every call, every tile)."""
    kind: str
    instructions: int
    weight_bytes: int = 0


def calibrate(log: BoardLog, layers: dict, core: CoreModel = STM32F746) -> CoreModel:
    """``core`` with each kernel kind's CPI fitted to a board's measured cycles: per kind,
    (sum of cycles - the model's Flash term) / sum of instructions over the layers of that kind.
    ``layers``: layer name -> LayerCount (QEMU instruction counts of the same export and mode)."""
    if log.instructions_per_tick != 0:
        raise TinydetError(f"board log: counter {log.counter!r} counts instructions, not cycles (calibrate with the "
                           f"log of an STM32 target, counter dwt-cyccnt)")
    missing = sorted(set(log.layer_ticks) ^ set(layers))
    if missing:
        raise TinydetError(f"board log: layers {missing[:5]} are in only one of the board log and the instruction "
                           f"counts (same export and mode expected)")
    cyc: dict = {}
    ins: dict = {}
    for name, lay in layers.items():
        if lay.kind not in core.cpi:
            raise TinydetError(f"layer {name}: kernel kind {lay.kind!r}: expected one of {sorted(core.cpi)}")
        lines = -(-lay.weight_bytes // core.line_bytes)
        cyc[lay.kind] = cyc.get(lay.kind, 0.0) + log.layer_ticks[name] - lines * core.flash_line_wait
        ins[lay.kind] = ins.get(lay.kind, 0) + lay.instructions
    cpi = dict(core.cpi)
    for kind, n in ins.items():
        if n > 0:
            cpi[kind] = max(cyc[kind], 0.0) / n
    return replace(core, name=f"{core.name}-calibrated", cpi=cpi)
