"""``tinydet import``: a published network into a tinydet spec + weights folder.

    tinydet import mcunet NET_CONFIG.json [--weights W.pth] --out DIR [--json]
    tinydet import torchvision mobilenet_v2 [--weights W.pth | --weights IMAGENET1K_V2] --out DIR
    tinydet import timm NAME [--weights W.pth | W.safetensors | hub] --out DIR

Writes DIR/spec.yaml (usable wherever a preset name is: ``model.arch``, ``--arch``) and
DIR/weights.pt (a state_dict ``tinydet.arch.build(spec)`` loads with strict=True). JSON keys:
out, spec, weights_file, name, blocks, num_classes, head_from, bn_eps, input_mean, input_std,
tensors (copied), weights (their origin), skipped_blocks, shortcuts, mapping (source -> tinydet).
"""
from __future__ import annotations

import argparse

from tinydet.commands.common import add_json_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["mcunet", "torchvision", "timm"], help="where the network comes from")
    parser.add_argument("name", help="mcunet: the net_config JSON; torchvision: mobilenet_v2; timm: a mobilenetv2_* name")
    parser.add_argument("--weights", default=None,
                        help="a .pth/.pt/.safetensors file; torchvision: or a weights name (IMAGENET1K_V2); "
                             "timm: or 'hub' (download into timm's cache). Default: no weights (random init)")
    parser.add_argument("--out", required=True, help="output folder (spec.yaml, weights.pt)")
    parser.add_argument("--mean", type=float, nargs=3, default=None, metavar="M",
                        help="input normalisation mean per channel on the [0, 1] scale (default: the source's "
                             "convention, 0.5 for MCUNet, ImageNet's for torchvision/timm)")
    parser.add_argument("--std", type=float, nargs=3, default=None, metavar="S", help="input normalisation std")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> dict:
    from tinydet.zoo import SPEC_FILE, WEIGHTS_FILE, import_network, write_import

    imported = import_network(args.source, args.name, args.weights, args.mean, args.std)
    out = write_import(imported, args.out)
    return {"out": str(out), "spec": str(out / SPEC_FILE), "weights_file": str(out / WEIGHTS_FILE),
            **imported.summary()}


def render(result: dict) -> None:
    print(f"imported {result['name']}: {result['blocks']} blocks, {result['shortcuts']} shortcuts, "
          f"{result['num_classes']} classes, BN eps {result['bn_eps']}, "
          f"input normalisation mean {result['input_mean']} std {result['input_std']}")
    print(f"weights: {result['weights']}: {result['tensors']} tensors copied")
    if result["skipped_blocks"]:
        print(f"identity (zero) blocks left out: {', '.join(result['skipped_blocks'])}")
    for row in result["mapping"]:
        print(f"  {row['source']:<44} -> {row['tinydet']}")
    print(f"detector taps (head_from): blocks {result['head_from']}")
    print(f"wrote {result['spec']} and {result['weights_file']}")
