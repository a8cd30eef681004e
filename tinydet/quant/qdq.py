"""Turn a float ONNX graph of the export folder into its int8 QDQ form (TFLite int8 conventions).

Conventions (DESIGN.md "Export folder", TFLite int8):

* weights int8 symmetric per output channel: zero point 0, range [-127, 127];
* activations int8 asymmetric per tensor, the range always containing 0 (so zero padding is exact);
* bias int32 with scale = input_scale * weight_scale (per output channel), zero point 0;
* ReLU6 / ReLU folded into the producing convolution: its output range is clipped to [0, 6]
  (TFLite's fused activation), the ``Clip`` node disappears and the conv writes the clip's tensor;
* the network input is quantized with scale 1/255, zero point -128 (pixels in [0, 1]);
* a shortcut ``Add`` has its own output scale; the projection conv output (``<op>/conv``) has its own;
* neck ops: ``MaxPool`` and nearest ``Resize`` keep their input's scale and zero point (TFLite
  MAX_POOL_2D / RESIZE_NEAREST_NEIGHBOR), an ``Add`` of two tensors with different scales and a
  ``Concat`` get their own output parameters; the int8 arithmetic requantizes each input as TFLite
  does (ADD's input rescaling, a QUANTIZE in front of every CONCATENATION input whose parameters
  differ: :mod:`tinydet.quant.kernels`).

Tensor naming in the QDQ graph: every quantized activation ``T`` of the float graph exists as
``T/q`` (int8, the output of its ``QuantizeLinear``) and, where the float graph exposes ``T`` as a
graph output, as ``T`` (float, ``DequantizeLinear`` of ``T/q``). Each consumer gets its own
``DequantizeLinear`` (``T/dq/<consumer>``), the layout onnxruntime fuses into QLinearConv /
QLinearAdd. ``Pad`` runs on int8 (``T/q`` padded with the zero point), so the per-tile padding of
``stage1_patch`` pads exactly what the C runtime pads. Graph inputs and outputs keep their float
names and types, so an ``*.int8.onnx`` is a drop-in replacement for its float model.

The same activation table (:func:`activation_params`) is applied to ``full``, ``stage1_patch`` and
``stage2``; as they share tensor names, stitched int8 equals full int8.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinydet.errors import TinydetError
from tinydet.quant.params import WEIGHT_QMAX, QParams, input_params, params_from_range

# ops whose float output is a quantized activation; Pad inherits its input's parameters
PRODUCERS = ("Conv", "Add", "GlobalAveragePool", "Gemm", "Concat", "MaxPool", "Resize")
#: producers whose output keeps its input's quantization parameters (values are only moved or compared)
SAME_PARAMS = ("GlobalAveragePool", "MaxPool", "Resize")
PASS_THROUGH = ("Pad", "Flatten")
ACTIVATIONS = ("Clip", "Relu")


def weight_scales(weight: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric scales max|w|/127 (axis 0 = output channel); an all-zero
    channel gets scale 1 so nothing divides by zero."""
    w = np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scales = (amax / WEIGHT_QMAX).astype(np.float32)
    return np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)


def quantize_weight(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Symmetric per-channel int8 weights in [-127, 127] (round half to even, as QuantizeLinear)."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q = np.rint(np.asarray(weight, np.float32) / scales.reshape(shape))
    return np.clip(q, -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)


def bias_scales(input_scale: float, w_scales: np.ndarray) -> np.ndarray:
    """Bias scale = input_scale * weight_scale, computed in float32 as onnxruntime does."""
    return (np.float32(input_scale) * np.asarray(w_scales, np.float32)).astype(np.float32)


def quantize_bias(bias: np.ndarray, input_scale: float, w_scales: np.ndarray) -> np.ndarray:
    """int32 bias with scale input_scale * weight_scale and zero point 0 (saturated to int32)."""
    q = np.rint(np.asarray(bias, np.float64) / bias_scales(input_scale, w_scales).astype(np.float64))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


# --------------------------------------------------------------------------------------------
# graph inspection helpers


class _View:
    """Producers, consumers and constant values of a graph."""

    def __init__(self, graph: onnx.GraphProto, where: str):
        self.graph = graph
        self.where = where
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consts: dict[str, np.ndarray] = dict(self.inits)
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
                    elif attr.name in ("value_float", "value_int"):
                        self.consts[node.output[0]] = np.array(helper.get_attribute_value(attr))
        # Identity of a constant (the TorchScript exporter shares biases that way)
        changed = True
        while changed:
            changed = False
            for node in graph.node:
                if node.op_type == "Identity" and node.input[0] in self.consts and node.output[0] not in self.consts:
                    self.consts[node.output[0]] = self.consts[node.input[0]]
                    changed = True
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in n.input:
                if name:
                    self.consumers.setdefault(name, []).append(n)
        self.outputs = [o.name for o in graph.output]
        self.float_inputs = [i.name for i in graph.input
                             if i.name not in self.inits and i.type.tensor_type.elem_type == TensorProto.FLOAT]

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)


