"""numpy interpreter of the int8 op list (:mod:`tinydet.quant.qgraph`) with integer-only
requantization: the arithmetic the C runtime runs (DESIGN.md "Int8 arithmetic"), through the
CMSIS-NN-semantics kernels of :mod:`tinydet.quant.kernels`.

Activations are NHWC int8 inside; graph inputs and outputs are float NCHW like the ONNX models.
``run_full`` runs ``full.int8.onnx``; ``run_stitched`` runs ``stage1_patch.int8.onnx`` on every
tile of ``schedule.json`` (its per-tile pads), writes each tile into the stage-1 output buffer,
and runs ``stage2.int8.onnx`` on the stitched int8 map — bit for bit what the full graph gives.
Blocks a schedule fuses (``memory.rules.fused_blocks``) run row by row through a ring of k
expanded rows (:func:`fused_ir_rows`, the C runtime's order), bit exact with the op-by-op run.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.geometry import Pads, conv_out_size
from tinydet.quant import kernels
from tinydet.quant.arith import dequantize, quantize
from tinydet.quant.params import QMAX, QMIN
from tinydet.quant.qgraph import QGraph, QOp, load_qgraph


def pad_int8(x: np.ndarray, pads: Pads, zero_point: int) -> np.ndarray:
    """Pad (positive) or crop (negative) an NHWC int8 tensor by ``pads`` with the zero point, i.e.
    with real 0.0."""
    n, h, w, c = x.shape
    y0, y1 = max(0, -pads.top), h - max(0, -pads.bottom)
    x0, x1 = max(0, -pads.left), w - max(0, -pads.right)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"pads {pads.to_dict()} crop away the whole {h}x{w} tensor")
    core = x[:, y0:y1, x0:x1, :]
    top, left = max(0, pads.top), max(0, pads.left)
    out = np.full((n, core.shape[1] + top + max(0, pads.bottom), core.shape[2] + left + max(0, pads.right), c),
                  zero_point, dtype=np.int8)
    out[:, top:top + core.shape[1], left:left + core.shape[2], :] = core
    return out


def _conv(op: QOp, x: np.ndarray) -> np.ndarray:
    p = op.padding
    (kh, kw), (sh, sw) = op.kernel, op.stride
    out_hw = (conv_out_size(x.shape[1], kh, sh, p.top, p.bottom), conv_out_size(x.shape[2], kw, sw, p.left, p.right))
    zp_out = op.add["conv_zp"] if op.add else op.out_zp
    fn = kernels.conv_s8 if op.kind == "conv" else kernels.depthwise_conv_s8
    return fn(x, op.weight, op.bias, input_offset=-op.in_zp[0], output_offset=zp_out, mult=op.mult,
              shift=op.shift, stride=(sh, sw), padding=(p.top, p.left), out_hw=out_hw,
              act_min=op.act_min, act_max=op.act_max)


def _add(params: Mapping[str, int], a: np.ndarray, b: np.ndarray, act_min: int = QMIN, act_max: int = QMAX) -> np.ndarray:
    return kernels.add_s8(a, b, **params, act_min=act_min, act_max=act_max)


@dataclass(frozen=True)
class FusedOps:
    """The int8 ops of one fused inverted residual (``expand`` None without expansion); ``pad``
    the Pad op before the depthwise in a stage-1 graph (per-tile border pads), else None."""

    expand: str | None
    pad: str | None
    dw: str
    project: str


def fused_ops(qg: QGraph, blocks: Sequence[int]) -> list[FusedOps]:
    """The :class:`FusedOps` of backbone ``blocks`` (``memory.rules.fused_blocks``) present in
    ``qg`` (ops named ``blocks.<b>.expand|dw|project``; blocks not in this graph are skipped)."""
    by_name = {op.name: op for op in qg.ops}
    out = []
    for b in blocks:
        dw, proj, exp = f"blocks.{b}.dw", f"blocks.{b}.project", f"blocks.{b}.expand"
        if dw not in by_name or proj not in by_name:
            continue
        src = by_name[dw].inputs[0]
        pad = next((op.name for op in qg.ops if op.kind == "pad" and op.output == src), None)
        out.append(FusedOps(exp if exp in by_name else None, pad, dw, proj))
    return out


def fused_ir_rows(expand: QOp | None, dw: QOp, project: QOp, x: np.ndarray, pads: Pads,
                  shortcut: np.ndarray | None = None, ring_short: int = 0) -> np.ndarray:
    """One fused inverted residual on NHWC int8 ``x`` (the block input region), output row by row:
    the input rows the depthwise window needs are expanded once each into a ring of k rows (slot
    ``row % k``), the depthwise reads its window from the ring with the border ``pads`` (zero
    point), the projection [+ ``shortcut``, the output region of the block input] writes the row.
    Each output value goes through the same integer kernels as op by op, so the result is bit
    exact; ``ring_short`` shortens the ring (negative control)."""
    (kh, _), (sh, _) = dw.kernel, dw.stride
    n, h_in, w_in, _ = x.shape
    h_out = conv_out_size(h_in, kh, sh, pads.top, pads.bottom)
    zp = dw.in_zp[0]
    dw_flat = replace(dw, padding=Pads())
    if expand is not None:
        slots = max(1, min(kh, h_in) - ring_short)
        ring = np.zeros((n, slots, w_in, dw.weight.shape[-1]), np.int8)
        done = 0
    rows = []
    for y in range(h_out):
        top = y * sh - pads.top
        real = [r for r in range(top, top + kh) if 0 <= r < h_in]
        if expand is not None:
            for r in range(done, real[-1] + 1):
                ring[:, r % slots:r % slots + 1] = _conv(expand, x[:, r:r + 1])
            done = max(done, real[-1] + 1)
            window = np.concatenate([ring[:, r % slots:r % slots + 1] for r in real], axis=1)
        else:
            window = x[:, real[0]:real[-1] + 1]
        window = pad_int8(window, Pads(real[0] - top, pads.left, top + kh - 1 - real[-1], pads.right), zp)
        row = _conv(project, _conv(dw_flat, window))
        if project.add:
            s = shortcut[:, y:y + 1]
            a, b = (row, s) if project.add["conv_first"] else (s, row)
            row = _add(project.add["params"], a, b)
        rows.append(row)
    return np.concatenate(rows, axis=1)


def run_op(op: QOp, env: Mapping[str, np.ndarray], pads: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Execute one op on the tensors in ``env``; returns the tensors it makes (a fused conv+add
    also returns its conv result under ``op.add['conv_tensor']``)."""
    if op.kind == "quantize":
        x = np.asarray(env[op.inputs[0]], np.float32)
        return {op.output: quantize(x, op.out_scale, op.out_zp).transpose(0, 2, 3, 1).copy()}
    x = env[op.inputs[0]]
    if op.kind == "pad":
        if op.pads_input is not None:
            if pads is None or op.pads_input not in pads:
                raise TinydetError(f"int8 reference: op '{op.name}' needs the per-tile input '{op.pads_input}'")
            try:
                amounts = Pads.from_onnx(pads[op.pads_input])
            except ValueError as exc:
                raise TinydetError(f"int8 reference: per-tile input '{op.pads_input}': {exc}") from None
        else:
            amounts = op.padding
        return {op.output: pad_int8(x, amounts, op.out_zp)}
    if op.kind in ("conv", "dwconv"):
        y = _conv(op, x)
        if not op.add:
            return {op.output: y}
        s = env[op.add["shortcut"]]
        a, b = (y, s) if op.add["conv_first"] else (s, y)
        return {op.add["conv_tensor"]: y, op.output: _add(op.add["params"], a, b)}
    if op.kind == "add":
        return {op.output: _add(op.add["params"], x, env[op.inputs[1]])}
    if op.kind == "maxpool":
        p = op.padding
        (kh, kw), (sh, sw) = op.kernel, op.stride
        out_hw = (conv_out_size(x.shape[1], kh, sh, p.top, p.bottom), conv_out_size(x.shape[2], kw, sw, p.left, p.right))
        return {op.output: kernels.max_pool_s8(x, op.kernel, stride=op.stride, padding=(p.top, p.left), out_hw=out_hw,
                                               act_min=op.act_min, act_max=op.act_max)}
    if op.kind == "upsample":
        return {op.output: kernels.upsample_nearest_s8(x, op.scale)}
    if op.kind == "concat":
        return {op.output: kernels.concat_s8([env[n] for n in op.inputs], op.requant)}
    if op.kind == "avgpool":
        return {op.output: kernels.global_avgpool_s8(x)}
    if op.kind == "flatten":
        # NHWC [N, 1, 1, C] -> [N, C]: equal to NCHW flatten only for 1x1 maps (after a global pool)
        if x.ndim == 4 and (x.shape[1], x.shape[2]) != (1, 1):
            raise TinydetError(f"int8 reference: Flatten '{op.name}' of a {x.shape[1]}x{x.shape[2]} map; "
                               f"expected 1x1 (after a global pool)")
        return {op.output: x.reshape(x.shape[0], -1)}
    if op.kind == "fc":
        return {op.output: kernels.fully_connected_s8(x, op.weight, op.bias, input_offset=-op.in_zp[0],
                                                      output_offset=op.out_zp, mult=op.mult, shift=op.shift,
                                                      act_min=op.act_min, act_max=op.act_max)}
    if op.kind == "dequantize":
        y = dequantize(x, op.in_scale[0], op.in_zp[0])
        return {op.output: y.transpose(0, 3, 1, 2).copy() if y.ndim == 4 else y}
    raise TinydetError(f"int8 reference: op '{op.name}' has unknown kind '{op.kind}'")


