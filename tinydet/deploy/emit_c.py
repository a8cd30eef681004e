"""C emission: :class:`tinydet.deploy.lower.Lowered` rows -> ``model.c`` / ``model.h`` (data only).

The generated code includes ``tinydet_executor.h`` and defines one ``const tinydet_model
tinydet_model_tables`` plus the data it points to, every struct written with C99 designated
initializers (``.op = ...``); the behaviour is the runtime's (``deploy/runtime/src/executor.c``,
``detect.c``). Floats are written as hexadecimal literals: the exact float32 values Python chose.

    gen = generate("out/face", "build/face", mode="patch")   # lower + emit + write
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tinydet.deploy import lower as lw
from tinydet.errors import TinydetError

_STEP_MODE_C = {"normal": "TINYDET_STEP_NORMAL", "inplace_dw": "TINYDET_STEP_INPLACE_DW",
                "fused_residual": "TINYDET_STEP_FUSED_RESIDUAL", "sink": "TINYDET_STEP_SINK",
                "fused_ir": "TINYDET_STEP_FUSED_IR", lw.STAGED_DW: "TINYDET_STEP_STAGED_DW"}
_LAYER_OP_C = {op: f"TINYDET_OP_{op.upper()}" for op in lw.LAYER_OPS}  # conv, avgpool, fc


@dataclass
class Generated:
    """What :func:`generate` wrote, with the lowering it printed."""

    model_c: Path
    model_h: Path
    lowered: lw.Lowered
    extra: dict[str, Any] = field(default_factory=dict)


def c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_float(v: float) -> str:
    """The float32 nearest ``v`` as an exact C99 hexadecimal literal."""
    f = np.float32(v)
    if not np.isfinite(f):
        raise TinydetError(f"C emission: {v} is not a finite float32")
    return float(f).hex() + "f"


def c_array(ctype: str, name: str, values: Any, per_line: int = 24, fmt=lambda v: str(int(v))) -> str:
    vals = [fmt(v) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)] or ["0"]
    return f"static const {ctype} {name}[{max(1, len(vals))}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def c_struct(fields: Iterable[tuple[str, Any]]) -> str:
    """``{.a = 1, .b = {...}}`` from (name, C text) pairs."""
    return "{" + ", ".join(f".{k} = {v}" for k, v in fields) + "}"


def _pads(p) -> str:
    return c_struct([("top", p.top), ("left", p.left), ("bottom", p.bottom), ("right", p.right)])


_NECK_KIND_C = {"maxpool": "TINYDET_NECK_MAXPOOL", "upsample": "TINYDET_NECK_UPSAMPLE",
                "concat": "TINYDET_NECK_CONCAT", "add": "TINYDET_NECK_ADD"}


def _add_params(name: str, a: lw.AddRow) -> str:
    """A ``static const tinydet_add_params`` definition."""
    return f"static const tinydet_add_params {name} = " + c_struct(
        [(k, getattr(a, k)) for k in ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset",
                                      "input_2_mult", "input_2_shift", "left_shift", "out_offset", "out_mult",
                                      "out_shift")]
        + [("activation", c_struct([("min", a.act_min), ("max", a.act_max)]))]) + ";\n"


def _neck_data(i: int, n: lw.NeckRow, step: lw.StepRow) -> str:
    """A neck op's row (``td_neck<i>``), its add parameters / concat parts and its step's input offsets."""
    text = f"/* {n.name}: {n.kind} -> {n.channels} channels */\n"
    text += c_array("int32_t", f"td_nin{i}", step.inputs)
    if n.add:
        text += _add_params(f"td_nadd{i}", n.add)
    if n.parts:
        text += f"static const tinydet_concat_part td_parts{i}[{len(n.parts)}] = {{\n" + ",\n".join(
            "    " + c_struct([("channels", q.channels), ("input_offset", q.input_offset), ("mult", q.mult),
                               ("shift", q.shift), ("output_offset", q.output_offset), ("copy", int(q.copy))])
            for q in n.parts) + "\n};\n"
    return text + f"static const tinydet_neck_op td_neck{i} = " + c_struct([
        ("name", c_string(n.name)), ("kind", _NECK_KIND_C[n.kind]), ("channels", n.channels),
        ("kernel_h", n.kernel[0]), ("kernel_w", n.kernel[1]), ("stride_h", n.stride[0]), ("stride_w", n.stride[1]),
        ("factor_h", n.factor[0]), ("factor_w", n.factor[1]), ("act_min", n.act_min), ("act_max", n.act_max),
        ("add", f"&td_nadd{i}" if n.add else "NULL"), ("parts", f"td_parts{i}" if n.parts else "NULL"),
        ("num_inputs", n.num_inputs)]) + ";\n"


def _layer_data(i: int, layer: lw.LayerRow) -> str:
    if layer.op == "avgpool":
        return f"/* {layer.name}: global average pool {layer.kernel[0]}x{layer.kernel[1]}x{layer.in_channels} */\n"
    kind = "fc" if layer.op == "fc" else "dwconv" if layer.depthwise else "conv"
    text = (f"/* {layer.name}: {kind} {layer.kernel[0]}x{layer.kernel[1]}/{layer.stride[0]} "
            f"{layer.in_channels}->{layer.out_channels} */\n"
            + c_array("int8_t", f"td_w{i}", layer.weights) + c_array("int32_t", f"td_b{i}", layer.bias)
            + c_array("int32_t", f"td_m{i}", layer.mult) + c_array("int32_t", f"td_s{i}", layer.shift))
    if layer.add:
        text += _add_params(f"td_add{i}", layer.add)
    return text


def _layer(i: int, layer: lw.LayerRow) -> str:
    data = layer.op != "avgpool"  # a global pool has no const arrays
    return "    " + c_struct([
        ("name", c_string(layer.name)), ("weights", f"td_w{i}" if data else "NULL"),
        ("bias", f"td_b{i}" if data else "NULL"), ("mult", f"td_m{i}" if data else "NULL"),
        ("shift", f"td_s{i}" if data else "NULL"), ("in_channels", layer.in_channels),
        ("out_channels", layer.out_channels),
        ("kernel_h", layer.kernel[0]), ("kernel_w", layer.kernel[1]), ("stride_h", layer.stride[0]),
        ("stride_w", layer.stride[1]), ("input_offset", layer.input_offset), ("output_offset", layer.output_offset),
        ("act_min", layer.act_min), ("act_max", layer.act_max), ("depthwise", int(layer.depthwise)),
        ("add", f"&td_add{i}" if layer.add else "NULL"), ("conv_first", int(layer.conv_first)),
        ("op", _LAYER_OP_C[layer.op])])


def _step(s: lw.StepRow) -> str:
    return "    " + c_struct([
        ("layer", s.layer), ("counter", s.counter), ("mode", _STEP_MODE_C[s.mode]), ("reverse", int(s.reverse)),
        ("in_h", s.in_h), ("in_w", s.in_w), ("pad", _pads(s.pad)), ("out_pitch", s.out_pitch),
        ("shortcut_crop", _pads(s.shortcut_crop)), ("input", s.input), ("output", s.output), ("temp", s.temp),
        ("shortcut", s.shortcut), ("result", s.result)]
        + ([("neck", f"&td_neck{s.neck}"), ("inputs", f"td_nin{s.neck}")] if s.neck >= 0 else [])
        + ([("fused", f"&td_fused[{s.fused}]")] if s.fused >= 0 else [])
    ) + f", /* {s.op}: {s.out_h}x{s.out_w} */"


def _fused(rows: list[lw.FusedRow]) -> str:
    """The ``tinydet_fused_step`` table of the fused inverted residuals (before the steps using it)."""
    return _table("tinydet_fused_step", "td_fused", ["    " + c_struct([
        ("expand", f.expand), ("dw", f.dw), ("project", f.project), ("ring_rows", f.ring_rows), ("pixel", f.pixel),
        ("input_from", f.input_from), ("move_from", f.move_from)]) for f in rows])


def _table(ctype: str, name: str, rows: list[str]) -> str:
    if not rows:
        return ""
    return f"static const {ctype} {name}[{len(rows)}] = {{\n" + "\n".join(
        r if r.rstrip().endswith("*/") else r + "," for r in rows) + "\n};\n"


def _detector(det: lw.DetectorRow) -> str:
    parts = []
    heads = []
    for i, hd in enumerate(det.heads):
        parts.append(c_array("float", f"td_sigmoid{i}", hd.sigmoid, per_line=6, fmt=c_float))
        parts.append(c_array("float", f"td_anchors{i}", np.asarray(hd.anchors, np.float32), per_line=6, fmt=c_float))
        heads.append("    " + c_struct([
            ("offset", hd.offset), ("h", hd.h), ("w", hd.w), ("stride", c_float(hd.stride)),
            ("anchors", f"td_anchors{i}"), ("sigmoid", f"td_sigmoid{i}"), ("objectness_min", hd.objectness_min)]))
    parts.append(_table("tinydet_head", "td_heads", heads))
    parts.append(f"static tinydet_candidate td_candidates[{det.max_candidates}];\n")
    parts.append("static const tinydet_detector td_detector = " + c_struct([
        ("heads", "td_heads"), ("num_heads", len(det.heads)), ("num_anchors", det.num_anchors),
        ("num_classes", det.num_classes), ("conf_thresh", c_float(det.conf_thresh)),
        ("nms_iou", c_float(det.nms_iou)), ("input_h", c_float(det.input_h)), ("input_w", c_float(det.input_w)),
        ("candidates", "td_candidates"), ("max_candidates", det.max_candidates)]) + ";\n")
    return "".join(parts)


def _size_checks() -> str:
    """The struct sizes the Python budget assumes (lower.CANDIDATE_BYTES / DETECTION_BYTES),
    checked by the compiler (a negative array size fails the build)."""
    return "".join(f"typedef char td_check_{name}[sizeof({ctype}) == {size} ? 1 : -1];\n" for name, ctype, size in (
        ("candidate_bytes", "tinydet_candidate", lw.CANDIDATE_BYTES),
        ("detection_bytes", "tinydet_detection", lw.DETECTION_BYTES)))


def model_c(m: lw.Lowered) -> str:
    """The text of ``model.c``."""
    parts = [f"/* Generated by `tinydet deploy` from {c_string(m.arch)} ({m.mode} mode). Do not edit.\n"
             f" * Data only (the executor is the runtime's): arena {m.arena_bytes} bytes = the planner's peak,\n"
             f" * every buffer at the allocator's offsets. */\n",
             "#include <stddef.h>\n\n#include \"model.h\"\n\n", _size_checks(), "\n",
             "/* the one activation arena: every buffer lives at a planned offset inside it */\n",
             "int8_t tinydet_arena[TINYDET_ARENA_BYTES] __attribute__((aligned(8)));\n",
             "/* kernel scratch (im2col columns, residual rows): beside the arena, as DESIGN.md counts it */\n",
             "static int8_t td_scratch[TINYDET_SCRATCH_BYTES] __attribute__((aligned(8)));\n",
             "uint32_t tinydet_layer_ticks[TINYDET_NUM_LAYERS];\nuint32_t tinydet_input_ticks;\n",
             "const char *const tinydet_layer_names[TINYDET_NUM_LAYERS] = {"
             + ", ".join(c_string(n) for n in m.layer_names) + "};\n\n"]
    parts.extend(_layer_data(i, layer) for i, layer in enumerate(m.layers))
    parts.append(_table("tinydet_layer", "td_layers", [_layer(i, layer) for i, layer in enumerate(m.layers)]))
    neck_steps = {s.neck: s for s in m.steps if s.neck >= 0}
    parts.extend(_neck_data(i, n, neck_steps[i]) for i, n in enumerate(m.necks))
    parts.append(_fused(m.fused))
    if m.tiles:
        parts.append("/* stage 1, once per tile */\n")
        parts.append(_table("tinydet_step", "td_tile_steps", [_step(s) for s in m.tile_steps]))
        parts.append(_table("tinydet_tile", "td_tiles", ["    " + c_struct([
            ("rect", c_struct([("y", t.rect.y0), ("x", t.rect.x0), ("h", t.rect.h), ("w", t.rect.w)])),
            ("input", t.input), ("first_step", t.first_step), ("num_steps", t.num_steps)]) for t in m.tiles]))
    parts.append("/* per layer (stage 2 in patch mode); offsets in bytes from the arena start */\n")
    parts.append(_table("tinydet_step", "td_steps", [_step(s) for s in m.steps]))
    parts.append(f"const tinydet_output_info tinydet_outputs[TINYDET_NUM_OUTPUTS] = {{\n" + ",\n".join(
        "    " + c_struct([("name", c_string(o.name)), ("offset", o.offset), ("h", o.h), ("w", o.w), ("c", o.c),
                           ("zp", o.zp), ("scale", c_float(o.scale))]) for o in m.outputs) + "\n};\n")
    if m.detector:
        parts.append(_detector(m.detector))
    parts.append("\nconst tinydet_model tinydet_model_tables = " + c_struct([
        ("arena", "tinydet_arena"), ("scratch", "td_scratch"), ("scratch_bytes", "TINYDET_SCRATCH_BYTES"),
        ("layers", "td_layers"), ("tiles", "td_tiles" if m.tiles else "NULL"), ("num_tiles", len(m.tiles)),
        ("tile_steps", "td_tile_steps" if m.tiles else "NULL"), ("steps", "td_steps" if m.steps else "NULL"),
        ("num_steps", len(m.steps)), ("input", m.input_offset), ("input_h", m.input.h), ("input_w", m.input.w),
        ("outputs", "tinydet_outputs"), ("num_outputs", len(m.outputs)),
        ("detector", "&td_detector" if m.detector else "NULL"), ("layer_ticks", "tinydet_layer_ticks"),
        ("input_ticks", "&tinydet_input_ticks"), ("counter", "tinydet_model_counter")]) + ";\n")
    return "".join(parts)


def model_h(m: lw.Lowered) -> str:
    """The text of ``model.h``: sizes as macros, the model object and the arrays main.c reads."""
    det = m.detector
    slots = sum(o.h * o.w for o in m.outputs) * det.num_anchors if det else 0
    return f"""/* Generated by `tinydet deploy` ({m.mode} mode). Do not edit. */
