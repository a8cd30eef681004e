"""Lowering: an export folder (``schedule.json`` + the int8 graphs) -> the typed rows of the C tables.

Pure Python + numpy (no compiler, no torch): what the firmware will do is decided here and can be
unit-tested as data; :mod:`tinydet.deploy.emit_c` only prints these rows as C99 designated
initializers of the structs in ``deploy/runtime/include/tinydet_executor.h``.

* :class:`LayerRow` -- one conv / depthwise layer's int8 weights, int32 biases, per-channel
  ``(mult, shift)`` and its fused residual add (:class:`AddRow`), once for all tiles; a classifier's
  global average pool (no const data) and fully connected layer (weights ``[C_out, depth]``,
  ``(mult, shift)`` per output: ``arm_fully_connected_per_channel_s8``) are rows too (``op``);
* :class:`StepRow` -- one layer execution: arena offsets (the allocator's, ``schedule.json: arena``
  for patch mode and ``arena_layer`` for layer mode),
  the input size and its pads (:class:`tinydet.geometry.Pads`), the output row pitch and where the
  output sits in its shortcut region; patch mode has each tile's stage-1 steps (:class:`TileRow`)
  then the stage-2 steps, layer mode the steps of every layer on the full map;
* :class:`FusedRow` -- a fused inverted residual (``fused_ir`` step): its two or three conv layer rows,
  the ring of expanded rows and the depthwise pixel (``temp``), the input's and output's moves;
* :class:`NeckRow` -- a weightless neck op (max pool, nearest upsample, concat, add of two branches):
  its kernel's parameters; its steps (stage 2 / layer mode only) carry every input's arena offset;
* :class:`OutputRow`, :class:`DetectorRow` -- the int8 outputs and the decode tables: one
  256-entry sigmoid table per head map (the Python decode's own function on every int8 value) and
  the int8 objectness threshold equivalent to the score threshold; :class:`ClassifierRow` -- a
  classifier's logits output (``tinydet_model_classify``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from tinydet.errors import TinydetError
from tinydet.geometry import Pads, Rect, conv_out_size
from tinydet.quant.params import QMAX, QMIN

MODES = ("patch", "layer")
STEP_MODES = ("normal", "inplace_dw", "fused_residual", "sink", "fused_ir")  # tinydet.schedule.arena ArenaStep.mode
STAGED_DW = "staged_dw"  # StepRow.mode of an in-place depthwise step the arena staged (ArenaStep.staged)
DEFAULT_CONF = 0.25  # deployment score threshold, the same default as `tinydet validate --conf`
MAX_CANDIDATES = 3000  # tinydet.models.decode.postprocess's default
# sizes of the runtime's structs the budget counts (model.c checks them against sizeof at compile time)
CANDIDATE_BYTES = 12  # tinydet_candidate {float score; int32 index, label}
DETECTION_BYTES = 24  # tinydet_detection {float x1, y1, x2, y2, score; int32 label}
_SUPPORTED = ("conv", "dwconv", "avgpool", "fc")
_DATA_ONLY = ("quantize", "dequantize", "pad", "flatten")  # no step of their own (flatten: a 1x1 map's bytes)
LAYER_OPS = ("conv", "avgpool", "fc")  # LayerRow.op: tinydet_executor.h TINYDET_OP_*
NECK_KINDS = ("maxpool", "upsample", "concat", "add")  # int8 ops of tinydet.quant.qgraph without weights


@dataclass(frozen=True)
class AddRow:
    """``tinydet_add_params``: the residual add's arm_elementwise_add_s8 arguments."""

    input_1_offset: int
    input_1_mult: int
    input_1_shift: int
    input_2_offset: int
    input_2_mult: int
    input_2_shift: int
    left_shift: int
    out_offset: int
    out_mult: int
    out_shift: int
    act_min: int = QMIN
    act_max: int = QMAX


@dataclass(frozen=True, eq=False)
class LayerRow:
    """``tinydet_layer``: one convolution / depthwise convolution with its const data."""

    name: str
    depthwise: bool
    weights: np.ndarray  # int8, OHWI or [1, KH, KW, C]
    bias: np.ndarray  # int32 [C_out]
    mult: np.ndarray  # int32 [C_out]
    shift: np.ndarray  # int32 [C_out]
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    add: AddRow | None = None
    conv_first: bool = False
    op: str = "conv"  # conv (conv / depthwise) | avgpool (global, no const data) | fc (weights [C_out, depth])

    @property
    def const_bytes(self) -> int:
        """Flash of its data: int8 weights + the int32 bias, multiplier and shift arrays."""
        return int(self.weights.size) + 4 * (self.bias.size + self.mult.size + self.shift.size)


@dataclass(frozen=True)
class StepRow:
    """``tinydet_step``: one execution of ``layer`` (an index into the layer rows)."""

    op: str
    layer: int
    counter: int
    mode: str
    reverse: bool
    in_h: int
    in_w: int
    pad: Pads
    out_h: int
    out_w: int
    out_pitch: int
    shortcut_crop: Pads
    input: int
    output: int
    temp: int = -1
    shortcut: int = -1
    result: int = -1
    neck: int = -1  # index into the neck rows (then ``layer`` is unused)
    inputs: tuple[int, ...] = ()  # neck op: arena offsets of all its inputs
    fused: int = -1  # index into the fused rows (a ``fused_ir`` step; ``layer`` is the projection)


