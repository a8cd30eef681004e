"""torchvision and timm MobileNetV2 modules -> :class:`tinydet.zoo.convert.SourceNet`.

The walkers read the module tree (not the library's name for it), so any width or depth of the
family imports; each conv is checked to be what a tinydet block computes (zero 'same' padding,
no dilation, no bias, BatchNorm2d after it, ReLU6 or nothing after that) and anything else is
refused naming the module and the feature (SE, h-swish, GroupNorm, weight standardisation, ...).
"""
from __future__ import annotations

from tinydet.arch.spec import BlockSpec
from tinydet.errors import TinydetError
from tinydet.zoo.convert import SourceBlock, SourceLayer, SourceNet


def _feature(module) -> str:
    """A readable name for a module the spec cannot represent."""
    name = type(module).__name__
    if "StdConv" in name or "WeightStandard" in name:
        return f"weight standardisation ({name})"
    if name in ("Hardswish", "HardSwish", "Hswish"):
        return "h-swish"
    if name in ("SqueezeExcite", "SEModule", "SqueezeExcitation", "EffectiveSEModule"):
        return f"SE (squeeze-excitation, {name})"
    if "GroupNorm" in name:
        return f"GroupNorm ({name})"
    return name


def check_conv(conv, where: str):
    """A plain Conv2d with zero 'same' padding, no dilation and no bias."""
    from torch import nn

    if type(conv) is not nn.Conv2d:
        raise TinydetError(f"{where}: {_feature(conv)} is not supported; expected a plain Conv2d")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or k % 2 == 0:
        raise TinydetError(f"{where}: kernel {conv.kernel_size} is not supported; expected a square odd kernel")
    if conv.padding != ((k - 1) // 2,) * 2 or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise TinydetError(f"{where}: padding {conv.padding} ({conv.padding_mode}), dilation {conv.dilation} is not "
                           f"supported; expected symmetric zero padding {(k - 1) // 2} and no dilation")
    if conv.bias is not None:
        raise TinydetError(f"{where}: a conv bias before BatchNorm is not supported")
    return conv


def check_bn(bn, where: str) -> float:
    """A BatchNorm2d with running statistics; returns its eps."""
    from torch import nn

    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or not bn.affine:
        raise TinydetError(f"{where}: {_feature(bn)} is not supported; expected an affine BatchNorm2d with "
                           f"running statistics")
    return float(bn.eps)


def check_act(act, relu6: bool, where: str) -> None:
    from torch import nn

    ok = isinstance(act, nn.ReLU6) if relu6 else isinstance(act, nn.Identity)
    if not ok:
        raise TinydetError(f"{where}: activation {_feature(act)} is not supported; expected "
                           f"{'ReLU6' if relu6 else 'none (a linear projection)'}")


def _one_eps(eps: list[float], where: str) -> float:
    if len(set(eps)) != 1:
        raise TinydetError(f"{where}: BatchNorm eps differs between layers ({sorted(set(eps))}); the spec has "
                           f"one eps per network")
    return eps[0]


