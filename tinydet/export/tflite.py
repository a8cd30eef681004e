"""``full.int8.tflite``: the export folder's int8 full model as a TFLite flatbuffer, and its check in LiteRT.

The model is written from ``full.int8.onnx`` through :func:`tinydet.quant.qgraph.load_qgraph`, so it
carries the *same* integers as the QDQ models, the numpy reference and the firmware: int8 weights
(per-channel symmetric scales, ``quantized_dimension`` 0 for CONV_2D's OHWI filter, 3 for
DEPTHWISE_CONV_2D's ``[1, KH, KW, C]``), int32 biases (scale = input scale x weight scale),
activation scales / zero points from ``quant.json``'s table -- nothing is re-quantized. TFLite
derives each layer's ``(multiplier, shift)`` from those float32 scales in double, exactly as
:func:`tinydet.quant.qgraph.layer_multipliers` does, and ADD's parameters as
:func:`tinydet.quant.kernels.add_params`.

Graph: input int8 NHWC ``[1, H, W, 3]`` (the float input's scale and zero point: real pixels are
``scale * (q - zero_point)``), outputs the int8 NHWC head maps in ``schedule.json: outputs`` order
(the quantize / dequantize ends of the ONNX model are left to the application, as in the firmware).
Ops, all in TFLite Micro's builtin set: CONV_2D, DEPTHWISE_CONV_2D, ADD, PAD, and for necks MAX_POOL_2D,
RESIZE_NEAREST_NEIGHBOR (integer factors, no half-pixel centres: ``in = out // factor``) and
CONCATENATION, whose int8 kernel needs every input in the output's parameters: an input whose
parameters differ gets a QUANTIZE (int8 -> int8 requantization) first, the arithmetic the reference's
concat does (:class:`tinydet.quant.kernels.Requant`). A conv whose padding
TFLite's ``SAME`` rule cannot express (stride 2 with symmetric padding puts TFLite's extra row at the
bottom only) gets an explicit PAD (which pads int8 with the zero point, i.e. real 0) and ``VALID``.
A fused residual (``QOp.add``) becomes CONV_2D into the conv tensor's own parameters, then ADD in
the graph's operand order. The fused activation is the TFLite one whose clamp range equals the
op's ``act_min``/``act_max`` (ReLU6 is encoded in the output range, so usually NONE).

Writing needs only the ``tflite`` package (flatbuffer schema classes) and ``flatbuffers``;
running needs LiteRT (PyPI ``ai-edge-litert``), with its reference kernels
(``OpResolverType.BUILTIN_REF``, the arithmetic TFLM runs) and, for information, the optimized ones.

The reference kernels are bit exact with :mod:`tinydet.quant.reference`. LiteRT's *optimized*
kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; measured on ai-edge-litert 2.3, x86-64) are not, by
design: their GEMM path (ruy, used by the 1x1 convs) rounds the requantization's final right shift
half *up* (towards +inf, ARM's rounding-shift semantics) after the same saturating doubling high
multiply, where TFLite's reference ``MultiplyByQuantizedMultiplier`` (and TFLM, CMSIS-NN, the
firmware) round it half away from zero. They differ by one LSB exactly on negative ties
(``-52.5`` -> ``-52`` instead of ``-53``), which only happens in layers without a ReLU clamp
(projections, heads). Fed LiteRT's own inputs, every other op matches, and the 1x1 convs match too
once the final shift rounds half up; but the 1-LSB steps grow through later layers: 2 LSB at the
outputs of the tests' tiny model, 12 LSB on the trained demo detector (8 val images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.geometry import conv_out_size
from tinydet.quant.params import QMAX, QMIN
from tinydet.quant.qgraph import QGraph, QOp

TFLITE_FILE = "full.int8.tflite"
LITERT_PACKAGE = "ai-edge-litert"
#: TFLite schema version and the op versions whose kernels take int8 per-channel models.
SCHEMA_VERSION = 3
OP_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "PAD": 2, "MAX_POOL_2D": 2,
               "RESIZE_NEAREST_NEIGHBOR": 2, "CONCATENATION": 2, "QUANTIZE": 2}


def _schema():
    try:
        import flatbuffers
        import tflite
    except ImportError as exc:
        raise TinydetError(f"writing {TFLITE_FILE} needs the PyPI packages 'tflite' and 'flatbuffers' "
                           f"(pip install tflite flatbuffers): {exc}") from None
    return flatbuffers, tflite


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8" | "int32"
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int = 0
    data: bytes | None = None


@dataclass
class _Op:
    code: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


def fused_activation(op: QOp, out_scale: float, out_zp: int) -> str:
    """The TFLite fused activation whose int8 clamp range is ``[op.act_min, op.act_max]``
    (TFLite ``CalculateActivationRangeQuantized``); an error names the op when none is."""
    def q(real: float) -> int:
        return int(out_zp + round(real / out_scale))

    ranges = {"NONE": (QMIN, QMAX), "RELU": (max(QMIN, q(0.0)), QMAX),
              "RELU6": (max(QMIN, q(0.0)), min(QMAX, q(6.0))), "RELU_N1_TO_1": (max(QMIN, q(-1.0)), min(QMAX, q(1.0)))}
    for name, rng in ranges.items():
        if rng == (op.act_min, op.act_max):
            return name
    raise TinydetError(f"tflite: op '{op.name}' clamps to [{op.act_min}, {op.act_max}], which no TFLite fused "
                       f"activation gives at scale {out_scale:g}, zero point {out_zp}")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TFLite's ``SAME`` rule: (output size, padding before) -- the extra row or column goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


def conv_padding(in_hw: tuple[int, int], op: QOp) -> str | None:
    """'SAME' or 'VALID' when one gives ``op``'s geometry (top/left padding and output size),
    else None (an explicit PAD is needed)."""
    p = op.padding
    (kh, kw), (sh, sw) = op.kernel, op.stride
    out = (conv_out_size(in_hw[0], kh, sh, p.top, p.bottom), conv_out_size(in_hw[1], kw, sw, p.left, p.right))
    (oh, bh), (ow, bw) = same_padding(in_hw[0], kh, sh), same_padding(in_hw[1], kw, sw)
    if (oh, ow) == out and (bh, bw) == (p.top, p.left):
        return "SAME"
    if (p.top, p.left) == (0, 0) and (conv_out_size(in_hw[0], kh, sh), conv_out_size(in_hw[1], kw, sw)) == out:
        return "VALID"
    return None


class _GraphBuilder:
    """Collects tensors and ops in TFLite terms from the int8 op list."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], params: dict[str, tuple[float, int]]) -> None:
        self.shapes, self.params = shapes, params
        self.tensors: list[_Tensor] = []
        self.index: dict[str, int] = {}
        self.ops: list[_Op] = []

    def activation(self, name: str) -> int:
        if name not in self.index:
            scale, zp = self.params[name]
            self.index[name] = len(self.tensors)
            self.tensors.append(_Tensor(name, tuple(self.shapes[name]), "int8", [float(scale)], [int(zp)]))
        return self.index[name]

    def constant(self, tensor: _Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def conv(self, op: QOp) -> None:
        x = op.inputs[0]
        in_shape = self.shapes[x]
        mode = conv_padding((in_shape[1], in_shape[2]), op)
        src = self.activation(x)
        if mode is None:  # explicit PAD with the zero point, then VALID
            p = op.padding
            pt, pl, pb, pr = p.top, p.left, p.bottom, p.right
            padded = f"{op.name}/pad"
            self.shapes[padded] = (in_shape[0], in_shape[1] + pt + pb, in_shape[2] + pl + pr, in_shape[3])
            self.params[padded] = self.params[x]
            pads = self.constant(_Tensor(f"{op.name}/paddings", (4, 2), "int32", [], [],
                                         data=np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], "<i4").tobytes()))
            dst = self.activation(padded)
            self.ops.append(_Op("PAD", [src, pads], [dst]))
            src, mode = dst, "VALID"
        in_scale = float(self.params[x][0])
        ws = np.asarray(op.weight_scale, np.float32).reshape(-1)
        dw = op.kind == "dwconv"
        w = self.constant(_Tensor(f"{op.name}.weight", tuple(op.weight.shape), "int8", [float(s) for s in ws],
                                  [0] * len(ws), 3 if dw else 0, np.ascontiguousarray(op.weight, np.int8).tobytes()))
        bias_scale = (np.float64(np.float32(in_scale)) * ws.astype(np.float64)).astype(np.float32)
        b = self.constant(_Tensor(f"{op.name}.bias", (len(ws),), "int32", [float(s) for s in bias_scale],
                                  [0] * len(ws), 0, np.asarray(op.bias, "<i4").tobytes()))
        conv_out = op.add["conv_tensor"] if op.add else op.output
        if op.add:
            self.params[conv_out] = (op.add["conv_scale"], op.add["conv_zp"])
        y = self.activation(conv_out)
        scale, zp = self.params[conv_out]
        options = {"padding": mode, "stride": op.stride, "activation": fused_activation(op, scale, zp)}
        self.ops.append(_Op("DEPTHWISE_CONV_2D" if dw else "CONV_2D", [src, w, b], [y], options))
        if op.add:
            s = self.activation(op.add["shortcut"])
            pair = [y, s] if op.add["conv_first"] else [s, y]
            self.ops.append(_Op("ADD", pair, [self.activation(op.output)], {"activation": "NONE"}))

    def add_op(self, op: QOp) -> None:
        ins = [self.activation(n) for n in op.inputs]
        self.ops.append(_Op("ADD", ins, [self.activation(op.output)], {"activation": "NONE"}))

    def max_pool(self, op: QOp) -> None:
        in_shape = self.shapes[op.inputs[0]]
        mode = conv_padding((in_shape[1], in_shape[2]), op)
        if mode is None:
            raise TinydetError(f"tflite: MaxPool '{op.name}' pads {op.padding.to_dict()}, which neither SAME nor "
                               f"VALID expresses (a PAD would be read as values)")
        scale, zp = self.params[op.output]
        options = {"padding": mode, "stride": op.stride, "filter": op.kernel,
                   "activation": fused_activation(op, scale, zp)}
        self.ops.append(_Op("MAX_POOL_2D", [self.activation(op.inputs[0])], [self.activation(op.output)], options))

    def upsample(self, op: QOp) -> None:
        _, h, w, _ = self.shapes[op.output]
        size = self.constant(_Tensor(f"{op.name}/size", (2,), "int32", [], [], data=np.array([h, w], "<i4").tobytes()))
        self.ops.append(_Op("RESIZE_NEAREST_NEIGHBOR", [self.activation(op.inputs[0]), size],
                            [self.activation(op.output)]))

    def concat(self, op: QOp) -> None:
        ins = []
        for name, rq in zip(op.inputs, op.requant):
            if not rq.identity:  # TFLite's int8 CONCATENATION requires the output's parameters
                moved = f"{op.name}/{name}/requantized"
                self.shapes[moved], self.params[moved] = self.shapes[name], (op.out_scale, op.out_zp)
                self.ops.append(_Op("QUANTIZE", [self.activation(name)], [self.activation(moved)]))
                name = moved
            ins.append(self.activation(name))
        self.ops.append(_Op("CONCATENATION", ins, [self.activation(op.output)], {"axis": 3, "activation": "NONE"}))

    def pad(self, op: QOp) -> None:
        if op.pads_input is not None:
            raise TinydetError(f"tflite: Pad '{op.name}' takes per-tile amounts; only the full model is exported")
        p = op.padding
        pt, pl, pb, pr = p.top, p.left, p.bottom, p.right
        if min(pt, pl, pb, pr) < 0:
            raise TinydetError(f"tflite: Pad '{op.name}' crops ({p.to_dict()}); TFLite PAD cannot")
        pads = self.constant(_Tensor(f"{op.name}/paddings", (4, 2), "int32", [], [],
                                     data=np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], "<i4").tobytes()))
        self.ops.append(_Op("PAD", [self.activation(op.inputs[0]), pads], [self.activation(op.output)]))


