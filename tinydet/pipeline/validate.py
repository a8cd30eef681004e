"""Validation of an export folder (``tinydet validate``): onnxruntime and the int8 reference,
stitched vs full, per layer and end to end, against the bounds below.

Checks, in one report:

* ``float_stitched_max_abs_diff``: stage 1 per tile + stitch + stage 2 vs full.onnx (must be <= 1e-4);
* ``int8_stitched_mismatches``: the int8 reference, stitched vs full, differing output elements (must
  be 0); ``int8_stitched_mismatches_ort`` is the same in onnxruntime, for information only (its
  float requantization may pick other kernels for a padded tile than for the full map);
* ``int8_layer_max_lsb_vs_ort``: per layer, onnxruntime's int8 input tensors fed to the reference
  op, largest difference from onnxruntime's output in LSB, over full, every stage-1 tile and
  stage 2 (must be <= 1; per layer in ``int8_layer_lsb_vs_ort``);
* ``int8_output_mismatch_fraction_vs_ort``: end to end, share of output elements that differ;
* ``tflite_bit_exact_images``: with ``full.int8.tflite`` (``tinydet tflite``) and LiteRT installed,
  images whose LiteRT outputs equal the reference's bit for bit (must be K; None otherwise);
* ``detections_match_fraction``: share of images whose detections (decode + NMS at ``conf``)
  match between the reference and onnxruntime (:func:`tinydet.ops.boxes.match_detections`: same
  count, same classes, IoU >= 0.9 pairwise);
* ``peak_sram_patch``, ``peak_sram_per_layer``, ``mac_overhead`` from schedule.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tinydet.errors import TinydetError
from tinydet.ops.boxes import match_detections

FLOAT_STITCH_BOUND = 1e-4
LAYER_LSB_BOUND = 1
DET_IOU = 0.9


def validation_images(folder: "str | Path", count: int, config: str | None = None, overrides: Iterable[str] = (),
                      seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` images [K, 3, H, W] to validate ``folder`` on, and where they come from: the val
    split of the config (``config``, else schedule.json's), else uniform random images (``seed``)."""
    from tinydet.export import load_export

    folder = Path(folder)
    export = load_export(folder)
    c, h, w = export.input_shape
    if count < 1:
        raise TinydetError(f"--images: expected a positive integer, got {count}")
    if config is not None or export.schedule.get("config") or export.config_path is not None:
        from tinydet.pipeline.images import split_images
        from tinydet.pipeline.quantize import config_for

        cfg = config_for(folder, export.schedule, config, overrides)
        source = getattr(cfg, "source", config or "config")
        return np.stack(split_images(cfg, count, (h, w), source, split="val")), f"{source}: val"
    rng = np.random.default_rng(seed)
    return rng.random((count, c, h, w), dtype=np.float32), f"random (seed {seed})"


def _layer_lsb(ref, export, images: np.ndarray) -> dict[str, int]:
    """Per-layer 1-LSB check on full, every stage-1 tile (its own pads) and stage 2."""
    import onnx

    from tinydet.quant.reference import layer_lsb_vs_ort

    worst: dict[str, int] = {}

    def merge(d: Mapping[str, int]) -> None:
        for k, v in d.items():
            worst[k] = max(worst.get(k, 0), int(v))

    merge(layer_lsb_vs_ort(ref.full, onnx.load(str(export.path("full.int8.onnx"))), images))
    stage1 = onnx.load(str(export.path("stage1_patch.int8.onnx")))
    for tile in export.schedule["tiles"]:
        y0, y1, x0, x1 = tile["in_rect"]
        merge(layer_lsb_vs_ort(ref.stage1, stage1, images[:, :, y0:y1, x0:x1], tile.get("onnx_pads", {})))
    # stage 2 on the dequantized stitched map: exactly the int8 map, as the quantize op is the inverse
    _, split_buf = ref.run_stitched(images, return_split=True)
    split = export.schedule["split_tensor"]
    s, z = ref.stage2.tensors[split]
    split_float = ((split_buf.astype(np.float32) - z) * np.float32(s)).transpose(0, 3, 1, 2).copy()
    merge(layer_lsb_vs_ort(ref.stage2, onnx.load(str(export.path("stage2.int8.onnx"))), split_float))
    return worst


