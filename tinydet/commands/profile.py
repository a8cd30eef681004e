"""``tinydet profile``: per-layer shapes, MACs, params, Flash and SRAM of an architecture, and with
``--patches N`` / ``--grid RxC`` the patch-based schedule's peak, MAC overhead and tiles.

JSON keys: arch, resolution, mode, macs, params (float model, torchvision convention: conv
weights + BN weight/bias per channel + biases + fc), flash_bytes (int8 weights + 12 bytes per
output channel: int32 bias, multiplier, shift), peak_sram_per_layer (bytes, input image counted),
layers (name, kind, in_shape, out_shape [C, H, W], kernel, op_stride, macs, params, flash_bytes,
working_set, receptive_field and stride = total stride w.r.t. the input image); with patches also
peak_sram_patch, peak_sram_stage1, peak_sram_stage2, grid, split, split_shape, macs_patch,
mac_overhead (fraction), input_streamed, max_tile_input, reduction, tiles (row, col, in_rect,
out_rect as [y0, y1, x0, x1] half-open, pad as {top, left, bottom, right}), arena_bytes.
"""
from __future__ import annotations

import argparse
from tinydet.commands.common import add_json_argument


def add_common(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with ``tinydet plan``."""
    parser.add_argument("--arch", required=True, help="preset name (e.g. mbv2-w1.0) or a .yaml/.json spec file")
    parser.add_argument("--resolution", default="224", help="input size: N or HxW (default 224)")
    parser.add_argument("--head-classes", type=int, default=None, metavar="C",
                        help="profile the detector: YOLO-style head with C classes on the spec's head_from maps")
    parser.add_argument("--anchors", type=int, default=3, help="anchors per head cell (with --head-classes)")
    parser.add_argument("--no-inplace-dw", action="store_true", help="do not run depthwise convolutions in place")
    parser.add_argument("--no-fused-residual", action="store_true",
                        help="do not fuse the shortcut add into the projection conv's output buffer")
    add_json_argument(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    patches = parser.add_mutually_exclusive_group()
    patches.add_argument("--patches", type=int, default=None, metavar="N", help="patch-based: N x N grid")
    patches.add_argument("--grid", default=None, metavar="RxC", help="patch-based: R rows x C columns")
    parser.add_argument("--split", type=int, default=None, metavar="K",
                        help="the first K blocks (stem = 1) run patch by patch (default: the lowest peak)")


def load_graph(args: argparse.Namespace):
    """(spec, graph, rules) from the common arguments; every user error is a one-line TinydetError."""
    from tinydet.arch import HeadSpec, get_spec, lower
    from tinydet.errors import TinydetError
    from tinydet.schedule import MemoryRules

    spec = get_spec(args.arch)
    head = None
    if args.head_classes is not None:
        if args.head_classes < 1:
            raise TinydetError(f"--head-classes: expected a positive number of classes, got {args.head_classes}")
        if args.anchors < 1:
            raise TinydetError(f"--anchors: expected a positive number, got {args.anchors}")
        head = HeadSpec(num_classes=args.head_classes, num_anchors=args.anchors)
    graph = lower(spec, args.resolution, head=head)
    return spec, graph, MemoryRules(inplace_dw=not args.no_inplace_dw, fused_residual=not args.no_fused_residual)


def run(args: argparse.Namespace) -> dict:
    from tinydet.errors import TinydetError
    from tinydet.schedule import allocate, max_split, parse_grid, plan_patches
    from tinydet.schedule.profile import profile_graph

    spec, graph, rules = load_graph(args)
    plan = None
    if args.patches is not None or args.grid is not None:
        grid = parse_grid(args.grid if args.grid is not None else args.patches)
        if args.split is not None:
            plan = plan_patches(graph, grid, args.split, rules)
        else:
            # no split given: the split with the lowest peak for this grid
            plans = []
            for split in range(1, max_split(graph) + 1):
                _, h, w = graph.ops[graph.block_end(split - 1) - 1].out_shape
                if grid[0] <= h and grid[1] <= w:
                    plans.append(plan_patches(graph, grid, split, rules))
            if not plans:
                raise TinydetError(f"--patches/--grid: {grid[0]}x{grid[1]} is larger than every split feature map of "
                                   f"arch {graph.arch} at {graph.resolution[0]}x{graph.resolution[1]}; expected a smaller grid")
            plan = min(plans, key=lambda p: (p.peak, p.mac_overhead))
    elif args.split is not None:
        raise TinydetError("--split: only meaningful with --patches N or --grid RxC")
    result = profile_graph(graph, rules, plan)
    result["arena_bytes"] = allocate(graph, plan, rules).arena_bytes
    result["taps"] = spec.taps  # named feature maps (usable in head_from)
    result["head_from"] = list(spec.head_from)
    return result


def render(result: dict) -> None:
    from tinydet.schedule.profile import kb

    h, w = result["resolution"]
    print(f"{result['arch']} @ {h}x{w} ({result['mode']})")
    print(f"{'layer':<22} {'in C x H x W':>15} {'out C x H x W':>15} {'k/s':>5} {'MACs':>12} {'params':>9} "
          f"{'working set':>12} {'RF':>5} {'stride':>6}")
    for layer in result["layers"]:
        shape = lambda s: "x".join(str(v) for v in s)  # noqa: E731
        extra = f"  patch {kb(layer['patch_working_set'])}" if "patch_working_set" in layer else ""
        print(f"{layer['name']:<22} {shape(layer['in_shape']):>15} {shape(layer['out_shape']):>15} "
              f"{layer['kernel']}/{layer['op_stride']:<3} {layer['macs']:>12,} {layer['params']:>9,} "
              f"{kb(layer['working_set']):>12} {layer['receptive_field']:>5} {layer['stride']:>6}{extra}")
    print(f"MACs {result['macs']:,}  params {result['params']:,}  Flash {result['flash_bytes']:,} B (int8)")
    print(f"peak SRAM per layer: {result['peak_sram_per_layer']:,} B ({kb(result['peak_sram_per_layer'])})")
    if "peak_sram_patch" in result:
        th, tw = result["max_tile_input"]
        print(f"patch-based, grid {result['grid'][0]}x{result['grid'][1]}, split {result['split']} "
              f"(stage-1 output {'x'.join(str(v) for v in result['split_shape'])}): "
              f"peak {result['peak_sram_patch']:,} B ({kb(result['peak_sram_patch'])}; stage 1 "
              f"{kb(result['peak_sram_stage1'])}, stage 2 {kb(result['peak_sram_stage2'])}), "
              f"{result['reduction']:.1f}x smaller, MACs {result['mac_overhead'] * 100:+.1f}%, "
              f"largest tile input {th}x{tw}, input {'streamed per tile' if result['input_streamed'] else 'in SRAM'}")
    print(f"arena: {result['arena_bytes']:,} B")
