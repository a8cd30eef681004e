"""Python side of tests/c/kernel_driver.c: encode kernel calls, decode their outputs.

Shared by tests/test_c_kernels.py and benchmarks that time kernels under QEMU.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OP_CONV, OP_DW, OP_ADD, OP_AVGPOOL, OP_FC, OP_CONV_ADD, OP_ARITH, OP_TILE, OP_GEOMETRY, OP_MOVE, OP_CONV_ROWS = range(1, 12)
CONV_ARM, CONV_1X1, CONV_WRAPPER, CONV_REF = range(4)
DW_ARM, DW_WRAPPER, DW_REF, DW_INPLACE = range(4)
DRIVER_SOURCE = Path(__file__).with_name("kernel_driver.c")


def _blob(a) -> bytes:
    b = np.ascontiguousarray(a).tobytes() if a is not None else b""
    return struct.pack("<i", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def record(op: int, params, blobs) -> bytes:
    """One kin.bin record."""
    params = [int(p) for p in params]
    return (struct.pack(f"<ii{len(params)}i", op, len(params), *params) + struct.pack("<i", len(blobs))
            + b"".join(_blob(b) for b in blobs))


def read_outputs(path: Path) -> list[tuple[int, int, bytes]]:
    """kout.bin -> [(status, ticks, payload)]."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        status, ticks, n = struct.unpack_from("<iIi", data, i)
        i += 12
        out.append((status, ticks, data[i:i + n]))
        i += n + (4 - n % 4) % 4
    return out


def run_records(exe: Path, workdir: Path, recs: list[bytes], runner, timeout_s: float = 240.0
                ) -> list[tuple[int, int, bytes]]:
    """Write ``recs`` as ``workdir/kin.bin``, run the driver ``exe`` there with ``runner``
    (``toolchain.run_host`` or ``toolchain.run_qemu``) and return its outputs (:func:`read_outputs`).
    A driver that exits non-zero raises RuntimeError naming its log."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kin.bin").write_bytes(b"".join(recs))
    code, out, log = runner(exe, workdir, timeout_s=timeout_s)
    if code != 0:
        raise RuntimeError(f"kernel driver {exe} exited {code} (log {log}): {out[-300:]}")
    return read_outputs(workdir / "kout.bin")


def conv_record(x, w, bias, mult, shift, *, input_offset, output_offset, stride, padding, dilation, out_hw,
                act_min, act_max, variant=CONV_ARM, op=OP_CONV, shortcut=None, add=None, add_act=(-128, 127),
                shortcut_at=None, rows=None):
    """A conv (or conv + residual add) record. ``shortcut_at=(y, x)``: region form, ``shortcut`` is a
    larger [1, Hs, Ws, C_out] buffer holding the output's shortcut at (y, x). ``rows=(dst_w, scratch,
    reverse)`` with op OP_CONV_ROWS: tinydet_conv_rows without an add into a [H_out, dst_w, C_out] map;
    with ``add`` and ``rows=(dst_w, scratch, reverse, dst_row)`` the residual rows in the buffer
    ``shortcut`` [Hs, dst_w, C_out]: shortcut rows from its top, output from row dst_row down."""
    n, h, wd, c = x.shape
    cout, kh, kw, _ = w.shape
    params = [n, h, wd, c, cout, kh, kw, *stride, *padding, *dilation, *out_hw, input_offset, output_offset,
              act_min, act_max, variant]
    blobs = [x.astype(np.int8), w.astype(np.int8), None if bias is None else np.asarray(bias, np.int32),
             np.asarray(mult, np.int32), np.asarray(shift, np.int32)]
    if op == OP_CONV_ADD:
        params += [add[k] for k in ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset",
                                    "input_2_mult", "input_2_shift", "left_shift", "out_offset", "out_mult",
                                    "out_shift")] + list(add_act)
        if shortcut_at is not None:
            params += [shortcut.shape[1], shortcut.shape[2], *shortcut_at]
        blobs.append(shortcut.astype(np.int8))
    if op == OP_CONV_ROWS:
        params += list(rows[:3])
        if add is not None:  # the rows add shortcut's top rows and write from row rows[3] down, in place
            params += [add[k] for k in ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset",
                                        "input_2_mult", "input_2_shift", "left_shift", "out_offset", "out_mult",
                                        "out_shift")] + list(add_act) + [rows[3]]
            blobs.append(shortcut.astype(np.int8))
    return record(op, params, blobs)


def dw_record(x, w, bias, mult, shift, *, input_offset, output_offset, stride, padding, dilation, out_hw,
              act_min, act_max, variant=DW_ARM, ch_mult=1):
    n, h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    params = [n, h, wd, c, ch_mult, kh, kw, *stride, *padding, *dilation, *out_hw, input_offset, output_offset,
              act_min, act_max, variant]
    return record(OP_DW, params, [x.astype(np.int8), w.astype(np.int8),
                                  None if bias is None else np.asarray(bias, np.int32),
                                  np.asarray(mult, np.int32), np.asarray(shift, np.int32)])


@dataclass
class ExportLayer:
    """One conv / depthwise layer of an export at its layer-mode shape, with a random int8 input."""
    name: str
    kind: str          # "conv" | "dwconv"
    op: object         # the tinydet.quant.qgraph op (weights, bias, quantization)
    x: np.ndarray      # [1, H, W, C] int8
    geo: dict          # conv_record / dw_record keyword arguments
    macs: int

    def record(self, variant: int) -> bytes:
        """The layer's kernel_driver record for ``variant`` (CONV_* for conv, DW_* for depthwise)."""
        make = conv_record if self.kind == "conv" else dw_record
        return make(self.x, self.op.weight, self.op.bias, self.op.mult, self.op.shift, variant=variant, **self.geo)


def export_layers(export_dir, rng) -> list[ExportLayer]:
    """Every conv / depthwise layer of an export folder (schedule.json shapes, full.int8.onnx ops)."""
    from tinydet.export.schedule_file import load_export
    from tinydet.quant.qgraph import load_qgraph

    export = load_export(export_dir)
    ops = {o["name"]: o for o in export.schedule["ops"]}
    layers = []
    for op in load_qgraph(export.path("full.int8.onnx")).ops:
        if op.kind not in ("conv", "dwconv"):
            continue
        c, h, w = ops[op.name]["in_shape"]
        cout, oh, ow = ops[op.name]["out_shape"]
        geo = dict(input_offset=-op.in_zp[0], output_offset=op.add["conv_zp"] if op.add else op.out_zp,
                   stride=tuple(op.stride), padding=(op.padding.top, op.padding.left), dilation=(1, 1),
                   out_hw=(oh, ow), act_min=op.act_min, act_max=op.act_max)
        kh, kw = op.kernel
        macs = oh * ow * kh * kw * (cout * c if op.kind == "conv" else c)
        layers.append(ExportLayer(op.name, op.kind, op, rng.integers(-128, 128, (1, h, w, c), dtype=np.int8), geo,
                                  macs))
    return layers