#ifndef TINYDET_MODEL_H
#define TINYDET_MODEL_H

#include <stdint.h>

#include "tinydet_executor.h"

#define TINYDET_MODEL_MODE {c_string(m.mode)}
#define TINYDET_ARENA_BYTES {m.arena_bytes}
#define TINYDET_PLANNED_PEAK_BYTES {m.planned_peak_bytes}
#define TINYDET_SCRATCH_BYTES {m.scratch_bytes}
#define TINYDET_NUM_LAYERS {len(m.layer_names)}
#define TINYDET_NUM_TILES {len(m.tiles)}
#define TINYDET_NUM_OUTPUTS {len(m.outputs)}
#define TINYDET_INPUT_H {m.input.h}
#define TINYDET_INPUT_W {m.input.w}
#define TINYDET_INPUT_C {m.input.c}
#define TINYDET_INPUT_ZP {m.input.zp}
#define TINYDET_IS_DETECTOR {1 if det else 0}
#define TINYDET_IS_CLASSIFIER {1 if m.classifier else 0}
#define TINYDET_NUM_CLASSES {m.classifier.num_classes if m.classifier else 0}
#define TINYDET_MAX_DET {det.max_det if det else 0}
#define TINYDET_NUM_ANCHOR_SLOTS {slots}