@dataclass(frozen=True)
class FusedRow:
    """``tinydet_fused_step``: a fused inverted residual (expand -> depthwise -> project [+ shortcut],
    row by row; :mod:`tinydet.schedule.fusion`). The step row holds the block input X (``input``,
    ``in_h`` x ``in_w``), the depthwise pads (``pad``), the output and the ring at ``temp``."""

    expand: int  # layer index of the 1x1 expansion, -1 without one
    dw: int
    project: int
    ring_rows: int  # expanded rows the ring holds (0 without expansion)
    pixel: int  # arena offset of the one depthwise output pixel (after the ring)
    input_from: int = -1  # X is first moved from here to ``input`` (the streaming overlap)
    move_from: int = -1  # Y is streamed here, then moved to ``output``


@dataclass(frozen=True)
class ConcatPartRow:
    """``tinydet_concat_part``: one concat input and its requantization into the output's parameters."""

    channels: int
    input_offset: int
    mult: int
    shift: int
    output_offset: int
    copy: bool


@dataclass(frozen=True)
class NeckRow:
    """``tinydet_neck_op``: a weightless neck op and its kernel's parameters."""

    name: str
    kind: str  # one of NECK_KINDS
    channels: int  # output channels
    kernel: tuple[int, int] = (1, 1)  # max pool
    stride: tuple[int, int] = (1, 1)
    factor: tuple[int, int] = (1, 1)  # upsample
    act_min: int = QMIN
    act_max: int = QMAX
    add: AddRow | None = None
    parts: tuple[ConcatPartRow, ...] = ()
    num_inputs: int = 1


@dataclass(frozen=True)
class TileRow:
    """``tinydet_tile``: a tile's input-image region, its input buffer and its stage-1 steps."""

    rect: Rect
    input: int
    first_step: int
    num_steps: int


@dataclass(frozen=True)
class OutputRow:
    """``tinydet_output_info``: an int8 NHWC output tensor at an arena offset."""

    name: str
    offset: int
    c: int
    h: int
    w: int
    scale: float
    zp: int


@dataclass(frozen=True)
class InputRow:
    name: str
    c: int
    h: int
    w: int
    scale: float
    zp: int


@dataclass(frozen=True, eq=False)
class HeadRow:
    """``tinydet_head``: one head map with its sigmoid table and int8 objectness threshold."""

    output: int  # index into the outputs
    offset: int
    h: int
    w: int
    stride: float
    anchors: tuple[tuple[float, float], ...]
    sigmoid: np.ndarray  # float32 [256], sigmoid(dequantize(q)) at q + 128
    objectness_min: int  # smallest int8 q whose sigmoid is > conf (128: none)


@dataclass(frozen=True, eq=False)
class DetectorRow:
    """``tinydet_detector``: decode + NMS parameters (tinydet.models.decode.postprocess's)."""

    heads: tuple[HeadRow, ...]
    num_anchors: int
    num_classes: int
    conf_thresh: float
    nms_iou: float
    max_det: int
    max_candidates: int
    input_h: int
    input_w: int

    @property
    def static_bytes(self) -> int:
        """SRAM of the decode: the candidate buffer and the application's detections."""
        return CANDIDATE_BYTES * self.max_candidates + DETECTION_BYTES * self.max_det


@dataclass(frozen=True)
class ClassifierRow:
    """A classifier's logits: the one output (int8, ``num_classes`` values) that
    ``tinydet_model_classify`` dequantizes and ranks."""

    output: int
    num_classes: int
    scale: float
    zp: int


@dataclass(eq=False)
class Lowered:
    """Everything the C tables hold for one mode, plus the figures the build reports."""

    mode: str
    arch: str
    arena_bytes: int
    planned_peak_bytes: int
    scratch_bytes: int
    layers: list[LayerRow]
    steps: list[StepRow]
    tile_steps: list[StepRow]
    tiles: list[TileRow]
    input_offset: int
    outputs: list[OutputRow]
    input: InputRow
    detector: DetectorRow | None
    layer_names: list[str]
    detector_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    classifier: ClassifierRow | None = None
    necks: list[NeckRow] = field(default_factory=list)
    fused: list[FusedRow] = field(default_factory=list)

    @property
    def const_bytes(self) -> int:
        return sum(layer.const_bytes for layer in self.layers)

    @property
    def decode_bytes(self) -> int:
        return self.detector.static_bytes if self.detector else 0

    def summary(self) -> dict[str, Any]:
        """The figures as JSON-ready values (model.json, build.json)."""
        return {"mode": self.mode, "arena_bytes": self.arena_bytes, "planned_peak_bytes": self.planned_peak_bytes,
                "scratch_bytes": self.scratch_bytes, "const_bytes": self.const_bytes, "layers": self.layer_names,
                "outputs": [asdict(o) for o in self.outputs], "input": asdict(self.input), "tiles": len(self.tiles),
                "classifier": asdict(self.classifier) if self.classifier else None}


# ---- detector tables --------------------------------------------------------------------------------


def sigmoid_table(scale: float, zero_point: int) -> np.ndarray:
    """float32 [256]: the Python decode's sigmoid of every int8 value q (at q + 128), dequantized as
    the int8 model's DequantizeLinear -- the exact values :mod:`tinydet.models.decode` computes."""
    from tinydet.models.decode import _sigmoid
    from tinydet.quant.arith import dequantize

    return _sigmoid(dequantize(np.arange(-128, 128), scale, zero_point)).astype(np.float32)


