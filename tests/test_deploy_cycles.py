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
