"""Integer-only int8 requantization arithmetic (TFLite / CMSIS-NN double rounding), in numpy.

This is the numpy half of DESIGN.md "Int8 arithmetic"; the C half is
``deploy/runtime/include/tinydet_arith.h``. The two are tested against each other bit for bit.

Conventions (identical to TFLite's ``MultiplyByQuantizedMultiplier`` and CMSIS-NN's
``arm_nn_requantize`` built without ``CMSIS_NN_USE_SINGLE_ROUNDING``):

* a real multiplier ``m`` is represented as ``mult_q31 * 2**(shift - 31)`` with ``mult_q31`` in
  ``[2**30, 2**31)`` (or 0) and ``shift > 0`` meaning a left shift;
* ``requantize(acc) = rdbpot(srdhm(acc << max(shift, 0), mult), max(-shift, 0))``, where the left
  shift wraps modulo 2**32 like the 32-bit register it runs in on the MCU (the high multiply is
  CMSIS's non-saturating form, identical to srdhm for every multiplier >= 0).

All functions are vectorised; every intermediate is int64 so nothing overflows silently, and
results are int64 arrays holding int32 values (callers cast as they need).
"""
from __future__ import annotations

import numpy as np

from tinydet.quant.params import QMAX, QMIN

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Reduce integers modulo 2**32 into the int32 range (two's-complement wrap of a 32-bit register)."""
    x = _i64(x)
    return ((x + 2**31) & 0xFFFFFFFF) - 2**31


def quantize_multiplier(real):
    """TFLite ``QuantizeMultiplier``: real multiplier(s) -> ``(mult_q31, shift)`` int64 arrays.

    ``real == mult_q31 * 2**(shift - 31)`` up to rounding; ``shift > 0`` is a left shift. Zero
    maps to (0, 0); multipliers below 2**-31 flush to (0, 0); huge ones clamp to shift 30.
    Scalars give 0-d arrays (use ``int()``), arrays give per-channel arrays.
    """
    r = np.asarray(real, dtype=np.float64)
    q, exp = np.frexp(r)  # r = q * 2**exp, |q| in [0.5, 1)
    exp = exp.astype(np.int64)
    # std::round (half away from zero) of q * 2**31, as TFLite does
    q_fixed = (np.sign(q) * np.floor(np.abs(q) * 2.0**31 + 0.5)).astype(np.int64)
    carry = np.abs(q_fixed) == 2**31
    q_fixed = np.where(carry, q_fixed // 2, q_fixed)
    exp = np.where(carry, exp + 1, exp)
    tiny = exp < -31
    q_fixed = np.where(tiny, 0, q_fixed)
    exp = np.where(tiny, 0, exp)
    huge = exp > 30
    q_fixed = np.where(huge, INT32_MAX, q_fixed)
    exp = np.where(huge, 30, exp)
    zero = r == 0
    return np.where(zero, 0, q_fixed).astype(np.int64), np.where(zero, 0, exp).astype(np.int64)


def srdhm(a, b) -> np.ndarray:
    """Saturating rounding doubling high multiply of int32 values (gemmlowp / TFLite / VQRDMULH).

    Returns ``round(a * b / 2**31)`` with ties resolved as TFLite does (nudge 2**30 or 1 - 2**30, then
    truncation), and the single overflow case ``INT32_MIN * INT32_MIN`` saturated to ``INT32_MAX``.
    """
    a, b = _i64(a), _i64(b)
    ab = a * b  # |ab| <= 2**62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    # C integer division truncates toward zero; numpy's // floors, so divide the magnitude
    res = np.sign(v) * (np.abs(v) >> 31)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, res).astype(np.int64)


def rdbpot(x, exponent) -> np.ndarray:
    """Rounding divide by 2**exponent (exponent in [0, 31]), ties away from zero (TFLite's mask trick)."""
    x, e = _i64(x), _i64(exponent)
    if np.any((e < 0) | (e > 31)):
        raise ValueError(f"rdbpot: exponent must be in [0, 31], got {e.min()}..{e.max()}")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> e) + (remainder > threshold)).astype(np.int64)


def requantize(acc, mult, shift) -> np.ndarray:
    """CMSIS-NN ``arm_nn_requantize`` (double rounding): ``acc * mult * 2**(shift - 31)``, rounded.

    ``mult``/``shift`` broadcast against ``acc`` (per-channel: last axis, NHWC). The left part of
    the shift is applied before the high multiply (wrapping like a 32-bit register), the right part
    after it, as a rounding divide.
    """
    acc, mult, shift = _i64(acc), _i64(mult), _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # CMSIS's non-saturating doubling high multiply: (x*m + 2**30) >> 31 equals srdhm except for
    # x == m == INT32_MIN, which no valid multiplier (>= 0) reaches
    high = (wrap_int32(acc << left) * mult + (1 << 30)) >> 31
    return rdbpot(high, right)


def _broadcast_params(scale, zero_point, ndim: int, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero point int64), per-channel 1-D arrays shaped to broadcast along ``axis``."""
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.asarray(zero_point, dtype=np.int64)
    if axis is not None and scale.ndim == 1:
        shape = [1] * ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return scale, zp


def quantize(x, scale, zero_point, axis: int | None = None, qmin: int = QMIN, qmax: int = QMAX) -> np.ndarray:
    """Float -> int8 as ONNX ``QuantizeLinear``: ``clip(round_half_even(x / scale) + zp)``.

    ``axis`` selects the channel axis for per-channel ``scale``/``zero_point`` (1-D arrays).
    """
    x = np.asarray(x, dtype=np.float32)
    scale, zp = _broadcast_params(scale, zero_point, x.ndim, axis)
    # ONNX divides in float32 and rounds half to even (np.rint)
    q = np.rint(x / scale).astype(np.int64) + zp
    return np.clip(q, qmin, qmax).astype(np.int8)


def dequantize(q, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """int8 -> float32 as ONNX ``DequantizeLinear``: ``(q - zp) * scale``."""
    q = np.asarray(q, dtype=np.int64)
    scale, zp = _broadcast_params(scale, zero_point, q.ndim, axis)
    return ((q - zp).astype(np.float32) * scale).astype(np.float32)