def objectness_min(table: np.ndarray, conf: float) -> int:
    """The smallest int8 q with ``table[q] > conf`` (128 when none): since score = sig(obj) *
    sig(cls) <= sig(obj), no slot with a smaller objectness can pass, so the C decode skips those
    on the int8 value alone (and still checks the exact score of the rest)."""
    above = np.nonzero(table > np.float32(conf))[0]
    return int(above[0]) - 128 if above.size else 128


def detector_row(det: Mapping[str, Any], outputs: list[OutputRow], input_hw: tuple[int, int], conf: float,
                 where: str) -> DetectorRow:
    """The decode tables of ``schedule.json: detector`` on the int8 outputs."""
    anchors = det["anchors"]
    strides = det["strides"]
    num_anchors = len(anchors[0])
    if len(anchors) != len(outputs) or len(strides) != len(outputs):
        raise TinydetError(f"{where}: detector: {len(anchors)} anchor sets and {len(strides)} strides for "
                           f"{len(outputs)} outputs; expected one per head output")
    per = outputs[0].c // num_anchors
    num_classes = per - 5
    nms_iou = float(det.get("nms_iou", 0.6))
    if not 0.0 <= nms_iou <= 1.0:
        raise TinydetError(f"{where}: detector: nms_iou: expected a value in [0, 1], got {nms_iou}")
    if not 0.0 <= conf < 1.0:
        raise TinydetError(f"--conf: expected a score threshold in [0, 1), got {conf}")
    heads = []
    for i, (o, anc, stride) in enumerate(zip(outputs, anchors, strides)):
        if o.c != num_anchors * per or num_classes < 1:
            raise TinydetError(f"{where}: output '{o.name}' has {o.c} channels; expected {num_anchors} anchors x "
                               f"(5 + classes) like the first output")
        table = sigmoid_table(o.scale, o.zp)
        heads.append(HeadRow(output=i, offset=o.offset, h=o.h, w=o.w, stride=float(stride),
                             anchors=tuple((float(a[0]), float(a[1])) for a in anc), sigmoid=table,
                             objectness_min=objectness_min(table, conf)))
    slots = sum(o.h * o.w for o in outputs) * num_anchors
    return DetectorRow(heads=tuple(heads), num_anchors=num_anchors, num_classes=num_classes, conf_thresh=float(conf),
                       nms_iou=nms_iou, max_det=int(det.get("max_det", 100)),
                       max_candidates=max(1, min(slots, MAX_CANDIDATES)), input_h=input_hw[0], input_w=input_hw[1])


# ---- layers and steps -------------------------------------------------------------------------------


def _check_supported(qg, where: str, stage1: bool = False) -> None:
    for op in qg.ops:
        if op.kind in _DATA_ONLY:
            continue
        if op.kind in NECK_KINDS and stage1:
            raise TinydetError(f"{where}: node '{op.name}' ({op.kind}) runs per tile; the firmware runs neck ops "
                               f"on whole maps only (stage 2): expected a split inside the backbone")
        if op.kind not in _SUPPORTED + NECK_KINDS:
            raise TinydetError(f"{where}: node '{op.name}' ({op.kind}) is not supported by the C code generator; "
                               f"expected Conv, depthwise Conv (optionally followed by a residual Add), "
                               f"GlobalAveragePool, Flatten, Gemm, MaxPool, nearest Resize, Concat, Add in QDQ form")


def _shape_of(schedule: Mapping[str, Any], tensor: str) -> tuple[int, int, int]:
    if tensor in schedule.get("tensors", {}):
        c, h, w = schedule["tensors"][tensor]
        return int(c), int(h), int(w)
    for op in schedule["ops"]:
        if op["output"] == tensor:
            return tuple(int(v) for v in op["out_shape"])
    raise TinydetError(f"schedule.json: tensors: no shape for '{tensor}'")


def _int32(values: Any, what: str) -> np.ndarray:
    a = np.asarray(values, np.int64)
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise TinydetError(f"{what} does not fit int32")
    return a.astype(np.int32)


def layer_row(qop, in_shape: tuple[int, int, int] | None = None) -> LayerRow:
    """The table row of an int8 conv / depthwise / global pool / fully connected op of
    :mod:`tinydet.quant.qgraph`; ``in_shape`` (C, H, W of its input) sizes a global pool's window."""
    if qop.kind in ("avgpool", "fc"):
        return classifier_row(qop, in_shape)
    w = np.asarray(qop.weight, np.int8)
    depthwise = qop.kind == "dwconv"
    add = add_row(qop.add["params"]) if qop.add else None
    # OHWI conv filters, [1, KH, KW, C] depthwise filters: the last axis is the input channels
    return LayerRow(name=qop.name, depthwise=depthwise, weights=w, bias=_int32(qop.bias, f"{qop.name}: bias"),
                    mult=_int32(qop.mult, f"{qop.name}: mult"), shift=_int32(qop.shift, f"{qop.name}: shift"),
                    in_channels=int(w.shape[3]), out_channels=int(w.shape[3] if depthwise else w.shape[0]),
                    kernel=(int(qop.kernel[0]), int(qop.kernel[1])), stride=(int(qop.stride[0]), int(qop.stride[1])),
                    input_offset=-int(qop.in_zp[0]), output_offset=int(qop.add["conv_zp"] if qop.add else qop.out_zp),
                    act_min=int(qop.act_min), act_max=int(qop.act_max), add=add,
                    conv_first=bool(qop.add and qop.add["conv_first"]))


