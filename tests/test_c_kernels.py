"""The C runtime (deploy/runtime) against the numpy reference (tinydet.quant), bit for bit.

One C driver (tests/c/kernel_driver.c) is compiled once per session for the host (and for QEMU
mps2-an500 in the QEMU test); every case is a record in its input file, so a whole randomized batch
costs one process start. When CMSIS_NN_ROOT is set, the same batch is also run against ARM's
CMSIS-NN sources.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import needs
from tinydet.deploy import toolchain
from tinydet.errors import TinydetError
from tinydet.geometry import conv_out_size
from tinydet.quant import arith, kernels

sys.path.insert(0, str(Path(__file__).parent / "c"))
import driver as drv  # noqa: E402

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
REPO = Path(__file__).resolve().parents[1]


def _mult_shift(rng, n, extreme=False):
    """Per-channel Q31 multipliers; ``extreme`` draws raw (mult, shift) pairs over the whole shift range."""
    if extreme:
        m = rng.integers(2**30, 2**31, n)
        s = rng.integers(-31, 31, n)
        s[: min(n, 2)] = [-31, 30][: min(n, 2)]
        return m, s
    real = rng.uniform(2**-14, 2**-5, n)
    real[rng.random(n) < 0.2] *= 64.0  # some channels saturate to -128/127
    return arith.quantize_multiplier(real)


def _conv_case(rng, depthwise=False, k=None, extreme=False):
    k = k or int(rng.choice([1, 3, 5, 7]))
    kh, kw = (k, k) if rng.random() < 0.8 else (k, int(rng.choice([1, 3])))
    h, w = int(rng.integers(max(kh - 2, 1), 10)), int(rng.integers(max(kw - 2, 1), 10))
    c = int(rng.integers(1, 10))
    cout = c if depthwise else int(rng.integers(1, 8))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dil = (1, 1) if rng.random() < 0.8 or depthwise and rng.random() < 0.5 else (2, 1)
    pad = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    pad_after = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    out_hw = (conv_out_size(h, kh, stride[0], pad[0], pad_after[0], dil[0]),
              conv_out_size(w, kw, stride[1], pad[1], pad_after[1], dil[1]))
    if min(out_hw) < 1:
        return _conv_case(rng, depthwise, k, extreme)
    n = 1 if depthwise or rng.random() < 0.8 else 2
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    wt = rng.integers(-128, 128, (1 if depthwise else cout, kh, kw, c), dtype=np.int8)
    bias = None if rng.random() < 0.15 else rng.integers(-(2**16), 2**16, cout).astype(np.int32)
    if bias is not None and rng.random() < 0.2:
        bias[0] = I32_MAX - 2**26  # near-edge accumulator that still cannot overflow
        bias[-1] = I32_MIN + 2**26
    m, s = _mult_shift(rng, cout, extreme)
    zp_in = int(rng.integers(-128, 128))
    lo = int(rng.integers(-128, 0)) if rng.random() < 0.3 else -128
    hi = int(rng.integers(1, 128)) if rng.random() < 0.3 else 127
    return dict(x=x, w=wt, bias=bias, mult=m, shift=s, input_offset=-zp_in, output_offset=int(rng.integers(-128, 128)),
                stride=stride, padding=pad, dilation=dil, out_hw=out_hw, act_min=lo, act_max=hi)


def _np_conv(case, depthwise=False):
    fn = kernels.depthwise_conv_s8 if depthwise else kernels.conv_s8
    return fn(case["x"], case["w"], case["bias"], input_offset=case["input_offset"],
              output_offset=case["output_offset"], mult=case["mult"], shift=case["shift"], stride=case["stride"],
              padding=case["padding"], dilation=case["dilation"], out_hw=case["out_hw"], act_min=case["act_min"],
              act_max=case["act_max"])


def _batch(seed: int, n_conv: int, n_dw: int, with_ref: bool = True, avgpool_null_buf: bool = True):
    """Records + expected outputs (bytes) + labels for a randomized batch of every kernel.

    ``avgpool_null_buf=False`` leaves out avgpool without scratch (ARM's DSP build requires it)."""
    rng = np.random.default_rng(seed)
    recs, expect, labels = [], [], []

    def add(rec, out, label):
        recs.append(rec)
        expect.append(np.ascontiguousarray(out).tobytes())
        labels.append(label)

    # requantization arithmetic, random + edge values
    edges = np.array([I32_MIN, I32_MIN + 1, -(2**30), -129, -3, -1, 0, 1, 3, 127, 2**30, I32_MAX - 1, I32_MAX])
    a = np.concatenate([rng.integers(I32_MIN, I32_MAX, 600, endpoint=True), np.repeat(edges, edges.size)])
    b = np.concatenate([rng.integers(I32_MIN, I32_MAX, 600, endpoint=True), np.tile(edges, edges.size)])
    e = rng.integers(0, 32, a.size)
    m = rng.integers(2**30, 2**31, a.size)
    s = rng.integers(-31, 31, a.size)
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    add(drv.record(drv.OP_ARITH, [0], [a32, b32]), arith.srdhm(a, b).astype(np.int32), "srdhm")
    add(drv.record(drv.OP_ARITH, [1], [a32, e.astype(np.int32)]), arith.rdbpot(a, e).astype(np.int32), "rdbpot")
    add(drv.record(drv.OP_ARITH, [2], [a32, m.astype(np.int32), s.astype(np.int32)]),
        arith.requantize(a, m, s).astype(np.int32), "requantize")
    # the kernels' precomputed-shift form (tdn_rq): every shift in [-31, 31] against every edge
    # accumulator, and the int8 output form with offsets / activation ranges that clip both ways
    s_all = np.concatenate([s, np.tile(np.arange(-31, 32), 8)])
    a_all = np.concatenate([a, rng.choice(edges, 63 * 8)])
    m_all = np.concatenate([m, rng.choice([0, 2**30, 2**31 - 1], 63 * 8)])
    want = arith.requantize(a_all, m_all, s_all)
    blobs = [a_all.astype(np.int32), m_all.astype(np.int32), s_all.astype(np.int32)]
    add(drv.record(drv.OP_ARITH, [3], blobs), want.astype(np.int32), "rq_apply")
    for off, lo, hi in [(0, -128, 127), (-128, -128, 127), (127, -128, 127), (-5, -5, 100), (3, -128, -100)]:
        add(drv.record(drv.OP_ARITH, [4, off, lo, hi], blobs), np.clip(want + off, lo, hi).astype(np.int32),
            f"rq_s8 off {off} [{lo}, {hi}]")
    # the 1x1 kernel's form for right shifts >= 2 (every shift in [-31, -2], every edge accumulator)
    r2 = s_all <= -2
    blobs2 = [b_[r2] for b_ in blobs]
    for off in (0, -128, 127, -7):
        add(drv.record(drv.OP_ARITH, [5, off], blobs2), np.clip(want[r2] + off, -128, 127).astype(np.int32),
            f"rq_s8_r2 off {off}")

    for i in range(n_conv):
        case = _conv_case(rng, k=[1, 3, 5, 7][i % 4], extreme=(i % 5 == 4))
        ref = _np_conv(case)
        variants = [drv.CONV_ARM, drv.CONV_WRAPPER] + ([drv.CONV_REF] if with_ref else [])
        geo = (case["w"].shape[1:3] == (1, 1) and case["stride"] == (1, 1) and case["padding"] == (0, 0)
               and case["dilation"] == (1, 1) and case["out_hw"] == case["x"].shape[1:3])
        if geo:
            variants.append(drv.CONV_1X1)
        for v in variants:
            add(drv.conv_record(case["x"], case["w"], case["bias"], case["mult"], case["shift"], variant=v,
                                **{k: case[k] for k in ("input_offset", "output_offset", "stride", "padding",
                                                         "dilation", "out_hw", "act_min", "act_max")}),
                ref, f"conv#{i} v{v} w{case['w'].shape} s{case['stride']} p{case['padding']} d{case['dilation']}")
    for i in range(n_dw):
        case = _conv_case(rng, depthwise=True, k=[3, 5, 7, 1][i % 4], extreme=(i % 5 == 4))
        ref = _np_conv(case, depthwise=True)
        geo = {k: case[k] for k in ("input_offset", "output_offset", "stride", "padding", "dilation", "out_hw",
                                     "act_min", "act_max")}
        variants = [drv.DW_ARM, drv.DW_WRAPPER] + ([drv.DW_REF] if with_ref else [])
        oh, ow = case["out_hw"]
        if oh * ow <= case["x"].shape[1] * case["x"].shape[2] and case["dilation"] == (1, 1):
            variants.append(drv.DW_INPLACE)
        for v in variants:
            add(drv.dw_record(case["x"], case["w"], case["bias"], case["mult"], case["shift"], variant=v, **geo),
                ref, f"dw#{i} v{v} w{case['w'].shape} s{case['stride']} p{case['padding']}")

    for i in range(6):
        shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        x1 = rng.integers(-128, 128, shape, dtype=np.int8)
        x2 = rng.integers(-128, 128, shape, dtype=np.int8)
        sc = rng.uniform(0.005, 0.2, 3)
        zp = rng.integers(-128, 128, 3)
        p = kernels.add_params(sc[0], zp[0], sc[1], zp[1], sc[2], zp[2])
        lo, hi = (int(zp[2]), 127) if i % 2 else (-128, 127)
        ref = kernels.add_s8(x1, x2, **p, act_min=lo, act_max=hi)
        keys = ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset", "input_2_mult",
                "input_2_shift", "left_shift", "out_offset", "out_mult", "out_shift")
        add(drv.record(drv.OP_ADD, [p[k] for k in keys] + [lo, hi, 0], [x1, x2]), ref, f"add#{i}")

    for i in range(6):
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        h, w, c = int(rng.integers(k[0], 8)), int(rng.integers(k[1], 8)), int(rng.integers(1, 9))
        st = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = (int(rng.integers(0, k[0])), int(rng.integers(0, k[1])))
        out_hw = (conv_out_size(h, k[0], st[0], pad[0], pad[0]), conv_out_size(w, k[1], st[1], pad[1], pad[1]))
        if i == 5:  # global average pool
            k, st, pad, out_hw = (h, w), (1, 1), (0, 0), (1, 1)
        x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        ref = kernels.avgpool_s8(x, k, stride=st, padding=pad, out_hw=out_hw, act_min=-100, act_max=100)
        for v in [0] + ([1] if avgpool_null_buf else []) + ([2] if with_ref else []):
            add(drv.record(drv.OP_AVGPOOL, [1, h, w, c, *k, *st, *pad, *out_hw, -100, 100, v], [x]), ref,
                f"avgpool#{i} v{v} k{k} s{st} p{pad}")

    for i in range(4):
        nb, depth, cout = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
        x = rng.integers(-128, 128, (nb, depth), dtype=np.int8)
        w = rng.integers(-128, 128, (cout, depth), dtype=np.int8)
        bias = rng.integers(-5000, 5000, cout).astype(np.int32)
        mm, ss = arith.quantize_multiplier(rng.uniform(2**-14, 2**-8))
        zi, zo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        ref = kernels.fully_connected_s8(x, w, bias, input_offset=-zi, output_offset=zo, mult=int(mm), shift=int(ss))
        for v in (0, 1) if with_ref else (0,):
            add(drv.record(drv.OP_FC, [nb, depth, cout, -zi, 0, zo, int(mm), int(ss), -128, 127, v], [x, w, bias]),
                ref, f"fc#{i} v{v}")

    # projection conv with fused residual add == conv then add
    for i in range(6):
        case = _conv_case(rng, k=[1, 1, 3, 3, 1, 5][i])
        conv_out = _np_conv(case)
        shortcut = rng.integers(-128, 128, conv_out.shape, dtype=np.int8)
        sc = rng.uniform(0.01, 0.1, 3)
        zp = rng.integers(-128, 128, 3)
        p = kernels.add_params(sc[0], case["output_offset"], sc[1], zp[1], sc[2], zp[2])
        ref = kernels.add_s8(conv_out, shortcut, **p)
        add(drv.conv_record(case["x"], case["w"], case["bias"], case["mult"], case["shift"], op=drv.OP_CONV_ADD,
                            shortcut=shortcut, add=p,
                            **{k: case[k] for k in ("input_offset", "output_offset", "stride", "padding",
                                                     "dilation", "out_hw", "act_min", "act_max")}),
            ref, f"conv_add#{i} w{case['w'].shape} s{case['stride']} p{case['padding']}")
        if case["x"].shape[0] == 1:
            # tile form: the shortcut region is larger than the output, output written at its start
            oh, ow = conv_out.shape[1:3]
            sy, sx = int(rng.integers(0, 3)), int(rng.integers(0, 3))
            big = rng.integers(-128, 128, (1, oh + sy + int(rng.integers(0, 2)), ow + sx + int(rng.integers(0, 3)),
                                           conv_out.shape[3]), dtype=np.int8)
            ref = kernels.add_s8(conv_out, big[:, sy:sy + oh, sx:sx + ow], **p)
            add(drv.conv_record(case["x"], case["w"], case["bias"], case["mult"], case["shift"], op=drv.OP_CONV_ADD,
                                shortcut=big, add=p, shortcut_at=(sy, sx),
                                **{k: case[k] for k in ("input_offset", "output_offset", "stride", "padding",
                                                         "dilation", "out_hw", "act_min", "act_max")}),
                ref, f"conv_add_region#{i} at ({sy}, {sx}) of {big.shape}")
    # the row-wise residual of 1x1 layers in chunks of rows (tinydet_conv_rows): scratch for one row
    # (variant 1), two, three (7 rows: chunks 3, 3, 1), all; strides 1 and 2, dense and region forms
    crng = np.random.default_rng(seed + 2000)
    for i, (extra_rows, st, region) in enumerate([(0, 1, False), (1, 1, False), (2, 1, True), (9, 2, False),
                                                 (2, 2, True), (1, 1, True)]):
        h, w, c, cout = 7 * st - (st - 1), 5 * st - (st - 1), 8, 6
        x = crng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = crng.integers(-128, 128, (cout, 1, 1, c), dtype=np.int8)
        bias = crng.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, sh = arith.quantize_multiplier(crng.uniform(2**-14, 2**-6, cout))
        case = dict(x=x, w=wt, bias=bias, mult=m, shift=sh, input_offset=int(crng.integers(-127, 129)),
                    output_offset=int(crng.integers(-128, 128)), stride=(st, st), padding=(0, 0), dilation=(1, 1),
                    out_hw=(7, 5), act_min=-128, act_max=127)
        conv_out = _np_conv(case)
        sc, zp = crng.uniform(0.01, 0.1, 3), crng.integers(-128, 128, 3)
        p = kernels.add_params(sc[0], case["output_offset"], sc[1], zp[1], sc[2], zp[2])
        sy, sx = (1, 2) if region else (0, 0)
        big = crng.integers(-128, 128, (1, 7 + sy + region, 5 + sx + region, cout), dtype=np.int8)
        ref = kernels.add_s8(conv_out, big[:, sy:sy + 7, sx:sx + 5], **p)
        # per row: a conv row and a shortcut row of align4(5 * 6) = 32 bytes each
        add(drv.conv_record(x, wt, bias, m, sh, op=drv.OP_CONV_ADD, shortcut=big if region else big[:, :7, :5],
                            add=p, shortcut_at=(sy, sx) if region else None, variant=1 + 64 * extra_rows,
                            **{k: case[k] for k in ("input_offset", "output_offset", "stride", "padding",
                                                     "dilation", "out_hw", "act_min", "act_max")}),
            ref, f"conv_add chunks of {extra_rows + 1} rows s{st} region {region}")
    # plain rows (a stage-1 sink without residual) into a map wider than the output: 1x1 in chunks staged
    # in scratch (scratch for 1 / 3 rows / all), contiguous (pitch = width: one call), reversed, and a
    # 3x3 padded layer (one row per call, straight into dst)
    for i, (k, dst_w, scratch_rows, reverse) in enumerate([(1, 9, 1, 0), (1, 9, 3, 0), (1, 9, 0, 1), (1, 5, 1, 0),
                                                          (3, 8, 0, 0), (3, 5, 0, 1)]):
        c, cout, h, w = 8, 6, 7, 5
        x = crng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = crng.integers(-128, 128, (cout, k, k, c), dtype=np.int8)
        bias = crng.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, sh = arith.quantize_multiplier(crng.uniform(2**-14, 2**-6, cout))
        pad = (k // 2, k // 2)
        case = dict(x=x, w=wt, bias=bias, mult=m, shift=sh, input_offset=int(crng.integers(-127, 129)),
                    output_offset=int(crng.integers(-128, 128)), stride=(1, 1), padding=pad, dilation=(1, 1),
                    out_hw=(7, 5), act_min=-128, act_max=127)
        want = np.zeros((7, dst_w, cout), np.int8)
        want[:, :5] = _np_conv(case)[0]
        # the 1x1 kernel buffer (4 * align4(8) bytes) + the rows; 0: no cap
        scratch = 4 * 8 + 32 * scratch_rows if scratch_rows else 0
        add(drv.conv_record(x, wt, bias, m, sh, op=drv.OP_CONV_ROWS, rows=(dst_w, scratch, reverse),
                            **{key: case[key] for key in ("input_offset", "output_offset", "stride", "padding",
                                                          "dilation", "out_hw", "act_min", "act_max")}),
            want, f"conv rows k{k} pitch {dst_w} scratch rows {scratch_rows} reverse {reverse}")
    # residual rows in place, the output one row below its shortcut (dst row y over shortcut row y + 1):
    # last to first (reverse) in chunks of 1 and 2 rows and whole; first to last would clobber shortcuts
    for i, scratch_rows in enumerate([1, 2, 0]):
        c, cout, h, w = 8, 6, 7, 5
        x = crng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = crng.integers(-128, 128, (cout, 1, 1, c), dtype=np.int8)
        bias = crng.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, sh = arith.quantize_multiplier(crng.uniform(2**-14, 2**-6, cout))
        case = dict(x=x, w=wt, bias=bias, mult=m, shift=sh, input_offset=int(crng.integers(-127, 129)),
                    output_offset=int(crng.integers(-128, 128)), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                    out_hw=(7, 5), act_min=-128, act_max=127)
        buf = crng.integers(-128, 128, (1, h + 1, w, cout), dtype=np.int8)
        sc, zp = crng.uniform(0.01, 0.1, 3), crng.integers(-128, 128, 3)
        p = kernels.add_params(sc[0], case["output_offset"], sc[1], zp[1], sc[2], zp[2])
        want = buf.copy()
        want[:, 1:] = kernels.add_s8(_np_conv(case), buf[:, :h], **p)
        # per chunk row: a conv row and a shortcut row of 32 bytes, after the 1x1 kernel's 32
        scratch = 4 * 8 + 64 * scratch_rows if scratch_rows else 0
        add(drv.conv_record(x, wt, bias, m, sh, op=drv.OP_CONV_ROWS, rows=(w, scratch, 1, 1), add=p, shortcut=buf,
                            **{key: case[key] for key in ("input_offset", "output_offset", "stride", "padding",
                                                          "dilation", "out_hw", "act_min", "act_max")}),
            want, f"residual rows in place, reverse, scratch rows {scratch_rows}")
    return recs, expect, labels


def _tile_batch(rng):
    recs, expect, labels = [], [], []
    for i in range(4):
        h, w, c = int(rng.integers(3, 9)), int(rng.integers(3, 9)), int(rng.integers(1, 5))
        img = rng.integers(-128, 128, (h, w, c), dtype=np.int8)
        th, tw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        y, x = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
        dh, dw = th + int(rng.integers(0, 3)), tw + int(rng.integers(0, 3))
        y0, x0 = int(rng.integers(0, dh - th + 1)), int(rng.integers(0, dw - tw + 1))
        dst = np.zeros((dh, dw, c), np.int8)
        dst[y0:y0 + th, x0:x0 + tw] = img[y:y + th, x:x + tw]
        recs.append(drv.record(drv.OP_TILE, [h, w, c, y, x, th, tw, dw, y0, x0, dh], [img]))
        expect.append(dst.tobytes())
        labels.append(f"tile#{i}")
    for in_h, in_w, k, s, d, pad in [(10, 9, 3, 2, 1, (1, 1, 0, 0)), (10, 9, 3, 2, 1, (0, 0, 1, 1)),
                                     (7, 7, 5, 1, 1, (2, 0, 2, 0)), (6, 5, 3, 1, 2, (0, 2, 2, 0)),
                                     (2, 2, 7, 1, 1, (0, 0, 0, 0))]:
        oh = conv_out_size(in_h, k, s, pad[0], pad[2], d)
        ow = conv_out_size(in_w, k, s, pad[1], pad[3], d)
        ok = oh >= 1 and ow >= 1
        want = np.array([0 if ok else -1, pad[0], pad[1], oh, ow] if ok else [-1, 0, 0, 0, 0], np.int32)
        recs.append(drv.record(drv.OP_GEOMETRY, [in_h, in_w, k, k, s, s, d, d, *pad], []))
        expect.append(want.tobytes())
        labels.append(f"geometry {in_h}x{in_w} k{k} s{s} d{d} pad{pad}")
    return recs, expect, labels


def _run_batch(exe, workdir: Path, recs, runner):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kin.bin").write_bytes(b"".join(recs))
    code, out, log = runner(exe, workdir, timeout_s=240)
    assert code == 0, f"driver exit {code}: {out} (log {log})"
    return drv.read_outputs(workdir / "kout.bin")


def _check(outputs, expect, labels):
    assert len(outputs) == len(expect)
    bad = []
    for (status, _, got), want, label in zip(outputs, expect, labels):
        if status != 0 or got != want:
            n = min(len(got), len(want))
            diff = int(np.count_nonzero(np.frombuffer(got[:n], np.int8) != np.frombuffer(want[:n], np.int8)))
            bad.append(f"{label}: status {status}, {len(got)} vs {len(want)} bytes, {diff} differ")
    assert not bad, "\n".join(bad[:20])


@pytest.fixture(scope="session")
def host_driver(tmp_path_factory):
    out = tmp_path_factory.mktemp("host") / "kernel_driver"
    return toolchain.compile([drv.DRIVER_SOURCE], "host", out, ref_kernels=True)


def test_host_kernels_bit_exact_vs_numpy(host_driver, tmp_path):
    recs, expect, labels = _batch(seed=11, n_conv=40, n_dw=32)
    # the batch covers the in-place depthwise kernel with both strides and the 1x1 fast path
    inplace = [lab for lab in labels if lab.startswith("dw#") and f" v{drv.DW_INPLACE} " in lab]
    assert any("s(1, 1)" in lab for lab in inplace) and any("s(2, 2)" in lab for lab in inplace)
    assert any(f" v{drv.CONV_1X1} " in lab for lab in labels)
    t_recs, t_exp, t_lab = _tile_batch(np.random.default_rng(12))
    outputs = _run_batch(host_driver, tmp_path, recs + t_recs, toolchain.run_host)
    _check(outputs, expect + t_exp, labels + t_lab)
    assert toolchain.size(host_driver)["sram_static"] >= 1536 * 1024  # the driver's static arena


def test_depthwise_ch_mult_and_dilation_match_numpy(host_driver, tmp_path):
    """ch_mult > 1 and dilation (the general path) against numpy: output channel ic * ch_mult + j reads
    input channel ic, so numpy's ch_mult-1 kernel on the input repeated ch_mult times is the reference."""
    rng = np.random.default_rng(21)
    recs, wants = [], []
    for i in range(6):
        c, mult = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        x = rng.integers(-128, 128, (1, 6, 7, c), dtype=np.int8)
        w = rng.integers(-128, 128, (1, 3, 3, c * mult), dtype=np.int8)
        m, s = arith.quantize_multiplier(rng.uniform(2**-12, 2**-6, c * mult))
        d = (1 + i % 2, 1 + i % 2)
        out_hw = (conv_out_size(6, 3, 1, 1, 1, d[0]), conv_out_size(7, 3, 2, 1, 1, d[1]))
        geo = dict(input_offset=7, output_offset=-3, stride=(1, 2), padding=(1, 1), dilation=d, out_hw=out_hw,
                   act_min=-128, act_max=127)
        bias = rng.integers(-999, 999, c * mult).astype(np.int32)
        want = kernels.depthwise_conv_s8(np.repeat(x, mult, axis=3), w, bias, mult=m, shift=s, **geo)
        for v in (drv.DW_ARM, drv.DW_WRAPPER, drv.DW_REF):
            recs.append(drv.dw_record(x, w, bias, m, s, variant=v, ch_mult=mult, **geo))
            wants.append(want.tobytes())
    outputs = _run_batch(host_driver, tmp_path, recs, toolchain.run_host)
    _check(outputs, wants, [f"ch_mult/dilation #{i // 3} v{i % 3}" for i in range(len(recs))])


def _tails_batch(seed: int):
    """Shapes chosen to reach every fast path and every loop tail of the bundled kernels, with numpy
    outputs: depthwise (normal and in place) with channels 1..9 (blocks of 4 + 0..3 leftover channels),
    odd widths, strides 1 and 2, paddings 0..2 on each side, 3x3 (unrolled), 5x5, 1x1 and 9x9 (in
    place) kernels, tiles so small that the in-place ring falls back to one channel at a time, and
    windows wider than the input (no interior column); convolutions with odd output-channel counts,
    depths that are not a multiple of 4, odd pixel counts (the last single pixel) and 1x1 tiles; shift
    extremes and activation ranges that clip."""
    rng = np.random.default_rng(seed)
    recs, expect, labels = [], [], []

    def q(n, i):
        return _mult_shift(rng, n, extreme=(i % 4 == 3))

    dw_shapes = []
    for c in range(1, 10):
        dw_shapes.append((c, 7, 9, 3, (1, 1), (1, 1, 1, 1)))
        dw_shapes.append((c, 8, 5, 3, (2, 2), (1, 1, 0, 0)))
    dw_shapes += [(8, 3, 3, 3, (1, 1), (1, 1, 1, 1)),    # 3 rows: ring of 4 channels does not fit
                  (5, 2, 7, 3, (1, 1), (1, 1, 1, 1)),    # 2 rows
                  (4, 1, 1, 3, (1, 1), (1, 1, 1, 1)),    # 1x1 tile, all padding
                  (12, 9, 11, 5, (1, 1), (2, 2, 2, 2)),
                  (6, 9, 8, 5, (2, 1), (2, 1, 1, 2)),
                  (8, 10, 10, 9, (1, 1), (4, 4, 4, 4)),  # 9x9: fast rows, wider than most windows
                  (7, 6, 6, 1, (1, 1), (0, 0, 0, 0)),
                  (4, 4, 5, 3, (1, 2), (0, 2, 0, 2)),
                  (8, 6, 2, 3, (1, 1), (1, 2, 1, 2)),    # window wider than the input: no interior column
                  # 3x3 cut windows (tdn_dw3 tables): padding 2 (four kinds of border column a row,
                  # more than the block keeps: tables replaced), 3 (windows entirely in the padding:
                  # the bias alone), a 3x4 input (bases clamped from both sides), stride 2
                  (8, 7, 8, 3, (1, 1), (2, 2, 2, 2)), (12, 5, 6, 3, (1, 1), (3, 3, 3, 3)),
                  (5, 3, 4, 3, (1, 1), (2, 1, 2, 1)), (8, 9, 10, 3, (2, 2), (2, 2, 2, 2))]
    for i, (c, h, w, k, st, (pt, pl, pb, pr)) in enumerate(dw_shapes):
        x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = rng.integers(-128, 128, (1, k, k, c), dtype=np.int8)
        bias = rng.integers(-(2**16), 2**16, c).astype(np.int32)
        m, s = q(c, i)
        out_hw = (conv_out_size(h, k, st[0], pt, pb), conv_out_size(w, k, st[1], pl, pr))
        geo = dict(input_offset=int(rng.integers(-128, 128)), output_offset=int(rng.integers(-128, 128)),
                   stride=st, padding=(pt, pl), dilation=(1, 1), out_hw=out_hw,
                   act_min=-128 if i % 3 else -60, act_max=127 if i % 3 else 50)
        want = kernels.depthwise_conv_s8(x, wt, bias, mult=m, shift=s, **geo)
        variants = [drv.DW_ARM, drv.DW_WRAPPER] + ([drv.DW_INPLACE] if out_hw[0] * out_hw[1] <= h * w else [])
        for v in variants:
            recs.append(drv.dw_record(x, wt, bias, m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"tails dw c{c} {h}x{w} k{k} s{st} pad{(pt, pl, pb, pr)} v{v}")
    conv_shapes = [(c, cout, h, w) for c, cout, h, w in
                   [(1, 1, 1, 1), (3, 5, 3, 3), (4, 7, 5, 1), (5, 2, 1, 7), (7, 9, 3, 5), (8, 3, 2, 2),
                    (9, 6, 4, 3), (16, 11, 3, 3), (13, 4, 1, 1), (32, 24, 5, 5)]]
    for i, (c, cout, h, w) in enumerate(conv_shapes):
        for k, st, pad in [(1, (1, 1), (0, 0)), (3, (2, 2), (1, 1)), (3, (1, 1), (1, 1))]:
            x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
            wt = rng.integers(-128, 128, (cout, k, k, c), dtype=np.int8)
            bias = rng.integers(-(2**16), 2**16, cout).astype(np.int32)
            m, s = q(cout, i)
            out_hw = (conv_out_size(h, k, st[0], pad[0], pad[0]), conv_out_size(w, k, st[1], pad[1], pad[1]))
            geo = dict(input_offset=int(rng.integers(-128, 128)), output_offset=int(rng.integers(-128, 128)),
                       stride=st, padding=pad, dilation=(1, 1), out_hw=out_hw,
                       act_min=-128 if i % 3 else -20, act_max=127 if i % 3 else 90)
            want = kernels.conv_s8(x, wt, bias, mult=m, shift=s, **geo)
            for v in [drv.CONV_ARM, drv.CONV_WRAPPER] + ([drv.CONV_1X1] if k == 1 else []):
                recs.append(drv.conv_record(x, wt, bias, m, s, variant=v, **geo))
                expect.append(want.tobytes())
                labels.append(f"tails conv {c}->{cout} {h}x{w} k{k} s{st} v{v}")
    # the unit-stride 1x1 (widened pixel pairs x channel pairs): depths with an even / odd number of
    # groups of 4 and 1..3 leftover depths, odd channel counts (the last channel paired with itself),
    # odd pixel counts (the last pixel widened twice), with the one-saturate requantization (every
    # shift <= -2, shift -2 and -31 included, full range) and without it (a channel at shift -1, a
    # clipping range); biases near the int32 limit
    for i, (c, cout, npix) in enumerate([(4, 2, 2), (8, 48, 9), (12, 5, 3), (16, 7, 4), (24, 3, 5), (5, 4, 3),
                                         (9, 2, 2), (6, 3, 1), (7, 9, 7), (33, 6, 2), (48, 8, 3), (2, 1, 1)]):
        x = rng.integers(-128, 128, (1, 1, npix, c), dtype=np.int8)
        wt = rng.integers(-128, 128, (cout, 1, 1, c), dtype=np.int8)
        bias = rng.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, s = arith.quantize_multiplier(rng.uniform(2**-14, 2**-3, cout))
        m[0], s[0] = 2**31 - 1, -2 if i % 2 else -31
        if i % 4 == 3:
            s[-1] = -1  # one channel outside the fast form: the whole layer takes the general one
        if i % 5 == 4:
            bias[0] = I32_MAX - 2**20
        geo = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
                   stride=(1, 1), padding=(0, 0), dilation=(1, 1), out_hw=(1, npix),
                   act_min=-100 if i % 6 == 5 else -128, act_max=127)
        want = kernels.conv_s8(x, wt, bias, mult=m, shift=s, **geo)
        for v in (drv.CONV_WRAPPER, drv.CONV_1X1):
            recs.append(drv.conv_record(x, wt, bias, m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"tails 1x1 {c}->{cout} {npix} px shift {s.min()}..{s.max()} v{v}")
    # the common layer's channel-pair routine (tdn_pp_*: every shift in [-31, -2], full range, the
    # output offset folded into the rounding constant, at least 4 pixels): looped for group counts
    # 1..7 of both parities, unrolled for k = 8, 16, 24, 28, 32 (over weights pre-widened where every
    # pair's rows fit beside the table: 8->48, 16->12, 24->6, 28->9, 32->8 / ->10, 27->16 / ->20; not
    # 16->100, 24->50); k = 1..32 and 70 (padded last groups:
    # all rows from a padded copy where it fits beside the table, else the last pair(s) from a copy
    # of their rows, or in C past 66 depths; an odd last channel in C),
    # chunks of 24 pairs (uneven splits), odd pixel counts; the fold's limit (offset -128 with R = 23
    # runs it, R = 24 falls back, R = 25 would overflow the high word without the check), R = 31 with
    # offset 0, accumulators near both int32 limits. Own stream: the records above and below keep
    # their data.
    rng_pp = np.random.default_rng(seed + 1000)
    for c, cout, npix, oo, shifts, big in [(8, 48, 10, -128, None, 0), (16, 100, 6, None, None, 0),
                                           (12, 7, 5, None, None, 0), (27, 16, 9, -128, None, 0),
                                           (5, 6, 4, None, None, 1), (3, 4, 4, None, None, 0),
                                           (4, 2, 4, None, None, 0), (2, 3, 7, None, None, 0),
                                           (20, 10, 8, 0, (-31, -2), 1), (8, 6, 6, -128, (-23, -3), -1),
                                           (8, 6, 6, -128, (-24, -3), -1), (8, 6, 6, -128, (-25, -3), -1),
                                           (24, 50, 4, None, None, 0),
                                           (28, 9, 5, 127, (-22, -2), 1), (1, 6, 5, None, None, 0),
                                           (70, 4, 5, None, None, 0), (32, 10, 5, None, None, 0),
                                           (27, 20, 5, None, None, 0), (1, 42, 5, None, None, 0),
                                           (70, 10, 5, None, None, 0), (16, 12, 6, None, None, 0),
                                           (24, 6, 5, -128, None, 1), (32, 8, 4, None, None, 0)]:
        x = rng_pp.integers(-128, 128, (1, 1, npix, c), dtype=np.int8)
        wt = rng_pp.integers(-128, 128, (cout, 1, 1, c), dtype=np.int8)
        bias = rng_pp.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, s = arith.quantize_multiplier(rng_pp.uniform(2**-12, 2**-3, cout))
        if shifts:
            s[0], s[1] = shifts
            m[0] = 2**31 - 1
        if big:
            bias[0], bias[-1] = big * (I32_MAX - 2**20), -big * (I32_MAX - 2**20)
        geo = dict(input_offset=int(rng_pp.integers(-127, 129)),
                   output_offset=int(rng_pp.integers(-128, 128)) if oo is None else oo,
                   stride=(1, 1), padding=(0, 0), dilation=(1, 1), out_hw=(1, npix), act_min=-128, act_max=127)
        want = kernels.conv_s8(x, wt, bias, mult=m, shift=s, **geo)
        for v in (drv.CONV_WRAPPER, drv.CONV_1X1):
            recs.append(drv.conv_record(x, wt, bias, m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"tails 1x1 routine {c}->{cout} {npix} px oo {geo['output_offset']} shift {s.min()}..{s.max()} v{v}")
    # the stem through the routine: 3x3 s2 3->16 (k = 27), borders on every side, odd pixel counts,
    # an odd channel count, 20 channels (too many for the padded copy); the row runs of interior
    # pixel pairs (tdn_stem_run) at strides 2 and 1, rows of odd and even interior widths, and 56
    # channels (two chunks: the first reads unpadded rows, so its 28th input lane must be zero)
    # (a tile's unpadded 11-wide input: 5 outputs a row, so pixel pairs straddle two rows inside the input)
    for c, cout, h, w, st, pad in [(3, 16, 9, 11, (2, 2), 1), (3, 7, 5, 6, (1, 1), 1), (2, 10, 6, 3, (2, 1), 1),
                                   (3, 20, 5, 6, (2, 2), 1), (3, 8, 6, 9, (1, 1), 1), (3, 4, 7, 12, (2, 2), 1),
                                   (3, 56, 5, 8, (2, 2), 1), (3, 6, 7, 11, (2, 2), 0)]:
        x = rng_pp.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = rng_pp.integers(-128, 128, (cout, 3, 3, c), dtype=np.int8)
        bias = rng_pp.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, s = arith.quantize_multiplier(rng_pp.uniform(2**-12, 2**-3, cout))
        out_hw = (conv_out_size(h, 3, st[0], pad, pad), conv_out_size(w, 3, st[1], pad, pad))
        geo = dict(input_offset=int(rng_pp.integers(-127, 129)), output_offset=int(rng_pp.integers(-128, 128)),
                   stride=st, padding=(pad, pad), dilation=(1, 1), out_hw=out_hw, act_min=-128, act_max=127)
        want = kernels.conv_s8(x, wt, bias, mult=m, shift=s, **geo)
        for v in (drv.CONV_ARM, drv.CONV_WRAPPER):
            recs.append(drv.conv_record(x, wt, bias, m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"tails staged routine 3x3 {c}->{cout} {h}x{w} s{st} v{v}")
    # small receptive fields (<= 64 values, the stem) staged through the same columns: depths 9c with
    # every k % 4, the padded last group in the SMLAD loop (all but the last pair) or as a tail,
    # strides 1 and 2, borders on every side, odd channel and pixel counts, both requantization forms
    for i, (c, cout, h, w, st) in enumerate([(3, 16, 7, 9, (2, 2)), (3, 5, 6, 5, (1, 1)), (2, 3, 4, 4, (2, 1)),
                                             (7, 4, 3, 3, (1, 1)), (1, 9, 5, 2, (1, 2)), (4, 2, 2, 3, (2, 2))]):
        x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        wt = rng.integers(-128, 128, (cout, 3, 3, c), dtype=np.int8)
        bias = rng.integers(-(2**16), 2**16, cout).astype(np.int32)
        m, s = arith.quantize_multiplier(rng.uniform(2**-14, 2**-3, cout))
        if i % 3 == 2:
            s[-1] = 0  # a left-shift channel: the general requantization
        out_hw = (conv_out_size(h, 3, st[0], 1, 1), conv_out_size(w, 3, st[1], 1, 1))
        geo = dict(input_offset=128 if i == 0 else int(rng.integers(-127, 129)),
                   output_offset=int(rng.integers(-128, 128)), stride=st, padding=(1, 1), dilation=(1, 1),
                   out_hw=out_hw, act_min=-128 if i % 4 else -90, act_max=127)
        want = kernels.conv_s8(x, wt, bias, mult=m, shift=s, **geo)
        for v in (drv.CONV_ARM, drv.CONV_WRAPPER):
            recs.append(drv.conv_record(x, wt, bias, m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"tails staged conv 3x3 {c}->{cout} {h}x{w} s{st} v{v}")
    # tinydet_move (the in-place depthwise tile output moved within the arena): both directions,
    # overlapping by less than / more than one 8-byte step, lengths with every tail 0..7
    # word-aligned ends (the 32-byte LDM/STM blocks on the M7): overlaps of 4, 32 and 36 bytes in both
    # directions, 1..4 blocks with tails 0, 4 and 31
    for n, dst, src in [(0, 3, 0), (1, 0, 1), (7, 5, 0), (8, 0, 3), (15, 9, 2), (64, 1, 0), (64, 0, 1), (67, 13, 4),
                        (100, 0, 60), (100, 60, 0), (33, 2, 2), (32, 0, 4), (32, 4, 0), (128, 0, 4), (128, 4, 0),
                        (95, 0, 32), (95, 32, 0), (68, 36, 0), (68, 0, 36), (156, 8, 0), (64, 64, 64)]:
        buf = rng.integers(-128, 128, 192, dtype=np.int8)
        want = buf.copy()
        want[dst:dst + n] = buf[src:src + n]
        recs.append(drv.record(drv.OP_MOVE, [n, dst, src], [buf]))
        expect.append(want.tobytes())
        labels.append(f"tails move n{n} dst{dst} src{src}")
    for n in [1, 2, 3, 4, 5, 7, 8, 9, 31, 64]:
        x1 = rng.integers(-128, 128, n, dtype=np.int8)
        x2 = rng.integers(-128, 128, n, dtype=np.int8)
        sc, zp = rng.uniform(0.005, 0.2, 3), rng.integers(-128, 128, 3)
        p = kernels.add_params(sc[0], zp[0], sc[1], zp[1], sc[2], zp[2])
        lo, hi = (int(zp[2]), 127) if n % 2 else (-128, 127)
        keys = ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset", "input_2_mult",
                "input_2_shift", "left_shift", "out_offset", "out_mult", "out_shift")
        recs.append(drv.record(drv.OP_ADD, [p[k] for k in keys] + [lo, hi, 0], [x1, x2]))
        expect.append(kernels.add_s8(x1, x2, **p, act_min=lo, act_max=hi).tobytes())
        labels.append(f"tails add n{n}")
    # every copy of the add loop: one input at exactly 0.5 (2^30, shift 0) and the other shifting right,
    # in both orders, with the one-saturate output (shift <= -2, full range); and the general form:
    # both inputs shifting right, a left-shifting input, an output shift of -1, a clipping range,
    # left shifts 20 / 7 / 1 / 0 (0: the 0.5 input is not exact, general form)
    half = (1 << 30, 0)
    for i, (q1, q2, ls, (om, osh), (lo, hi)) in enumerate([
            (half, (1_977_377_600, -1), 20, (1_552_808_295, -19), (-128, 127)),
            ((1_500_000_000, -3), half, 20, (1_437_734_978, -19), (-128, 127)),
            ((1_500_000_000, -1), (1_300_000_000, -2), 20, (1_677_266_946, -19), (-128, 127)),
            ((1_200_000_000, 1), half, 7, (1_552_808_295, -9), (-128, 127)),
            (half, (1_977_377_600, -1), 20, (1_552_808_295, -1), (-128, 127)),
            (half, (1_977_377_600, -1), 20, (1_552_808_295, -19), (-100, 90)),
            ((1_900_000_000, -1), half, 1, (1_700_000_000, -2), (-128, 127)),
            (half, (1_977_377_600, -1), 0, (1_700_000_000, 0), (-128, 127))]):
        n = 37 + i
        x1 = rng.integers(-128, 128, n, dtype=np.int8)
        x2 = rng.integers(-128, 128, n, dtype=np.int8)
        p = dict(input_1_offset=int(rng.integers(-127, 129)), input_1_mult=q1[0], input_1_shift=q1[1],
                 input_2_offset=int(rng.integers(-127, 129)), input_2_mult=q2[0], input_2_shift=q2[1],
                 left_shift=ls, out_offset=int(rng.integers(-128, 128)), out_mult=om, out_shift=osh)
        recs.append(drv.record(drv.OP_ADD, [p[k] for k in keys] + [lo, hi, 0], [x1, x2]))
        expect.append(kernels.add_s8(x1, x2, **p, act_min=lo, act_max=hi).tobytes())
        labels.append(f"tails add form {i}")
    return recs, expect, labels


def _check_on(request, tmp_path, target: str, batch):
    """Run a (records, expected, labels) batch on the host build or the emulated Cortex-M7 (the DSP
    code: SXTB16/SMLAD and the assembly paths) and compare byte for byte."""
    exe = request.getfixturevalue(f"{target}_driver")
    runner = toolchain.run_host if target == "host" else toolchain.run_qemu
    recs, expect, labels = batch
    _check(_run_batch(exe, tmp_path, recs, runner), expect, labels)


@pytest.mark.parametrize("target, seed", [("host", 61), ("qemu", 62)])
def test_fast_paths_and_tails_bit_exact_vs_numpy(request, tmp_path, target, seed):
    _check_on(request, tmp_path, target, _tails_batch(seed))


def _dw3_edges_batch(seed: int):
    """3x3 depthwise layers at the edges of the doubled-accumulator interior (nn_dw_fast.c, tdn_dw3):
    shifts -1 and -22 (the range it takes), -23 in one channel (the whole layer falls back), interior
    biases at +-2^29 (taken), just beyond and beyond 2^30 (that block falls back), output offsets -128 and 127,
    multipliers 2^30 (every odd accumulator a rounding tie), 2^31 - 1 and random; small inputs and
    weights where the shift is small, so that the outputs fall inside the int8 range and the rounding
    (not the saturation) decides them; normal and in place, strides 1 and 2."""
    rng = np.random.default_rng(seed)
    recs, expect, labels = [], [], []
    # (channels, h, w, stride, shifts, channel 1's interior bias (0: random), out offset, |x|, |w|)
    # (the first two tall enough for the in-place ring of 4-channel rows)
    cases = [(8, 10, 7, 1, [-1, -2], 0, -128, 6, 3), (12, 13, 6, 2, [-1, -3, -2], 0, 127, 6, 2),
             (8, 6, 7, 1, [-3, -4], 0, 3, 20, 5), (12, 6, 6, 2, [-22, -1, -9], 0, 127, 4, 2),
             (8, 6, 6, 1, [-1, -23], 0, 5, 6, 3), (8, 5, 7, 1, [-22, -21], 2**29, -77, 128, 128),
             (8, 7, 5, 2, [-2, -20], 2**29 + 1, 100, 6, 3), (5, 6, 6, 1, [-21, -22], -(2**29), -128, 128, 128),
             (8, 6, 7, 1, [-22, -22], 2**30 + 5, -110, 128, 128)]  # doubled, this bias would overflow
    for i, (c, h, w, st, shifts, big, ooff, xr, wr) in enumerate(cases):
        x = rng.integers(-xr, min(xr, 127) + 1, (1, h, w, c), dtype=np.int8)
        wt = rng.integers(-wr, min(wr, 127) + 1, (1, 3, 3, c), dtype=np.int8)
        off = int(rng.integers(-3, 4)) if xr < 128 else int(rng.integers(-128, 128))
        s = np.array([shifts[j % len(shifts)] for j in range(c)])
        # large shifts: a bias near 2^(R + 1) * 60 keeps those outputs off the offset alone
        bias = np.array([int(rng.integers(-60, 61)) << max(0, -int(sj) + 1) for sj in s], np.int64)
        if big:
            # channel 1's interior bias (bias + off * sum of its weights) is exactly `big`
            bias[1] = big - off * int(wt[..., 1].astype(np.int64).sum())
        m = rng.integers(2**30, 2**31, c)
        m[::3], m[1::3] = 2**30, 2**31 - 1
        out_hw = (conv_out_size(h, 3, st, 1, 1), conv_out_size(w, 3, st, 1, 1))
        geo = dict(input_offset=off, output_offset=ooff, stride=(st, st), padding=(1, 1), dilation=(1, 1),
                   out_hw=out_hw, act_min=-128, act_max=127)
        want = kernels.depthwise_conv_s8(x, wt, bias.astype(np.int32), mult=m, shift=s, **geo)
        for v in (drv.DW_WRAPPER, drv.DW_INPLACE):
            recs.append(drv.dw_record(x, wt, bias.astype(np.int32), m, s, variant=v, **geo))
            expect.append(want.tobytes())
            labels.append(f"dw3 edges #{i} c{c} {h}x{w} s{st} shifts {shifts} bias {big} v{v}")
    return recs, expect, labels


@pytest.mark.parametrize("target, seed", [("host", 71), ("qemu", 72)])
def test_dw3_edges_bit_exact_vs_numpy(request, tmp_path, target, seed):
    """On QEMU these layers run tdn_dw3 (the assembly); on the host the C form of the same layers."""
    _check_on(request, tmp_path, target, _dw3_edges_batch(seed))


def test_unsupported_arguments_report_errors(host_driver, tmp_path):
    x = np.zeros((1, 4, 4, 2), np.int8)
    one = np.array([2**30], np.int32)
    # 1x1 fast path with padding -> ARG_ERROR; window entirely outside the input in avgpool -> ARG_ERROR
    rec1 = drv.conv_record(x, np.zeros((1, 1, 1, 2), np.int8), None, one, np.zeros(1, np.int32), input_offset=0,
                           output_offset=0, stride=(1, 1), padding=(1, 1), dilation=(1, 1), out_hw=(6, 6),
                           act_min=-128, act_max=127, variant=drv.CONV_1X1)
    rec2 = drv.record(drv.OP_AVGPOOL, [1, 4, 4, 2, 2, 2, 1, 1, 0, 0, 6, 6, -128, 127, 0], [x])
    outputs = _run_batch(host_driver, tmp_path, [rec1, rec2], toolchain.run_host)
    assert [o[0] for o in outputs] == [-1, -1]


@needs.cmsis_nn
def test_cmsis_nn_build_gives_identical_outputs(tmp_path):
    exe = toolchain.compile([drv.DRIVER_SOURCE], "host", tmp_path / "kd_cmsis", ref_kernels=True,
                            cmsis_nn_root=os.environ["CMSIS_NN_ROOT"])
    recs, expect, labels = _batch(seed=31, n_conv=24, n_dw=20)
    outputs = _run_batch(exe, tmp_path / "run", recs, toolchain.run_host)
    _check(outputs, expect, labels)


@needs.cmsis_nn
def test_cmsis_nn_qemu_build_gives_identical_outputs(tmp_path):
    """ARM's DSP (Cortex-M7) code paths against numpy, on QEMU."""
    elf = toolchain.compile([drv.DRIVER_SOURCE], "qemu-mps2-an500", tmp_path / "kd_cmsis.elf", ref_kernels=True,
                            cmsis_nn_root=os.environ["CMSIS_NN_ROOT"], defines={"TINYDET_BOARD": 1})
    recs, expect, labels = _batch(seed=51, n_conv=12, n_dw=10, avgpool_null_buf=False)
    outputs = _run_batch(elf, tmp_path / "run", recs, toolchain.run_qemu)
    _check(outputs, expect, labels)


@pytest.fixture(scope="session")
def qemu_driver(tmp_path_factory):
    out = tmp_path_factory.mktemp("qemu") / "kernel_driver.elf"
    return toolchain.compile([drv.DRIVER_SOURCE], "qemu-mps2-an500", out, ref_kernels=True,
                             defines={"TINYDET_BOARD": 1})


def test_qemu_kernels_bit_exact_vs_numpy(qemu_driver, tmp_path):
    """The DSP (SXTB16/SMLAD) code paths, on the emulated Cortex-M7."""
    recs, expect, labels = _batch(seed=41, n_conv=12, n_dw=10)
    (tmp_path / "in_q.bin").write_bytes(b"".join(recs))
    # file names through the semihosting command line (argv)
    code, out, log = toolchain.run_qemu(qemu_driver, tmp_path, timeout_s=240, args=["in_q.bin", "out_q.bin"])
    assert code == 0, f"driver exit {code}: {out} (log {log})"
    outputs = drv.read_outputs(tmp_path / "out_q.bin")
    _check(outputs, expect, labels)
    # the CMSDK timer advances during real kernels (deterministic under -icount)
    conv_ticks = [t for (st, t, _), lab in zip(outputs, labels) if lab.startswith("conv#")]
    assert max(conv_ticks) > 0
    sizes = toolchain.size(qemu_driver)
    assert sizes["flash"] > 1000 and sizes["sram_static"] >= 1536 * 1024 and sizes["stack"] == 0x10000


def test_qemu_crash_and_hang_are_reported(tmp_path):
    crash = toolchain.compile([REPO / "tests/c/crash.c"], "qemu-mps2-an500", tmp_path / "crash.elf")
    with pytest.raises(TinydetError, match=r"crashed under QEMU.*pc.*log kept"):
        toolchain.run_qemu(crash, tmp_path / "c", timeout_s=30)
    hang = toolchain.compile([REPO / "tests/c/crash.c"], "qemu-mps2-an500", tmp_path / "hang.elf",
                             defines={"TINYDET_TEST_HANG": 1})
    with pytest.raises(TinydetError, match=r"hung: no exit after 2 s"):
        toolchain.run_qemu(hang, tmp_path / "h", timeout_s=2)
    assert "killed after" in (tmp_path / "h" / "qemu.log").read_text()
    host = toolchain.compile([REPO / "tests/c/crash.c"], "host", tmp_path / "crash_host")
    with pytest.raises(TinydetError, match=r"crashed \(SIGSEGV\)"):
        toolchain.run_host(host, tmp_path / "hc", timeout_s=30)


@pytest.mark.parametrize("target", ["qemu-mps2-an500", "stm32f746", "stm32h743"])
def test_board_targets_build(target, tmp_path):
    elf = toolchain.compile([REPO / "tests/c/board_smoke.c"], target, tmp_path / f"{target}.elf")
    t = toolchain.get_target(target)
    sizes = toolchain.size(elf)
    assert 0 < sizes["flash"] <= t.flash_bytes and sizes["sram_static"] + sizes["stack"] <= t.sram_bytes
    if t.make_bin:
        assert elf.with_suffix(".bin").stat().st_size > 0
    if t.kind == "qemu":
        code, out, _ = toolchain.run_qemu(elf, tmp_path, timeout_s=30)
        assert code == 0 and "board_smoke status=0" in out
        used = int(out.split("stack_used=")[1].split("/")[0])
        assert 0 < used < 0x10000


def test_toolchain_errors_are_one_line():
    with pytest.raises(TinydetError, match="did you mean 'stm32f746'"):
        toolchain.get_target("stm32f764")
    with pytest.raises(TinydetError, match="apt-get install gcc-arm-none-eabi"):
        toolchain.find_tool("arm-none-eabi-gcc-does-not-exist")
    with pytest.raises(TinydetError, match="Include/arm_nnfunctions.h"):
        toolchain.cmsis_nn_sources("/nonexistent")
    with pytest.raises(TinydetError, match="contains a comma or whitespace"):
        toolchain.run_qemu(__file__, "/tmp", args=["a,b"])
    with pytest.raises(TinydetError, match="is not a QEMU target"):
        toolchain.run_qemu(__file__, "/tmp", target="stm32f746")
    assert toolchain.list_targets() == ["host", "qemu-mps2-an500", "stm32f746", "stm32h743"]
    assert toolchain.get_target("stm32f746").sram_bytes == 320 * 1024


def test_qemu_counter_calibration(tmp_path):
    """CMSDK TIMER0 under -icount shift=0: one tick is 40 instructions (25 MHz, 1 ns per instruction)."""
    elf = toolchain.compile([REPO / "tests/c/counter_calib.c"], "qemu-mps2-an500", tmp_path / "calib.elf")
    code, out, _ = toolchain.run_qemu(elf, tmp_path, timeout_s=60)
    fields = dict(kv.split("=") for kv in out.split("calib ")[1].split())
    instr, ticks, ipt = int(fields["instructions"]), int(fields["ticks"]), int(fields["ipt_x1000"]) / 1000
    assert code == 0 and ipt == 40
    assert abs(ticks * ipt - instr) <= 2 * ipt  # exact up to the few instructions around the loop


def _tile_input(o0: int, o1: int, k: int, s: int, p: int, size: int) -> tuple[int, int, int, int]:
    """Input rows [i0, i1) an output range [o0, o1) needs, and the zero padding (before, after) that
    remains at the true border."""
    lo, hi = o0 * s - p, (o1 - 1) * s - p + k
    return max(lo, 0), min(hi, size), max(-lo, 0), max(hi - size, 0)


@pytest.mark.parametrize("layer", [("conv", 3, 1, 1), ("dw", 3, 2, 1), ("conv", 5, 2, 2), ("dw", 7, 1, 3)])
def test_tiles_with_border_padding_stitch_to_the_full_layer(host_driver, tmp_path, layer):
    """A 3x3 grid of output tiles, each computed by the C kernel from its input region with zero
    padding only on sides at the image border (CMSIS top/left padding + output size from
    tinydet_tile_geometry), stitches to exactly the full layer."""
    kind, k, s, p = layer
    rng = np.random.default_rng(k * 10 + s)
    h, w, c = 13, 11, 5
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    cout = c if kind == "dw" else 6
    wt = rng.integers(-128, 128, (1 if kind == "dw" else cout, k, k, c), dtype=np.int8)
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    m, sh = arith.quantize_multiplier(rng.uniform(2**-13, 2**-9, cout))
    q = dict(input_offset=17, output_offset=-5, act_min=-128, act_max=127)
    oh, ow = conv_out_size(h, k, s, p, p), conv_out_size(w, k, s, p, p)
    full = (kernels.depthwise_conv_s8 if kind == "dw" else kernels.conv_s8)(
        x, wt, bias, mult=m, shift=sh, stride=s, padding=p, out_hw=(oh, ow), **q)
    rows = [round(i * oh / 3) for i in range(4)]
    cols = [round(i * ow / 3) for i in range(4)]
    recs, geo_recs, placements = [], [], []
    for r in range(3):
        for cc in range(3):
            y0, y1, pt, pb = _tile_input(rows[r], rows[r + 1], k, s, p, h)
            x0, x1, pl, pr = _tile_input(cols[cc], cols[cc + 1], k, s, p, w)
            tile = np.ascontiguousarray(x[:, y0:y1, x0:x1])
            geo_recs.append(drv.record(drv.OP_GEOMETRY, [y1 - y0, x1 - x0, k, k, s, s, 1, 1, pt, pl, pb, pr], []))
            t_hw = (rows[r + 1] - rows[r], cols[cc + 1] - cols[cc])
            args = dict(stride=(s, s), padding=(pt, pl), dilation=(1, 1), out_hw=t_hw, **q)
            recs.append(drv.dw_record(tile, wt, bias, m, sh, **args) if kind == "dw"
                        else drv.conv_record(tile, wt, bias, m, sh, **args))
            placements.append((rows[r], cols[cc], t_hw, (pt, pl)))
    outputs = _run_batch(host_driver, tmp_path, geo_recs + recs, toolchain.run_host)
    stitched = np.zeros_like(full)
    for (_, _, geo), (status, _, data), (ty, tx, (th, tw), pads) in zip(outputs[:9], outputs[9:], placements):
        rc, pad_h, pad_w, g_h, g_w = np.frombuffer(geo, np.int32)
        # tinydet_tile_geometry gives the CMSIS padding and the tile's output size
        assert rc == 0 and (g_h, g_w) == (th, tw) and (pad_h, pad_w) == pads
        assert status == 0
        stitched[0, ty:ty + th, tx:tx + tw] = np.frombuffer(data, np.int8).reshape(th, tw, cout)
    assert np.array_equal(stitched, full)
