"""C code generation: an export folder -> ``model.c`` / ``model.h`` for the C runtime.

Reads only the export folder (``schedule.json`` + the ``*.int8.onnx`` models through
:mod:`tinydet.quant.qgraph`); no torch. The generated code holds

* every layer's int8 weights, int32 biases and per-channel ``(mult, shift)`` as ``const`` data
  (Flash), described by a ``td_layer`` table;
* ONE static aligned activation arena ``tinydet_arena[N]``, N = the planner's peak for the mode,
  with every buffer at the allocator's offsets (``schedule.json: arena`` for patch mode,
  :func:`tinydet.schedule.allocate` per layer for layer mode) -- no malloc;
* the schedule as ``td_step`` tables: patch mode runs the stage-1 steps once per tile (each tile
  with its own border pads, region sizes and shortcut crops, reading its input region straight
  from the image source) and then stage 2 per layer; layer mode runs every layer on the full map;
* per-layer counter hooks (``tinydet_layer_ticks``) and a float decode + NMS mirroring
  :mod:`tinydet.models.decode` (outside the integer inference path).

The executor that walks the tables is fixed C text (``_EXECUTOR``) in this module; only tables
and constants are generated.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydet.errors import TinydetError

MODES = ("patch", "layer")
# step modes of the generated tables (mirror tinydet.schedule.arena's ArenaStep.mode)
_MODE_CODE = {"normal": 0, "inplace_dw": 1, "fused_residual": 2, "sink": 3}
# deployment score threshold, the same default as `tinydet validate --conf`
DEFAULT_CONF = 0.25
MAX_CANDIDATES = 3000  # tinydet.models.decode.postprocess's default


@dataclass
class Generated:
    """What :func:`generate` wrote and the numbers the build reports."""

    mode: str
    model_c: Path
    model_h: Path
    arena_bytes: int
    planned_peak_bytes: int
    scratch_bytes: int
    const_bytes: int  # weights + biases + multipliers + shifts (Flash)
    layers: list[str]
    outputs: list[dict[str, Any]]
    input: dict[str, Any]
    detector: dict[str, Any] | None
    tiles: int
    extra: dict[str, Any] = field(default_factory=dict)


def _carr(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)] or ["0"]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{max(1, len(vals))}] = {{\n    {body}\n}};\n"


def _cstr(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape_of(schedule: dict, tensor: str) -> tuple[int, int, int]:
    if tensor in schedule.get("tensors", {}):
        c, h, w = schedule["tensors"][tensor]
        return int(c), int(h), int(w)
    for op in schedule["ops"]:
        if op["output"] == tensor:
            return tuple(int(v) for v in op["out_shape"])
    raise TinydetError(f"schedule.json: tensors: no shape for '{tensor}'")


_SUPPORTED = ("conv", "dwconv")


def _check_supported(qg, where: str) -> None:
    for op in qg.ops:
        if op.kind in ("quantize", "dequantize", "pad"):
            continue
        if op.kind not in _SUPPORTED:
            raise TinydetError(f"{where}: node '{op.name}' ({op.kind}) is not supported by the C code generator; "
                               f"expected Conv, depthwise Conv (optionally followed by a residual Add) in QDQ form")


def _layer_arena(schedule: dict) -> dict:
    """Per-layer ArenaPlan for the export's network (the planner's own allocator)."""
    from tinydet.arch.graph import lower
    from tinydet.arch.spec import HeadSpec, spec_from_dict
    from tinydet.schedule.arena import allocate
    from tinydet.schedule.memory import MemoryRules

    arch = schedule["arch"]
    spec = spec_from_dict(arch["spec"])
    head = HeadSpec(**arch["head"]) if arch.get("head") else None
    _, h, w = schedule["input"]["shape"]
    graph = lower(spec, (h, w), head=head)
    rules = MemoryRules.from_dict(schedule.get("memory", {}).get("rules", {}))
    arena = allocate(graph, None, rules).to_dict()
    names = [op["name"] for op in schedule["ops"]]
    if [s["op"] for s in arena["steps"]] != names:
        raise TinydetError("schedule.json: ops differ from the network its arch spec lowers to; re-export the folder")
    return arena


def load_models(export) -> tuple[Any, Any, Any]:
    """(full, stage1, stage2) int8 graphs of a verified export folder."""
    from tinydet.quant.qgraph import load_qgraph

    return tuple(load_qgraph(export.path(f"{n}.int8.onnx")) for n in ("full", "stage1_patch", "stage2"))


class _Tables:
    """Collects layers (const data) and steps while walking the schedule."""

    def __init__(self, schedule: dict):
        self.schedule = schedule
        self.layer_index: dict[str, int] = {}
        self.layer_src: list[str] = []
        self.layer_rows: list[str] = []
        self.add_rows: list[str] = []
        self.const_bytes = 0
        self.scratch = 0
        self.ops = {op["name"]: op for op in schedule["ops"]}

    def layer(self, qop) -> int:
        """Index of ``qop`` in ``td_layers`` (its const data written once for all tiles)."""
        if qop.name in self.layer_index:
            return self.layer_index[qop.name]
        i = len(self.layer_rows)
        self.layer_index[qop.name] = i
        w = np.asarray(qop.weight, np.int8)
        # OHWI conv filters, [1, KH, KW, C] depthwise filters: the last axis is the input channels
        cout = int(w.shape[0]) if qop.kind == "conv" else int(w.shape[3])
        cin = int(w.shape[3])
        kh, kw = qop.kernel
        bias = np.asarray(qop.bias, np.int64)
        if bias.min(initial=0) < -2**31 or bias.max(initial=0) >= 2**31:
            raise TinydetError(f"{qop.name}: bias does not fit int32")
        self.layer_src.append(f"/* {qop.name}: {qop.kind} {kh}x{kw}/{qop.stride[0]} {cin}->{cout} */\n"
                              + _carr("int8_t", f"td_w{i}", w) + _carr("int32_t", f"td_b{i}", bias)
                              + _carr("int32_t", f"td_m{i}", qop.mult) + _carr("int32_t", f"td_s{i}", qop.shift))
        self.const_bytes += w.size + 12 * cout
        zp_out = qop.add["conv_zp"] if qop.add else qop.out_zp
        add = -1
        if qop.add:
            add = len(self.add_rows)
            p = qop.add["params"]
            self.add_rows.append(
                "    {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, {-128, 127}}" % (
                    p["input_1_offset"], p["input_1_mult"], p["input_1_shift"], p["input_2_offset"],
                    p["input_2_mult"], p["input_2_shift"], p["left_shift"], p["out_offset"], p["out_mult"],
                    p["out_shift"]))
        self.layer_rows.append(
            f"    {{td_w{i}, td_b{i}, td_m{i}, td_s{i}, {cin}, {cout}, {kh}, {kw}, {qop.stride[0]}, {qop.stride[1]}, "
            f"{-qop.in_zp[0]}, {zp_out}, {qop.act_min}, {qop.act_max}, {1 if qop.kind == 'dwconv' else 0}, "
            f"{add}, {1 if (qop.add and qop.add['conv_first']) else 0}}}")
        # im2col columns (int16) of the bundled and ARM kernels, then two output rows for the
        # row-wise residual / sink writes; checked again at run time with *_get_buffer_size
        col = 2 * ((kh * kw * cin + 3) & ~3) * 2
        self.scratch = max(self.scratch, col + 2 * ((self.ops[qop.name]["out_shape"][2] * cout + 3) & ~3) + 16)
        return i


def _conv_geometry(qop, ih: int, iw: int, pads: tuple[int, int, int, int], oh: int, ow: int, where: str):
    """CMSIS padding for a conv on an ih x iw input with (top, left, bottom, right) pads; negative
    bottom/right amounts just leave rows unread, a negative top skips input rows."""
    top, left, bottom, right = pads
    skip = 0
    if left < 0:
        raise TinydetError(f"{where}: op '{qop.name}' crops {-left} columns on the left of its input; the C "
                           f"runtime expects left pads >= 0")
    if top < 0:
        skip, ih, top = -top, ih + top, 0
    (kh, kw), (sh, sw) = qop.kernel, qop.stride
    eh = (ih + top + bottom - kh) // sh + 1
    ew = (iw + left + right - kw) // sw + 1
    if (eh, ew) != (oh, ow):
        raise TinydetError(f"{where}: op '{qop.name}': pads {list(pads)} on a {ih}x{iw} input give {eh}x{ew}, the "
                           f"plan says {oh}x{ow}")
    return skip, ih, top, left


def _rect_hw(rect) -> tuple[int, int]:
    y0, y1, x0, x1 = rect
    return y1 - y0, x1 - x0


def _step_row(t: _Tables, qop, step: dict, ih: int, iw: int, pt: int, pl: int, oh: int, ow: int, skip: int,
              out: int, pitch: int, sc_w: int, ct: int, cl: int, counter: int) -> str:
    li = t.layer(qop)
    cin = int(qop.weight.shape[3])
    in_off = int(step["input"]) + skip * iw * cin
    sc = int(step["shortcut"]) if step.get("shortcut") is not None else -1
    temp = int(step["temp"]) if step.get("temp") is not None else -1
    result = int(step["result"])
    return (f"    {{{li}, {counter}, {_MODE_CODE[step['mode']]}, {1 if step['reverse'] else 0}, {ih}, {iw}, {pt}, {pl}, "
            f"{oh}, {ow}, {pitch}, {sc_w}, {ct}, {cl}, {in_off}, {out}, {temp}, {sc}, {result}}} /* {qop.name} */")


def generate(export_dir: "str | Path", out_dir: "str | Path", mode: str = "patch", conf: float = DEFAULT_CONF,
             export=None) -> Generated:
    """Write ``out_dir/model.c`` and ``model.h`` for ``mode`` (``patch`` or ``layer``)."""
    from tinydet.export.schedule_file import load_export
    from tinydet.io.atomic import atomic_write_bytes as write_bytes_atomic

    if mode not in MODES:
        raise TinydetError(f"--mode: expected one of {', '.join(MODES)}, got '{mode}'")
    export = export or load_export(export_dir)
    sched = export.schedule
    where = str(export.root)
    full, stage1, stage2 = load_models(export)
    used = {"full.int8.onnx": full} if mode == "layer" else {"stage1_patch.int8.onnx": stage1, "stage2.int8.onnx": stage2}
    for name, g in used.items():
        _check_supported(g, f"{where}/{name}")
    t = _Tables(sched)
    ops_order = [op["name"] for op in sched["ops"]]
    counter_of = {name: i for i, name in enumerate(ops_order)}
    mem = sched["memory"]
    tile_rows: list[str] = []
    tile_steps: list[str] = []
    steps2: list[str] = []
    c_in, h_in, w_in = (int(v) for v in sched["input"]["shape"])

    if mode == "patch":
        arena = sched["arena"]
        planned = int(mem["peak_sram_patch"])
        split = sched["split_tensor"]
        if stage1.tensors.get(split) != stage2.tensors.get(split):
            raise TinydetError(f"{where}: split tensor '{split}' is quantized differently in stage 1 and stage 2; "
                               f"re-run `tinydet quantize`")
        sc_, sh_, sw_ = _shape_of(sched, split)
        s1_ops = [op for op in stage1.ops if op.kind in _SUPPORTED]
        if [op.name for op in s1_ops] != list(sched["stage1_ops"]):
            raise TinydetError(f"{where}/stage1_patch.int8.onnx: layers {[o.name for o in s1_ops]} differ from "
                               f"schedule.json stage1_ops {sched['stage1_ops']}")
        producer_op = {op["output"]: op["name"] for op in sched["ops"]}
        for ti, (tile, steps) in enumerate(zip(sched["tiles"], arena["tiles"])):
            y0, y1, x0, x1 = tile["in_rect"]
            oy0, oy1, ox0, ox1 = tile["out_rect"]
            tile_rows.append(f"    {{{{{y0}, {x0}, {y1 - y0}, {x1 - x0}}}, {int(arena['tile_inputs'][ti])}, "
                             f"{len(tile_steps)}}}")
            regions = tile["regions"]
            for qop, step in zip(s1_ops, steps):
                if step["op"] != qop.name:
                    raise TinydetError(f"{where}: schedule.json arena tile {ti}: step '{step['op']}' where the int8 "
                                       f"stage 1 has '{qop.name}'")
                reg = regions[qop.name]
                ih, iw = _rect_hw(reg["in_rect"])
                oh, ow = _rect_hw(reg["out_rect"])
                pad_op = stage1.producer(qop.inputs[0])
                pads = (0, 0, 0, 0)
                if pad_op is not None and pad_op.kind == "pad":
                    if pad_op.pads_input is not None:
                        from tinydet.quant.reference import onnx_pad_amounts

                        pads = onnx_pad_amounts(tile["onnx_pads"][pad_op.pads_input])
                    else:
                        pads = tuple(pad_op.padding)
                skip, ih2, pt, pl = _conv_geometry(qop, ih, iw, pads, oh, ow, f"{where} tile {ti}")
                sc_w = ct = cl = 0
                if qop.add:
                    sc_tensor = qop.add["shortcut"]
                    crop = (0, 0, 0, 0)
                    sp = stage1.producer(sc_tensor)
                    if sp is not None and sp.kind == "pad":
                        from tinydet.quant.reference import onnx_pad_amounts

                        crop = onnx_pad_amounts(tile["onnx_pads"][sp.pads_input]) if sp.pads_input else sp.padding
                        sc_tensor = sp.inputs[0]
                    if any(v > 0 for v in crop):
                        raise TinydetError(f"{where} tile {ti}: shortcut of '{qop.name}' is padded {list(crop)}; "
                                           f"expected crops (<= 0) only")
                    src_rect = regions[producer_op[sc_tensor]]["out_rect"]
                    sh_h, sc_w = _rect_hw(src_rect)
                    ct, cl = -crop[0], -crop[1]
                    if sh_h + crop[0] + crop[2] != oh or sc_w + crop[1] + crop[3] != ow:
                        raise TinydetError(f"{where} tile {ti}: shortcut of '{qop.name}' ({sh_h}x{sc_w}, crop "
                                           f"{list(crop)}) does not match its {oh}x{ow} output")
                if step["mode"] == "sink":
                    out = int(step["output"]) + (oy0 * sw_ + ox0) * sc_
                    pitch = sw_
                else:
                    out, pitch = int(step["output"]), ow
                tile_steps.append(_step_row(t, qop, step, ih2, iw, pt, pl, oh, ow, skip, out, pitch, sc_w, ct, cl,
                                            counter_of[qop.name]))
        s2_ops = [op for op in stage2.ops if op.kind in _SUPPORTED]
        s2_steps = arena["steps"]
        graph2 = stage2
    else:
        arena = _layer_arena(sched)
        planned = int(mem["peak_sram_per_layer"])
        s2_ops = [op for op in full.ops if op.kind in _SUPPORTED]
        s2_steps = arena["steps"]
        graph2 = full
    if [op.name for op in s2_ops] != [s["op"] for s in s2_steps]:
        raise TinydetError(f"{where}: int8 layers {[o.name for o in s2_ops]} differ from the arena steps "
                           f"{[s['op'] for s in s2_steps]}")
    for qop, step in zip(s2_ops, s2_steps):
        sched_op = t.ops[qop.name]
        _, ih, iw = sched_op["in_shape"]
        _, oh, ow = sched_op["out_shape"]
        pt, pl, pb, pr = qop.padding
        skip, ih2, pt, pl = _conv_geometry(qop, ih, iw, (pt, pl, pb, pr), oh, ow, where)
        steps2.append(_step_row(t, qop, step, ih2, iw, pt, pl, oh, ow, skip, int(step["output"]), ow,
                                ow if qop.add else 0, 0, 0, counter_of[qop.name]))
    if int(arena["arena_bytes"]) != planned:
        raise TinydetError(f"{where}: the arena plan needs {arena['arena_bytes']} bytes but the planner's {mode} peak "
                           f"is {planned}; re-export the folder")

    # outputs: int8 NHWC tensors at the arena's output offsets, dequantized by the host / decode
    outputs = []
    deq = {op.output: op for op in graph2.ops if op.kind == "dequantize"}
    for name in sched["outputs"]:
        if name not in deq:
            raise TinydetError(f"{where}: output '{name}' is not dequantized in the int8 model")
        d = deq[name]
        c, h, w = _shape_of(sched, d.inputs[0])
        if d.inputs[0] not in arena["outputs"]:
            raise TinydetError(f"{where}: the arena plan does not keep output '{name}'")
        outputs.append({"name": name, "offset": int(arena["outputs"][d.inputs[0]]), "c": c, "h": h, "w": w,
                        "scale": float(d.in_scale[0]), "zp": int(d.in_zp[0])})
    q_in = next(op for op in (stage1 if mode == "patch" else full).ops if op.kind == "quantize")
    inp = {"name": q_in.inputs[0], "c": c_in, "h": h_in, "w": w_in, "scale": float(q_in.out_scale),
           "zp": int(q_in.out_zp)}
    det = sched.get("detector")
    layers = ops_order  # one counter per network layer (tinydet_layer_ticks[i])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = _header(mode, arena, planned, t, outputs, inp, det, len(layers), len(tile_rows))
    source = _source(mode, arena, t, tile_rows, tile_steps, steps2, outputs, layers, det, conf, inp, sched)
    write_bytes_atomic(out_dir / "model.h", header.encode())
    write_bytes_atomic(out_dir / "model.c", source.encode())
    return Generated(mode=mode, model_c=out_dir / "model.c", model_h=out_dir / "model.h",
                     arena_bytes=int(arena["arena_bytes"]), planned_peak_bytes=planned, scratch_bytes=t.scratch,
                     const_bytes=t.const_bytes, layers=layers, outputs=outputs, input=inp, detector=det,
                     tiles=len(tile_rows), extra={"conf": conf})


def _header(mode, arena, planned, t, outputs, inp, det, n_layers, n_tiles) -> str:
    n_cand = sum(o["h"] * o["w"] for o in outputs) * (len(det["anchors"][0]) if det else 0)
    return f"""/* Generated by `tinydet deploy` ({mode} mode). Do not edit. */
