"""Deployment: C code generation, builds for host / QEMU / boards, runs and validation.

Reads only an export folder (DESIGN.md); never imports torch or Lightning.

    info = build_firmware("out/face", "qemu-mps2-an500", "build/face")      # build.py
    result = deploy("out/face", "qemu-mps2-an500", "build/face", run=True, validate=True, images=4)
    demo = run_demo("out/face", ["a.png", "b.png"], "build/demo")          # detections per image
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_write_json

__all__ = ["build_firmware", "deploy", "load_images", "run_demo"]


def __getattr__(name: str):
    if name == "build_firmware":
        from tinydet.deploy.build import build_firmware

        return build_firmware
    raise AttributeError(f"module 'tinydet.deploy' has no attribute '{name}'")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def load_images(paths: Sequence["str | Path"], size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """Image files -> letterboxed float NCHW [K, 3, H, W] in [0, 1] (the eval transform) and the
    letterbox metadata to map boxes back to original pixels."""
    from tinydet.data.transforms import letterbox_image

    arrays, metas = [], []
    for p in paths:
        x, meta = letterbox_image(read_rgb(p), size)
        arrays.append(x)
        metas.append(meta)
    if not arrays:
        raise TinydetError("images: expected at least one image file")
    return np.stack(arrays), metas


def read_rgb(path: "str | Path") -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (one-line error naming the file when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read image ({exc})") from None


def images_in_dir(folder: "str | Path", count: int | None, option: str = "--images-dir") -> list[Path]:
    """The first ``count`` (None: all) image files of ``folder`` (sorted by name); errors name ``option``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TinydetError(f"{option} {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TinydetError(f"{option} {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files[:count]


def deploy(export_dir: "str | Path", target: str, out: "str | Path", mode: str = "patch", run: bool = False,
           validate: bool = False, images: "np.ndarray | int" = 2, conf: float = 0.25, timeout_s: float = 300.0,
           sram=None, flash=None, defines: Sequence[str] = (), seed: int = 0,
           profile: "str | Path | None" = None) -> dict:
    """Build the firmware; with ``run`` execute it on ``images`` (an array [K, 3, H, W], or a count
    of seeded random images) and with ``validate`` add the bit-exactness and detection checks.

    A run on an instruction-counting target (QEMU) adds ``per_layer`` (name, kind, macs,
    instructions, instructions_per_mac, working_set_bytes per layer: :mod:`tinydet.deploy.report`),
    ``macs_per_inference`` and ``instructions_per_mac``; ``profile`` then names a PNG drawing them.

    Returns the figures of ``tinydet deploy --json``; after a run, ``_detections`` also holds the
    firmware's detections per image (boxes [N, 4] in network-input pixels, scores, labels), which
    the CLI leaves out of its JSON."""
    from tinydet.deploy.build import build_firmware
    from tinydet.deploy.run import quantize_images, run_firmware
    from tinydet.deploy.validate import device_figures, validate_run
    from tinydet.export.schedule_file import load_export

    export = load_export(export_dir)
    info = build_firmware(export.root, target, out, mode=mode, conf=conf, sram=sram, flash=flash, defines=defines,
                          export=export)
    result = {k: v for k, v in info.items() if k not in ("layers", "outputs", "input", "detector")}
    if not (run or validate):
        if profile is not None:
            raise TinydetError("--profile: expected --run or --validate (the figures come from running the firmware)")
        return result
    if isinstance(images, (int, np.integer)):
        if images < 1:
            raise TinydetError(f"--images: expected a positive integer, got {images}")
        c, h, w = export.input_shape
        images = np.random.default_rng(seed).random((int(images), c, h, w), dtype=np.float32)
    images = np.asarray(images, np.float32)
    print(f"tinydet deploy: running {Path(info['elf']).name} on {info['target']} ({images.shape[0]} images)",
          file=sys.stderr)
    res = run_firmware(info, quantize_images(images, info["input"]), Path(out) / "run", timeout_s=timeout_s)
    result.update(device_figures(res))
    if result.get("per_layer_instructions"):
        from tinydet.deploy.report import layer_figures, plot_profile

        layers = layer_figures(export.schedule, mode, result["per_layer_instructions"])
        result["per_layer"] = [f.to_dict() for f in layers]
        result["macs_per_inference"] = sum(f.macs for f in layers)
        result["instructions_per_mac"] = round(result["instructions_per_inference"] / result["macs_per_inference"], 3)
        if profile is not None:
            result["profile_png"] = str(plot_profile(
                layers, profile, f"{export.schedule['arch']['name']} on {target} ({mode} mode): "
                f"{result['instructions_per_inference']:,} instructions, {result['instructions_per_mac']} per MAC"))
    elif profile is not None:
        raise TinydetError(f"--profile: target {target} does not count instructions; run on qemu-mps2-an500")
    result["qemu_log" if target != "host" else "run_log"] = str(res.log)
    if validate:
        result.update(validate_run(info, res, images, export.schedule))
    result["_detections"] = res.detections
    return result


def run_demo(export_dir: "str | Path", images: Sequence["str | Path"], out_dir: "str | Path",
             target: str = "qemu-mps2-an500", conf: float = 0.25, timeout_s: float = 600.0) -> dict:
    """Deploy on QEMU in patch and layer mode, run the held-out ``images`` (files) through the
    patch-mode firmware, and return detections per image in original image pixels + the figures.

    Returns ``{"detections": {path: {"boxes", "scores", "labels"}}, "patch": {...}, "layer": {...}}``
    where the mode entries hold the build / device / validation figures; ``detections.json`` with
    the same content is written to ``out_dir``.
    """
    from tinydet.data.transforms import unletterbox
    from tinydet.export.schedule_file import load_export

    export = load_export(export_dir)
    _, h, w = export.input_shape
    arrays, metas = load_images(list(images), (h, w))
    out_dir = Path(out_dir)
    figures = {}
    dets_out = {}
    for mode in ("patch", "layer"):
        r = deploy(export.root, target, out_dir / mode, mode=mode, run=True, validate=True, images=arrays, conf=conf,
                   timeout_s=timeout_s)
        dets = r.pop("_detections")
        figures[mode] = r
        if mode == "patch":
            for path, meta, (boxes, scores, labels) in zip(images, metas, dets):
                dets_out[str(path)] = {"boxes": unletterbox(boxes, meta).tolist(), "scores": scores.tolist(),
                                       "labels": labels.tolist()}
    result = {"detections": dets_out, "patch": figures["patch"], "layer": figures["layer"],
              "class_names": (export.schedule.get("detector") or {}).get("class_names"),
              "arena_saved_bytes": figures["layer"]["sram_arena_bytes"] - figures["patch"]["sram_arena_bytes"]}
    atomic_write_json(out_dir / "detections.json", result)
    return result