def node_label(node: onnx.NodeProto, index: int, total: int) -> str:
    """How an ONNX node is named in errors: its name, op type and place in the graph."""
    return f"node '{node.name or node.output[0]}' ({node.op_type}, node {index} of {total})"


def _clip_bounds(view: _View, node: onnx.NodeProto) -> tuple[float, float]:
    if node.op_type == "Relu":
        return 0.0, float("inf")
    lo, hi = -float("inf"), float("inf")
    for attr in node.attribute:  # opset < 11 carries min/max as attributes
        if attr.name == "min":
            lo = float(attr.f)
        if attr.name == "max":
            hi = float(attr.f)
    if len(node.input) > 1 and node.input[1]:
        value = view.const(node.input[1])
        if value is None:
            raise TinydetError(f"{view.where}: Clip '{node.name}' has a non-constant min; expected a constant")
        lo = float(np.asarray(value).reshape(-1)[0])
    if len(node.input) > 2 and node.input[2]:
        value = view.const(node.input[2])
        if value is None:
            raise TinydetError(f"{view.where}: Clip '{node.name}' has a non-constant max; expected a constant")
        hi = float(np.asarray(value).reshape(-1)[0])
    return lo, hi


def fuse_activations(model: onnx.ModelProto, where: str = "<model>") -> tuple[onnx.ModelProto, dict[str, tuple[float, float]]]:
    """Fold every Clip/Relu that follows a Conv into it (TFLite fused activation).

    The conv then writes the activation's output tensor, so tensor names stay those of the float
    graph. Returns the rewritten copy and ``{tensor: (lo, hi)}`` of the folded activation bounds.
    Identity nodes on activations are bypassed.
    """
    model = _copy(model)
    view = _View(model.graph, where)
    nodes = list(model.graph.node)
    bounds: dict[str, tuple[float, float]] = {}
    conv_out: dict[str, str] = {}  # conv output -> the folded activation's output
    alias: dict[str, str] = {}  # identity output -> its input
    drop = set()
    for i, node in enumerate(nodes):
        if node.op_type == "Identity" and node.input[0] not in view.consts:
            if node.output[0] in view.outputs:
                raise TinydetError(f"{where}: {node_label(node, i, len(nodes))}: a graph output made by Identity; "
                                   f"expected a computed tensor")
            alias[node.output[0]] = node.input[0]
            drop.add(i)
        if node.op_type not in ACTIVATIONS:
            continue
        src = node.input[0]
        prod = view.producer.get(src)
        if prod is None or prod.op_type != "Conv" or len(view.consumers.get(src, [])) != 1 or src in view.outputs:
            raise TinydetError(f"{where}: {node_label(node, i, len(nodes))}: an activation must directly follow a "
                               f"Conv whose output nothing else reads (TFLite fused activation)")
        lo, hi = _clip_bounds(view, node)
        if lo > 0 or hi <= 0:
            raise TinydetError(f"{where}: {node_label(node, i, len(nodes))}: clip range [{lo}, {hi}] cannot be "
                               f"fused; expected min <= 0 < max (ReLU, ReLU6)")
        bounds[node.output[0]] = (lo, hi)
        conv_out[src] = node.output[0]
        drop.add(i)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return conv_out.get(name, name)

    keep = []
    for i, node in enumerate(nodes):
        if i in drop:
            continue
        for j, name in enumerate(node.input):
            if name:
                node.input[j] = resolve(name)
        if node.op_type == "Conv" and node.output[0] in conv_out:
            node.output[0] = conv_out[node.output[0]]
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model, bounds


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def activation_tensors(model: onnx.ModelProto, where: str = "<model>") -> list[str]:
    """Names of the float activations that get their own quantization parameters (graph inputs
    and outputs of Conv/Add/pool/Gemm, after :func:`fuse_activations`), in graph order."""
    fused, _ = fuse_activations(model, where)
    view = _View(fused.graph, where)
    names = list(view.float_inputs)
    for node in fused.graph.node:
        if node.op_type in PRODUCERS:
            names.append(node.output[0])
    return names


