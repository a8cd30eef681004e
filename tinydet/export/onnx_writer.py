"""Write the float ONNX graphs of the export folder from a :class:`FoldedGraph` (onnx.helper).

Tensor names are the arch graph's: the input is ``input`` and every op's output tensor carries
the op's name (``blocks.3.project``, ``heads.0.out``), so the full model, the two stages, the
quantizer and the C generator all talk about the same tensors. Internal tensors of one op are
``<op>/conv`` (before the activation or shortcut add), ``<op>/padded`` and ``<op>/shortcut``.

``stage1_patch.onnx`` runs one tile: its convolutions have padding 0 and each one with a kernel
larger than 1 is preceded by a ``Pad`` whose amounts are the per-tile int64 input
``<op>/pads`` (ONNX Pad order ``[0, 0, top, left, 0, 0, bottom, right]``; positive = zero rows
or columns added at the true image border, negative = rows or columns dropped). A fused shortcut
is cropped to the projection's output window by another ``Pad`` with input ``<op>/shortcut_pads``
(always <= 0). See docs/export_format.md.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinydet import __version__
from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.export.fold import FoldedGraph, check_exportable
from tinydet.geometry import Pads
from tinydet.schedule.memory import stage1_ops

OPSET = 17


def check_split(graph: Graph, split: int) -> None:
    """``split`` = number of backbone blocks run per tile (stem = 1): valid for the planner
    (:func:`tinydet.schedule.check_split`) and leaving stage 2 at least one op."""
    from tinydet.schedule.planner import check_split as plan_check_split

    plan_check_split(graph, split)
    if len(stage1_ops(graph, split)) == len(graph.ops):
        raise TinydetError(f"split: {split} leaves no op for stage 2 of arch {graph.arch} ({graph.mode}); "
                           f"expected at most {graph.num_blocks - 1}")


def split_tensor(graph: Graph, split: int) -> str:
    """Name of the stage-1 output (= stage-2 input) tensor."""
    return stage1_ops(graph, split)[-1].output


def tile_inputs(graph: Graph, split: int) -> list[tuple[str, str, str]]:
    """Per-tile int64[8] inputs of stage 1 in input order: (input name, op name, 'pads'|'shortcut_pads')."""
    out = []
    for op in stage1_ops(graph, split):
        if op.kind in ("conv", "dwconv") and op.kernel > 1:
            out.append((f"{op.name}/pads", op.name, "pads"))
        if op.add is not None:
            out.append((f"{op.name}/shortcut_pads", op.name, "shortcut_pads"))
    return out


class _Builder:
    """Accumulates nodes and initializers for one graph."""

    def __init__(self, folded: FoldedGraph):
        self.folded = folded
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def emit(self, op: Op, patched: bool) -> None:
        p = self.folded[op.name]
        x = op.inputs[0]
        if op.kind in ("conv", "dwconv"):
            pads = Pads.symmetric(op.padding)
            if patched and op.kernel > 1:
                self.nodes.append(helper.make_node("Pad", [x, f"{op.name}/pads"], [f"{op.name}/padded"],
                                                   name=f"{op.name}/pad", mode="constant"))
                x, pads = f"{op.name}/padded", Pads()
            post = op.add is not None or op.act == "relu6"
            self.nodes.append(helper.make_node(
                "Conv", [x, self.init(f"{op.name}.weight", p.weight), self.init(f"{op.name}.bias", p.bias)],
                [f"{op.name}/conv" if post else op.output], name=op.name,
                kernel_shape=[op.kernel, op.kernel], strides=[op.stride, op.stride], pads=pads.to_onnx(rank=2), group=op.groups,
                dilations=[1, 1]))
            y = f"{op.name}/conv"
        elif op.kind == "gap":
            self.nodes.append(helper.make_node("GlobalAveragePool", [x], [op.output], name=op.name))
            return
        elif op.kind in ("upsample", "maxpool", "add", "concat"):
            self.emit_neck(op)
            return
        else:  # fc
            self.nodes.append(helper.make_node("Flatten", [x], [f"{op.name}/flat"], name=f"{op.name}/flatten", axis=1))
            self.nodes.append(helper.make_node(
                "Gemm", [f"{op.name}/flat", self.init(f"{op.name}.weight", p.weight), self.init(f"{op.name}.bias", p.bias)],
                [op.output], name=op.name, transB=1))
            return
        if op.add is not None:
            shortcut = op.add
            if patched:
                self.nodes.append(helper.make_node("Pad", [shortcut, f"{op.name}/shortcut_pads"],
                                                   [f"{op.name}/shortcut"], name=f"{op.name}/crop", mode="constant"))
                shortcut = f"{op.name}/shortcut"
            self.nodes.append(helper.make_node("Add", [y, shortcut], [op.output], name=f"{op.name}/add"))
        elif op.act == "relu6":
            self.nodes.append(helper.make_node(
                "Clip", [y, self.init("relu6.min", np.array(0.0, np.float32)),
                         self.init("relu6.max", np.array(6.0, np.float32))], [op.output], name=f"{op.name}/relu6"))


    def emit_neck(self, op: Op) -> None:
        """The weightless neck ops: nearest x2 ``Resize`` (asymmetric, floor: PyTorch's and TFLite's
        nearest), 2x2 stride-2 ``MaxPool``, ``Add`` (``Sum`` for more than two inputs), ``Concat``."""
        ins = list(op.inputs)
        if op.kind == "upsample":
            scales = self.init("upsample.scales", np.array([1.0, 1.0, 2.0, 2.0], np.float32))
            node = helper.make_node("Resize", [ins[0], "", scales], [op.output], name=op.name, mode="nearest",
                                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        elif op.kind == "maxpool":
            node = helper.make_node("MaxPool", ins[:1], [op.output], name=op.name, kernel_shape=[2, 2],
                                    strides=[2, 2])
        elif op.kind == "add":
            node = helper.make_node("Add" if len(ins) == 2 else "Sum", ins, [op.output], name=op.name)
        else:
            node = helper.make_node("Concat", ins, [op.output], name=op.name, axis=1)
        self.nodes.append(node)


def _value_info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(folded: FoldedGraph, ops: list[Op], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           role: str, patched: bool, extra_meta: dict[str, str]) -> onnx.ModelProto:
    builder = _Builder(folded)
    for op in ops:
        builder.emit(op, patched)
    graph = helper.make_graph(builder.nodes, f"{folded.graph.arch}-{role}", inputs, outputs,
                              initializer=list(builder.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinydet", producer_version=__version__)
    model.ir_version = min(model.ir_version, 9)  # loadable by onnxruntime >= 1.16
    meta = {"tinydet.role": role, "tinydet.arch": folded.graph.arch, "tinydet.version": __version__, **extra_meta}
    helper.set_model_props(model, meta)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=not patched)
    return model


def _out_info(graph: Graph, name: str, batch: str = "batch") -> onnx.ValueInfoProto:
    c, h, w = graph.tensors[name].shape
    if graph.op(name).kind == "fc":
        return _value_info(name, [batch, c])
    return _value_info(name, [batch, c, h, w])


def full_model(folded: FoldedGraph) -> onnx.ModelProto:
    """The whole network: input ``input`` [batch, C, H, W] float in [0, 1], outputs ``graph.outputs``."""
    graph = folded.graph
    check_exportable(graph)
    c, h, w = graph.tensors[graph.input].shape
    return _model(folded, graph.ops, [_value_info(graph.input, ["batch", c, h, w])],
                  [_out_info(graph, name) for name in graph.outputs], "full", False, {})


def stage1_model(folded: FoldedGraph, split: int) -> onnx.ModelProto:
    """One tile of blocks 0..split-1: input ``input`` [batch, C, tile_h, tile_w] plus the per-tile
    int64[8] pad inputs of :func:`tile_inputs`; output the tile of the split tensor."""
    graph = folded.graph
    check_exportable(graph)
    check_split(graph, split)
    c = graph.tensors[graph.input].shape[0]
    inputs = [_value_info(graph.input, ["batch", c, "tile_h", "tile_w"])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.INT64, [8]) for name, _, _ in tile_inputs(graph, split)]
    out = split_tensor(graph, split)
    outputs = [_value_info(out, ["batch", graph.tensors[out].shape[0], "out_h", "out_w"])]
    return _model(folded, stage1_ops(graph, split), inputs, outputs, "stage1_patch", True, {"tinydet.split": str(split)})


def stage2_model(folded: FoldedGraph, split: int) -> onnx.ModelProto:
    """Everything after the split: input = the stitched split tensor [batch, C, H, W], outputs ``graph.outputs``."""
    graph = folded.graph
    check_exportable(graph)
    check_split(graph, split)
    name = split_tensor(graph, split)
    first = len(stage1_ops(graph, split))
    return _model(folded, graph.ops[first:], [_value_info(name, ["batch", *graph.tensors[name].shape])],
                  [_out_info(graph, n) for n in graph.outputs], "stage2", False, {"tinydet.split": str(split)})
