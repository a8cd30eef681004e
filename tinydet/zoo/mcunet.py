"""MCUNet / ProxylessNAS / OFA net_config JSON -> :class:`tinydet.zoo.convert.SourceNet` (pure).

Two forms are read: the ProxylessNAS one that the mcunet package and the MCUNet zoo write
(``MobileInvertedResidualBlock`` with ``mobile_inverted_conv`` = ``MBInvertedConvLayer``) and the
newer OFA one (``ResidualBlock`` with ``conv`` = ``MBConvLayer``). Weight keys follow the module
paths those configs build: ``first_conv.conv``, ``blocks.i.<conv key>.inverted_bottleneck.conv``,
``.depth_conv.conv``, ``.point_linear.conv`` (each with ``.bn``), ``feature_mix_layer.conv``,
``classifier.linear``. Whatever the spec cannot represent is refused naming block and feature.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinydet.arch.spec import BlockSpec
from tinydet.errors import TinydetError
from tinydet.io.jsonfile import read_json
from tinydet.zoo.convert import SourceBlock, SourceLayer, SourceNet

MCUNET_MEAN = (0.5, 0.5, 0.5)
MCUNET_STD = (0.5, 0.5, 0.5)
BLOCK_FORMS = {"MobileInvertedResidualBlock": "mobile_inverted_conv", "ResidualBlock": "conv"}
MB_LAYERS = ("MBInvertedConvLayer", "MBConvLayer")
ZERO = ("ZeroLayer",)


def read_net_config(path: str | Path) -> dict:
    path = Path(path)
    data = read_json(path, "net config")
    if not isinstance(data, dict) or not isinstance(data.get("blocks"), list) or "first_conv" not in data:
        raise TinydetError(f"{path}: expected a ProxylessNAS/OFA net config with 'first_conv' and 'blocks'")
    return data


def _act(layer: dict, where: str, expected: str = "relu6") -> None:
    act = layer.get("act_func", "relu6")
    if act != expected:
        feature = {"h_swish": "h-swish", "h_sigmoid": "h-sigmoid"}.get(act, act)
        raise TinydetError(f"{where}: activation '{feature}' is not supported; tinydet blocks use "
                           f"{expected or 'no activation'}")


def _conv_layer(layer: Any, where: str, act: str = "relu6") -> dict:
    if not isinstance(layer, dict) or layer.get("name") != "ConvLayer":
        got = layer.get("name") if isinstance(layer, dict) else layer
        raise TinydetError(f"{where}: expected a ConvLayer, got {got!r}")
    _act(layer, where, act)
    checks = {"use_bn": True, "groups": 1, "dilation": 1, "bias": False, "has_shuffle": False,
              "ops_order": "weight_bn_act"}
    for key, value in checks.items():
        if layer.get(key, value) != value:
            raise TinydetError(f"{where}: {key} = {layer[key]!r} is not supported; expected {value!r}")
    if float(layer.get("dropout_rate", 0) or 0) != 0:
        raise TinydetError(f"{where}: dropout inside a conv layer is not supported")
    return layer


def _mb_block(conv: dict, where: str) -> BlockSpec:
    if conv.get("use_se"):
        raise TinydetError(f"{where}: SE (squeeze-excitation) is not supported by the tinydet spec")
    _act(conv, where)
    expand = conv.get("expand_ratio", 6)
    if not float(expand).is_integer():
        raise TinydetError(f"{where}: fractional expand ratio {expand} is not supported; expected an integer")
    expand = int(expand)
    c_in = int(conv["in_channels"])
    mid = conv.get("mid_channels")
    hidden = c_in if expand == 1 else round(c_in * expand)
    if mid is not None and int(mid) != hidden:
        raise TinydetError(f"{where}: mid_channels {mid} disagrees with in_channels {c_in} x expand {expand} "
                           f"= {hidden}; the spec derives the hidden width from the expand ratio")
    if conv.get("groups") not in (None, 1):
        raise TinydetError(f"{where}: grouped pointwise convs (groups {conv['groups']}) are not supported")
    kernel = conv.get("kernel_size", 3)
    if not isinstance(kernel, int):
        raise TinydetError(f"{where}: kernel_size {kernel!r} is not supported; expected one odd integer")
    return BlockSpec("mbconv", int(conv["out_channels"]), kernel=kernel, stride=int(conv.get("stride", 1)),
                     expand=expand)


def parse_net_config(config: dict, source: str, mean=MCUNET_MEAN, std=MCUNET_STD) -> SourceNet:
    """The :class:`SourceNet` of a net_config dict (``source`` names it in messages)."""
    name = Path(source).stem
    stem = _conv_layer(config["first_conv"], f"{source}: first_conv")
    blocks = [SourceBlock(BlockSpec("conv", int(stem["out_channels"]), kernel=int(stem.get("kernel_size", 3)),
                                    stride=int(stem.get("stride", 1))),
                          (SourceLayer("first_conv.conv", "first_conv.bn"),), "first_conv")]
    skipped = []
    channels = int(stem["out_channels"])
    for i, entry in enumerate(config["blocks"]):
        where = f"{source}: blocks[{i}]"
        if not isinstance(entry, dict) or entry.get("name") not in BLOCK_FORMS:
            got = entry.get("name") if isinstance(entry, dict) else entry
            raise TinydetError(f"{where}: block type {got!r} is not supported; expected one of "
                               f"{', '.join(BLOCK_FORMS)}")
        key = BLOCK_FORMS[entry["name"]]
        conv, shortcut = entry.get(key), entry.get("shortcut")
        if conv is None or conv.get("name") in ZERO:
            skipped.append(f"blocks.{i}")  # a zero layer: the block is the identity
            continue
        if conv.get("name") not in MB_LAYERS:
            raise TinydetError(f"{where}: layer {conv.get('name')!r} is not supported; expected one of "
                               f"{', '.join(MB_LAYERS)}")
        if int(conv["in_channels"]) != channels:
            raise TinydetError(f"{where}: in_channels {conv['in_channels']} but the previous layer gives {channels}")
        block = _mb_block(conv, where)
        if shortcut is not None and shortcut.get("name") != "IdentityLayer":
            raise TinydetError(f"{where}: shortcut {shortcut.get('name')!r} is not supported; expected IdentityLayer or none")
        block = BlockSpec(block.type, block.out, block.kernel, block.stride, block.expand,
                          residual=shortcut is not None)
        p = f"blocks.{i}.{key}"
        layers = ([SourceLayer(f"{p}.inverted_bottleneck.conv", f"{p}.inverted_bottleneck.bn")]
                  if block.expand != 1 else [])
        layers += [SourceLayer(f"{p}.depth_conv.conv", f"{p}.depth_conv.bn"),
                   SourceLayer(f"{p}.point_linear.conv", f"{p}.point_linear.bn")]
        blocks.append(SourceBlock(block, tuple(layers), f"blocks.{i}"))
        channels = block.out
    mix = config.get("feature_mix_layer")
    if mix is not None:
        mix = _conv_layer(mix, f"{source}: feature_mix_layer")
        if mix.get("kernel_size", 1) != 1 or mix.get("stride", 1) != 1:
            raise TinydetError(f"{source}: feature_mix_layer: expected a 1x1 stride-1 conv")
        blocks.append(SourceBlock(BlockSpec("conv", int(mix["out_channels"]), kernel=1),
                                  (SourceLayer("feature_mix_layer.conv", "feature_mix_layer.bn"),), "feature_mix_layer"))
    classifier = config.get("classifier")
    if not isinstance(classifier, dict) or classifier.get("name") != "LinearLayer":
        raise TinydetError(f"{source}: classifier: expected a LinearLayer")
    if classifier.get("use_bn") or classifier.get("act_func") not in (None, "none") or not classifier.get("bias", True):
        raise TinydetError(f"{source}: classifier: only a plain Linear with bias (no BN, no activation) is supported")
    bn = config.get("bn") or {}
    eps = float(bn.get("eps", 1e-3))  # ProxylessNASNets.build_from_config's default
    return SourceNet(name=name, blocks=blocks, classifier="classifier.linear",
                     num_classes=int(classifier["out_features"]), dropout=float(classifier.get("dropout_rate", 0) or 0),
                     bn_eps=eps, mean=tuple(mean), std=tuple(std), mix=mix is not None, skipped=skipped,
                     description=f"imported from net config {Path(source).name}")