def activation_params(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]],
                      image_inputs: Iterable[str] = ("input",), where: str = "<model>") -> dict[str, QParams]:
    """The activation table: ``{tensor: QParams}`` from calibrated (or QAT) real ranges.

    ``ranges`` are those of the float model's tensors (before activation folding, so a folded
    ReLU6 tensor's range is the clip's output range); folded activations clip the range to their
    bounds. ``image_inputs`` get the fixed input parameters (1/255, -128).
    """
    fused, bounds = fuse_activations(model, where)
    table: dict[str, QParams] = {}
    image_inputs = set(image_inputs)
    view = _View(fused.graph, where)
    for name in activation_tensors(model, where):
        prod = view.producer.get(name)
        if prod is not None and prod.op_type in SAME_PARAMS:
            # average / max pooling and nearest upsampling keep their input's scale and zero point
            # (TFLite, arm_avgpool_s8 / arm_max_pool_s8)
            table[name] = table[prod.input[0]]
            continue
        if name in image_inputs:
            table[name] = input_params()
            continue
        if name not in ranges:
            raise TinydetError(f"{where}: tensor '{name}' has no calibrated range; expected it among the "
                               f"{len(ranges)} calibrated tensors (was the calibration run on this model?)")
        lo, hi = ranges[name]
        if name in bounds:
            lo, hi = max(lo, bounds[name][0]), min(hi, bounds[name][1])
            hi = max(hi, lo)
        table[name] = params_from_range(lo, hi)
    return table


# --------------------------------------------------------------------------------------------
# the QDQ rewrite