def _run_fused(qg: QGraph, f: FusedOps, env: Mapping[str, np.ndarray], pads: Mapping[str, Sequence[int]] | None,
               ring_short: int) -> np.ndarray:
    by_name = {op.name: op for op in qg.ops}
    dw, proj = by_name[f.dw], by_name[f.project]
    expand = by_name[f.expand] if f.expand else None
    first = expand if expand is not None else (by_name[f.pad] if f.pad else dw)
    border = dw.padding
    if f.pad is not None:
        pad_op = by_name[f.pad]
        border = Pads.from_onnx(pads[pad_op.pads_input]) if pad_op.pads_input else pad_op.padding
    shortcut = env[proj.add["shortcut"]] if proj.add else None
    return fused_ir_rows(expand, dw, proj, env[first.inputs[0]], border, shortcut, ring_short)


def run(qg: QGraph, feeds: Mapping[str, np.ndarray], pads: Mapping[str, Sequence[int]] | None = None,
        int8_feeds: Mapping[str, np.ndarray] | None = None, fused: Sequence[FusedOps] = (),
        ring_short: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run ``qg``; ``feeds`` are float NCHW graph inputs, ``int8_feeds`` NHWC int8 tensors that
    replace the quantize op making them; ``fused`` blocks run row by row (:func:`fused_ir_rows`;
    their expanded and depthwise tensors are never made). Returns ``(int8 tensors NHWC, float
    outputs NCHW)``; the two are separate because a graph output and its int8 source share a name."""
    floats: dict[str, np.ndarray] = {}
    env: dict[str, np.ndarray] = {}
    int8_feeds = dict(int8_feeds or {})
    inner = {name for f in fused for name in (f.expand, f.pad, f.dw) if name}
    at_project = {f.project: f for f in fused}
    for op in qg.ops:
        if op.name in inner:
            continue
        if op.name in at_project:
            env[op.output] = _run_fused(qg, at_project[op.name], env, pads, ring_short)
            continue
        if op.kind == "quantize":
            if op.output in int8_feeds:
                env[op.output] = np.asarray(int8_feeds[op.output], np.int8)
                continue
            if op.inputs[0] not in feeds:
                raise TinydetError(f"int8 reference: graph input '{op.inputs[0]}' was not given")
            env.update(run_op(op, feeds, pads))
            continue
        missing = [n for n in op.inputs if n not in env]
        if missing:
            raise TinydetError(f"int8 reference: op '{op.name}' reads {missing}, which nothing provided")
        made = run_op(op, env, pads)
        (floats if op.kind == "dequantize" else env).update(made)
    return env, floats


def run_full(qg: QGraph, images: np.ndarray, fused_blocks: Sequence[int] = (), ring_short: int = 0) -> list[np.ndarray]:
    """Float outputs (NCHW) of an int8 full model for images [B, 3, H, W] in [0, 1];
    ``fused_blocks`` run row by row."""
    _, floats = run(qg, {qg.inputs[0]: np.asarray(images, np.float32)}, fused=fused_ops(qg, fused_blocks),
                    ring_short=ring_short)
    return [floats[name] for name in qg.outputs]


def run_stitched(stage1: QGraph, stage2: QGraph, schedule: Mapping, images: np.ndarray,
                 return_split: bool = False, ring_short: int = 0):
    """Stage 1 per tile (``schedule['tiles']``: ``in_rect``, ``out_rect``, ``onnx_pads``), stitched
    into the int8 split tensor, then stage 2; the blocks ``memory.rules.fused_blocks`` names run
    fused in both stages. Returns the float outputs (and the int8 split map)."""
    images = np.asarray(images, np.float32)
    blocks = schedule.get("memory", {}).get("rules", {}).get("fused_blocks", [])
    fused1, fused2 = fused_ops(stage1, blocks), fused_ops(stage2, blocks)
    split = schedule["split_tensor"]
    c, h, w = schedule_shape(schedule, split)
    if stage1.outputs != [split] or split not in stage2.inputs:
        raise TinydetError(f"int8 reference: stage models do not meet at '{split}' (stage 1 makes {stage1.outputs}, "
                           f"stage 2 reads {stage2.inputs})")
    p1 = stage1.tensors.get(split)
    p2 = stage2.tensors.get(split)
    if p1 != p2:
        raise TinydetError(f"int8 reference: split tensor '{split}' has parameters {p1} in stage 1 and "
                           f"{p2} in stage 2; expected the same (quantize all three together)")
    buf = np.zeros((images.shape[0], h, w, c), np.int8)
    filled = np.zeros((h, w), bool)
    for tile in schedule["tiles"]:
        y0, y1, x0, x1 = tile["in_rect"]
        oy0, oy1, ox0, ox1 = tile["out_rect"]
        env, _ = run(stage1, {stage1.inputs[0]: images[:, :, y0:y1, x0:x1]}, tile.get("onnx_pads", {}),
                     fused=fused1, ring_short=ring_short)
        out = env[split]
        if out.shape[1:3] != (oy1 - oy0, ox1 - ox0):
            raise TinydetError(f"int8 reference: tile ({tile.get('row')}, {tile.get('col')}) made "
                               f"{out.shape[1]}x{out.shape[2]}, its out_rect {tile['out_rect']} is "
                               f"{oy1 - oy0}x{ox1 - ox0}")
        buf[:, oy0:oy1, ox0:ox1, :] = out
        filled[oy0:oy1, ox0:ox1] = True
    if not filled.all():
        raise TinydetError(f"int8 reference: the tiles of schedule.json leave {int((~filled).sum())} pixels of "
                           f"'{split}' uncovered")
    _, floats = run(stage2, {}, int8_feeds={split: buf}, fused=fused2, ring_short=ring_short)
    outs = [floats[name] for name in stage2.outputs]
    return (outs, buf) if return_split else outs


def schedule_shape(schedule: Mapping, tensor: str) -> tuple[int, int, int]:
    """(C, H, W) of a tensor from schedule.json's op list."""
    for op in schedule["ops"]:
        if op["output"] == tensor:
            return tuple(int(v) for v in op["out_shape"])
    raise TinydetError(f"schedule.json: no op makes tensor '{tensor}'")


class Int8Reference:
    """The three int8 models of an export folder, read once."""

    def __init__(self, folder: "str | Path", schedule: Mapping | None = None):
        folder = Path(folder)
        for name in ("full.int8.onnx", "stage1_patch.int8.onnx", "stage2.int8.onnx"):
            if not (folder / name).is_file():
                raise TinydetError(f"{folder / name}: missing; run 'tinydet quantize {folder}' first")
        if schedule is None:
            import json

            schedule = json.loads((folder / "schedule.json").read_text())
        self.schedule = schedule
        self.full = load_qgraph(folder / "full.int8.onnx")
        self.stage1 = load_qgraph(folder / "stage1_patch.int8.onnx")
        self.stage2 = load_qgraph(folder / "stage2.int8.onnx")

    def run_full(self, images: np.ndarray) -> list[np.ndarray]:
        return run_full(self.full, images)

    def run_stitched(self, images: np.ndarray, return_split: bool = False):
        return run_stitched(self.stage1, self.stage2, self.schedule, images, return_split)


def ort_int8_tensors(model: "onnx.ModelProto", feeds: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """Run an int8 QDQ model in onnxruntime with every int8 activation (``T/q``) exposed; returns
    them NHWC by canonical name (the per-layer comparison feeds these to the reference)."""
    from tinydet.io.onnxrt import session

    names = [o for n in model.graph.node for o in n.output if o.endswith("/q")]
    sess = session(model, threads, expose=names)
    values = sess.run(names, dict(feeds))
    out = {}
    for name, v in zip(names, values):
        out[name[:-2]] = v.transpose(0, 2, 3, 1).copy() if v.ndim == 4 else v
    return out


def layer_lsb_vs_ort(qg: QGraph, model: "onnx.ModelProto", images: np.ndarray,
                     pads: Mapping[str, Sequence[int]] | None = None) -> dict[str, int]:
    """Per layer, the largest |reference - onnxruntime| in LSB when both get onnxruntime's int8
    inputs: each op runs once on the int8 tensors onnxruntime computed, so differences do not
    compound. A fused conv+add reports the worse of its conv result and its sum."""
    feeds = {qg.inputs[0]: np.asarray(images, np.float32)}
    feeds.update({name: np.asarray(v, np.int64) for name, v in (pads or {}).items()})
    ort_vals = ort_int8_tensors(model, feeds)
    worst: dict[str, int] = {}
    for op in qg.ops:
        if op.kind in ("quantize", "dequantize", "pad", "flatten"):
            continue
        env = {n: ort_vals[n] for n in op.inputs}
        made = run_op(op, env, pads)
        if op.add and op.kind in ("conv", "dwconv"):
            # the sum is compared on onnxruntime's conv result, so each kernel is measured alone
            a, b = ((ort_vals[op.add["conv_tensor"]], ort_vals[op.add["shortcut"]]) if op.add["conv_first"]
                    else (ort_vals[op.add["shortcut"]], ort_vals[op.add["conv_tensor"]]))
            made[op.output] = _add(op.add["params"], a, b)
        diffs = [int(np.abs(v.astype(np.int32) - ort_vals[k].astype(np.int32)).max()) for k, v in made.items()
                 if k in ort_vals]
        worst[op.name] = max(diffs) if diffs else 0
    return worst
