"""tinydet.deploy.cycles: the cycle model is the documented formula, per core, with clear refusals."""
import pytest

from tinydet.deploy import cycles
from tinydet.errors import TinydetError


def test_kernel_cycles_is_cpi_times_instructions_plus_flash_lines():
    f7 = cycles.STM32F746
    k = cycles.KernelCount(kind="conv", instructions=1000, macs=500, weight_bytes=65)
    # 65 bytes of weights = 3 cache lines of 32 bytes
    assert cycles.kernel_cycles(k, f7) == pytest.approx(1000 * f7.cpi["conv"] + 3 * f7.flash_line_wait)
    no_weights = cycles.KernelCount(kind="dwconv", instructions=1000)
    assert cycles.kernel_cycles(no_weights, f7) == pytest.approx(1000 * f7.cpi["dwconv"])
    custom = cycles.CoreModel("board", 100.0, flash_line_wait=0.0, cpi={**f7.cpi, "conv": 2.0})
    assert cycles.kernel_cycles(k, custom) == pytest.approx(2000.0)


def test_latency_scales_with_the_clock():
    ks = [cycles.KernelCount("conv", 2_160_000), cycles.KernelCount("add", 216_000)]
    f7_ms = cycles.latency_ms(ks, cycles.STM32F746, other_instructions=100_000)
    expect = (2_160_000 * 0.80 + 216_000 * 1.00 + 100_000 * 1.10) / 216e3
    assert f7_ms == pytest.approx(expect)
    table = cycles.latency_table(ks, other_instructions=100_000)
    assert set(table) == {"stm32f746_216mhz_ms", "stm32h743_480mhz_ms"}
    # same CPI on both parts, no weights: latency goes with the clock
    assert table["stm32h743_480mhz_ms"] == pytest.approx(table["stm32f746_216mhz_ms"] * 216 / 480, rel=0.01)


def test_bad_kernel_counts_are_refused():
    with pytest.raises(TinydetError, match="kernel kind 'pool'"):
        cycles.kernel_cycles(cycles.KernelCount("pool", 10))
    with pytest.raises(TinydetError, match="must be >= 0"):
        cycles.kernel_cycles(cycles.KernelCount("conv", -1))


BOARD_LOG = """tinydet demo: 64x48 arena=9216 counter=dwt-cyccnt instructions_per_tick_x1000=0
det 0 label=0 score=912 box=1,2,30,40
layer 0 blocks.0.conv 5000
layer 1 blocks.1.dw 3000
layer 2 blocks.1.project 2164
tinydet demo: 1 detections, 11000 ticks, input 300, detect 500, stack 2000 B
"""


def test_board_log_calibrates_the_cpi_per_kind():
    log = cycles.parse_board_log(BOARD_LOG)
    assert log.counter == "dwt-cyccnt" and log.instructions_per_tick == 0
    assert log.layer_ticks == {"blocks.0.conv": 5000, "blocks.1.dw": 3000, "blocks.1.project": 2164}
    assert (log.total_ticks, log.input_ticks, log.detect_ticks) == (11000, 300, 500)
    layers = {"blocks.0.conv": cycles.LayerCount("conv", 4000, weight_bytes=64),
              "blocks.1.dw": cycles.LayerCount("dwconv", 2000),
              "blocks.1.project": cycles.LayerCount("conv", 2000, weight_bytes=32)}
    core = cycles.calibrate(log, layers, cycles.STM32F746)
    wait = cycles.STM32F746.flash_line_wait
    assert core.cpi["conv"] == pytest.approx((5000 + 2164 - 3 * wait) / 6000)
    assert core.cpi["dwconv"] == pytest.approx(1.5)
    assert core.cpi["add"] == cycles.STM32F746.cpi["add"]  # not measured: the default stays
    # the calibrated model reproduces the measured cycles of each kind
    conv = sum(cycles.kernel_cycles(cycles.KernelCount(v.kind, v.instructions, weight_bytes=v.weight_bytes), core)
               for k, v in layers.items() if v.kind == "conv")
    assert conv == pytest.approx(5000 + 2164)


def test_bad_board_logs_are_refused():
    with pytest.raises(TinydetError, match="no 'tinydet demo:' banner"):
        cycles.parse_board_log("hello\n", "console.txt")
    qemu = BOARD_LOG.replace("counter=dwt-cyccnt instructions_per_tick_x1000=0", "counter=cmsdk instructions_per_tick_x1000=40000")
    log = cycles.parse_board_log(qemu)
    with pytest.raises(TinydetError, match="counts instructions, not cycles"):
        cycles.calibrate(log, {})
    with pytest.raises(TinydetError, match="in only one of"):
        cycles.calibrate(cycles.parse_board_log(BOARD_LOG), {"blocks.0.conv": cycles.LayerCount("conv", 1)})