def _init(inits: list, name: str, array: np.ndarray) -> str:
    inits.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def quantize_model(model: onnx.ModelProto, table: Mapping[str, QParams], where: str = "<model>") -> onnx.ModelProto:
    """Rewrite a float export model into QDQ form with the activation ``table``.

    Supported float ops: Conv (+ folded Clip/Relu), Add, Pad (constant, zero), GlobalAveragePool,
    Flatten, Gemm, MaxPool, nearest Resize (integer scale), channel Concat; nodes that do not touch activations (per-tile pad arithmetic) are kept as is.
    Anything else raises a :class:`TinydetError` naming the node and its place.
    """
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise TinydetError(f"{where}: opset {opset}; per-channel QDQ needs opset >= 13")
    fused, _ = fuse_activations(model, where)
    view = _View(fused.graph, where)
    nodes = list(fused.graph.node)
    inits: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    params: dict[str, QParams] = {}  # float activation name -> params (incl. pass-through tensors)
    outputs = set(view.outputs)

    def need(name: str) -> QParams:
        if name not in table:
            raise TinydetError(f"{where}: tensor '{name}' has no quantization parameters; expected it in the "
                               f"activation table (computed on full.onnx)")
        return table[name]

    qnames: dict[str, tuple[str, str]] = {}  # activation -> (scale, zero point) initializer names

    def maybe_output(name: str) -> None:
        if name in outputs:
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}/q", *qnames[name]], [name],
                                              name=f"{name}/dequantize"))

    def emit_q(name: str, src: str, p: QParams) -> None:
        """Quantize float ``src`` into ``name/q``; also dequantize into ``name`` if it is a graph output."""
        s = _init(inits, f"{name}/scale", np.array(p.scale, np.float32))
        z = _init(inits, f"{name}/zero_point", np.array(p.zero_point, np.int8))
        new_nodes.append(helper.make_node("QuantizeLinear", [src, s, z], [f"{name}/q"], name=f"{name}/quantize"))
        params[name], qnames[name] = p, (s, z)
        maybe_output(name)

    def alias_q(name: str, src: str) -> None:
        """``name`` is an int8 tensor with ``src``'s parameters (Pad, Flatten move data only)."""
        params[name], qnames[name] = params[src], qnames[src]
        maybe_output(name)

    def dq_for(name: str, consumer: str) -> str:
        """A dedicated DequantizeLinear of activation ``name`` for node ``consumer``."""
        if name not in params:
            raise TinydetError(f"{where}: node '{consumer}' reads '{name}', which is not a quantized activation")
        out = f"{name}/dq/{consumer}"
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}/q", *qnames[name]],
                                          [out], name=f"{name}/dequantize/{consumer}"))
        return out

    def emit_weight_and_bias(node, nname: str, label: str, w: np.ndarray, ws: np.ndarray) -> tuple[str, str]:
        """int8 per-output-channel weight (axis 0) and int32 bias (scale in_scale * w_scale) of a
        Conv/Gemm as initializers + DequantizeLinear; returns the two dequantized names."""
        p_in = params[node.input[0]]
        wname = node.input[1]
        _init(inits, f"{wname}/q", quantize_weight(w, ws))
        _init(inits, f"{wname}/scale", ws)
        _init(inits, f"{wname}/zero_point", np.zeros(w.shape[0], np.int8))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{wname}/q", f"{wname}/scale", f"{wname}/zero_point"],
                                          [f"{wname}/dq"], name=f"{wname}/dequantize", axis=0))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        b = view.const(node.input[2]) if has_bias else np.zeros(w.shape[0], np.float32)
        if b is None:
            raise TinydetError(f"{where}: {label}: the bias must be a constant")
        bname = node.input[2] if has_bias else f"{nname}.bias"
        _init(inits, f"{bname}/q", quantize_bias(b, p_in.scale, ws))
        _init(inits, f"{bname}/scale", bias_scales(p_in.scale, ws))
        _init(inits, f"{bname}/zero_point", np.zeros(w.shape[0], np.int32))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{bname}/q", f"{bname}/scale", f"{bname}/zero_point"],
                                          [f"{bname}/dq"], name=f"{bname}/dequantize", axis=0))
        return f"{wname}/dq", f"{bname}/dq"

    for name in view.float_inputs:
        emit_q(name, name, need(name))

    activations = set(view.float_inputs)
    for index, node in enumerate(nodes):
        label = node_label(node, index, len(nodes))
        reads = [n for n in node.input if n in activations]
        if not reads:
            new_nodes.append(node)  # pad arithmetic, constants
            continue
        nname = node.name or node.output[0]
        out = node.output[0]
        if node.op_type == "Conv":
            if node.input[0] not in activations or len(node.input) < 2 or view.const(node.input[1]) is None:
                raise TinydetError(f"{where}: {label}: expected Conv(activation, constant weight[, constant bias])")
            w = view.const(node.input[1]).astype(np.float32)
            wdq, bdq = emit_weight_and_bias(node, nname, label, w, weight_scales(w))
            conv = helper.make_node("Conv", [dq_for(node.input[0], nname), wdq, bdq], [f"{out}/raw"], name=nname)
            conv.attribute.extend(node.attribute)
            new_nodes.append(conv)
            emit_q(out, f"{out}/raw", need(out))
        elif node.op_type == "Add":
            if len(reads) != 2:
                raise TinydetError(f"{where}: {label}: expected an Add of two activations")
            ins = [dq_for(n, nname) for n in node.input]
            new_nodes.append(helper.make_node("Add", ins, [f"{out}/raw"], name=nname))
            emit_q(out, f"{out}/raw", need(out))
        elif node.op_type == "Pad":
            mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
            if mode not in (b"constant", "constant") or node.input[0] not in activations:
                raise TinydetError(f"{where}: {label}: only constant zero Pad of an activation can be quantized")
            if len(node.input) > 2 and node.input[2]:
                cv = view.const(node.input[2])
                if cv is None or float(np.asarray(cv).reshape(-1)[0]) != 0.0:
                    raise TinydetError(f"{where}: {label}: pad value must be the constant 0.0, got {cv!r}")
            if len(node.input) > 3 and node.input[3]:
                raise TinydetError(f"{where}: {label}: Pad with 'axes' is not supported; expected pads for all 4 axes")
            p = params[node.input[0]]
            z = _init(inits, f"{out}/pad_value", np.array(p.zero_point, np.int8))
            # pad the int8 tensor with its zero point: exactly the real 0.0 the float graph pads
            new_nodes.append(helper.make_node("Pad", [f"{node.input[0]}/q", node.input[1], z], [f"{out}/q"],
                                              name=nname, mode="constant"))
            alias_q(out, node.input[0])
        elif node.op_type == "GlobalAveragePool":
            new_nodes.append(helper.make_node("GlobalAveragePool", [dq_for(node.input[0], nname)], [f"{out}/raw"], name=nname))
            emit_q(out, f"{out}/raw", params[node.input[0]])
        elif node.op_type == "MaxPool":
            check_max_pool(node, f"{where}: {label}")
            new_nodes.append(_copy_node(node, [dq_for(node.input[0], nname)], f"{out}/raw"))
            emit_q(out, f"{out}/raw", params[node.input[0]])
        elif node.op_type == "Resize":
            upsample_scale(node, view.const, f"{where}: {label}")
            new_nodes.append(_copy_node(node, [dq_for(node.input[0], nname), *node.input[1:]], f"{out}/raw"))
            emit_q(out, f"{out}/raw", params[node.input[0]])
        elif node.op_type == "Concat":
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
            if axis not in (1, -3) or len(reads) != len(node.input):
                raise TinydetError(f"{where}: {label}: expected a channel Concat (axis 1) of activations")
            new_nodes.append(_copy_node(node, [dq_for(n, nname) for n in node.input], f"{out}/raw"))
            emit_q(out, f"{out}/raw", need(out))
        elif node.op_type == "Flatten":
            new_nodes.append(helper.make_node("Flatten", [f"{node.input[0]}/q"], [f"{out}/q"], name=nname, axis=1))
            alias_q(out, node.input[0])
        elif node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            w = view.const(node.input[1])
            if w is None or attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0 \
                    or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise TinydetError(f"{where}: {label}: expected Gemm(x, constant W[out, in], bias) with transB=1")
            w = w.astype(np.float32)
            # per-output-channel weight scales, as TFLite's converter quantizes FULLY_CONNECTED by
            # default (arm_fully_connected_per_channel_s8; Gemm's B is [out, in] with transB: the
            # output channel is axis 0, as for Conv)
            ws = weight_scales(w)
            wdq, bdq = emit_weight_and_bias(node, nname, label, w, ws)
            new_nodes.append(helper.make_node("Gemm", [dq_for(node.input[0], nname), wdq, bdq],
                                              [f"{out}/raw"], name=nname, transB=1))
            emit_q(out, f"{out}/raw", need(out))
        else:
            raise TinydetError(f"{where}: {label} cannot be quantized; expected Conv, Clip/Relu after a Conv, Add, "
                               f"Pad, GlobalAveragePool, Flatten, Gemm, MaxPool, nearest Resize or Concat")
        activations.add(out)

    used = {n for node in new_nodes for n in node.input}
    keep_inits = [t for t in fused.graph.initializer if t.name in used]
    graph = helper.make_graph(new_nodes, fused.graph.name + "-int8", list(fused.graph.input), list(fused.graph.output),
                              initializer=keep_inits + inits)
    out_model = helper.make_model(graph, opset_imports=list(fused.opset_import), producer_name="tinydet.quant")
    out_model.ir_version = fused.ir_version
    props = {p.key: p.value for p in fused.metadata_props}
    props["tinydet.quant"] = "qdq-int8"
    helper.set_model_props(out_model, props)
    onnx.checker.check_model(out_model)
    return out_model


