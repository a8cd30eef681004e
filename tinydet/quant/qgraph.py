"""Read an ``*.int8.onnx`` (QDQ form written by :mod:`tinydet.quant.qdq`) into an int8 op list.

This op list is the single source from which the numpy reference (:mod:`tinydet.quant.reference`)
and the C code generator work: integer weights in CMSIS-NN layouts, int32 biases, scales and zero
points, per-channel ``(mult, shift)`` from :func:`tinydet.quant.arith.quantize_multiplier`,
activation clamps, geometry and fused shortcut-add parameters. numpy + onnx only (no torch, no
onnxruntime): ``tinydet.deploy`` imports it.

Op kinds (``QOp.kind``), activations NHWC int8 named like the float graph's tensors:

* ``quantize``: float NCHW graph input -> int8 (``out_scale``/``out_zp``);
* ``pad``: int8 Pad / crop with the zero point; the amounts are ``padding`` (a constant Pad) or
  the runtime int64[8] input ``pads_input`` (ONNX order, read with ``Pads.from_onnx``; negative = crop);
* ``conv`` (weight OHWI) / ``dwconv`` (weight ``[1, KH, KW, C]``): ``padding``
  (:class:`tinydet.geometry.Pads`), ``stride`` (h, w); with ``add`` set, the shortcut add that follows the conv is fused:
  the conv result is requantized to ``add.conv_tensor``'s parameters, then added to
  ``add.shortcut`` with :func:`tinydet.quant.kernels.add_params` (``add.params``);
* ``add``: a stand-alone elementwise add (a neck's sum of two branches; inputs of different scales are
  rescaled as TFLite's ADD does, ``add.params``);
* ``maxpool`` (``kernel``, ``stride``, ``padding``; keeps scale and zero point), ``upsample`` (nearest,
  integer factors in ``scale``; keeps them), ``concat`` (channels; ``requant`` = one
  :class:`tinydet.quant.kernels.Requant` per input into the output's parameters);
* ``avgpool`` (global, keeps scale and zero point), ``flatten``, ``fc`` (weight ``[C_OUT, D]``);
* ``dequantize``: int8 -> float NCHW graph output.

ReLU6 is encoded in the output range (TFLite fused activation: range [0, <= 6], zero point -128), so
``act_min``/``act_max`` are the int8 limits [-128, 127]: clamping there is the ReLU6.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tinydet.errors import TinydetError
from tinydet.geometry import Pads
from tinydet.quant.arith import quantize_multiplier
from tinydet.quant.kernels import Requant, add_params
from tinydet.quant.params import QMAX, QMIN
from tinydet.quant.qdq import check_max_pool, upsample_scale


@dataclass
class QOp:
    """One int8 op. Tensor names are canonical (the float graph's names, without ``/q``)."""

    name: str
    kind: str
    inputs: list[str]
    output: str
    in_scale: list[float] = field(default_factory=list)
    in_zp: list[int] = field(default_factory=list)
    out_scale: float = 1.0
    out_zp: int = 0
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_scale: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    act_min: int = QMIN
    act_max: int = QMAX
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: Pads = field(default_factory=Pads)
    pads_input: str | None = None
    add: dict[str, Any] | None = None
    scale: tuple[int, int] = (1, 1)  # upsample factors (h, w)
    requant: list[Requant] = field(default_factory=list)  # concat: per input

    def summary(self) -> dict:
        """JSON-friendly description without the weight arrays."""
        out = {"name": self.name, "kind": self.kind, "inputs": self.inputs, "output": self.output,
               "in_scale": self.in_scale, "in_zp": self.in_zp, "out_scale": self.out_scale, "out_zp": self.out_zp,
               "act_min": self.act_min, "act_max": self.act_max}
        if self.kind in ("conv", "dwconv"):
            out.update(kernel=list(self.kernel), stride=list(self.stride), padding=self.padding.to_dict(),
                       weight_shape=list(self.weight.shape))
        if self.kind == "maxpool":
            out.update(kernel=list(self.kernel), stride=list(self.stride), padding=self.padding.to_dict())
        if self.kind == "upsample":
            out["scale"] = list(self.scale)
        if self.kind == "concat":
            out["requant"] = [vars(r) for r in self.requant]
        if self.pads_input:
            out["pads_input"] = self.pads_input
        if self.add:
            out["add"] = {k: v for k, v in self.add.items()}
        return out


@dataclass
class QGraph:
    """An int8 network: ops in execution order, float graph inputs/outputs, per-tile inputs."""

    ops: list[QOp]
    inputs: list[str]  # float graph inputs (quantized by a 'quantize' op)
    outputs: list[str]  # float graph outputs (made by 'dequantize' ops)
    pad_inputs: list[str]  # int64[8] per-tile inputs (stage1_patch)
    role: str = ""
    tensors: dict[str, tuple[float, int]] = field(default_factory=dict)  # int8 tensor -> (scale, zp)

    def op(self, name: str) -> QOp:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    def producer(self, tensor: str) -> QOp | None:
        for op in self.ops:
            if op.output == tensor:
                return op
        return None


def _canon(name: str) -> str:
    return name[:-2] if name.endswith("/q") else name


def layer_multipliers(in_scale: float, weight_scale: np.ndarray, out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mult, shift)`` of ``in_scale * weight_scale / out_scale`` (TFLite computes
    the effective scale in double from the float32 scales)."""
    real = (np.float64(np.float32(in_scale)) * np.asarray(weight_scale, np.float32).astype(np.float64)
            / np.float64(np.float32(out_scale)))
    mult, shift = quantize_multiplier(real)
    return mult.astype(np.int32), shift.astype(np.int32)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def load_qgraph(model: "onnx.ModelProto | str | Path") -> QGraph:
    """Parse a QDQ int8 model into a :class:`QGraph`; a file path or a loaded model."""
    where = str(model) if not isinstance(model, onnx.ModelProto) else "<int8 model>"
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model))
        except Exception as exc:  # onnx raises several types for unreadable / truncated files
            raise TinydetError(f"{where}: cannot read the int8 ONNX model ({exc})") from None
    g = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("tinydet.quant") != "qdq-int8":
        raise TinydetError(f"{where}: not a tinydet int8 model (metadata tinydet.quant = "
                           f"{props.get('tinydet.quant')!r}); expected one written by 'tinydet quantize'")

    # weights / biases: DequantizeLinear of an initializer
    const_dq: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    act_dq: dict[str, str] = {}  # float DQ output -> canonical int8 tensor
    qparams: dict[str, tuple[float, int]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in g.node:
        for o in node.output:
            producers[o] = node
    for node in g.node:
        if node.op_type == "DequantizeLinear":
            src, s, z = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else ""
            if src in consts:
                const_dq[node.output[0]] = (consts[src], consts[s], consts[z] if z else np.zeros_like(consts[s]))
            else:
                act_dq[node.output[0]] = _canon(src)
        if node.op_type == "QuantizeLinear":
            qparams[_canon(node.output[0])] = (float(consts[node.input[1]]), int(consts[node.input[2]]))

    def params_of(tensor: str) -> tuple[float, int]:
        # Pad / Flatten outputs carry their input's parameters
        while tensor not in qparams:
            node = producers.get(f"{tensor}/q")
            if node is None or node.op_type not in ("Pad", "Flatten"):
                raise TinydetError(f"{where}: int8 tensor '{tensor}' has no quantization parameters")
            tensor = _canon(node.input[0])
        return qparams[tensor]

    # Q nodes by their float input
    q_of: dict[str, onnx.NodeProto] = {n.input[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    float_inputs = [i.name for i in g.input if i.name not in consts and i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    pad_inputs = [i.name for i in g.input if i.name not in consts and i.type.tensor_type.elem_type == onnx.TensorProto.INT64]
    ops: list[QOp] = []
    for name in float_inputs:
        qn = q_of.get(name)
        if qn is None:
            raise TinydetError(f"{where}: graph input '{name}' is not quantized; expected a QuantizeLinear on it")
        s, z = params_of(name)
        ops.append(QOp(name=f"{name}/quantize", kind="quantize", inputs=[name], output=name, out_scale=s, out_zp=z))

    def out_of(node: onnx.NodeProto) -> str:
        raw = node.output[0]
        if raw not in q_of:
            raise TinydetError(f"{where}: node '{node.name}' ({node.op_type}) output '{raw}' is not quantized")
        return _canon(q_of[raw].output[0])

    def act_in(node: onnx.NodeProto, i: int) -> str:
        name = node.input[i]
        if name not in act_dq:
            raise TinydetError(f"{where}: node '{node.name}' ({node.op_type}) input {i} '{name}' is not a "
                               f"dequantized int8 activation")
        return act_dq[name]

    for node in g.node:
        t = node.op_type
        if t in ("QuantizeLinear", "DequantizeLinear", "Constant", "Identity"):
            continue
        if t == "Conv":
            a = _attrs(node)
            x = act_in(node, 0)
            w, ws, wz = const_dq[node.input[1]]
            if np.any(wz != 0):
                raise TinydetError(f"{where}: Conv '{node.name}': weight zero points must be 0 (symmetric)")
            b = const_dq[node.input[2]][0].astype(np.int32) if len(node.input) > 2 and node.input[2] else \
                np.zeros(w.shape[0], np.int32)
            group = int(a.get("group", 1))
            kh, kw = (int(v) for v in a.get("kernel_shape", w.shape[2:]))
            sh, sw = (int(v) for v in a.get("strides", [1, 1]))
            padding = Pads.from_onnx(a.get("pads", [0, 0, 0, 0]))
            if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
                raise TinydetError(f"{where}: Conv '{node.name}': dilation is not supported")
            out = out_of(node)
            s_in, z_in = params_of(x)
            s_out, z_out = params_of(out)
            ws = np.broadcast_to(np.asarray(ws, np.float32).reshape(-1), (w.shape[0],)).copy()
            mult, shift = layer_multipliers(s_in, ws, s_out)
            if group == 1:
                kind, weight = "conv", np.ascontiguousarray(w.transpose(0, 2, 3, 1))  # OIHW -> OHWI
            elif group == w.shape[0] and w.shape[1] == 1:
                kind, weight = "dwconv", np.ascontiguousarray(w.transpose(1, 2, 3, 0))  # [C,1,H,W] -> [1,H,W,C]
            else:
                raise TinydetError(f"{where}: Conv '{node.name}': grouped conv with {group} groups is not supported")
            ops.append(QOp(name=node.name, kind=kind, inputs=[x], output=out, in_scale=[s_in], in_zp=[z_in],
                           out_scale=s_out, out_zp=z_out, weight=weight.astype(np.int8), bias=b, weight_scale=ws,
                           mult=mult, shift=shift, kernel=(kh, kw), stride=(sh, sw), padding=padding))
        elif t == "Add":
            a_in, b_in = act_in(node, 0), act_in(node, 1)
            out = out_of(node)
            (s1, z1), (s2, z2), (so, zo) = params_of(a_in), params_of(b_in), params_of(out)
            ops.append(QOp(name=node.name, kind="add", inputs=[a_in, b_in], output=out, in_scale=[s1, s2],
                           in_zp=[z1, z2], out_scale=so, out_zp=zo,
                           add={"params": add_params(s1, z1, s2, z2, so, zo)}))
        elif t == "Pad":
            x = _canon(node.input[0])
            out = _canon(node.output[0])
            s, z = params_of(x)
            pads_name = node.input[1]
            op = QOp(name=node.name, kind="pad", inputs=[x], output=out, in_scale=[s], in_zp=[z], out_scale=s, out_zp=z)
            if pads_name in consts:
                op.padding = Pads.from_onnx(np.asarray(consts[pads_name]))
            else:
                op.pads_input = pads_name
            ops.append(op)
        elif t in ("MaxPool", "Resize"):
            x = act_in(node, 0)
            out = out_of(node)
            s, z = params_of(x)
            if params_of(out) != (s, z):
                raise TinydetError(f"{where}: {t} '{node.name}' changes scale/zero point; expected its input's")
            op = QOp(name=node.name, kind="maxpool" if t == "MaxPool" else "upsample", inputs=[x], output=out,
                     in_scale=[s], in_zp=[z], out_scale=s, out_zp=z)
            if t == "MaxPool":
                op.kernel, op.stride, pads = check_max_pool(node, f"{where}: MaxPool '{node.name}'")
                op.padding = Pads.from_onnx(pads)
            else:
                op.scale = upsample_scale(node, consts.get, f"{where}: Resize '{node.name}'")
            ops.append(op)
        elif t == "Concat":
            ins = [act_in(node, i) for i in range(len(node.input))]
            out = out_of(node)
            so, zo = params_of(out)
            ps = [params_of(x) for x in ins]
            ops.append(QOp(name=node.name, kind="concat", inputs=ins, output=out, in_scale=[p[0] for p in ps],
                           in_zp=[p[1] for p in ps], out_scale=so, out_zp=zo,
                           requant=[Requant.between(s, z, so, zo) for s, z in ps]))
        elif t == "GlobalAveragePool":
            x = act_in(node, 0)
            out = out_of(node)
            s, z = params_of(x)
            so, zo = params_of(out)
            if (so, zo) != (s, z):
                raise TinydetError(f"{where}: GlobalAveragePool '{node.name}' changes scale/zero point; "
                                   f"expected its input's (arm_avgpool_s8)")
            ops.append(QOp(name=node.name, kind="avgpool", inputs=[x], output=out, in_scale=[s], in_zp=[z],
                           out_scale=s, out_zp=z))
        elif t == "Flatten":
            x, out = _canon(node.input[0]), _canon(node.output[0])
            s, z = params_of(x)
            ops.append(QOp(name=node.name, kind="flatten", inputs=[x], output=out, in_scale=[s], in_zp=[z],
                           out_scale=s, out_zp=z))
        elif t == "Gemm":
            x = act_in(node, 0)
            w, ws, _ = const_dq[node.input[1]]
            b = const_dq[node.input[2]][0].astype(np.int32)
            out = out_of(node)
            s_in, z_in = params_of(x)
            so, zo = params_of(out)
            # one scale per output row (per channel) or a single one (per tensor, broadcast)
            ws = np.broadcast_to(np.asarray(ws, np.float32).reshape(-1), (w.shape[0],)).copy()
            mult, shift = layer_multipliers(s_in, ws, so)
            ops.append(QOp(name=node.name, kind="fc", inputs=[x], output=out, in_scale=[s_in], in_zp=[z_in],
                           out_scale=so, out_zp=zo, weight=np.asarray(w, np.int8), bias=b,
                           weight_scale=ws, mult=mult, shift=shift))
        else:
            raise TinydetError(f"{where}: node '{node.name}' ({t}) is not an int8 op this reader knows; expected "
                               f"Conv, Add, Pad, GlobalAveragePool, Flatten, Gemm, MaxPool, Resize, Concat in QDQ form")
    for o in g.output:
        if producers.get(o.name) is None or producers[o.name].op_type != "DequantizeLinear":
            raise TinydetError(f"{where}: graph output '{o.name}' is not a DequantizeLinear of an int8 tensor")
        src = _canon(producers[o.name].input[0])
        s, z = params_of(src)
        ops.append(QOp(name=f"{o.name}/dequantize", kind="dequantize", inputs=[src], output=o.name,
                       in_scale=[s], in_zp=[z], out_scale=s, out_zp=z))
    ops = _fuse_shortcut_adds(ops)
    tensors = {}
    for op in ops:
        if op.kind != "dequantize":
            tensors[op.output] = (op.out_scale, op.out_zp)
    return QGraph(ops=ops, inputs=float_inputs, outputs=[o.name for o in g.output], pad_inputs=pad_inputs,
                  role=props.get("tinydet.role", ""), tensors=tensors)


def _fuse_shortcut_adds(ops: list[QOp]) -> list[QOp]:
    """Fold ``conv -> add(shortcut)`` into the conv (DESIGN.md fused residual) when nothing else
    reads the conv's own output and the add is the conv op's own (it writes the tensor named after
    the conv, as the exporter's ``<op>/add`` does; a neck's ``add`` node of two branches stays a
    stand-alone add, where the plan has it). The fused op takes the add's place in the order, after
    whatever makes the shortcut (stage 1 crops it with a Pad after the conv)."""
    readers: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    by_output = {op.output: op for op in ops}
    fuse: dict[int, QOp] = {}  # id(add) -> conv
    for op in ops:
        if op.kind != "add":
            continue
        conv = next((by_output[n] for n in op.inputs if n in by_output and by_output[n].kind in ("conv", "dwconv")
                     and readers.get(n) == 1 and by_output[n] not in fuse.values()
                     and op.output == by_output[n].name), None)
        if conv is not None:
            fuse[id(op)] = conv
    fused_convs = {id(c) for c in fuse.values()}
    out: list[QOp] = []
    for op in ops:
        if id(op) in fused_convs:
            continue
        if id(op) in fuse:
            conv = fuse[id(op)]
            i = op.inputs.index(conv.output)
            shortcut = op.inputs[1 - i]
            # add_s8 is not symmetric in rounding; keep the graph's operand order
            conv.add = {"shortcut": shortcut, "conv_tensor": conv.output, "conv_scale": conv.out_scale,
                        "conv_zp": conv.out_zp, "shortcut_scale": op.in_scale[1 - i], "shortcut_zp": op.in_zp[1 - i],
                        "conv_first": i == 0, "params": op.add["params"], "add_name": op.name}
            conv.inputs = conv.inputs + [shortcut]
            conv.output = op.output
            conv.out_scale, conv.out_zp = op.out_scale, op.out_zp
            out.append(conv)
            continue
        out.append(op)
    return out