def _mb(c_in: int, hidden: int, dw, project, residual: bool, where: str) -> BlockSpec:
    if hidden % c_in:
        raise TinydetError(f"{where}: fractional expand ratio {hidden}/{c_in} is not supported; "
                           f"expected an integer")
    if dw.groups != hidden or dw.in_channels != hidden:
        raise TinydetError(f"{where}: expected a depthwise conv over {hidden} channels, got groups {dw.groups}")
    return BlockSpec("mbconv", project.out_channels, kernel=dw.kernel_size[0], stride=dw.stride[0],
                     expand=hidden // c_in, residual=residual)


def torchvision_mobilenet_v2(model, name: str, mean, std) -> SourceNet:
    """torchvision.models.MobileNetV2 (any width_mult / round_nearest)."""
    from torch import nn

    if type(model).__name__ != "MobileNetV2" or not isinstance(getattr(model, "features", None), nn.Sequential):
        raise TinydetError(f"torchvision {name}: {type(model).__name__} networks are not supported; expected "
                           f"torchvision's MobileNetV2")
    eps, blocks = [], []
    features = list(model.features.named_children())
    for index, (key, module) in enumerate(features):
        where = f"{name}: features.{key}"
        p = f"features.{key}"
        if type(module).__name__ == "InvertedResidual":
            seq = list(module.conv)
            expand = len(seq) == 4
            if len(seq) not in (3, 4):
                raise TinydetError(f"{where}: unexpected InvertedResidual layout ({len(seq)} modules)")
            layers, convs = [], []
            for j, unit in enumerate(seq[:-2]):  # Conv2dNormActivation (expand, depthwise)
                convs.append(check_conv(unit[0], f"{where}.conv.{j}.0"))
                eps.append(check_bn(unit[1], f"{where}.conv.{j}.1"))
                check_act(unit[2], True, f"{where}.conv.{j}.2")
                layers.append(SourceLayer(f"{p}.conv.{j}.0", f"{p}.conv.{j}.1"))
            n = len(seq) - 2
            project = check_conv(seq[n], f"{where}.conv.{n}")
            eps.append(check_bn(seq[n + 1], f"{where}.conv.{n + 1}"))
            layers.append(SourceLayer(f"{p}.conv.{n}", f"{p}.conv.{n + 1}"))
            c_in = convs[0].in_channels
            hidden = convs[0].out_channels if expand else c_in
            block = _mb(c_in, hidden, convs[-1], project, bool(module.use_res_connect), where)
            blocks.append(SourceBlock(block, tuple(layers), f"features.{key}"))
        else:  # Conv2dNormActivation: the stem or the last 1x1 conv
            conv = check_conv(module[0], f"{where}.0")
            eps.append(check_bn(module[1], f"{where}.1"))
            check_act(module[2], True, f"{where}.2")
            if conv.groups != 1:
                raise TinydetError(f"{where}: grouped conv is not supported here")
            blocks.append(SourceBlock(BlockSpec("conv", conv.out_channels, kernel=conv.kernel_size[0],
                                                stride=conv.stride[0]),
                                      (SourceLayer(f"{p}.0", f"{p}.1"),), f"features.{key}"))
    head = list(model.classifier)
    linear = [m for m in head if isinstance(m, nn.Linear)]
    if len(linear) != 1 or any(not isinstance(m, (nn.Linear, nn.Dropout)) for m in head):
        raise TinydetError(f"{name}: classifier: expected Dropout + Linear, got {[type(m).__name__ for m in head]}")
    dropout = next((m.p for m in head if isinstance(m, nn.Dropout)), 0.0)
    mix = blocks[-1].block.type == "conv" and blocks[-1].block.kernel == 1 and len(blocks) > 1
    return SourceNet(name=name, blocks=blocks, classifier=f"classifier.{head.index(linear[0])}",
                     num_classes=linear[0].out_features, dropout=float(dropout), bn_eps=_one_eps(eps, name),
                     mean=tuple(mean), std=tuple(std), mix=mix, description=f"imported from torchvision {name}")


def timm_mobilenet_v2(model, name: str, mean, std) -> SourceNet:
    """timm's EfficientNet-class MobileNetV2 (``mobilenetv2_*``): conv_stem/bn1, blocks of
    DepthwiseSeparableConv / InvertedResidual, conv_head/bn2, classifier."""
    from torch import nn

    if not all(isinstance(getattr(model, a, None), nn.Module) for a in ("conv_stem", "bn1", "blocks")):
        raise TinydetError(f"timm {name}: {type(model).__name__} networks are not supported; expected an "
                           f"EfficientNet-class MobileNetV2 (conv_stem, bn1, blocks): timm's mobilenetv2_*")
    eps, blocks = [], []

    def unit(conv_key: str, bn_key: str, relu6: bool, prefix: str):
        where = f"{name}: {prefix}"
        conv = check_conv(model.get_submodule(f"{prefix}{conv_key}"), f"{where}{conv_key}")
        bn = model.get_submodule(f"{prefix}{bn_key}")
        eps.append(check_bn(bn, f"{where}{bn_key}"))
        check_act(getattr(bn, "act", nn.Identity()), relu6, f"{where}{bn_key}.act")
        if hasattr(bn, "drop") and not isinstance(bn.drop, nn.Identity):
            raise TinydetError(f"{where}{bn_key}: {_feature(bn.drop)} after the norm is not supported")
        return conv, SourceLayer(f"{prefix}{conv_key}", f"{prefix}{bn_key}")

    conv, layer = unit("conv_stem", "bn1", True, "")
    blocks.append(SourceBlock(BlockSpec("conv", conv.out_channels, kernel=conv.kernel_size[0], stride=conv.stride[0]),
                              (layer,), "conv_stem"))
    for s, stage in model.blocks.named_children():
        for b, block in stage.named_children():
            prefix, where = f"blocks.{s}.{b}.", f"{name}: blocks.{s}.{b}"
            kind = type(block).__name__
            for attr in ("se", "aa"):  # (drop_path is the identity in inference)
                extra = getattr(block, attr, None)
                if extra is not None and not isinstance(extra, nn.Identity):
                    raise TinydetError(f"{where}.{attr}: {_feature(extra)} is not supported by the tinydet spec")
            if kind == "DepthwiseSeparableConv":
                dw, l1 = unit("conv_dw", "bn1", True, prefix)
                pw, l2 = unit("conv_pw", "bn2", False, prefix)
                spec = _mb(dw.in_channels, dw.in_channels, dw, pw, bool(block.has_skip), where)
                layers = (l1, l2)
            elif kind == "InvertedResidual":
                ex, l0 = unit("conv_pw", "bn1", True, prefix)
                dw, l1 = unit("conv_dw", "bn2", True, prefix)
                pw, l2 = unit("conv_pwl", "bn3", False, prefix)
                spec = _mb(ex.in_channels, ex.out_channels, dw, pw, bool(block.has_skip), where)
                layers = (l0, l1, l2)
            else:
                raise TinydetError(f"{where}: {_feature(block)} blocks are not supported; expected "
                                   f"DepthwiseSeparableConv or InvertedResidual (timm mobilenetv2_*)")
            blocks.append(SourceBlock(spec, layers, f"blocks.{s}.{b}"))
    mix = isinstance(getattr(model, "conv_head", None), nn.Conv2d)
    if mix:
        conv, layer = unit("conv_head", "bn2", True, "")
        blocks.append(SourceBlock(BlockSpec("conv", conv.out_channels, kernel=conv.kernel_size[0]), (layer,), "conv_head"))
    pool = getattr(model, "global_pool", None)
    if pool is not None and getattr(pool, "pool_type", "avg") != "avg":
        raise TinydetError(f"{name}: global_pool: pool type '{pool.pool_type}' is not supported; expected avg")
    fc = getattr(model, "classifier", None)
    if not isinstance(fc, nn.Linear):
        raise TinydetError(f"{name}: classifier: expected a Linear, got {type(fc).__name__}")
    return SourceNet(name=name, blocks=blocks, classifier="classifier", num_classes=fc.out_features,
                     dropout=float(getattr(model, "drop_rate", 0.0)), bn_eps=_one_eps(eps, name),
                     mean=tuple(mean), std=tuple(std), mix=mix, description=f"imported from timm {name}")