#ifndef TINYDET_MODEL_H
#define TINYDET_MODEL_H

#include <stdint.h>

#include "tinydet_runtime.h"

#define TINYDET_MODEL_MODE {_cstr(mode)}
#define TINYDET_ARENA_BYTES {int(arena['arena_bytes'])}
#define TINYDET_PLANNED_PEAK_BYTES {planned}
#define TINYDET_SCRATCH_BYTES {t.scratch}
#define TINYDET_NUM_LAYERS {n_layers}
#define TINYDET_NUM_TILES {n_tiles}
#define TINYDET_NUM_OUTPUTS {len(outputs)}
#define TINYDET_INPUT_H {inp['h']}
#define TINYDET_INPUT_W {inp['w']}
#define TINYDET_INPUT_C {inp['c']}
#define TINYDET_INPUT_ZP {inp['zp']}
#define TINYDET_IS_DETECTOR {1 if det else 0}
#define TINYDET_MAX_DET {int(det.get('max_det', 100)) if det else 0}
#define TINYDET_NUM_ANCHOR_SLOTS {n_cand}

typedef struct
{{
    const char *name;
    int32_t offset, h, w, c, zp;
    float scale;
}} tinydet_output_info;

typedef struct
{{
    float x1, y1, x2, y2, score;
    int32_t label;
}} tinydet_detection;

