"""Fold a trained network into plain float32 numpy weights (BN folded into the convolutions).

The result, :class:`FoldedGraph`, is the torch-free view of a network that every writer of the
export folder reads: the arch op list (:func:`tinydet.arch.lower`) plus, per op, the weight
(OIHW for convolutions, [out, in] for the classifier), the bias, the activation and the fused
shortcut. ``run_folded`` executes it in numpy, which checks the folding without onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError

KINDS = ("conv", "dwconv", "gap", "fc", "upsample", "maxpool", "add", "concat")
WEIGHTLESS = ("gap", "upsample", "maxpool", "add", "concat")
ACTS = ("relu6", "none")


@dataclass
class FoldedOp:
    """One op's deployable parameters: ``weight`` (OIHW, or [out, in] for fc) and ``bias`` float32."""

    op: Op
    weight: np.ndarray | None
    bias: np.ndarray | None


@dataclass
class FoldedGraph:
    """The arch graph plus folded parameters, keyed by op name (execution order = ``graph.ops``)."""

    graph: Graph
    params: dict[str, FoldedOp] = field(default_factory=dict)

    def __getitem__(self, name: str) -> FoldedOp:
        return self.params[name]


def where(graph: Graph, op: Op) -> str:
    """Human-readable place of ``op`` in the network, for error messages."""
    place = (f"block {op.block}" if op.block >= 0 else "head" if op.name.startswith("heads.")
             else "neck" if op.name.startswith("neck.") else "classifier")
    index = graph.ops.index(op) if op in graph.ops else -1
    return f"op '{op.name}' ({op.kind}, {op.role}, {place}, layer {index} of {len(graph.ops)} in arch {graph.arch})"


def check_exportable(graph: Graph) -> None:
    """Raise a one-line :class:`TinydetError` for the first op the export cannot represent."""
    for op in graph.ops:
        at = where(graph, op)
        if op.kind not in KINDS:
            raise TinydetError(f"{at}: op kind '{op.kind}' cannot be exported; expected one of {', '.join(KINDS)}")
        if op.act not in ACTS:
            raise TinydetError(f"{at}: activation '{op.act}' cannot be exported; expected one of {', '.join(ACTS)}")
        if op.kind in ("conv", "dwconv"):
            if op.kernel % 2 == 0:
                raise TinydetError(f"{at}: kernel {op.kernel} is even; the export needs odd kernels "
                                   f"(symmetric 'same' zero padding)")
            if op.padding != (op.kernel - 1) // 2:
                raise TinydetError(f"{at}: padding {op.padding} with kernel {op.kernel}; the export expects "
                                   f"(kernel-1)/2 = {(op.kernel - 1) // 2}")
            if op.stride not in (1, 2):
                raise TinydetError(f"{at}: stride {op.stride}; the export expects 1 or 2")
            if op.kind == "dwconv" and not (op.groups == op.in_shape[0] == op.out_shape[0]):
                raise TinydetError(f"{at}: depthwise conv with groups {op.groups}, {op.in_shape[0]} -> "
                                   f"{op.out_shape[0]} channels; expected groups = in = out channels")
            if op.kind == "conv" and op.groups != 1:
                raise TinydetError(f"{at}: grouped conv (groups {op.groups}) cannot be exported; expected 1")
        if op.add is not None:
            if op.add not in graph.tensors or graph.tensors[op.add].shape != op.out_shape:
                shape = graph.tensors[op.add].shape if op.add in graph.tensors else None
                raise TinydetError(f"{at}: shortcut '{op.add}' of shape {shape} cannot be added to an output "
                                   f"of shape {op.out_shape}")
            if op.act != "none":
                raise TinydetError(f"{at}: a fused shortcut needs a linear ('none') activation, got '{op.act}'")
        if op.kind in ("add", "concat"):
            shapes = [graph.tensors[t].shape for t in op.inputs]
            if len(shapes) < 2 or len({s[1:] for s in shapes}) > 1 or (op.kind == "add" and len(set(shapes)) > 1):
                raise TinydetError(f"{at}: inputs {list(op.inputs)} of shapes {shapes} cannot be {op.kind}ed")


def _find_root(model, names: list[str]):
    """The submodule whose paths equal the op names (the model itself, or a wrapped Network)."""
    for _, module in model.named_modules():
        try:
            for name in names:
                module.get_submodule(name)
        except AttributeError:
            continue
        return module
    raise TinydetError(f"model {type(model).__name__}: no submodule has the layers of the architecture "
                       f"(looked for '{names[0]}' ... '{names[-1]}'); the checkpoint does not match the config's arch")


