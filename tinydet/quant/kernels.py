"""numpy reference kernels with CMSIS-NN s8 semantics, bit exact with ``deploy/runtime``.

Layouts and parameters follow CMSIS-NN so that generated C calls can be checked one to one:

* activations NHWC int8; conv filters OHWI; depthwise filters ``[1, KH, KW, C]`` (ch_mult 1);
  fully-connected filters ``[C_OUT, D]``; bias int32 (or ``None``);
* ``input_offset = -input_zero_point``, ``output_offset = +output_zero_point``;
* per-channel ``mult``/``shift`` from :func:`tinydet.quant.arith.quantize_multiplier`;
* geometry as CMSIS: ``stride``/``padding``/``dilation`` are ``(h, w)``; ``padding`` is the
  top/left amount; the output size is given explicitly (``out_hw``) and may be smaller or larger
  than "same"/"valid" would give. Input positions outside the input read as the input zero point,
  i.e. contribute 0 once the offset is added;
* the accumulator is a 32-bit register: bias + sum is wrapped modulo 2**32 before requantization.

Multiply-accumulates are done in float64, which is exact here: every product is below 2**16 and a
layer sums far fewer than 2**37 of them, so the sum stays below 2**53.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tinydet.geometry import conv_out_size
from tinydet.quant.arith import quantize_multiplier, requantize, wrap_int32
from tinydet.quant.params import QMAX, QMIN

Pair = Sequence[int]


def _pair(v, name: str) -> tuple[int, int]:
    if np.ndim(v) == 0:
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def _nhwc(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"{name} must be int8, got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC (4-D), got shape {x.shape}")
    return x


def _taps(x_off: np.ndarray, k_hw, stride, padding, dilation, out_hw):
    """Yield ``(kh, kw, window)`` with ``window[n, oh, ow, c] = x_off`` at the tap's input position (0 outside)."""
    n, h, w, c = x_off.shape
    (kh_, kw_), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = k_hw, stride, padding, dilation, out_hw
    need_h = (oh - 1) * sh + (kh_ - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw_ - 1) * dw + 1
    # zero-pad enough on every side for the requested output size; zero == zero point after offset
    xp = np.zeros((n, max(need_h, ph + h), max(need_w, pw + w), c), dtype=x_off.dtype)
    xp[:, ph:ph + h, pw:pw + w, :] = x_off
    for i in range(kh_):
        for j in range(kw_):
            yield i, j, xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw, :]


def _finish(acc: np.ndarray, bias, mult, shift, output_offset: int, act_min: int, act_max: int) -> np.ndarray:
    acc = np.rint(acc).astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    out = requantize(wrap_int32(acc), mult, shift) + int(output_offset)
    return np.clip(out, act_min, act_max).astype(np.int8)


def _geometry(x: np.ndarray, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair,
              out_hw: Pair | None) -> tuple[tuple[int, int], ...]:
    """Normalised (stride, padding, dilation, out_hw); ``out_hw`` defaults to symmetric padding."""
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if out_hw is None:
        out_hw = (conv_out_size(x.shape[1], kh, stride[0], padding[0], padding[0], dilation[0]),
                  conv_out_size(x.shape[2], kw, stride[1], padding[1], padding[1], dilation[1]))
    return stride, padding, dilation, _pair(out_hw, "out_hw")