def classifier_row(qop, in_shape: tuple[int, int, int] | None) -> LayerRow:
    """The row of a global average pool (kernel = the whole input map, no const data; the int8 graph
    keeps the input's scale and zero point) or of a fully connected layer (weights ``[C_out, depth]``,
    a multiplier/shift per output row: ``arm_fully_connected_per_channel_s8``)."""
    none = np.zeros(0, np.int32)
    if qop.kind == "avgpool":
        if in_shape is None:
            raise TinydetError(f"global pool '{qop.name}': no input shape in schedule.json")
        c, h, w = (int(v) for v in in_shape)
        return LayerRow(name=qop.name, depthwise=False, weights=np.zeros(0, np.int8), bias=none, mult=none,
                        shift=none, in_channels=c, out_channels=c, kernel=(h, w), stride=(1, 1), input_offset=0,
                        output_offset=0, act_min=int(qop.act_min), act_max=int(qop.act_max), op="avgpool")
    w = np.asarray(qop.weight, np.int8)
    mult, shift = np.asarray(qop.mult).reshape(-1), np.asarray(qop.shift).reshape(-1)
    if w.ndim != 2 or mult.size not in (1, w.shape[0]) or shift.size != mult.size:
        raise TinydetError(f"fully connected '{qop.name}': expected weights [C_out, depth] and one multiplier per "
                           f"output (or one per tensor), got weights {list(w.shape)} and {mult.size} multipliers")
    # the executor always calls arm_fully_connected_per_channel_s8: a per-tensor value is repeated
    mult, shift = np.broadcast_to(mult, (w.shape[0],)), np.broadcast_to(shift, (w.shape[0],))
    return LayerRow(name=qop.name, depthwise=False, weights=w, bias=_int32(qop.bias, f"{qop.name}: bias"),
                    mult=_int32(mult, f"{qop.name}: mult"), shift=_int32(shift, f"{qop.name}: shift"),
                    in_channels=int(w.shape[1]), out_channels=int(w.shape[0]), kernel=(1, 1), stride=(1, 1),
                    input_offset=-int(qop.in_zp[0]), output_offset=int(qop.out_zp), act_min=int(qop.act_min),
                    act_max=int(qop.act_max), op="fc")


def scratch_bytes(layer: LayerRow, out_w: int) -> int:
    """Kernel scratch of a layer: im2col columns (int16, two output pixels) of the conv kernels, then a
    conv row and a shortcut row of the row-wise residual (tinydet_conv_rows_get_buffer_size; the
    runtime checks every call against the kernels' own *_get_buffer_size). A global pool: C int32
    sums (arm_avgpool_s8_get_buffer_size on DSP cores); a fully connected layer: C_out int32 row
    sums (arm_fully_connected_s8_get_buffer_size on Helium cores; 0 elsewhere)."""
    if layer.op != "conv":
        return 4 * layer.out_channels
    kh, kw = layer.kernel
    col = 2 * ((kh * kw * layer.in_channels + 3) & ~3) * 2
    return col + 2 * ((out_w * layer.out_channels + 3) & ~3) + 16


def add_row(params: Mapping[str, int]) -> AddRow:
    """The :class:`AddRow` of :func:`tinydet.quant.kernels.add_params`'s arguments."""
    return AddRow(**{k: int(params[k]) for k in ("input_1_offset", "input_1_mult", "input_1_shift", "input_2_offset",
                                                 "input_2_mult", "input_2_shift", "left_shift", "out_offset",
                                                 "out_mult", "out_shift")})


def neck_row(qop, channels: int, in_channels: list[int]) -> NeckRow:
    """The table row of an int8 neck op (``NECK_KINDS``) of :mod:`tinydet.quant.qgraph`; ``channels``
    of its output, ``in_channels`` of each input."""
    if qop.kind == "maxpool":
        return NeckRow(name=qop.name, kind="maxpool", channels=channels, kernel=tuple(qop.kernel),
                       stride=tuple(qop.stride), act_min=int(qop.act_min), act_max=int(qop.act_max))
    if qop.kind == "upsample":
        return NeckRow(name=qop.name, kind="upsample", channels=channels, factor=tuple(qop.scale))
    if qop.kind == "add":
        return NeckRow(name=qop.name, kind="add", channels=channels, add=add_row(qop.add["params"]), num_inputs=2)
    return NeckRow(name=qop.name, kind="concat", channels=channels, num_inputs=len(qop.inputs), parts=tuple(
        ConcatPartRow(channels=int(c), input_offset=r.input_offset, mult=r.mult, shift=r.shift,
                      output_offset=r.output_offset, copy=r.identity) for r, c in zip(qop.requant, in_channels)))