extern int8_t tinydet_arena[TINYDET_ARENA_BYTES];
extern const tinydet_output_info tinydet_outputs[TINYDET_NUM_OUTPUTS];
extern const char *const tinydet_layer_names[TINYDET_NUM_LAYERS];
extern uint32_t tinydet_layer_ticks[TINYDET_NUM_LAYERS];
extern uint32_t tinydet_input_ticks; /* reading the image (tiles) from its source */

/* Supplied by the application: the counter the per-layer hooks read (tinydet_board_counter). */
uint32_t tinydet_model_counter(void);

/* Runs the network on the int8 NHWC image behind src (quantized with scale 1/255, zero point
 * TINYDET_INPUT_ZP). Patch mode reads each tile's input region from src; layer mode reads the whole
 * image into the arena. Returns 0, or -(1 + step index) when a kernel rejects its arguments, or
 * -100000 when src cannot be read. Per-layer ticks are added to tinydet_layer_ticks. */
int tinydet_model_run(const tinydet_source *src);

/* int8 NHWC output i (valid after tinydet_model_run, until the next run). */
const int8_t *tinydet_model_output(int i);

/* Decode + NMS of the outputs (tinydet.models.decode semantics) into dets[0..max); returns the count. */
int tinydet_model_detect(tinydet_detection *dets, int max);