def conv_s8(x, weight, bias, *, input_offset: int, output_offset: int, mult, shift,
            stride: Pair = (1, 1), padding: Pair = (0, 0), dilation: Pair = (1, 1),
            out_hw: Pair | None = None, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_convolve_s8``: NHWC int8 input, OHWI int8 weight, per-channel requantization -> NHWC int8.

    ``out_hw`` defaults to the size with symmetric padding (top/left amount on both sides).
    """
    x = _nhwc(x, "input")
    weight = np.asarray(weight, dtype=np.int8)
    if weight.ndim != 4 or weight.shape[3] != x.shape[3]:
        raise ValueError(f"conv_s8: weight must be OHWI with I={x.shape[3]}, got {weight.shape}")
    cout, kh, kw, _ = weight.shape
    stride, padding, dilation, out_hw = _geometry(x, kh, kw, stride, padding, dilation, out_hw)
    x_off = x.astype(np.float64) + input_offset
    w = weight.astype(np.float64)
    acc = np.zeros((x.shape[0], out_hw[0], out_hw[1], cout), dtype=np.float64)
    for i, j, win in _taps(x_off, (kh, kw), stride, padding, dilation, out_hw):
        acc += win @ w[:, i, j, :].T
    return _finish(acc, bias, mult, shift, output_offset, act_min, act_max)


def depthwise_conv_s8(x, weight, bias, *, input_offset: int, output_offset: int, mult, shift,
                      stride: Pair = (1, 1), padding: Pair = (0, 0), dilation: Pair = (1, 1),
                      out_hw: Pair | None = None, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_depthwise_conv_s8`` with ch_mult 1: weight ``[1, KH, KW, C]``, per-channel requantization."""
    x = _nhwc(x, "input")
    weight = np.asarray(weight, dtype=np.int8)
    if weight.ndim == 3:
        weight = weight[None]
    if weight.ndim != 4 or weight.shape[0] != 1 or weight.shape[3] != x.shape[3]:
        raise ValueError(f"depthwise_conv_s8: weight must be [1, KH, KW, {x.shape[3]}] (ch_mult 1), "
                         f"got {weight.shape}")
    _, kh, kw, c = weight.shape
    stride, padding, dilation, out_hw = _geometry(x, kh, kw, stride, padding, dilation, out_hw)
    x_off = x.astype(np.float64) + input_offset
    w = weight[0].astype(np.float64)
    acc = np.zeros((x.shape[0], out_hw[0], out_hw[1], c), dtype=np.float64)
    for i, j, win in _taps(x_off, (kh, kw), stride, padding, dilation, out_hw):
        acc += win * w[i, j]
    return _finish(acc, bias, mult, shift, output_offset, act_min, act_max)


def fully_connected_s8(x, weight, bias, *, input_offset: int, output_offset: int, mult, shift,
                       filter_offset: int = 0, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_fully_connected_s8`` (``mult``/``shift`` scalars: per tensor) and
    ``arm_fully_connected_per_channel_s8`` (``[C_OUT]`` arrays): input ``[N, D]`` (any shape
    flattened per batch), weight ``[C_OUT, D]`` -> ``[N, C_OUT]``."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"input must be int8, got {x.dtype}")
    x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x[None]
    weight = np.asarray(weight, dtype=np.int8)
    if weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"fully_connected_s8: weight must be [C_OUT, {x.shape[1]}], got {weight.shape}")
    acc = (x.astype(np.float64) + input_offset) @ (weight.astype(np.float64) + filter_offset).T
    return _finish(acc, bias, mult, shift, output_offset, act_min, act_max)


def add_params(s1: float, zp1: int, s2: float, zp2: int, s_out: float, zp_out: int,
               left_shift: int = 20) -> dict:
    """TFLite's int8 ADD preparation -> the arguments of ``arm_elementwise_add_s8`` (and :func:`add_s8`).

    Both inputs are rescaled to twice the larger input scale with ``left_shift`` bits of headroom,
    summed, and the sum rescaled to the output scale.
    """
    twice_max = 2.0 * max(float(s1), float(s2))
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left_shift) * float(s_out)))
    return {
        "input_1_offset": -int(zp1), "input_1_mult": int(m1), "input_1_shift": int(sh1),
        "input_2_offset": -int(zp2), "input_2_mult": int(m2), "input_2_shift": int(sh2),
        "left_shift": int(left_shift),
        "out_offset": int(zp_out), "out_mult": int(mo), "out_shift": int(sho),
    }


