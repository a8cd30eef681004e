"""Quantization-aware training with our own fake-quant modules (torch.ao.quantization is deprecated).

``prepare_qat(model, cfg)`` rewrites a network built by :func:`tinydet.arch.build` (or any module
that contains one) in place so that its forward simulates exactly the int8 graph that
``tinydet quantize`` writes (TFLite conventions, see :mod:`tinydet.quant.qdq`):

* the input is fake-quantized with scale 1/255, zero point -128;
* every conv-BN-act layer runs with BatchNorm folded into the weights (running statistics, frozen
  during QAT: gamma and beta still learn), the folded weights fake-quantized per output channel
  (symmetric, [-127, 127]), the activation (ReLU6 clip included) fake-quantized per tensor with an
  EMA min/max observer;
* a residual block fake-quantizes its projection's output and the sum separately;
* a neck's ``add`` / ``concat`` results get their own observer (``neck_fq.<node>``), applied where
  the result is read (the next conv / inverted residual / head: the int8 graph quantizes the sum and
  the concatenation, and requantizes a concat's inputs into its parameters); upsampling and max
  pooling keep their input's parameters, so they need none.

Gradients use the straight-through estimator (zero outside the clipping range of activations).
The modules keep the attribute names ``conv``, ``bn``, ``act`` of
:class:`tinydet.arch.modules.ConvBNAct`, so :func:`tinydet.export.fold_network` exports a QAT
model unchanged.

How the learned ranges reach the QDQ export: the observers' ``lo``/``hi`` are buffers, so they are
in the model's ``state_dict`` and hence in every checkpoint. ``ranges_from_state_dict`` (and
``ranges_from_checkpoint``) map them to the export's tensor names (``blocks.3.expand``,
``blocks.3.project/conv`` for a projection before its shortcut add, ``blocks.3.project`` for the
sum); ``tinydet quantize out/NAME --qat CKPT`` uses them instead of calibration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from tinydet.errors import TinydetError
from tinydet.quant.params import QMAX, QMIN, WEIGHT_QMAX, params_from_range

EMA_MOMENTUM = 0.01  # weight of a new batch in the running min/max (PyTorch's moving-average observer)
OBSERVER = "out_fq"
ADD_OBSERVER = "add_fq"
NECK_OBSERVERS = "neck_fq"  # a ModuleDict of the neck's add / concat observers, by node name
NECK_QUANTIZED = ("add", "concat")  # weightless neck ops whose result has its own int8 parameters


def _qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) tensors of the observed range [lo, hi]: exactly the parameters the export
    will write (:func:`tinydet.quant.params.params_from_range`, one rule for both)."""
    p = params_from_range(float(lo), float(hi))
    return (torch.tensor(p.scale, dtype=lo.dtype, device=lo.device),
            torch.tensor(float(p.zero_point), dtype=lo.dtype, device=lo.device))


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize with a clipped straight-through gradient."""
    q = torch.clamp(torch.round(x / scale) + zp, QMIN, QMAX)
    y = (q - zp) * scale
    inside = ((x / scale + zp) >= QMIN - 0.5) & ((x / scale + zp) <= QMAX + 0.5)
    return y.detach() + (x - x.detach()) * inside


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 weights ([-127, 127]) with a straight-through gradient."""
    amax = w.detach().abs().flatten(1).amax(dim=1)
    scale = torch.where(amax > 0, amax / float(WEIGHT_QMAX), torch.ones_like(amax)).view(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale
    return w + (q - w).detach()


class ActFakeQuant(nn.Module):
    """Per-tensor activation fake quant with an EMA min/max observer (updated in training mode).

    ``fixed=(scale, zp)`` pins the parameters (the network input); ``bounds`` clips the observed
    range (ReLU6 -> [0, 6]) as the fused activation does."""

    def __init__(self, bounds: tuple[float, float] | None = None, fixed: tuple[float, int] | None = None):
        super().__init__()
        self.bounds = bounds
        self.fixed = fixed
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            s, z = self.fixed
            return fake_quant(x, torch.tensor(s, dtype=x.dtype, device=x.device),
                              torch.tensor(float(z), dtype=x.dtype, device=x.device))
        if self.training:
            with torch.no_grad():
                lo, hi = x.detach().min(), x.detach().max()
                if self.bounds is not None:
                    lo, hi = lo.clamp(min=self.bounds[0]), hi.clamp(max=self.bounds[1])
                if bool(self.initialized):
                    self.lo.mul_(1 - EMA_MOMENTUM).add_(EMA_MOMENTUM * lo)
                    self.hi.mul_(1 - EMA_MOMENTUM).add_(EMA_MOMENTUM * hi)
                else:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.initialized.fill_(True)
        if not bool(self.initialized):
            return x  # nothing observed yet (eval before any training step): pass through
        scale, zp = _qparams(self.lo, self.hi)
        return fake_quant(x, scale, zp)

    def extra_repr(self) -> str:
        return f"lo={float(self.lo):.4g}, hi={float(self.hi):.4g}, bounds={self.bounds}, fixed={self.fixed}"


class QATConvBNAct(nn.Module):
    """A :class:`ConvBNAct` run as the int8 graph runs it: BN folded (running statistics),
    per-channel fake-quantized weights, fake-quantized output (after the activation)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = layer.conv, layer.bn, layer.act
        relu6 = isinstance(self.act, nn.ReLU6)
        self.out_fq = ActFakeQuant(bounds=(0.0, 6.0) if relu6 else None)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) with BatchNorm folded in, as tinydet.export.fold_network computes them."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
        if isinstance(self.bn, nn.BatchNorm2d):
            scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            w = w * scale.view(-1, 1, 1, 1)
            b = (b - self.bn.running_mean) * scale + self.bn.bias
        return w, b

    def forward(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        w, b = self.folded()
        c = self.conv
        if pad is None:
            y = F.conv2d(x, fake_quant_weight(w), b, c.stride, c.padding, c.dilation, c.groups)
        else:
            if any(pad):
                x = F.pad(x, tuple(pad))
            y = F.conv2d(x, fake_quant_weight(w), b, c.stride, 0, c.dilation, c.groups)
        return self.out_fq(self.act(y))

    def train(self, mode: bool = True) -> "QATConvBNAct":
        super().train(mode)
        if isinstance(self.bn, nn.BatchNorm2d):
            self.bn.eval()  # frozen statistics: the folded weights the int8 graph gets
        return self


def _find_network(model: nn.Module) -> nn.Module:
    from tinydet.arch.modules import Network

    if isinstance(model, Network):
        return model
    for module in model.modules():
        if isinstance(module, Network):
            return module
    raise TinydetError(f"prepare_qat: {type(model).__name__} contains no tinydet.arch Network; expected a model "
                       f"built by tinydet.arch.build")


def _add_hook(block: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return getattr(block, ADD_OBSERVER)(output)


def _input_hook(net: nn.Module, args: tuple) -> tuple:
    return (net.input_fq(args[0]),) + tuple(args[1:])


def _prepare_neck(net: nn.Module) -> None:
    """Observers for the neck's add / concat results, applied by forward pre-hooks on the modules
    that read them (each such result is read by conv-like nodes or heads only; a weightless reader
    would see the unquantized value, so it is refused, naming the node)."""
    from functools import partial

    neck_spec = getattr(net.spec, "neck", None)
    if getattr(net, "neck", None) is None or neck_spec is None:
        return
    quantized = [n.name for n in neck_spec.nodes if n.type in NECK_QUANTIZED]
    if not quantized:
        return
    readers: dict[str, list[nn.Module]] = {name: [] for name in quantized}
    for node in neck_spec.nodes:
        for src in node.inputs:
            if src in readers:
                if node.name not in net.neck:
                    raise TinydetError(f"prepare_qat: neck node '{node.name}' ({node.type}) reads '{src}' "
                                       f"({next(n.type for n in neck_spec.nodes if n.name == src)}); QAT expects "
                                       f"an add / concat result to be read by conv or mbconv nodes or a head")
                readers[src].append(net.neck[node.name])
    for j, name in enumerate(neck_spec.outputs):
        if name in readers:
            if net.heads is None:
                raise TinydetError(f"prepare_qat: neck output '{name}' is an add / concat with no head to read it")
            readers[name].append(net.heads[j])
    observers = nn.ModuleDict({name: ActFakeQuant() for name in quantized})
    net.add_module(NECK_OBSERVERS, observers)
    for name, modules in readers.items():
        for module in modules:
            module.register_forward_pre_hook(partial(_neck_input_hook, observers[name]))


def _neck_input_hook(observer: nn.Module, module: nn.Module, args: tuple) -> tuple:
    return (observer(args[0]),) + tuple(args[1:])


def prepare_qat(model: nn.Module, cfg: Mapping | None = None) -> nn.Module:
    """Insert fake quantization into ``model`` (in place; returned for chaining).

    Every :class:`ConvBNAct` of the Network becomes a :class:`QATConvBNAct`, residual blocks get
    an observer on their sum, and the network input is fake-quantized with (1/255, -128).
    ``cfg`` (the experiment config) is accepted for the training loop's call signature; the
    quantization scheme itself is fixed by the export conventions. Calling it twice is an error.
    """
    from tinydet.arch.modules import ConvBNAct, InvertedResidual
    from tinydet.quant.params import input_params

    net = _find_network(model)
    if getattr(net, "_tinydet_qat", False):
        raise TinydetError("prepare_qat: the model is already prepared for QAT")
    targets = [(name, m) for name, m in net.named_modules() if isinstance(m, ConvBNAct)]
    if not targets:
        raise TinydetError("prepare_qat: the network has no conv layers to quantize")
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, QATConvBNAct(layer))
    for module in net.modules():
        if isinstance(module, InvertedResidual) and module.use_res:
            module.add_module(ADD_OBSERVER, ActFakeQuant())
            module.register_forward_hook(_add_hook)
    _prepare_neck(net)
    p = input_params()
    net.input_fq = ActFakeQuant(fixed=(p.scale, p.zero_point))
    net.register_forward_pre_hook(_input_hook)
    net._tinydet_qat = True
    net.train(net.training)  # re-apply: BN statistics frozen
    return model


def ranges_from_state_dict(state: Mapping[str, torch.Tensor], where: str = "state_dict") -> dict[str, tuple[float, float]]:
    """Map the QAT observers of a state dict to export tensor names: ``{tensor: (lo, hi)}``.

    ``<layer>.out_fq`` is the layer's output, except a projection followed by a shortcut add,
    whose own output is ``<layer>/conv`` and whose block's ``add_fq`` is ``<layer>`` (the sum);
    ``neck_fq.<node>`` is the neck node's result ``neck.<node>``. Any prefix before the Network
    (``model.``, ``net.``) is dropped.
    """
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    init: dict[str, bool] = {}
    for key, value in state.items():
        for suffix, store in ((".lo", lo), (".hi", hi), (".initialized", init)):
            if key.endswith(suffix) and (f".{OBSERVER}" in key or f".{ADD_OBSERVER}" in key
                                         or key.startswith(f"{NECK_OBSERVERS}.") or f".{NECK_OBSERVERS}." in key):
                path = key[: -len(suffix)]
                store[path] = float(value) if suffix != ".initialized" else bool(value)
    if not lo:
        raise TinydetError(f"{where}: no QAT ranges (no '*.{OBSERVER}.lo' entries); expected a checkpoint "
                           f"trained with quant.qat=true")
    ranges: dict[str, tuple[float, float]] = {}
    adds = {}
    for path in lo:
        if not init.get(path, True):
            continue
        module, _, kind = path.rpartition(".")
        module = _strip_prefix(module)
        if module == NECK_OBSERVERS:
            ranges[f"neck.{kind}"] = (lo[path], hi[path])
        elif kind == ADD_OBSERVER:
            adds[module] = (lo[path], hi[path])
        else:
            ranges[module] = (lo[path], hi[path])
    for block, rng in adds.items():
        project = f"{block}.project"
        if project not in ranges:
            raise TinydetError(f"{where}: residual block '{block}' has an add observer but no '{project}' layer")
        ranges[f"{project}/conv"] = ranges.pop(project)
        ranges[project] = rng
    return ranges


def _strip_prefix(path: str) -> str:
    """``model.net.blocks.3.dw`` -> ``blocks.3.dw`` (op names start at blocks/neck/heads/classifier)."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part in ("blocks", "neck", NECK_OBSERVERS, "heads", "classifier"):
            return ".".join(parts[i:])
    return path


def qat_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """The learned ranges of a prepared model, by export tensor name."""
    return ranges_from_state_dict(_find_network(model).state_dict(), type(model).__name__)


def ranges_from_checkpoint(path: "str | Path") -> dict[str, tuple[float, float]]:
    """The learned QAT ranges stored in a checkpoint (Lightning ``state_dict`` or a bare one); the
    EMA copy's observers when the checkpoint has an EMA model, the same weights export uses."""
    from tinydet.io.checkpoint import load_torch_file, model_state

    ckpt = load_torch_file(path, "QAT checkpoint")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, Mapping):
        raise TinydetError(f"{path}: expected a checkpoint with a state_dict, got {type(ckpt).__name__}")
    return ranges_from_state_dict(model_state(state), str(path))