def _copy_node(node: onnx.NodeProto, inputs: list[str], output: str) -> onnx.NodeProto:
    """``node`` with new inputs and output (attributes and name kept)."""
    out = helper.make_node(node.op_type, inputs, [output], name=node.name or node.output[0])
    out.attribute.extend(node.attribute)
    return out


def check_max_pool(node: onnx.NodeProto, where: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...]]:
    """(kernel, stride, pads) of a MaxPool that ``arm_max_pool_s8`` runs: 2-D, no dilation, floor mode,
    one output; anything else is refused naming the node."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    kernel = tuple(int(v) for v in a.get("kernel_shape", ()))
    strides = tuple(int(v) for v in a.get("strides", (1,) * len(kernel)))
    pads = tuple(int(v) for v in a.get("pads", (0,) * (2 * len(kernel))))
    auto_pad = a.get("auto_pad", b"NOTSET")
    if (len(kernel) != 2 or len(node.output) > 1 and node.output[1] or int(a.get("ceil_mode", 0)) != 0
            or any(int(d) != 1 for d in a.get("dilations", (1, 1))) or auto_pad not in (b"NOTSET", "NOTSET")):
        raise TinydetError(f"{where}: expected a 2-D MaxPool with explicit pads, floor mode, no dilation and no "
                           f"indices output (arm_max_pool_s8)")
    return (kernel[0], kernel[1]), (strides[0], strides[1]), pads


def _resize_source(out: int, scale: float, size_in: int, mode: str, nearest: str) -> int:
    """The input index ONNX Resize (nearest) reads for output index ``out`` on one axis."""
    size_out = int(np.floor(size_in * scale))
    if mode == "asymmetric":
        x = out / scale
    elif mode in ("half_pixel", "pytorch_half_pixel"):
        x = (out + 0.5) / scale - 0.5 if (mode == "half_pixel" or size_out > 1) else 0.0
    elif mode == "align_corners":
        x = out * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    else:
        return -1
    rounded = {"floor": np.floor(x), "ceil": np.ceil(x),
               "round_prefer_floor": np.ceil(x - 0.5), "round_prefer_ceil": np.floor(x + 0.5)}.get(nearest)
    return -1 if rounded is None else int(min(max(rounded, 0), size_in - 1))


def upsample_scale(node: onnx.NodeProto, const: Callable[[str], "np.ndarray | None"], where: str) -> tuple[int, int]:
    """The integer (h, w) factors of a nearest ``Resize`` that is ``out[y, x] = in[y // sh, x // sw]``
    (TFLite RESIZE_NEAREST_NEIGHBOR, ``upsample_nearest_s8``), from constant ``scales``; refused
    otherwise, naming the node. ``const``: a constant's value by name (None if not constant)."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    mode, coord = text(a.get("mode", "nearest")), text(a.get("coordinate_transformation_mode", "half_pixel"))
    nearest = text(a.get("nearest_mode", "round_prefer_floor"))
    scales = const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if mode != "nearest" or scales is None or len(node.input) > 3 and node.input[3]:
        raise TinydetError(f"{where}: expected a nearest Resize with constant scales (upsampling)")
    scales = np.asarray(scales, np.float64).reshape(-1)
    factors = [int(round(v)) for v in scales]
    if len(scales) != 4 or factors[:2] != [1, 1] or np.any(scales != factors) or min(factors) < 1:
        raise TinydetError(f"{where}: Resize scales {scales.tolist()}; expected [1, 1, sh, sw] with integer sh, sw")
    for f in factors[2:]:
        # every output index must read index // f, on any input size: checked over a few periods
        if any(_resize_source(o, float(f), 7, coord, nearest) != o // f for o in range(7 * f)):
            raise TinydetError(f"{where}: Resize coordinate_transformation_mode '{coord}' with nearest_mode "
                               f"'{nearest}' does not read input index out // {f}; expected e.g. asymmetric + floor")
    return factors[2], factors[3]


def table_to_json(table: Mapping[str, QParams]) -> dict:
    """The activation table as plain JSON (stored beside the int8 models for inspection)."""
    return {name: p.to_dict() for name, p in table.items()}
