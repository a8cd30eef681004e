"""tinydet.quant.arith and tinydet.quant.kernels against scalar Python-int transcriptions of TFLite's
integer arithmetic and against float maths (the C side is checked in test_c_kernels.py)."""
import numpy as np
import pytest

from tinydet.geometry import conv_out_size
from tinydet.quant import arith, kernels

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _srdhm_scalar(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return int(v / 2**31) if abs(v) < 2**52 else (abs(v) >> 31) * (1 if v >= 0 else -1)


def _rdbpot_scalar(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def _wrap(x: int) -> int:
    return ((x + 2**31) % 2**32) - 2**31


def _requant_scalar(acc: int, m: int, s: int) -> int:
    return _rdbpot_scalar(_srdhm_scalar(_wrap(acc << max(s, 0)), m), max(-s, 0))


EDGES = [I32_MIN, I32_MIN + 1, -(2**30), -65536, -129, -128, -3, -2, -1, 0, 1, 2, 3, 127, 128, 2**30, I32_MAX - 1, I32_MAX]


def test_quantize_multiplier_known_values():
    m, s = arith.quantize_multiplier([0.5, 1.0, 0.25, 0.0, 0.75, 2.0**-40, 1e12, 0.9999999999999])
    assert m.tolist() == [2**30, 2**30, 2**30, 0, 3 * 2**29, 0, I32_MAX, 2**30]
    assert s.tolist() == [0, 1, -1, 0, 0, 0, 30, 1]
    rng = np.random.default_rng(0)
    real = rng.uniform(1e-6, 4.0, 1000)
    m, s = arith.quantize_multiplier(real)
    assert np.all((m >= 2**30) & (m < 2**31))
    np.testing.assert_allclose(m * 2.0 ** (s - 31), real, rtol=2**-30)


def test_srdhm_rdbpot_match_scalar_definition():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True), np.repeat(EDGES, len(EDGES))])
    b = np.concatenate([rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True), np.tile(EDGES, len(EDGES))])
    got = arith.srdhm(a, b)
    assert got.tolist() == [_srdhm_scalar(int(x), int(y)) for x, y in zip(a, b)]
    assert arith.srdhm(I32_MIN, I32_MIN) == I32_MAX
    e = rng.integers(0, 32, a.size)
    assert arith.rdbpot(a, e).tolist() == [_rdbpot_scalar(int(x), int(k)) for x, k in zip(a, e)]
    # ties go away from zero
    assert arith.rdbpot([3, -3, 5, -5, 6, -6], 1).tolist() == [2, -2, 3, -3, 3, -3]
    with pytest.raises(ValueError):
        arith.rdbpot(1, 32)


def test_requantize_matches_scalar_and_float():
    rng = np.random.default_rng(2)
    acc = np.concatenate([rng.integers(-(2**20), 2**20, 2000), np.array(EDGES * 4)])
    real = rng.uniform(2**-20, 1.9, acc.size)
    m, s = arith.quantize_multiplier(real)
    s[-len(EDGES):] = 30          # left-shift extreme (wraps like the register)
    s[-2 * len(EDGES):-len(EDGES)] = -31  # right-shift extreme
    got = arith.requantize(acc, m, s)
    assert got.tolist() == [_requant_scalar(int(x), int(y), int(z)) for x, y, z in zip(acc, m, s)]
    # where nothing wraps, double rounding stays within 1 of the exact real product
    n = 2000
    exact = acc[:n] * (m[:n] * 2.0 ** (s[:n] - 31))
    assert np.max(np.abs(got[:n] - exact)) <= 1.0


def test_quantize_dequantize_roundtrip_half_even():
    q = arith.quantize([0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0], 1.0, 0)
    assert q.tolist() == [0, 2, 2, 0, 127, -128]
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    q = arith.quantize(x, 1 / 127, 0)
    assert np.max(np.abs(arith.dequantize(q, 1 / 127, 0) - x)) <= 0.5 / 127 + 1e-7
    pc = arith.quantize(np.ones((2, 3)), np.array([0.5, 0.25]), np.array([1, -1]), axis=0)
    assert pc.tolist() == [[3, 3, 3], [3, 3, 3]]