#endif
"""


_EXECUTOR = r"""
typedef struct
{
    const int8_t *w;
    const int32_t *b, *m, *s;
    int32_t cin, cout, kh, kw, sh, sw, in_off, out_off, amin, amax, dw, add, conv_first;
} td_layer;

typedef struct
{
    int32_t layer, counter, mode, reverse, ih, iw, pt, pl, oh, ow, pitch, sc_w, ct, cl;
    int32_t in, out, temp, sc, result;
} td_step;

typedef struct
{
    tinydet_rect rect;
    int32_t input;
    int32_t first_step;
} td_tile;

enum { TD_NORMAL = 0, TD_INPLACE = 1, TD_FUSED = 2, TD_SINK = 3 };

static int td_scratch_ok(int32_t need)
{
    return need <= (int32_t)sizeof(td_scratch) - 2 * td_row_bytes_max;
}

/* Whole-layer convolution / depthwise convolution into out (contiguous [oh, ow, cout]). */
static arm_cmsis_nn_status td_conv(const td_layer *L, const td_step *S, const int8_t *in, int8_t *out)
{
    const cmsis_nn_dims id = {1, S->ih, S->iw, L->cin}, bd = {1, 1, 1, L->cout}, od = {1, S->oh, S->ow, L->cout};
    cmsis_nn_per_channel_quant_params q = {(int32_t *)L->m, (int32_t *)L->s};
    cmsis_nn_context ctx = {td_scratch, (int32_t)sizeof(td_scratch)};
    if (L->dw)
    {
        const cmsis_nn_dims fd = {1, L->kh, L->kw, L->cout};
        cmsis_nn_dw_conv_params p = {L->in_off, L->out_off, 1, {L->sw, L->sh}, {S->pl, S->pt}, {1, 1}, {L->amin, L->amax}};
        if (!td_scratch_ok(arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &id, &fd, &od)))
        {
            return ARM_CMSIS_NN_ARG_ERROR;
        }
        return arm_depthwise_conv_wrapper_s8(&ctx, &p, &q, &id, in, &fd, L->w, &bd, L->b, &od, out);
    }
    const cmsis_nn_dims fd = {L->cout, L->kh, L->kw, L->cin};
    cmsis_nn_conv_params p = {L->in_off, L->out_off, {L->sw, L->sh}, {S->pl, S->pt}, {1, 1}, {L->amin, L->amax}};
    if (!td_scratch_ok(arm_convolve_wrapper_s8_get_buffer_size(&p, &id, &fd, &od)))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    return arm_convolve_wrapper_s8(&ctx, &p, &q, &id, in, &fd, L->w, &bd, L->b, &od, out);
}