class _Layers:
    """Layer rows in first-use order, each written once for all tiles."""

    def __init__(self, schedule: Mapping[str, Any]):
        self.rows: list[LayerRow] = []
        self.index: dict[str, int] = {}
        self.necks: list[NeckRow] = []
        self.fused: list[FusedRow] = []
        self.scratch = 0
        self.out_w = {op["name"]: int(op["out_shape"][2]) for op in schedule["ops"]}
        self.in_shape = {op["name"]: tuple(int(v) for v in op["in_shape"]) for op in schedule["ops"]}

    def of(self, qop) -> int:
        if qop.name not in self.index:
            self.index[qop.name] = len(self.rows)
            self.rows.append(layer_row(qop, self.in_shape.get(qop.name)))
            # sized for the full map's rows, so one scratch serves every tile
            self.scratch = max(self.scratch, scratch_bytes(self.rows[-1], self.out_w[qop.name]))
        return self.index[qop.name]


def _check_pads(op: str, pads: Pads, in_hw: tuple[int, int], layer: LayerRow, out_hw: tuple[int, int],
                where: str) -> None:
    """The C geometry (tinydet_tile_geometry) of ``pads`` on the input must give the planned output."""
    if pads.top < 0 or pads.left < 0:
        raise TinydetError(f"{where}: op '{op}' crops its input on the top/left ({pads}); the patch plan only "
                           f"crops on the bottom/right")
    got = (conv_out_size(in_hw[0], layer.kernel[0], layer.stride[0], pads.top, pads.bottom),
           conv_out_size(in_hw[1], layer.kernel[1], layer.stride[1], pads.left, pads.right))
    if got != tuple(out_hw):
        raise TinydetError(f"{where}: op '{op}': pads {pads} on a {in_hw[0]}x{in_hw[1]} input give "
                           f"{got[0]}x{got[1]}, the plan says {out_hw[0]}x{out_hw[1]}")


def _offset(value: Any) -> int:
    return -1 if value is None else int(value)


def _step(layers: _Layers, qop, step: Mapping[str, Any], counter: int, in_hw, pads: Pads, out_hw, out_pitch: int,
          output: int, crop: Pads, where: str) -> StepRow:
    li = layers.of(qop)
    _check_pads(qop.name, pads, in_hw, layers.rows[li], out_hw, where)
    if step["mode"] not in STEP_MODES:
        raise TinydetError(f"{where}: arena step '{qop.name}': mode '{step['mode']}'; expected one of "
                           f"{', '.join(STEP_MODES)}")
    if qop.add and step.get("shortcut") is None:
        raise TinydetError(f"{where}: arena step '{qop.name}' has a residual add but no shortcut offset")
    mode = STAGED_DW if step.get("staged") else step["mode"]  # schedule_check vetted staged steps on load
    return StepRow(op=qop.name, layer=li, counter=counter, mode=mode, reverse=bool(step["reverse"]),
                   in_h=in_hw[0], in_w=in_hw[1], pad=pads, out_h=out_hw[0], out_w=out_hw[1], out_pitch=out_pitch,
                   shortcut_crop=crop, input=int(step["input"]), output=output, temp=_offset(step.get("temp")),
                   shortcut=_offset(step.get("shortcut")), result=_offset(step.get("result")))


def _grouped(qops: list, arena_steps: list[Mapping[str, Any]], where: str) -> list[tuple[tuple, Mapping[str, Any]]]:
    """The int8 ops of each arena step, in order: one op per step, the two or three ops of a fused
    inverted residual (``fused_ops``) for a ``fused_ir`` step."""
    out, i = [], 0
    for step in arena_steps:
        names = list(step.get("fused_ops") or [step["op"]]) if step["mode"] == "fused_ir" else [step["op"]]
        group = tuple(qops[i:i + len(names)])
        if [op.name for op in group] != names:
            raise TinydetError(f"{where}: int8 layers {[o.name for o in qops]} differ from the arena steps "
                               f"{[s['op'] for s in arena_steps]}")
        out.append((group, step))
        i += len(names)
    if i != len(qops):
        raise TinydetError(f"{where}: int8 layers {[o.name for o in qops[i:]]} have no arena step")
    return out


def fused_scratch_bytes(expand: LayerRow | None, dw: LayerRow, project: LayerRow, in_w: int) -> int:
    """Kernel scratch of a fused step (tinydet_fused_ir_get_buffer_size bounds it): the largest of
    its kernels' scratch (the expansion on one row, the depthwise and the projection on one pixel),
    then the depthwise window of one output pixel (its im2col column) and the projection's pixel."""
    kernels = max([scratch_bytes(dw, 1), scratch_bytes(project, 1)] + ([scratch_bytes(expand, in_w)] if expand else []))
    window = dw.kernel[0] * dw.kernel[1] * dw.in_channels
    return ((kernels + 3) & ~3) + ((window + 3) & ~3) + ((project.out_channels + 3) & ~3)