/* the generated model: tinydet_run(TINYDET_MODEL, &src), tinydet_output(TINYDET_MODEL, i),
 * tinydet_model_detect(TINYDET_MODEL, dets, TINYDET_MAX_DET),
 * tinydet_model_classify(TINYDET_MODEL, scores, TINYDET_NUM_CLASSES) */
extern const tinydet_model tinydet_model_tables;
#define TINYDET_MODEL (&tinydet_model_tables)

extern int8_t tinydet_arena[TINYDET_ARENA_BYTES];
extern const tinydet_output_info tinydet_outputs[TINYDET_NUM_OUTPUTS];
extern const char *const tinydet_layer_names[TINYDET_NUM_LAYERS];
extern uint32_t tinydet_layer_ticks[TINYDET_NUM_LAYERS]; /* counter ticks per layer, added by tinydet_run */
extern uint32_t tinydet_input_ticks;                     /* reading the image (tiles) from its source */

/* Supplied by the application: the counter the per-layer hooks read (tinydet_board_counter). */
uint32_t tinydet_model_counter(void);

#endif
"""


def generate(export_dir: "str | Path", out_dir: "str | Path", mode: str = "patch", conf: float = lw.DEFAULT_CONF,
             export=None) -> Generated:
    """Lower the export folder for ``mode`` and write ``out_dir/model.c`` and ``model.h``."""
    from tinydet.export.schedule_file import load_export
    from tinydet.io.atomic import atomic_write_bytes

    if mode not in lw.MODES:
        raise TinydetError(f"--mode: expected one of {', '.join(lw.MODES)}, got '{mode}'")
    export = export or load_export(export_dir)
    lowered = lw.lower_export(export, lw.load_models(export), mode=mode, conf=conf)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, source = model_h(lowered), model_c(lowered)
    atomic_write_bytes(out_dir / "model.h", header.encode())
    atomic_write_bytes(out_dir / "model.c", source.encode())
    return Generated(model_c=out_dir / "model.c", model_h=out_dir / "model.h", lowered=lowered, extra={"conf": conf})


def summary_json(gen: Generated) -> str:
    """The generator's numbers as JSON (kept next to model.c as model.json)."""
    return json.dumps(gen.lowered.summary(), indent=1)