/* Output row y of a layer into dst: the kernel runs on the input rows that row reads, with the
 * rows above the input as CMSIS top padding and the rows below simply absent (zero point). */
static arm_cmsis_nn_status td_conv_row(const td_layer *L, const td_step *S, const int8_t *in, int32_t y, int8_t *dst)
{
    const int32_t top = y * L->sh - S->pt;
    const int32_t y0 = top < 0 ? 0 : top;
    int32_t y1 = top + L->kh;
    if (y1 > S->ih)
    {
        y1 = S->ih;
    }
    td_step R = *S;
    R.ih = y1 > y0 ? y1 - y0 : 0;
    R.pt = y0 - top;
    R.oh = 1;
    td_layer L1 = *L;
    L1.sh = 1;
    return td_conv(&L1, &R, in + (size_t)y0 * (size_t)S->iw * (size_t)L->cin, dst);
}

/* dst row = add(conv row, shortcut row) for every output row, in the order that never
 * overwrites an unread shortcut row (reverse: last row first). conv_out, when given, holds the
 * convolution already computed (unfused residual); else each row is computed into scratch. */
static arm_cmsis_nn_status td_rows_add(const td_layer *L, const td_step *S, const int8_t *in, const int8_t *conv_out,
                                       const int8_t *sc, int8_t *dst)
{
    const tinydet_add_params *A = &td_adds[L->add];
    const int32_t row = S->ow * L->cout;
    int8_t *conv_row = td_scratch + sizeof(td_scratch) - 2 * td_row_bytes_max;
    int8_t *sc_row = conv_row + td_row_bytes_max;
    for (int32_t i = 0; i < S->oh; i++)
    {
        const int32_t y = S->reverse ? S->oh - 1 - i : i;
        const int8_t *c_row = conv_row;
        if (conv_out)
        {
            c_row = conv_out + (size_t)y * (size_t)row;
        }
        else
        {
            const arm_cmsis_nn_status st = td_conv_row(L, S, in, y, conv_row);
            if (st != ARM_CMSIS_NN_SUCCESS)
            {
                return st;
            }
        }
        memcpy(sc_row, sc + ((size_t)(y + S->ct) * (size_t)S->sc_w + (size_t)S->cl) * (size_t)L->cout, (size_t)row);
        const int8_t *a = L->conv_first ? c_row : sc_row;
        const int8_t *b = L->conv_first ? sc_row : c_row;
        arm_elementwise_add_s8(a, b, A->input_1_offset, A->input_1_mult, A->input_1_shift, A->input_2_offset,
                               A->input_2_mult, A->input_2_shift, A->left_shift,
                               dst + (size_t)y * (size_t)S->pitch * (size_t)L->cout, A->out_offset, A->out_mult,
                               A->out_shift, A->activation.min, A->activation.max, row);
    }
    return ARM_CMSIS_NN_SUCCESS;
}

