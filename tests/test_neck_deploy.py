"""Detector necks on the device (issue 14): the C kernels of max pool (``arm_max_pool_s8``: bundled,
or ARM's with CMSIS_NN_ROOT), nearest upsampling and channel concat against the numpy reference
(:mod:`tinydet.quant.kernels`) bit for bit, on the host and on QEMU (odd channel counts and sizes,
loop tails, padded pools, requantized and copied concat inputs)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydet.deploy import toolchain
from tinydet.geometry import conv_out_size
from tinydet.quant import kernels
from tinydet.quant.arith import quantize_multiplier

sys.path.insert(0, str(Path(__file__).parent / "c"))
import driver as drv  # noqa: E402

NECK_DRIVER = Path(__file__).parent / "c" / "neck_driver.c"
OP_MAXPOOL, OP_UPSAMPLE, OP_CONCAT = 1, 2, 3


def _maxpool_case(rng):
    k = int(rng.choice([2, 2, 3, 5]))
    s = int(rng.choice([1, 2, 2]))
    p = int(rng.integers(0, (k - 1) // 2 + 1)) if k > 2 else 0
    h, w, c = int(rng.integers(k, 12)), int(rng.integers(k, 13)), int(rng.integers(1, 20))
    n = 1 if rng.random() < 0.8 else 2
    out_hw = (conv_out_size(h, k, s, p, p), conv_out_size(w, k, s, p, p))
    lo, hi = (-128, 127) if rng.random() < 0.7 else (int(rng.integers(-128, 0)), int(rng.integers(0, 128)))
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    want = kernels.max_pool_s8(x, k, stride=s, padding=p, out_hw=out_hw, act_min=lo, act_max=hi)
    rec = drv.record(OP_MAXPOOL, [n, h, w, c, k, k, s, s, p, p, *out_hw, lo, hi], [x])
    return rec, want, f"maxpool k{k} s{s} p{p} {h}x{w}x{c} n{n}"


def _upsample_case(rng):
    sh, sw = (2, 2) if rng.random() < 0.7 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 19))
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    return (drv.record(OP_UPSAMPLE, [n, h, w, c, sh, sw], [x]), kernels.upsample_nearest_s8(x, (sh, sw)),
            f"upsample x{sh}x{sw} {h}x{w}x{c} n{n}")


def _concat_case(rng):
    k = int(rng.integers(1, 5))
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 9))
    xs, rqs, params = [], [], [n, h, w, k]
    s_out, zp_out = float(np.float32(rng.uniform(0.01, 0.1))), int(rng.integers(-128, 128))
    for _ in range(k):
        c = int(rng.integers(1, 12))
        same = rng.random() < 0.3
        # input scales around the output's: multipliers below and above 1 (right and left shifts)
        s_in = s_out if same else float(np.float32(s_out * rng.choice([rng.uniform(0.05, 1), rng.uniform(1, 9)])))
        zp_in = zp_out if same else int(rng.integers(-128, 128))
        rq = kernels.Requant.between(s_in, zp_in, s_out, zp_out)
        xs.append(rng.integers(-128, 128, (n, h, w, c), dtype=np.int8))
        rqs.append(rq)
        params += [c, rq.input_offset, rq.mult, rq.shift, rq.output_offset, int(rq.identity)]
    return drv.record(OP_CONCAT, params, xs), kernels.concat_s8(xs, rqs), f"concat of {k} ({[x.shape[3] for x in xs]})"


def _batch(seed, n=24):
    rng = np.random.default_rng(seed)
    cases = [make(rng) for _ in range(n) for make in (_maxpool_case, _upsample_case, _concat_case)]
    # an extreme requantization: the largest left shift TFLite's multiplier allows, saturating
    big = kernels.Requant(-3, 2**31 - 1, 30, 5, False)
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 8, 8)
    cases.append((drv.record(OP_CONCAT, [1, 4, 8, 1, 8, -3, 2**31 - 1, 30, 5, 0], [x]),
                  kernels.concat_s8([x], [big]), "concat saturating"))
    return zip(*cases)


def _check(outputs, want, labels):
    assert len(outputs) == len(want)
    for (status, _, data), w, label in zip(outputs, want, labels):
        assert status == 0, label
        got = np.frombuffer(data, np.int8)
        assert np.array_equal(got, np.ascontiguousarray(w).reshape(-1)), label


@pytest.fixture(scope="module")
def host_driver(tmp_path_factory):
    return toolchain.compile([NECK_DRIVER], "host", tmp_path_factory.mktemp("neck") / "neck_driver")


def test_neck_kernels_bit_exact_vs_numpy_on_host(host_driver, tmp_path):
    recs, want, labels = _batch(seed=3)
    _check(drv.run_records(host_driver, tmp_path, list(recs), toolchain.run_host), want, labels)


def test_neck_kernels_refuse_bad_arguments(host_driver, tmp_path):
    x = np.zeros((1, 3, 3, 2), np.int8)
    recs = [drv.record(OP_MAXPOOL, [1, 3, 3, 2, 2, 2, 2, 2, 0, 0, 3, 3, -128, 127], [x]),  # a window off the input
            drv.record(OP_UPSAMPLE, [1, 3, 3, 2, 0, 2], [x]),  # a zero factor
            drv.record(OP_CONCAT, [1, 3, 3, 0], [])]  # nothing to concatenate
    out = drv.run_records(host_driver, tmp_path, recs, toolchain.run_host)
    assert [o[0] for o in out] == [-1, -1, -1]


def test_neck_kernels_bit_exact_vs_numpy_on_qemu(tmp_path):
    """The Cortex-M7 build (DSP paths, the ARM compiler's memcpy) of the same kernels."""
    elf = toolchain.compile([NECK_DRIVER], "qemu-mps2-an500", tmp_path / "neck_driver.elf",
                            defines={"TINYDET_BOARD": 1})
    recs, want, labels = _batch(seed=5, n=10)
    _check(drv.run_records(elf, tmp_path / "run", list(recs), toolchain.run_qemu), want, labels)


@pytest.mark.skipif(not os.environ.get("CMSIS_NN_ROOT"), reason="set CMSIS_NN_ROOT to a CMSIS-NN source tree")
def test_cmsis_nn_max_pool_gives_identical_outputs(tmp_path):
    """CMSIS_NN_ROOT: max pool is ARM's arm_max_pool_s8; upsample and concat stay tinydet's."""
    exe = toolchain.compile([NECK_DRIVER], "host", tmp_path / "neck_cmsis", cmsis_nn_root=os.environ["CMSIS_NN_ROOT"])
    recs, want, labels = _batch(seed=9, n=12)
    _check(drv.run_records(exe, tmp_path / "run", list(recs), toolchain.run_host), want, labels)