def _fold_conv(graph: Graph, op: Op, module) -> FoldedOp:
    import torch
    from torch import nn

    at = where(graph, op)
    conv = getattr(module, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        raise TinydetError(f"{at}: expected a conv-BN-act module with a Conv2d, got {type(module).__name__}")
    expected = (op.out_shape[0], op.in_shape[0] // op.groups, op.kernel, op.kernel)
    if tuple(conv.weight.shape) != expected or conv.stride != (op.stride, op.stride) or conv.groups != op.groups:
        raise TinydetError(f"{at}: module weight {tuple(conv.weight.shape)} stride {conv.stride} groups {conv.groups} "
                           f"does not match the architecture's {expected} stride {op.stride} groups {op.groups}; "
                           f"the checkpoint does not match the config's arch")
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise TinydetError(f"{at}: dilation {conv.dilation} / padding mode '{conv.padding_mode}' cannot be exported; "
                           f"expected dilation 1 and zero padding")
    act = getattr(module, "act", nn.Identity())
    act_kind = "relu6" if isinstance(act, nn.ReLU6) else "none" if isinstance(act, nn.Identity) else type(act).__name__
    if act_kind != op.act:
        raise TinydetError(f"{at}: module activation {act_kind} does not match the architecture's '{op.act}'")
    with torch.no_grad():
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        bn = getattr(module, "bn", None)
        if isinstance(bn, nn.BatchNorm2d):
            if bn.running_mean is None or bn.running_var is None:
                raise TinydetError(f"{at}: BatchNorm without running statistics cannot be folded")
            gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(b)
            beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(b)
            scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.double()) * scale + beta
        elif bn is not None and not isinstance(bn, nn.Identity):
            raise TinydetError(f"{at}: normalisation {type(bn).__name__} cannot be folded; expected BatchNorm2d")
    return FoldedOp(op, w.float().numpy().copy(), b.float().numpy().copy())


def fold_network(model, graph: Graph) -> FoldedGraph:
    """Fold ``model`` (a :class:`tinydet.arch.modules.Network` or a module wrapping one) for ``graph``.

    Every conv gets its BatchNorm folded in (in float64, stored as float32); the fc keeps its
    weight and bias; ``gap`` and the neck's upsample / maxpool / add / concat have no parameters. Module/graph mismatches raise TinydetError.
    """
    from torch import nn

    check_exportable(graph)
    root = _find_root(model, [op.name for op in graph.ops if op.kind not in WEIGHTLESS])
    folded = FoldedGraph(graph)
    for op in graph.ops:
        if op.kind in ("conv", "dwconv"):
            folded.params[op.name] = _fold_conv(graph, op, root.get_submodule(op.name))
        elif op.kind == "fc":
            fc = root.get_submodule(op.name)
            if not isinstance(fc, nn.Linear) or tuple(fc.weight.shape) != (op.out_shape[0], op.in_shape[0]):
                raise TinydetError(f"{where(graph, op)}: expected Linear({op.in_shape[0]}, {op.out_shape[0]}), "
                                   f"got {fc}")
            bias = fc.bias.detach().float().numpy().copy() if fc.bias is not None else np.zeros(op.out_shape[0], np.float32)
            folded.params[op.name] = FoldedOp(op, fc.weight.detach().float().numpy().copy(), bias)
        else:
            folded.params[op.name] = FoldedOp(op, None, None)
    return folded


def conv2d_numpy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, padding: int,
                 groups: int) -> np.ndarray:
    """Float conv of NCHW ``x`` with OIHW ``weight`` (plain numpy, float64 accumulation)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = weight.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    c_in = x.shape[1] // groups
    c_out = weight.shape[0] // groups
    outs = []
    for g in range(groups):
        w = weight[g * c_out:(g + 1) * c_out].astype(np.float64)
        outs.append(np.einsum("nchwij,ocij->nohw", win[:, g * c_in:(g + 1) * c_in], w, optimize=True))
    return (np.concatenate(outs, axis=1) + bias.astype(np.float64)[None, :, None, None]).astype(np.float32)


def neck_numpy(kind: str, inputs: list[np.ndarray]) -> np.ndarray:
    """The weightless neck ops on NCHW float arrays: nearest x2, 2x2/2 max-pool (floor), sum, concat."""
    x = inputs[0]
    if kind == "upsample":
        return x.repeat(2, axis=2).repeat(2, axis=3)
    if kind == "maxpool":
        n, c, h, w = x.shape
        x = x[:, :, : h // 2 * 2, : w // 2 * 2]
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    if kind == "add":
        return np.sum(np.stack(inputs), axis=0, dtype=np.float32)
    return np.concatenate(inputs, axis=1)


def run_folded(folded: FoldedGraph, images: np.ndarray) -> list[np.ndarray]:
    """Run the folded network in numpy on NCHW float ``images``; returns ``graph.outputs`` in order."""
    graph = folded.graph
    values: dict[str, np.ndarray] = {graph.input: np.asarray(images, np.float32)}
    for op in graph.ops:
        x = values[op.inputs[0]]
        p = folded[op.name]
        if op.kind in ("conv", "dwconv"):
            y = conv2d_numpy(x, p.weight, p.bias, op.stride, op.padding, op.groups)
        elif op.kind == "gap":
            y = x.mean(axis=(2, 3), keepdims=True)
        elif op.kind in ("upsample", "maxpool", "add", "concat"):
            y = neck_numpy(op.kind, [values[t] for t in op.inputs])
        else:
            y = (x.reshape(x.shape[0], -1) @ p.weight.T + p.bias).astype(np.float32)
        if op.add is not None:
            y = y + values[op.add]
        if op.act == "relu6":
            y = np.clip(y, 0.0, 6.0)
        values[op.output] = y
    return [values[name] for name in graph.outputs]