static arm_cmsis_nn_status td_run_step(const td_step *S)
{
    const td_layer *L = &td_layers[S->layer];
    int8_t *a = tinydet_arena;
    switch (S->mode)
    {
    case TD_INPLACE:
    {
        /* the planner's one-channel temp in the arena is the kernel's buffer */
        const cmsis_nn_dims id = {1, S->ih, S->iw, L->cin}, fd = {1, L->kh, L->kw, L->cout},
                            bd = {1, 1, 1, L->cout}, od = {1, S->oh, S->ow, L->cout};
        cmsis_nn_per_channel_quant_params q = {(int32_t *)L->m, (int32_t *)L->s};
        cmsis_nn_dw_conv_params p = {L->in_off, L->out_off, 1, {L->sw, L->sh}, {S->pl, S->pt}, {1, 1}, {L->amin, L->amax}};
        cmsis_nn_context ctx = {a + S->temp, S->oh * S->ow};
        const arm_cmsis_nn_status st =
            tinydet_depthwise_conv_inplace_s8(&ctx, &p, &q, &id, a + S->in, &fd, L->w, &bd, L->b, &od);
        if (st == ARM_CMSIS_NN_SUCCESS && S->out != S->in)
        {
            /* the plan keeps the output at the slot's far end (slot stacked from the arena top) */
            memmove(a + S->out, a + S->in, (size_t)S->oh * (size_t)S->ow * (size_t)L->cout);
        }
        return st;
    }
    case TD_FUSED:
        return td_rows_add(L, S, a + S->in, NULL, a + S->sc, a + S->out);
    case TD_SINK:
        if (L->add >= 0)
        {
            return td_rows_add(L, S, a + S->in, NULL, a + S->sc, a + S->out);
        }
        for (int32_t y = 0; y < S->oh; y++)
        {
            const arm_cmsis_nn_status st =
                td_conv_row(L, S, a + S->in, y, a + S->out + (size_t)y * (size_t)S->pitch * (size_t)L->cout);
            if (st != ARM_CMSIS_NN_SUCCESS)
            {
                return st;
            }
        }
        return ARM_CMSIS_NN_SUCCESS;
    default:
    {
        const arm_cmsis_nn_status st = td_conv(L, S, a + S->in, a + S->out);
        if (st != ARM_CMSIS_NN_SUCCESS || L->add < 0)
        {
            return st;
        }
        /* unfused residual: the sum goes into the shortcut's slot (result) */
        return td_rows_add(L, S, NULL, a + S->out, a + S->sc, a + S->result);
    }
    }
}

static int td_run_steps(const td_step *steps, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
    {
        const uint32_t t0 = tinydet_model_counter();
        const arm_cmsis_nn_status st = td_run_step(&steps[i]);
        tinydet_layer_ticks[steps[i].counter] += tinydet_model_counter() - t0;
        if (st != ARM_CMSIS_NN_SUCCESS)
        {
            return -1 - (int)(&steps[i] - td_steps_base(steps));
        }
    }
    return 0;
}

int tinydet_model_run(const tinydet_source *src)
{
#if TD_PATCH
    for (int32_t t = 0; t < TINYDET_NUM_TILES; t++)
    {
        const td_tile *T = &td_tiles[t];
        const uint32_t t0 = tinydet_model_counter();
        if (tinydet_tile_read(src, &T->rect, tinydet_arena + T->input) != 0)
        {
            return -100000;
        }
        tinydet_input_ticks += tinydet_model_counter() - t0;
        const int32_t n = (t + 1 < TINYDET_NUM_TILES ? td_tiles[t + 1].first_step : TD_NUM_TILE_STEPS) - T->first_step;
        const int rc = td_run_steps(&td_tile_steps[T->first_step], n);
        if (rc != 0)
        {
            return rc;
        }
    }
#else
    {
        const tinydet_rect all = {0, 0, TINYDET_INPUT_H, TINYDET_INPUT_W};
        const uint32_t t0 = tinydet_model_counter();
        if (tinydet_tile_read(src, &all, tinydet_arena + TD_INPUT_OFFSET) != 0)
        {
            return -100000;
        }
        tinydet_input_ticks += tinydet_model_counter() - t0;
    }
#endif
    return td_run_steps(td_steps, TD_NUM_STEPS);
}

const int8_t *tinydet_model_output(int i)
{
    return tinydet_arena + tinydet_outputs[i].offset;
}