def tflite_graph(qg: QGraph, shapes: dict[str, tuple[int, ...]]
                 ) -> tuple[list[_Tensor], list[_Op], list[int], list[int]]:
    """Tensors, ops, input and output tensor indices of ``qg`` (``shapes``: NHWC of every int8
    tensor); outputs in ``qg.outputs`` order (the float graph outputs they are dequantized to)."""
    params = dict(qg.tensors)
    g = _GraphBuilder(dict(shapes), params)
    inputs, outputs = [], []
    for op in qg.ops:
        if op.kind == "quantize":
            inputs.append(g.activation(op.output))
        elif op.kind == "dequantize":
            outputs.append((qg.outputs.index(op.output), g.activation(op.inputs[0])))
        elif op.kind in ("conv", "dwconv"):
            g.conv(op)
        elif op.kind == "add":
            g.add_op(op)
        elif op.kind == "pad":
            g.pad(op)
        elif op.kind == "maxpool":
            g.max_pool(op)
        elif op.kind == "upsample":
            g.upsample(op)
        elif op.kind == "concat":
            g.concat(op)
        else:
            raise TinydetError(f"tflite: op '{op.name}' ({op.kind}) is not exported; the detector graph has "
                               "conv, depthwise conv, add, pad, max pool, upsample and concat only")
    return g.tensors, g.ops, inputs, [index for _, index in sorted(outputs)]