def _float_conv(x, w, stride, pad, out_hw, depthwise=False):
    """Float64 direct convolution on offset-corrected inputs (zero outside the input)."""
    n, h, wd, c = x.shape
    out = np.zeros((n, out_hw[0], out_hw[1], w.shape[0] if not depthwise else c))
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            for ky in range(w.shape[1]):
                for kx in range(w.shape[2]):
                    iy, ix = oy * stride[0] - pad[0] + ky, ox * stride[1] - pad[1] + kx
                    if 0 <= iy < h and 0 <= ix < wd:
                        if depthwise:
                            out[:, oy, ox, :] += x[:, iy, ix, :] * w[0, ky, kx, :]
                        else:
                            out[:, oy, ox, :] += x[:, iy, ix, :] @ w[:, ky, kx, :].T
    return out


@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_kernels_equal_float_maths_when_multiplier_is_one(depthwise):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 7, 6, 4), dtype=np.int8)
    w = rng.integers(-128, 128, (1 if depthwise else 5, 3, 3, 4), dtype=np.int8)
    cout = 4 if depthwise else 5
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    m, s = arith.quantize_multiplier(np.full(cout, 2.0**-12))
    fn = kernels.depthwise_conv_s8 if depthwise else kernels.conv_s8
    out = fn(x, w, bias, input_offset=5, output_offset=-3, mult=m, shift=s, stride=(2, 1), padding=(1, 1),
             out_hw=(4, 6), act_min=-128, act_max=127)
    ref = _float_conv(x.astype(np.float64) + 5, w.astype(np.float64), (2, 1), (1, 1), (4, 6), depthwise)
    acc = ref + bias
    expect = np.clip(arith.requantize(acc.astype(np.int64), m, s) - 3, -128, 127)
    assert np.array_equal(out, expect)
    assert out.shape == (1, 4, 6, cout)
    assert conv_out_size(7, 3, 2, 1, 1) == 4


def test_add_params_and_add_s8_approximate_float_sum():
    rng = np.random.default_rng(4)
    s1, zp1, s2, zp2, so, zpo = 0.05, 3, 0.02, -7, 0.06, 1
    p = kernels.add_params(s1, zp1, s2, zp2, so, zpo)
    assert p["left_shift"] == 20 and p["input_1_offset"] == -3 and p["out_offset"] == 1
    a = rng.integers(-128, 128, (2, 5, 5, 3), dtype=np.int8)
    b = rng.integers(-128, 128, (2, 5, 5, 3), dtype=np.int8)
    out = kernels.add_s8(a, b, **p)
    real = ((a.astype(float) - zp1) * s1 + (b.astype(float) - zp2) * s2) / so + zpo
    assert np.max(np.abs(out - np.clip(real, -128, 127))) <= 1.0
    relu = kernels.add_s8(a, b, **p, act_min=zpo, act_max=127)
    assert relu.min() >= zpo


def test_avgpool_fc():
    x = np.array([[[[1], [2]], [[4], [-8]]]], dtype=np.int8)  # 2x2x1
    assert kernels.global_avgpool_s8(x).ravel().tolist() == [0]  # -1/4 -> 0
    x2 = np.array([[[[3], [4]], [[4], [4]]]], dtype=np.int8)
    assert kernels.global_avgpool_s8(x2).ravel().tolist() == [4]  # 15/4 = 3.75 -> 4
    xn = -x2
    assert kernels.global_avgpool_s8(xn).ravel().tolist() == [-4]
    # padding is not counted: corner window of a 3x3 pool with pad 1 sees 4 values
    p = kernels.avgpool_s8(np.full((1, 2, 2, 1), 10, np.int8), (3, 3), padding=(1, 1), out_hw=(2, 2))
    assert p.ravel().tolist() == [10, 10, 10, 10]
    rng = np.random.default_rng(5)
    xi = rng.integers(-128, 128, (3, 10), dtype=np.int8)
    w = rng.integers(-128, 128, (4, 10), dtype=np.int8)
    m, s = arith.quantize_multiplier(2.0**-10)
    out = kernels.fully_connected_s8(xi, w, np.arange(4, dtype=np.int32), input_offset=128, output_offset=-128,
                                     mult=m, shift=s)
    acc = (xi.astype(np.int64) + 128) @ w.astype(np.int64).T + np.arange(4)
    assert np.array_equal(out, np.clip(arith.requantize(acc, m, s) - 128, -128, 127))
