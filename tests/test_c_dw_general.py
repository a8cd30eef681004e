"""The depthwise convolution's general path (deploy/runtime/src/nn_dw_plain.c) against numpy.

arm_depthwise_conv_s8 hands ch_mult > 1, dilation and kernels above 7x7 to the same plain loop that
ref_arm_depthwise_conv_s8 is, so comparing the two C kernels with each other proves nothing there:
this checks both against tinydet.quant.kernels, bit for bit. numpy's depthwise kernel has ch_mult 1;
output channel ic * ch_mult + j reads input channel ic, so repeating every input channel ch_mult
times gives the ch_mult > 1 reference.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinydet.deploy import toolchain
from tinydet.geometry import conv_out_size
from tinydet.quant import arith, kernels

sys.path.insert(0, str(Path(__file__).parent / "c"))
import driver as drv  # noqa: E402


def _case(rng, k: int, ch_mult: int, dilation: tuple[int, int]):
    c = int(rng.integers(1, 6))
    h, w = int(rng.integers(k, k + 5)), int(rng.integers(k, k + 5))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pad = (k // 2, k // 2)
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    wt = rng.integers(-128, 128, (1, k, k, c * ch_mult), dtype=np.int8)
    bias = rng.integers(-(2**15), 2**15, c * ch_mult).astype(np.int32)
    mult, shift = arith.quantize_multiplier(rng.uniform(2**-13, 2**-6, c * ch_mult))
    out_hw = (conv_out_size(h, k, stride[0], pad[0], pad[0], dilation[0]),
              conv_out_size(w, k, stride[1], pad[1], pad[1], dilation[1]))
    geo = dict(input_offset=int(rng.integers(-127, 128)), output_offset=int(rng.integers(-128, 128)),
               stride=stride, padding=pad, dilation=dilation, out_hw=out_hw, act_min=-120, act_max=110)
    want = kernels.depthwise_conv_s8(np.repeat(x, ch_mult, axis=3), wt, bias, mult=mult, shift=shift, **geo)
    return x, wt, bias, mult, shift, geo, ch_mult, want


@pytest.fixture(scope="module")
def host_driver(tmp_path_factory):
    return toolchain.compile([drv.DRIVER_SOURCE], "host", tmp_path_factory.mktemp("dwg") / "kernel_driver",
                             ref_kernels=True)


@pytest.mark.parametrize("k, ch_mult, dilation", [(3, 2, (1, 1)), (3, 3, (2, 1)), (5, 2, (1, 2)),
                                                  (3, 1, (2, 2)), (9, 1, (1, 1)), (9, 2, (1, 1))])
def test_depthwise_general_path_matches_numpy(host_driver, tmp_path, k, ch_mult, dilation):
    rng = np.random.default_rng(100 * k + 10 * ch_mult + dilation[0])
    recs, wants = [], []
    for _ in range(3):
        x, wt, bias, mult, shift, geo, m, want = _case(rng, k, ch_mult, dilation)
        for variant in (drv.DW_ARM, drv.DW_WRAPPER, drv.DW_REF):
            recs.append(drv.dw_record(x, wt, bias, mult, shift, variant=variant, ch_mult=m, **geo))
            wants.append(want)
    outs = drv.run_records(host_driver, tmp_path, recs, toolchain.run_host)
    assert len(outs) == len(wants)
    for i, ((status, _, got), want) in enumerate(zip(outs, wants)):
        assert status == 0, f"record {i}: status {status}"
        assert np.array_equal(np.frombuffer(got, np.int8).reshape(want.shape), want), f"record {i} differs"