def _fused_step(layers: _Layers, group: tuple, step: Mapping[str, Any], counter: int, in_hw, pads: Pads, out_hw,
                out_pitch: int, output: int, crop: Pads, where: str) -> StepRow:
    """The step and :class:`FusedRow` of a ``fused_ir`` arena step: X ``in_hw`` (also the expanded
    rows' size: the expansion is a 1x1 stride 1 conv), the depthwise ``pads``, the output ``out_hw``."""
    expand, dw, proj = (group[0] if len(group) == 3 else None), group[-2], group[-1]
    if dw.kind != "dwconv" or proj.kind != "conv" or (expand is not None and expand.kind != "conv"):
        raise TinydetError(f"{where}: fused step '{proj.name}': ops {[o.name for o in group]}; expected "
                           f"[expand conv,] depthwise conv, projection conv")
    li_e = layers.of(expand) if expand is not None else -1
    li_d, li_p = layers.of(dw), layers.of(proj)
    rows = layers.rows
    for li in (li_e, li_p):  # the expansion runs on one row, the projection on one pixel
        if li >= 0 and (rows[li].kernel != (1, 1) or rows[li].stride != (1, 1)):
            raise TinydetError(f"{where}: fused step '{proj.name}': '{rows[li].name}' is not a 1x1 stride-1 conv")
    if li_e >= 0 and rows[li_e].add is not None:
        raise TinydetError(f"{where}: fused step '{proj.name}': the expansion '{rows[li_e].name}' has a residual add")
    d = rows[li_d]
    _check_pads(dw.name, pads, in_hw, d, out_hw, where)
    ring_rows = min(d.kernel[0], in_hw[0]) if expand is not None else 0
    ring_bytes = ring_rows * in_hw[1] * d.in_channels
    if int(step["temp_bytes"]) != ring_bytes + d.in_channels or step.get("temp") is None:
        raise TinydetError(f"{where}: fused step '{proj.name}': temp of {step['temp_bytes']} bytes; expected a ring "
                           f"of {ring_rows} expanded rows ({ring_bytes} bytes) + one {d.in_channels}-byte pixel")
    if proj.add and step.get("shortcut") is None:
        raise TinydetError(f"{where}: fused step '{proj.name}' has a residual add but no shortcut offset")
    move_from = _offset(step.get("move_from"))
    if move_from >= 0 and out_pitch != out_hw[1]:
        raise TinydetError(f"{where}: fused step '{proj.name}' writes the stage-1 map and moves its output")
    layers.scratch = max(layers.scratch, fused_scratch_bytes(rows[li_e] if li_e >= 0 else None, d, rows[li_p],
                                                             in_hw[1]))
    layers.fused.append(FusedRow(expand=li_e, dw=li_d, project=li_p, ring_rows=ring_rows,
                                 pixel=int(step["temp"]) + ring_bytes, input_from=_offset(step.get("input_from")),
                                 move_from=move_from))
    return StepRow(op=proj.name, layer=li_p, counter=counter, mode="fused_ir", reverse=False, in_h=in_hw[0],
                   in_w=in_hw[1], pad=pads, out_h=out_hw[0], out_w=out_hw[1], out_pitch=out_pitch,
                   shortcut_crop=crop, input=int(step["input"]), output=output, temp=int(step["temp"]),
                   shortcut=_offset(step.get("shortcut")), result=_offset(step.get("result")),
                   fused=len(layers.fused) - 1)


def _tile_pads(tile: Mapping[str, Any], key: str, op: str, pad_op, where: str) -> Pads:
    """The pads a stage-1 Pad node applies in this tile before ``op``'s input (``key`` "pads") or its
    shortcut (``"shortcut_crop"``, negative = crop), from schedule.json's named pads."""
    if pad_op is None or pad_op.kind != "pad":
        return Pads()
    if pad_op.pads_input is None:
        return pad_op.padding  # the same constant pads in every tile
    if op not in tile.get(key, {}):
        raise TinydetError(f"{where}: schedule.json tile: {key}: no entry for '{op}', whose input the int8 stage 1 "
                           f"pads per tile; re-export the folder")
    return Pads.load(tile[key][op])


def _patch_steps(sched, stage1, layers: _Layers, counter_of, arena, where) -> tuple[list[StepRow], list[TileRow]]:
    split = sched["split_tensor"]
    split_c, _, split_w = _shape_of(sched, split)
    s1_ops = [op for op in stage1.ops if op.kind in _SUPPORTED]
    if [op.name for op in s1_ops] != list(sched["stage1_ops"]):
        raise TinydetError(f"{where}/stage1_patch.int8.onnx: layers {[o.name for o in s1_ops]} differ from "
                           f"schedule.json stage1_ops {sched['stage1_ops']}")
    producer_op = {op["output"]: op["name"] for op in sched["ops"]}
    steps: list[StepRow] = []
    tiles: list[TileRow] = []
    for ti, (tile, tile_steps) in enumerate(zip(sched["tiles"], arena["tiles"])):
        first = len(steps)
        regions = tile["regions"]
        out_rect = Rect.from_list(tile["out_rect"])
        at = f"{where} tile {ti}"
        for group, step in _grouped(s1_ops, tile_steps, f"{where}: schedule.json arena tile {ti}"):
            qop = group[-1]
            if step["op"] != qop.name:
                raise TinydetError(f"{where}: schedule.json arena tile {ti}: step '{step['op']}' where the int8 "
                                   f"stage 1 has '{qop.name}'")
            reg_in, reg_out = Rect.from_list(regions[qop.name]["in_rect"]), Rect.from_list(regions[qop.name]["out_rect"])
            crop = Pads()
            if qop.add:
                sc_tensor = qop.add["shortcut"]
                sp = stage1.producer(sc_tensor)
                if sp is not None and sp.kind == "pad":
                    pads = _tile_pads(tile, "shortcut_crop", qop.name, sp, at)
                    sc_tensor = sp.inputs[0]
                    if max(pads.top, pads.left, pads.bottom, pads.right) > 0:
                        raise TinydetError(f"{at}: shortcut of '{qop.name}' is padded {pads}; expected crops (<= 0) "
                                           f"only")
                    crop = Pads(-pads.top, -pads.left, -pads.bottom, -pads.right)
                src = Rect.from_list(regions[producer_op[sc_tensor]]["out_rect"])
                if src.h - crop.top - crop.bottom != reg_out.h or src.w - crop.left - crop.right != reg_out.w:
                    raise TinydetError(f"{at}: shortcut of '{qop.name}' ({src.h}x{src.w}, crop {crop}) does not "
                                       f"match its {reg_out.h}x{reg_out.w} output")
            if step["mode"] == "sink" or (step["mode"] == "fused_ir" and qop is s1_ops[-1]):
                output, pitch = int(step["output"]) + (out_rect.y0 * split_w + out_rect.x0) * split_c, split_w
            else:
                output, pitch = int(step["output"]), reg_out.w
            if step["mode"] == "fused_ir":
                x_in = Rect.from_list(regions[group[0].name]["in_rect"])
                dw_pads = _tile_pads(tile, "pads", group[-2].name, stage1.producer(group[-2].inputs[0]), at)
                steps.append(_fused_step(layers, group, step, counter_of[qop.name], (x_in.h, x_in.w), dw_pads,
                                         (reg_out.h, reg_out.w), pitch, output, crop, at))
                continue
            steps.append(_step(layers, qop, step, counter_of[qop.name], (reg_in.h, reg_in.w),
                               _tile_pads(tile, "pads", qop.name, stage1.producer(qop.inputs[0]), at),
                               (reg_out.h, reg_out.w), pitch, output, crop, at))
        in_rect = Rect.from_list(tile["in_rect"])
        tiles.append(TileRow(rect=in_rect, input=int(arena["tile_inputs"][ti]), first_step=first,
                             num_steps=len(steps) - first))
    return steps, tiles