def add_s8(a, b, *, input_1_offset: int, input_1_mult: int, input_1_shift: int,
           input_2_offset: int, input_2_mult: int, input_2_shift: int, left_shift: int,
           out_offset: int, out_mult: int, out_shift: int,
           act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_elementwise_add_s8`` on two equally shaped int8 tensors (keyword names match :func:`add_params`)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != np.int8 or b.dtype != np.int8:
        raise ValueError(f"add_s8: inputs must be int8 of equal shape, got {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    x1 = requantize(wrap_int32((a.astype(np.int64) + input_1_offset) << left_shift), input_1_mult, input_1_shift)
    x2 = requantize(wrap_int32((b.astype(np.int64) + input_2_offset) << left_shift), input_2_mult, input_2_shift)
    out = requantize(wrap_int32(x1 + x2), out_mult, out_shift) + out_offset
    return np.clip(out, act_min, act_max).astype(np.int8)


def avgpool_s8(x, kernel: Pair, *, stride: Pair = (1, 1), padding: Pair = (0, 0), out_hw: Pair | None = None,
               act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_avgpool_s8``: mean over the window's positions inside the input (padding is not counted),
    rounded half away from zero; input and output share scale and zero point."""
    x = _nhwc(x, "input")
    k, stride, padding = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(padding, "padding")
    if out_hw is None:
        out_hw = (conv_out_size(x.shape[1], k[0], stride[0], padding[0], padding[0]),
                  conv_out_size(x.shape[2], k[1], stride[1], padding[1], padding[1]))
    out_hw = _pair(out_hw, "out_hw")
    total = np.zeros((x.shape[0], out_hw[0], out_hw[1], x.shape[3]), dtype=np.int64)
    count = np.zeros((1, out_hw[0], out_hw[1], 1), dtype=np.int64)
    ones = np.ones((1, x.shape[1], x.shape[2], 1), dtype=np.int64)
    taps = zip(_taps(x.astype(np.int64), k, stride, padding, (1, 1), out_hw),
               _taps(ones, k, stride, padding, (1, 1), out_hw))
    for (_, _, win), (_, _, cnt) in taps:
        total += win
        count += cnt
    if np.any(count == 0):
        raise ValueError("avgpool_s8: an output window lies entirely outside the input")
    half = count // 2
    num = np.where(total > 0, total + half, total - half)
    # C division truncates toward zero
    q = np.sign(num) * (np.abs(num) // count)
    return np.clip(q, act_min, act_max).astype(np.int8)


def global_avgpool_s8(x, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """Global average pool as ``arm_avgpool_s8`` with a full-size window -> ``[N, 1, 1, C]``."""
    x = _nhwc(x, "input")
    return avgpool_s8(x, (x.shape[1], x.shape[2]), stride=(1, 1), padding=(0, 0), out_hw=(1, 1),
                      act_min=act_min, act_max=act_max)


# ---- neck ops (detector necks: tinydet.arch neck nodes) -------------------------------------------------


def max_pool_s8(x, kernel: Pair, *, stride: Pair, padding: Pair = (0, 0), out_hw: Pair | None = None,
                act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """``arm_max_pool_s8``: the largest value over the window's positions inside the input (padding
    positions are skipped, not read as a value), then the activation clamp; input and output share
    scale and zero point (TFLite MAX_POOL_2D)."""
    x = _nhwc(x, "input")
    k, stride, padding = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(padding, "padding")
    if out_hw is None:
        out_hw = (conv_out_size(x.shape[1], k[0], stride[0], padding[0], padding[0]),
                  conv_out_size(x.shape[2], k[1], stride[1], padding[1], padding[1]))
    out_hw = _pair(out_hw, "out_hw")
    # positions outside the input hold a value below every int8, so they never win
    best = np.full((x.shape[0], out_hw[0], out_hw[1], x.shape[3]), QMIN - 1, dtype=np.int64)
    for _, _, win in _taps(x.astype(np.int64) - (QMIN - 1), k, stride, padding, (1, 1), out_hw):
        best = np.maximum(best, win + (QMIN - 1))
    if np.any(best < QMIN):
        raise ValueError("max_pool_s8: an output window lies entirely outside the input")
    return np.clip(best, act_min, act_max).astype(np.int8)


def upsample_nearest_s8(x, scale: Pair = (2, 2)) -> np.ndarray:
    """Nearest-neighbour upsampling by integer factors: ``out[y, x] = in[y // sh, x // sw]`` (TFLite
    RESIZE_NEAREST_NEIGHBOR with an integer scale, ONNX Resize nearest); values, scale and zero
    point unchanged."""
    x = _nhwc(x, "input")
    sh, sw = _pair(scale, "scale")
    if sh < 1 or sw < 1:
        raise ValueError(f"upsample_nearest_s8: scale must be >= 1, got {(sh, sw)}")
    return np.repeat(np.repeat(x, sh, axis=1), sw, axis=2)


@dataclass(frozen=True)
class Requant:
    """int8 -> int8 requantization of one tensor into another's parameters (TFLite QUANTIZE int8 ->
    int8, ``reference_ops::Requantize``): ``clamp(requantize(q - zp_in, mult, shift) + zp_out)``.
    ``identity`` when the parameters are equal: the values are copied."""

    input_offset: int  # -zp_in
    mult: int
    shift: int
    output_offset: int  # +zp_out
    identity: bool

    @classmethod
    def between(cls, s_in: float, zp_in: int, s_out: float, zp_out: int) -> "Requant":
        """TFLite's preparation: the effective scale ``s_in / s_out`` in double from the float32
        scales, through ``QuantizeMultiplier``."""
        if np.float32(s_in) == np.float32(s_out) and int(zp_in) == int(zp_out):
            return cls(-int(zp_in), 0, 0, int(zp_out), True)
        m, s = quantize_multiplier(np.float64(np.float32(s_in)) / np.float64(np.float32(s_out)))
        return cls(-int(zp_in), int(m), int(s), int(zp_out), False)


def requantize_s8(x, rq: Requant, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    """Apply :class:`Requant` to an int8 tensor (element-wise)."""
    x = np.asarray(x)
    if rq.identity:
        return np.clip(x.astype(np.int64), act_min, act_max).astype(np.int8)
    out = requantize(x.astype(np.int64) + rq.input_offset, rq.mult, rq.shift) + rq.output_offset
    return np.clip(out, act_min, act_max).astype(np.int8)


def concat_s8(inputs: Sequence[np.ndarray], requants: Sequence[Requant]) -> np.ndarray:
    """Channel concatenation of NHWC int8 tensors into the output's parameters: each input is
    requantized with its :class:`Requant` (a copy where the parameters already agree), as TFLite
    runs a QUANTIZE in front of each CONCATENATION input whose parameters differ (its int8 kernel
    requires equal ones)."""
    if len(inputs) != len(requants) or not inputs:
        raise ValueError(f"concat_s8: {len(inputs)} inputs and {len(requants)} requantizations")
    xs = [_nhwc(x, f"input {i}") for i, x in enumerate(inputs)]
    if len({x.shape[:3] for x in xs}) != 1:
        raise ValueError(f"concat_s8: inputs differ in N, H, W: {[x.shape for x in xs]}")
    return np.concatenate([requantize_s8(x, rq) for x, rq in zip(xs, requants)], axis=3)