def _serialise(tensors: Sequence[_Tensor], ops: Sequence[_Op], inputs: Sequence[int], outputs: Sequence[int],
               description: str) -> bytes:
    flatbuffers, tfl = _schema()
    from tflite.ActivationFunctionType import ActivationFunctionType
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.BuiltinOptions import BuiltinOptions
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    b = flatbuffers.Builder(1 << 16)

    def vec(values, dtype) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))

    def data_vec(data: bytes) -> int:
        b.StartVector(1, len(data), 16)  # 16-byte aligned: kernels read int32 biases in place
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        b.vectorNumElems = len(data)
        return b.EndVector()

    # buffers: 0 is the empty sentinel, then one per constant tensor
    buffer_data = [b""]
    tensor_buffer = []
    for t in tensors:
        if t.data is None:
            tensor_buffer.append(0)
        else:
            tensor_buffer.append(len(buffer_data))
            buffer_data.append(t.data)
    buffer_offsets = []
    for data in buffer_data:
        d = data_vec(data) if data else None
        tfl.BufferStart(b)
        if d is not None:
            tfl.BufferAddData(b, d)
        buffer_offsets.append(tfl.BufferEnd(b))

    tensor_offsets = []
    for t, buf in zip(tensors, tensor_buffer):
        name = b.CreateString(t.name)
        shape = vec(t.shape, np.int32)
        quant = None
        if t.scale:
            scale, zp = vec(t.scale, np.float32), vec(t.zero_point, np.int64)
            tfl.QuantizationParametersStart(b)
            tfl.QuantizationParametersAddScale(b, scale)
            tfl.QuantizationParametersAddZeroPoint(b, zp)
            tfl.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tfl.QuantizationParametersEnd(b)
        tfl.TensorStart(b)
        tfl.TensorAddShape(b, shape)
        tfl.TensorAddType(b, TensorType.INT8 if t.dtype == "int8" else TensorType.INT32)
        tfl.TensorAddBuffer(b, buf)
        tfl.TensorAddName(b, name)
        if quant is not None:
            tfl.TensorAddQuantization(b, quant)
        tensor_offsets.append(tfl.TensorEnd(b))

    codes = sorted({op.code for op in ops}, key=lambda c: getattr(BuiltinOperator, c))
    code_index = {c: i for i, c in enumerate(codes)}
    act = {n: getattr(ActivationFunctionType, n) for n in ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")}
    op_offsets = []
    for op in ops:
        ins, outs = vec(op.inputs, np.int32), vec(op.outputs, np.int32)
        o = op.options
        if op.code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            table = "Conv2DOptions" if op.code == "CONV_2D" else "DepthwiseConv2DOptions"

            def add(field: str, value: int, table: str = table) -> None:
                getattr(tfl, f"{table}Add{field}")(b, value)

            getattr(tfl, f"{table}Start")(b)
            add("Padding", getattr(Padding, o["padding"]))
            add("StrideH", int(o["stride"][0]))
            add("StrideW", int(o["stride"][1]))
            add("DilationHFactor", 1)
            add("DilationWFactor", 1)
            add("FusedActivationFunction", act[o["activation"]])
            if op.code == "DEPTHWISE_CONV_2D":
                add("DepthMultiplier", 1)
            options, kind = getattr(tfl, f"{table}End")(b), getattr(BuiltinOptions, table)
        elif op.code == "ADD":
            tfl.AddOptionsStart(b)
            tfl.AddOptionsAddFusedActivationFunction(b, act[o["activation"]])
            options, kind = tfl.AddOptionsEnd(b), BuiltinOptions.AddOptions
        elif op.code == "MAX_POOL_2D":
            tfl.Pool2DOptionsStart(b)
            tfl.Pool2DOptionsAddPadding(b, getattr(Padding, o["padding"]))
            tfl.Pool2DOptionsAddStrideH(b, int(o["stride"][0]))
            tfl.Pool2DOptionsAddStrideW(b, int(o["stride"][1]))
            tfl.Pool2DOptionsAddFilterHeight(b, int(o["filter"][0]))
            tfl.Pool2DOptionsAddFilterWidth(b, int(o["filter"][1]))
            tfl.Pool2DOptionsAddFusedActivationFunction(b, act[o["activation"]])
            options, kind = tfl.Pool2DOptionsEnd(b), BuiltinOptions.Pool2DOptions
        elif op.code == "RESIZE_NEAREST_NEIGHBOR":
            tfl.ResizeNearestNeighborOptionsStart(b)
            tfl.ResizeNearestNeighborOptionsAddAlignCorners(b, False)
            tfl.ResizeNearestNeighborOptionsAddHalfPixelCenters(b, False)
            options, kind = tfl.ResizeNearestNeighborOptionsEnd(b), BuiltinOptions.ResizeNearestNeighborOptions
        elif op.code == "CONCATENATION":
            tfl.ConcatenationOptionsStart(b)
            tfl.ConcatenationOptionsAddAxis(b, int(o["axis"]))
            tfl.ConcatenationOptionsAddFusedActivationFunction(b, act[o["activation"]])
            options, kind = tfl.ConcatenationOptionsEnd(b), BuiltinOptions.ConcatenationOptions
        elif op.code == "QUANTIZE":
            tfl.QuantizeOptionsStart(b)
            options, kind = tfl.QuantizeOptionsEnd(b), BuiltinOptions.QuantizeOptions
        else:
            tfl.PadOptionsStart(b)
            options, kind = tfl.PadOptionsEnd(b), BuiltinOptions.PadOptions
        tfl.OperatorStart(b)
        tfl.OperatorAddOpcodeIndex(b, code_index[op.code])
        tfl.OperatorAddInputs(b, ins)
        tfl.OperatorAddOutputs(b, outs)
        tfl.OperatorAddBuiltinOptionsType(b, kind)
        tfl.OperatorAddBuiltinOptions(b, options)
        op_offsets.append(tfl.OperatorEnd(b))

    def table_vec(start, offsets) -> int:
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    sg_tensors = table_vec(tfl.SubGraphStartTensorsVector, tensor_offsets)
    sg_ops = table_vec(tfl.SubGraphStartOperatorsVector, op_offsets)
    sg_in, sg_out = vec(inputs, np.int32), vec(outputs, np.int32)
    sg_name = b.CreateString("main")
    tfl.SubGraphStart(b)
    tfl.SubGraphAddTensors(b, sg_tensors)
    tfl.SubGraphAddInputs(b, sg_in)
    tfl.SubGraphAddOutputs(b, sg_out)
    tfl.SubGraphAddOperators(b, sg_ops)
    tfl.SubGraphAddName(b, sg_name)
    subgraph = tfl.SubGraphEnd(b)

    code_offsets = []
    for c in codes:
        value = getattr(BuiltinOperator, c)
        tfl.OperatorCodeStart(b)
        tfl.OperatorCodeAddDeprecatedBuiltinCode(b, min(value, 127))
        tfl.OperatorCodeAddBuiltinCode(b, value)
        tfl.OperatorCodeAddVersion(b, OP_VERSIONS[c])
        code_offsets.append(tfl.OperatorCodeEnd(b))
    m_codes = table_vec(tfl.ModelStartOperatorCodesVector, code_offsets)
    m_subgraphs = table_vec(tfl.ModelStartSubgraphsVector, [subgraph])
    m_buffers = table_vec(tfl.ModelStartBuffersVector, buffer_offsets)
    m_desc = b.CreateString(description)
    tfl.ModelStart(b)
    tfl.ModelAddVersion(b, SCHEMA_VERSION)
    tfl.ModelAddOperatorCodes(b, m_codes)
    tfl.ModelAddSubgraphs(b, m_subgraphs)
    tfl.ModelAddDescription(b, m_desc)
    tfl.ModelAddBuffers(b, m_buffers)
    b.Finish(tfl.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def int8_shapes(qg: QGraph, input_shape: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    """NHWC shape of every int8 tensor of ``qg`` for one image of ``input_shape`` (C, H, W), from a
    reference run on zeros (the reference's geometry is the model's)."""
    from tinydet.quant.reference import run

    env, _ = run(qg, {qg.inputs[0]: np.zeros((1,) + tuple(input_shape), np.float32)})
    return {name: tuple(int(d) for d in value.shape) for name, value in env.items()}


def build_tflite(qg: QGraph, input_shape: tuple[int, int, int], description: str = "tinydet int8") -> bytes:
    """The ``.tflite`` bytes of the int8 full model ``qg`` (see the module doc)."""
    if len(qg.inputs) != 1:
        raise TinydetError(f"tflite: expected a model with one image input, got {qg.inputs}")
    tensors, ops, inputs, outputs = tflite_graph(qg, int8_shapes(qg, input_shape))
    return _serialise(tensors, ops, inputs, outputs, description)


def write_tflite(folder: "str | Path") -> dict:
    """Write ``full.int8.tflite`` into the (quantized) export folder, checksummed in schedule.json."""
    from tinydet.export.schedule_file import add_files, load_export
    from tinydet.quant.qgraph import load_qgraph

    export = load_export(folder)
    qg = load_qgraph(export.path("full.int8.onnx"))
    order = export.outputs
    if qg.outputs != order:
        raise TinydetError(f"{folder}: full.int8.onnx outputs {qg.outputs} differ from schedule.json outputs {order}")
    data = build_tflite(qg, export.input_shape, f"tinydet int8 full model of {Path(folder).name}")
    add_files(folder, {TFLITE_FILE: data})
    return {"file": TFLITE_FILE, "bytes": len(data), "ops": tflite_op_counts(qg, export.input_shape)}


def tflite_op_counts(qg: QGraph, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """How many of each TFLite op the exported model has."""
    _, ops, _, _ = tflite_graph(qg, int8_shapes(qg, input_shape))
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.code] = counts.get(op.code, 0) + 1
    return counts


# ------------------------------------------------------------------------------------ LiteRT


def litert_interpreter(model: bytes, kernels: str = "reference"):
    """A LiteRT interpreter of ``model``: ``reference`` kernels (TFLM's arithmetic) or ``optimized``
    builtin kernels without delegates. A clear error names the package when LiteRT is absent."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise TinydetError(f"running {TFLITE_FILE} needs LiteRT: pip install {LITERT_PACKAGE} ({exc})") from None
    resolver = {"reference": OpResolverType.BUILTIN_REF,
                "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}[kernels]
    interp = Interpreter(model_content=bytes(model), experimental_op_resolver_type=resolver, num_threads=1)
    interp.allocate_tensors()
    return interp


def run_litert(interp, images_int8: np.ndarray) -> list[np.ndarray]:
    """Raw int8 outputs [B, H, W, C] of the interpreter, image by image (``images_int8`` NHWC)."""
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for image in np.asarray(images_int8, np.int8):
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        for k, o in enumerate(outs):
            results[k].append(interp.get_tensor(o["index"])[0].copy())
    return [np.stack(r) for r in results]


def litert_runner(folder: "str | Path", kernels: str = "reference"):
    """``callable(images float32 [B, 3, H, W] in [0, 1]) -> [float NCHW outputs]`` running the
    folder's ``full.int8.tflite`` in LiteRT: the input is quantized and the int8 outputs are
    dequantized with the model's own parameters (as the firmware does), outputs in schedule.json
    order -- a drop-in for :func:`tinydet.export.runtime.onnx_runner` (``tinydet eval --engine litert``)."""
    from tinydet.export.schedule_file import load_export
    from tinydet.quant.arith import dequantize, quantize

    export = load_export(folder)
    if not export.has(TFLITE_FILE):
        raise TinydetError(f"{folder}: no {TFLITE_FILE}; run 'tinydet tflite {folder}' first")
    interp = litert_interpreter(export.path(TFLITE_FILE).read_bytes(), kernels)
    def params(detail: dict) -> tuple[float, int]:
        q = detail["quantization_parameters"]
        return float(q["scales"][0]), int(q["zero_points"][0])

    in_scale, in_zp = params(interp.get_input_details()[0])
    outs = [params(o) for o in interp.get_output_details()]

    def runner(images: np.ndarray) -> list[np.ndarray]:
        x = quantize(np.asarray(images, np.float32), in_scale, in_zp).transpose(0, 2, 3, 1)
        raw = run_litert(interp, x)
        return [dequantize(r, s, z).transpose(0, 3, 1, 2).copy() for r, (s, z) in zip(raw, outs)]

    return runner


def compare_litert(model: bytes, qg: QGraph, images: np.ndarray, kernels: str = "reference") -> dict:
    """LiteRT's raw int8 outputs vs the numpy int8 reference on ``images`` [K, 3, H, W] in [0, 1].

    ``bit_exact_images``: images whose every output element is equal; ``mismatched_elements`` and
    ``max_abs_diff_lsb`` over all outputs; ``per_output`` by output tensor name.
    """
    from tinydet.quant.reference import run

    env, _ = run(qg, {qg.inputs[0]: np.asarray(images, np.float32)})
    quant_op = next(op for op in qg.ops if op.kind == "quantize")
    source = {op.output: op.inputs[0] for op in qg.ops if op.kind == "dequantize"}
    out_names = [source[name] for name in qg.outputs]
    interp = litert_interpreter(model, kernels)
    got = run_litert(interp, env[quant_op.output])
    exact = np.ones(len(images), bool)
    per_output, mismatched, max_diff = {}, 0, 0
    for name, lite in zip(out_names, got):
        ref = env[name]
        if lite.shape != ref.shape:
            raise TinydetError(f"tflite: output '{name}' is {lite.shape} in LiteRT, {ref.shape} in the reference")
        diff = np.abs(lite.astype(np.int32) - ref.astype(np.int32))
        exact &= diff.reshape(len(images), -1).max(axis=1) == 0
        per_output[name] = {"mismatched_elements": int((diff > 0).sum()), "max_abs_diff_lsb": int(diff.max())}
        mismatched += int((diff > 0).sum())
        max_diff = max(max_diff, int(diff.max()))
    return {"kernels": kernels, "images": int(len(images)), "bit_exact_images": int(exact.sum()),
            "mismatched_elements": mismatched, "max_abs_diff_lsb": max_diff, "per_output": per_output}


def litert_available() -> bool:
    """Whether LiteRT (``ai_edge_litert``) can be imported."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def tflite_bit_exact_images(folder: "str | Path", qg: QGraph, images: np.ndarray) -> int | None:
    """For ``tinydet validate``: images whose LiteRT (reference kernels) outputs of the folder's
    ``full.int8.tflite`` equal the int8 reference's bit for bit; None when the folder has no
    .tflite file or LiteRT is not installed (said on stderr)."""
    import sys

    from tinydet.export.schedule_file import load_export

    export = load_export(folder)
    if not export.has(TFLITE_FILE):
        return None
    if not litert_available():
        print(f"tinydet: {TFLITE_FILE} not checked: LiteRT is not installed (pip install {LITERT_PACKAGE})",
              file=sys.stderr)
        return None
    return compare_litert(export.path(TFLITE_FILE).read_bytes(), qg, images)["bit_exact_images"]