def _neck_step(layers: _Layers, qop, step: Mapping[str, Any], counter: int, sched_op: Mapping[str, Any],
               in_channels: list[int], offsets: Mapping[str, int], where: str) -> StepRow:
    """The step of a neck op on whole maps: every input's offset from the arena step (``inputs``)
    or, where the plan lists only the first, from where its producer left it (``offsets``)."""
    c_out, oh, ow = (int(v) for v in sched_op["out_shape"])
    _, ih, iw = (int(v) for v in sched_op["in_shape"])
    listed = step.get("inputs")
    try:
        inputs = tuple(int(v) for v in listed) if listed else tuple(offsets[n] for n in qop.inputs)
    except KeyError as exc:
        raise TinydetError(f"{where}: arena step '{qop.name}': no arena offset for its input {exc}") from None
    if len(inputs) != len(qop.inputs) or inputs[0] != int(step["input"]):
        raise TinydetError(f"{where}: arena step '{qop.name}': input offsets {list(inputs)} do not match its "
                           f"{len(qop.inputs)} inputs (first at {step['input']})")
    row = neck_row(qop, c_out, in_channels)
    pads = qop.padding if row.kind == "maxpool" else Pads()
    got = {"maxpool": (conv_out_size(ih, row.kernel[0], row.stride[0], pads.top, pads.bottom),
                       conv_out_size(iw, row.kernel[1], row.stride[1], pads.left, pads.right)),
           "upsample": (ih * row.factor[0], iw * row.factor[1])}.get(row.kind, (ih, iw))
    if got != (oh, ow):
        raise TinydetError(f"{where}: op '{qop.name}' ({row.kind}) on a {ih}x{iw} map gives {got[0]}x{got[1]}, "
                           f"the plan says {oh}x{ow}")
    layers.necks.append(row)
    return StepRow(op=qop.name, layer=-1, counter=counter, mode=step["mode"], reverse=False, in_h=ih, in_w=iw,
                   pad=pads, out_h=oh, out_w=ow, out_pitch=ow, shortcut_crop=Pads(), input=inputs[0],
                   output=int(step["output"]), result=_offset(step.get("result")), neck=len(layers.necks) - 1,
                   inputs=inputs)


def _layer_steps(sched, graph, layers: _Layers, counter_of, arena_steps, where,
                 offsets: dict[str, int]) -> list[StepRow]:
    """The per-layer steps (layer mode, or stage 2); ``offsets``: where the tensors alive at the
    start are (the image, the stage-1 map), extended by every step's result."""
    ops = {op["name"]: op for op in sched["ops"]}
    qops = [op for op in graph.ops if op.kind in _SUPPORTED + NECK_KINDS]
    steps = []
    for group, step in _grouped(qops, arena_steps, where):
        qop = group[-1]
        if step["mode"] == "fused_ir":
            _, ih, iw = ops[group[0].name]["in_shape"]
            _, oh, ow = ops[qop.name]["out_shape"]
            steps.append(_fused_step(layers, group, step, counter_of[qop.name], (int(ih), int(iw)), group[-2].padding,
                                     (int(oh), int(ow)), int(ow), int(step["output"]), Pads(), where))
        elif qop.kind in NECK_KINDS:
            chans = [_shape_of(sched, name)[0] for name in qop.inputs]
            steps.append(_neck_step(layers, qop, step, counter_of[qop.name], ops[qop.name], chans, offsets, where))
        else:
            _, ih, iw = ops[qop.name]["in_shape"]
            _, oh, ow = ops[qop.name]["out_shape"]
            steps.append(_step(layers, qop, step, counter_of[qop.name], (int(ih), int(iw)), qop.padding,
                               (int(oh), int(ow)), int(ow), int(step["output"]), Pads(), where))
        offsets[qop.output] = int(step["result"] if step.get("result") is not None else step["output"])
    return steps