def validate_export(folder: "str | Path", images: np.ndarray, conf: float = 0.25) -> dict:
    """All checks of ``tinydet validate`` on ``images`` [K, 3, H, W]; returns the report with a
    ``failed`` list of the must-hold bounds that do not hold."""
    from tinydet.export import load_export, onnx_runner
    from tinydet.export.runtime import float_stitched_max_abs_diff
    from tinydet.quant.reference import Int8Reference

    folder = Path(folder)
    export = load_export(folder)
    ref = Int8Reference(folder, export.schedule) if export.has("full.int8.onnx") else None
    if ref is None:
        raise TinydetError(f"{folder}: no full.int8.onnx; run 'tinydet quantize {folder}' first")
    sched = export.schedule
    report: dict = {"folder": str(folder), "images": int(images.shape[0])}
    report["float_stitched_max_abs_diff"] = float(float_stitched_max_abs_diff(folder, images))

    ref_full = ref.run_full(images)
    ref_stitched = ref.run_stitched(images)
    report["int8_stitched_mismatches"] = int(sum(int((a != b).sum()) for a, b in zip(ref_full, ref_stitched)))
    ort_full = onnx_runner(folder, int8=True)(images)
    ort_stitched = onnx_runner(folder, int8=True, patched=True)(images)
    report["int8_stitched_mismatches_ort"] = int(sum(int((a != b).sum()) for a, b in zip(ort_full, ort_stitched)))

    per_layer = _layer_lsb(ref, export, images)
    report["int8_layer_max_lsb_vs_ort"] = max(per_layer.values()) if per_layer else 0
    report["int8_layer_lsb_vs_ort"] = per_layer
    total = sum(a.size for a in ref_full)
    report["int8_output_mismatch_fraction_vs_ort"] = float(
        sum(int((a != np.asarray(b)).sum()) for a, b in zip(ref_full, ort_full)) / max(1, total))
    scales = {op.output: op.in_scale[0] for op in ref.full.ops if op.kind == "dequantize"}
    report["int8_output_max_lsb_vs_ort"] = int(max(
        int(np.rint(np.abs(a - np.asarray(b)).max() / scales[name])) for name, a, b in zip(ref.full.outputs, ref_full, ort_full)))

    det = sched.get("detector")
    if det:
        from tinydet.models.decode import postprocess

        _, h, w = export.input_shape
        kw = dict(anchors=det["anchors"], strides=det["strides"], input_size=(h, w), conf_thresh=conf,
                  nms_iou=float(det.get("nms_iou", 0.6)), max_det=int(det.get("max_det", 100)))
        dets_ref = postprocess(ref_full, **kw)
        dets_ort = postprocess([np.asarray(o) for o in ort_full], **kw)
        matches = [match_detections(a, b, DET_IOU) for a, b in zip(dets_ref, dets_ort)]
        report["detections_match_fraction"] = float(np.mean(matches))
        report["detections_per_image"] = [int(len(d[0])) for d in dets_ref]
        report["detections_conf"] = conf
    else:
        report["detections_match_fraction"] = None  # not a detector: nothing to decode
    from tinydet.export.tflite import tflite_bit_exact_images

    report["tflite_bit_exact_images"] = tflite_bit_exact_images(folder, ref.full, images)  # None: no .tflite
    mem, macs = sched.get("memory", {}), sched.get("macs", {})
    report["peak_sram_patch"] = mem.get("peak_sram_patch")
    report["peak_sram_per_layer"] = mem.get("peak_sram_per_layer")
    report["mac_overhead"] = macs.get("mac_overhead")
    failed = []
    if not report["float_stitched_max_abs_diff"] <= FLOAT_STITCH_BOUND:
        failed.append(f"float_stitched_max_abs_diff {report['float_stitched_max_abs_diff']:.3g} > {FLOAT_STITCH_BOUND}")
    if report["int8_stitched_mismatches"] != 0:
        failed.append(f"int8_stitched_mismatches {report['int8_stitched_mismatches']} != 0")
    if report["tflite_bit_exact_images"] not in (None, report["images"]):
        failed.append(f"tflite_bit_exact_images {report['tflite_bit_exact_images']} != {report['images']}")
    if report["int8_layer_max_lsb_vs_ort"] > LAYER_LSB_BOUND:
        bad = sorted(k for k, v in per_layer.items() if v > LAYER_LSB_BOUND)
        failed.append(f"int8_layer_max_lsb_vs_ort {report['int8_layer_max_lsb_vs_ort']} > {LAYER_LSB_BOUND} "
                      f"(layers {', '.join(bad[:5])})")
    report["failed"] = failed
    report["ok"] = not failed
    return report
