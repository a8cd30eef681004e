"""``tinydet deploy``: export folder -> generated C -> firmware; optionally run and validate it.

    tinydet deploy out/NAME --target T --out build/NAME [--mode patch|layer|both] [--app validate|serve]
                   [--run] [--validate]
                   [--images K] [--data-config X.yaml | --images-dir DIR] [--timeout S] [--json]

Prints one JSON object: ``flash_bytes``, ``sram_arena_bytes`` (the linked arena, equal to
``planned_peak_bytes``, the planner's peak for the mode), ``sram_static_bytes``, ``stack_bytes``
(stack painting, when run on an M7 target), ``planned_peak_bytes``; with ``--run`` the device
figures (``instructions_per_inference``, ``instructions_decode``, ``per_layer_instructions`` and
``per_layer`` with instructions/MAC and the working set per layer on QEMU; ``--profile PNG`` draws
them) and with
``--validate`` ``outputs_bit_exact_vs_reference`` and ``detections_match_fraction_vs_onnxruntime``
(a classifier: ``top1_agreement_vs_reference``, ``top1_agreement_vs_onnxruntime``,
``logits_bit_exact_vs_reference``, ``scores_equal_dequantized_reference``, ``top1_per_image``).
``--mode both`` builds (and runs) both modes and reports ``arena_saved_bytes``. The exit status is
1 when validation finds the firmware's outputs differ from the reference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinydet.commands.common import add_json_argument, declare_inputs, positive_number
from tinydet.errors import TinydetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tinydet.deploy.toolchain import list_targets

    parser.add_argument("folder", help="export folder (after `tinydet quantize`)")
    parser.add_argument("--target", default="qemu-mps2-an500", help=f"one of {', '.join(list_targets())} "
                        "(default qemu-mps2-an500)")
    parser.add_argument("--out", default=None, help="build folder (default build/<export folder name>)")
    parser.add_argument("--mode", default="patch", help="patch (the export's tile schedule), layer (per layer) "
                        "or both (default patch)")
    parser.add_argument("--app", choices=("validate", "serve"), default="validate",
                        help="validate: the file-based validation firmware (deploy/demo/main.c, default); serve: the "
                        "board-protocol firmware for `tinydet board run` (deploy/demo/serve_main.c, no --run)")
    parser.add_argument("--run", action="store_true", help="run the firmware (QEMU or host) on --images images")
    parser.add_argument("--validate", action="store_true", help="run and check outputs against the int8 reference "
                        "and detections against onnxruntime")
    parser.add_argument("--images", type=int, default=2, metavar="K", help="images to run (default 2)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--data-config", default=None, help="experiment YAML: images from its val split")
    src.add_argument("--images-dir", default=None, help="folder of image files (letterboxed to the input size)")
    parser.add_argument("--conf", type=float, default=0.25, help="detection score threshold (default 0.25)")
    parser.add_argument("--timeout", type=positive_number, default=300.0, metavar="S",
                        help="seconds before a running firmware counts as hung (default 300)")
    parser.add_argument("--sram", default=None, help="override the target's SRAM budget (e.g. 256k, '256 KiB')")
    parser.add_argument("--flash", default=None, help="override the target's Flash budget (e.g. 1M)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images (no image source)")
    parser.add_argument("--profile", default=None, metavar="PNG", help="with --run on QEMU: draw instructions and "
                        "instructions/MAC per layer beside the SRAM working set per layer (--mode both: one PNG per "
                        "mode, NAME_patch.png / NAME_layer.png)")
    add_json_argument(parser)
    declare_inputs(parser, folder="dir", data_config="file", images_dir="dir")


def _images(args, export):
    import numpy as np

    c, h, w = export.input_shape
    if args.images < 1:
        raise TinydetError(f"--images: expected a positive integer, got {args.images}")
    if args.images_dir:
        from tinydet.deploy import images_in_dir, load_images

        arrays, _ = load_images(images_in_dir(args.images_dir, args.images), (h, w))
        return arrays, f"{args.images_dir}"
    if args.data_config:
        from tinydet.pipeline.images import split_images
        from tinydet.config import load_config

        cfg = load_config(args.data_config, [])
        return np.stack(split_images(cfg, args.images, (h, w), args.data_config, split="val")), \
            f"{args.data_config}: val"
    return np.random.default_rng(args.seed).random((args.images, c, h, w), dtype=np.float32), \
        f"random (seed {args.seed})"


def run(args: argparse.Namespace):
    from tinydet.cli import print_json
    from tinydet.deploy import deploy
    from tinydet.export.schedule_file import load_export

    if args.mode not in ("patch", "layer", "both"):
        raise TinydetError(f"--mode: expected patch, layer or both, got '{args.mode}'")
    folder = Path(args.folder)
    export = load_export(folder)
    out = Path(args.out) if args.out else Path("build") / folder.name
    running = args.run or args.validate
    if args.app == "serve" and running:
        raise TinydetError("--app serve: the serve firmware answers on its serial link; run it with "
                           "`tinydet board run --port ...` instead of --run / --validate")
    images, source = _images(args, export) if running else (None, None)
    modes = ("patch", "layer") if args.mode == "both" else (args.mode,)
    results = {}
    for mode in modes:
        print(f"tinydet deploy: {folder} -> {args.target} ({mode} mode)", file=sys.stderr)
        profile = None
        if args.profile:
            p = Path(args.profile)
            profile = p.with_name(f"{p.stem}_{mode}{p.suffix}") if len(modes) > 1 else p
        if args.app == "serve":
            from tinydet.deploy.build import build_serve_firmware

            info = build_serve_firmware(folder, args.target, out / mode if len(modes) > 1 else out, mode=mode,
                                        conf=args.conf, sram=args.sram, flash=args.flash, export=export)
            results[mode] = {k: v for k, v in info.items() if k not in ("layers", "outputs", "input", "detector")}
            continue
        r = deploy(folder, args.target, out / mode if len(modes) > 1 else out, mode=mode, run=args.run,
                   validate=args.validate, images=images if running else 1, conf=args.conf, timeout_s=args.timeout,
                   sram=args.sram, flash=args.flash, profile=profile)
        r.pop("_detections", None)
        if running:
            r["image_source"] = source
        if args.validate:
            from tinydet.deploy.validate import ort_note

            note = ort_note(r)
            if note:
                print(f"tinydet deploy: note ({mode} mode): {note}", file=sys.stderr)
        results[mode] = r
    result = results[modes[0]] if len(modes) == 1 else {
        "patch": results["patch"], "layer": results["layer"],
        "arena_saved_bytes": results["layer"]["sram_arena_bytes"] - results["patch"]["sram_arena_bytes"]}
    bad = [m for m, r in results.items() if r.get("outputs_bit_exact_vs_reference") is False]
    if not bad:
        return result
    if args.json:
        print_json(result)
    else:
        render(result)
    print(f"tinydet deploy: FAILED firmware outputs differ from the int8 reference ({', '.join(bad)} mode)",
          file=sys.stderr)
    return 1


_KEYS = ("target", "mode", "elf", "flash_bytes", "sram_arena_bytes", "planned_peak_bytes", "sram_static_bytes",
         "scratch_bytes", "stack_bytes", "instructions_per_inference", "instructions_per_mac", "instructions_decode",
         "outputs_bit_exact_vs_reference",
         "detections_match_fraction_vs_onnxruntime", "top1_agreement_vs_reference", "top1_agreement_vs_onnxruntime")


def render(result: dict) -> None:
    parts = [result] if "patch" not in result else [result["patch"], result["layer"]]
    for r in parts:
        for key in _KEYS:
            if key in r:
                print(f"  {key:<42} {r[key]}")
        print()
    if "arena_saved_bytes" in result:
        print(f"  {'arena_saved_bytes (layer - patch)':<42} {result['arena_saved_bytes']}")