def lower_export(export, models, mode: str = "patch", conf: float = DEFAULT_CONF) -> Lowered:
    """The C tables of a verified export folder (:func:`tinydet.export.load_export`) for ``mode``.

    ``models``: its (full, stage1, stage2) int8 graphs (:func:`tinydet.quant.qgraph.load_qgraph`).
    Refuses (TinydetError) unsupported int8 ops, a plan the int8 graphs or the C geometry disagree
    with, and an arena that is not the planner's peak.
    """
    if mode not in MODES:
        raise TinydetError(f"--mode: expected one of {', '.join(MODES)}, got '{mode}'")
    sched = export.schedule
    where = str(export.root)
    full, stage1, stage2 = models
    used = {"full.int8.onnx": full} if mode == "layer" else {"stage1_patch.int8.onnx": stage1,
                                                               "stage2.int8.onnx": stage2}
    for name, g in used.items():
        _check_supported(g, f"{where}/{name}", stage1=name.startswith("stage1"))
    names = [op["name"] for op in sched["ops"]]
    counter_of = {name: i for i, name in enumerate(names)}
    mem = sched["memory"]
    layers = _Layers(sched)
    tile_steps: list[StepRow] = []
    tiles: list[TileRow] = []
    if mode == "patch":
        arena = sched["arena"]
        planned = int(mem["peak_sram_patch"])
        split = sched["split_tensor"]
        if stage1.tensors.get(split) != stage2.tensors.get(split):
            raise TinydetError(f"{where}: split tensor '{split}' is quantized differently in stage 1 and stage 2; "
                               f"re-run `tinydet quantize`")
        tile_steps, tiles = _patch_steps(sched, stage1, layers, counter_of, arena, where)
        graph = stage2
    else:
        # load_export gives every folder a layer arena (version 1: rebuilt with the planner's allocator)
        arena = sched["arena_layer"]
        planned = int(mem["peak_sram_per_layer"])
        graph = full
    # where the tensors alive before the per-layer steps are: the image (layer mode) or the stage-1 map
    offsets = ({sched["split_tensor"]: int(arena["stage1_buffer"])} if mode == "patch"
               else {full.inputs[0]: _offset(arena.get("input"))})
    steps = _layer_steps(sched, graph, layers, counter_of, arena["steps"], where, offsets)
    if int(arena["arena_bytes"]) != planned:
        raise TinydetError(f"{where}: the arena plan needs {arena['arena_bytes']} bytes but the planner's {mode} peak "
                           f"is {planned}; re-export the folder")
    # outputs: int8 NHWC tensors at the arena's output offsets, dequantized by the host / decode
    outputs = []
    deq = {op.output: op for op in graph.ops if op.kind == "dequantize"}
    for name in sched["outputs"]:
        if name not in deq:
            raise TinydetError(f"{where}: output '{name}' is not dequantized in the int8 model")
        d = deq[name]
        c, h, w = _shape_of(sched, d.inputs[0])
        if d.inputs[0] not in arena["outputs"]:
            raise TinydetError(f"{where}: the arena plan does not keep output '{name}'")
        outputs.append(OutputRow(name=name, offset=int(arena["outputs"][d.inputs[0]]), c=c, h=h, w=w,
                                 scale=float(d.in_scale[0]), zp=int(d.in_zp[0])))
    c_in, h_in, w_in = (int(v) for v in sched["input"]["shape"])
    q_in = next(op for op in (stage1 if mode == "patch" else full).ops if op.kind == "quantize")
    inp = InputRow(name=q_in.inputs[0], c=c_in, h=h_in, w=w_in, scale=float(q_in.out_scale), zp=int(q_in.out_zp))
    det = sched.get("detector")
    detector = detector_row(det, outputs, (h_in, w_in), conf, f"{where}/schedule.json") if det else None
    classifier = None if det else classifier_output(graph, outputs)
    return Lowered(mode=mode, arch=str(sched["arch"]["name"]), arena_bytes=int(arena["arena_bytes"]),
                   planned_peak_bytes=planned, scratch_bytes=layers.scratch, layers=layers.rows, steps=steps,
                   tile_steps=tile_steps, tiles=tiles, input_offset=_offset(arena.get("input")), outputs=outputs,
                   input=inp, detector=detector, layer_names=names, detector_config=det, extra={"conf": conf},
                   classifier=classifier, necks=layers.necks, fused=layers.fused)


def classifier_output(graph, outputs: list[OutputRow]) -> ClassifierRow | None:
    """The logits row of a graph that ends in a fully connected layer with one output; else None."""
    layers = [op for op in graph.ops if op.kind in _SUPPORTED]
    if not layers or layers[-1].kind != "fc" or len(outputs) != 1:
        return None
    o = outputs[0]
    return ClassifierRow(output=0, num_classes=o.c * o.h * o.w, scale=o.scale, zp=o.zp)


def load_models(export) -> tuple[Any, Any, Any]:
    """(full, stage1, stage2) int8 graphs of a verified export folder."""
    from tinydet.quant.qgraph import load_qgraph

    return tuple(load_qgraph(export.path(f"{n}.int8.onnx")) for n in ("full", "stage1_patch", "stage2"))