#if TINYDET_IS_DETECTOR
/* ---- decode + NMS: tinydet.models.decode in float (outside the integer inference path) ---- */
static float td_sigmoid(float x)
{
    const float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

typedef struct
{
    float box[4], score;
    int32_t label, index;
} td_cand;

static td_cand td_cands[TD_MAX_CAND];

static int td_before(const td_cand *a, const td_cand *b)
{
    /* numpy's stable argsort(-score): higher score first, then lower index */
    return a->score > b->score || (a->score == b->score && a->index < b->index);
}

static float td_iou(const float *a, const float *b, float off_a, float off_b)
{
    const float ax1 = a[0] + off_a, ay1 = a[1] + off_a, ax2 = a[2] + off_a, ay2 = a[3] + off_a;
    const float bx1 = b[0] + off_b, by1 = b[1] + off_b, bx2 = b[2] + off_b, by2 = b[3] + off_b;
    const float area_a = (ax2 - ax1) * (ay2 - ay1), area_b = (bx2 - bx1) * (by2 - by1);
    float w = fminf(ax2, bx2) - fmaxf(ax1, bx1), h = fminf(ay2, by2) - fmaxf(ay1, by1);
    w = w > 0.0f ? w : 0.0f;
    h = h > 0.0f ? h : 0.0f;
    const float inter = w * h;
    return inter / (area_a + area_b - inter); /* 0/0 -> nan never suppresses, as in numpy */
}

int tinydet_model_detect(tinydet_detection *dets, int max)
{
    int32_t n = 0, index = 0;
    for (int32_t s = 0; s < TINYDET_NUM_OUTPUTS; s++)
    {
        const tinydet_output_info *o = &tinydet_outputs[s];
        const int8_t *q = tinydet_model_output(s);
        const int32_t per = o->c / TD_NUM_ANCHORS;
        for (int32_t an = 0; an < TD_NUM_ANCHORS; an++)
        {
            for (int32_t gy = 0; gy < o->h; gy++)
            {
                for (int32_t gx = 0; gx < o->w; gx++, index++)
                {
                    const int8_t *v = q + ((size_t)gy * (size_t)o->w + (size_t)gx) * (size_t)o->c + (size_t)an * (size_t)per;
                    float p[4];
                    for (int k = 0; k < 4; k++)
                    {
                        p[k] = td_sigmoid((float)(v[k] - o->zp) * o->scale);
                    }
                    const float obj = td_sigmoid((float)(v[4] - o->zp) * o->scale);
                    float best = -1.0f;
                    int32_t label = 0;
                    for (int32_t k = 5; k < per; k++)
                    {
                        const float sc = td_sigmoid((float)(v[k] - o->zp) * o->scale) * obj;
                        if (sc > best)
                        {
                            best = sc;
                            label = k - 5;
                        }
                    }
                    if (!(best > TD_CONF_THRESH))
                    {
                        continue;
                    }
                    const float stride = td_strides[s];
                    const float cx = (p[0] * 2.0f - 0.5f + (float)gx) * stride;
                    const float cy = (p[1] * 2.0f - 0.5f + (float)gy) * stride;
                    const float bw = td_anchors[s][an][0] * (p[2] * 2.0f) * (p[2] * 2.0f);
                    const float bh = td_anchors[s][an][1] * (p[3] * 2.0f) * (p[3] * 2.0f);
                    td_cand c = {{cx - bw / 2.0f, cy - bh / 2.0f, cx + bw / 2.0f, cy + bh / 2.0f}, best, label, index};
                    const float lim[4] = {(float)TINYDET_INPUT_W, (float)TINYDET_INPUT_H, (float)TINYDET_INPUT_W,
                                          (float)TINYDET_INPUT_H};
                    for (int k = 0; k < 4; k++)
                    {
                        c.box[k] = c.box[k] < 0.0f ? 0.0f : (c.box[k] > lim[k] ? lim[k] : c.box[k]);
                    }
                    if (n < TD_MAX_CAND)
                    {
                        td_cands[n++] = c;
                    }
                    else
                    {
                        /* keep the best TD_MAX_CAND (decode's max_candidates): replace the worst */
                        int32_t worst = 0;
                        for (int32_t i = 1; i < n; i++)
                        {
                            if (td_before(&td_cands[worst], &td_cands[i]))
                            {
                                worst = i;
                            }
                        }
                        if (td_before(&c, &td_cands[worst]))
                        {
                            td_cands[worst] = c;
                        }
                    }
                }
            }
        }
    }
    /* insertion sort by (score desc, index asc) */
    for (int32_t i = 1; i < n; i++)
    {
        const td_cand c = td_cands[i];
        int32_t j = i - 1;
        while (j >= 0 && td_before(&c, &td_cands[j]))
        {
            td_cands[j + 1] = td_cands[j];
            j--;
        }
        td_cands[j + 1] = c;
    }
    /* batched NMS: classes are offset by label * (largest coordinate + 1) so they never overlap */
    float top = 0.0f; /* boxes are clipped to >= 0 */
    for (int32_t i = 0; i < n; i++)
    {
        for (int k = 0; k < 4; k++)
        {
            top = td_cands[i].box[k] > top ? td_cands[i].box[k] : top;
        }
    }
    int32_t kept = 0;
    for (int32_t i = 0; i < n && kept < max; i++)
    {
        if (td_cands[i].label < 0)
        {
            continue; /* suppressed */
        }
        const td_cand *c = &td_cands[i];
        const float off = (float)c->label * (top + 1.0f);
        dets[kept].x1 = c->box[0];
        dets[kept].y1 = c->box[1];
        dets[kept].x2 = c->box[2];
        dets[kept].y2 = c->box[3];
        dets[kept].score = c->score;
        dets[kept].label = c->label;
        kept++;
        for (int32_t j = i + 1; j < n; j++)
        {
            if (td_cands[j].label >= 0 &&
                td_iou(c->box, td_cands[j].box, off, (float)td_cands[j].label * (top + 1.0f)) > TD_NMS_IOU)
            {
                td_cands[j].label = -1 - td_cands[j].label;
            }
        }
    }
    return kept;
}
#else
int tinydet_model_detect(tinydet_detection *dets, int max)
{
    (void)dets;
    (void)max;
    return 0;
}
#endif
"""


def _source(mode, arena, t: _Tables, tile_rows, tile_steps, steps2, outputs, layers, det, conf, inp, sched) -> str:
    parts = [f"/* Generated by `tinydet deploy` from {_cstr(sched['arch']['name'])} ({mode} mode). Do not edit.\n"
             f" * Arena: {arena['arena_bytes']} bytes = the planner's peak; buffers at the allocator's offsets. */\n",
             "#include <math.h>\n#include <stddef.h>\n#include <string.h>\n\n#include \"model.h\"\n\n"]
    parts.append(f"#define TD_PATCH {1 if mode == 'patch' else 0}\n")
    parts.append(f"#define TD_INPUT_OFFSET {int(arena['input'] or 0)}\n")
    parts.append(f"#define TD_NUM_STEPS {len(steps2)}\n#define TD_NUM_TILE_STEPS {len(tile_steps)}\n")
    row_max = 0
    for op in sched["ops"]:
        row_max = max(row_max, int(op["out_shape"][0]) * int(op["out_shape"][2]))
    row_max = (row_max + 3) & ~3
    parts.append("\n/* the one activation arena: every buffer lives at a planned offset inside it */\n")
    parts.append("int8_t tinydet_arena[TINYDET_ARENA_BYTES] __attribute__((aligned(8)));\n")
    parts.append("/* kernel scratch (im2col columns, residual rows): beside the arena, as DESIGN.md counts it */\n")
    parts.append("static int8_t td_scratch[TINYDET_SCRATCH_BYTES] __attribute__((aligned(8)));\n")
    parts.append(f"static const int32_t td_row_bytes_max = {row_max};\n")
    parts.append("uint32_t tinydet_layer_ticks[TINYDET_NUM_LAYERS];\nuint32_t tinydet_input_ticks;\n")
    parts.append("const char *const tinydet_layer_names[TINYDET_NUM_LAYERS] = {"
                 + ", ".join(_cstr(n) for n in layers) + "};\n\n")
    parts.extend(t.layer_src)
    # tables need the executor's struct definitions first
    exec_head, exec_body = _EXECUTOR.split("enum { TD_NORMAL", 1)
    parts.append(exec_head)
    parts.append("static const td_layer td_layers[] = {\n" + ",\n".join(t.layer_rows) + "\n};\n")
    parts.append("static const tinydet_add_params td_adds[] = {\n"
                 + (",\n".join(t.add_rows) if t.add_rows else "    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {-128, 127}}")
                 + "\n};\n")
    parts.append("/* per layer (stage 2 in patch mode), offsets in bytes from the arena start */\n")
    parts.append("static const td_step td_steps[] = {\n" + ("\n".join(
        r.replace(" /*", ", /*", 1) if i + 1 < len(steps2) else r for i, r in enumerate(steps2)) or "    {0}") + "\n};\n")
    if mode == "patch":
        parts.append("/* stage 1, once per tile: {layer, counter, mode, reverse, ih, iw, pad top, pad left, oh, ow,\n"
                     " * output row pitch, shortcut width, crop top, crop left, input, output, temp, shortcut, result} */\n")
        parts.append("static const td_step td_tile_steps[] = {\n" + "\n".join(
            r.replace(" /*", ", /*", 1) if i + 1 < len(tile_steps) else r for i, r in enumerate(tile_steps)) + "\n};\n")
        parts.append("static const td_tile td_tiles[] = {\n" + ",\n".join(tile_rows) + "\n};\n")
        parts.append("static const td_step *td_steps_base(const td_step *s)\n{\n"
                     "    return (s >= td_tile_steps && s < td_tile_steps + TD_NUM_TILE_STEPS) ? td_tile_steps : td_steps;\n}\n")
    else:
        parts.append("static const td_step *td_steps_base(const td_step *s)\n{\n    (void)s;\n    return td_steps;\n}\n")
    parts.append("const tinydet_output_info tinydet_outputs[TINYDET_NUM_OUTPUTS] = {\n" + ",\n".join(
        f"    {{{_cstr(o['name'])}, {o['offset']}, {o['h']}, {o['w']}, {o['c']}, {o['zp']}, {np.float32(o['scale']).item()!r}f}}"
        for o in outputs) + "\n};\n")
    if det:
        anchors = det["anchors"]
        na = len(anchors[0])
        n_slots = sum(o["h"] * o["w"] for o in outputs) * na
        parts.append(f"#define TD_NUM_ANCHORS {na}\n#define TD_CONF_THRESH {np.float32(conf).item()!r}f\n"
                     f"#define TD_NMS_IOU {np.float32(det.get('nms_iou', 0.6)).item()!r}f\n"
                     f"#define TD_MAX_CAND {max(1, min(n_slots, MAX_CANDIDATES))}\n")
        parts.append("static const float td_strides[] = {" + ", ".join(f"{float(s)!r}f" for s in det["strides"]) + "};\n")
        parts.append("static const float td_anchors[][%d][2] = {" % na + ", ".join(
            "{" + ", ".join("{%rf, %rf}" % (float(a[0]), float(a[1])) for a in sc) + "}" for sc in anchors) + "};\n")
    parts.append("\nenum { TD_NORMAL" + exec_body)
    return "".join(parts)


def summary_json(gen: Generated) -> str:
    """The generator's numbers as JSON (kept next to model.c as model.json)."""
    return json.dumps({"mode": gen.mode, "arena_bytes": gen.arena_bytes, "planned_peak_bytes": gen.planned_peak_bytes,
                       "scratch_bytes": gen.scratch_bytes, "const_bytes": gen.const_bytes, "layers": gen.layers,
                       "outputs": gen.outputs, "input": gen.input, "tiles": gen.tiles}, indent=1)
