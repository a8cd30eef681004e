"""Validation of firmware outputs: bit exact against the numpy int8 reference, detections against
onnxruntime (the same checks as ``tinydet validate``), and the device figures.

Reference per mode: ``layer`` runs ``full.int8.onnx``; ``patch`` runs ``stage1_patch.int8.onnx``
on every tile + stitching + ``stage2.int8.onnx`` -- what the firmware computes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinydet.deploy.run import RunResult, output_maps
from tinydet.errors import TinydetError


def reference_outputs(export_dir: "str | Path", mode: str, images: np.ndarray, schedule: dict) -> list[list[np.ndarray]]:
    """int8 NHWC output tensors of the numpy reference, per image, in ``schedule['outputs']`` order."""
    from tinydet.quant import reference as ref

    r = ref.Int8Reference(export_dir, schedule)
    result = []
    for k in range(images.shape[0]):
        x = images[k:k + 1]
        if mode == "layer":
            env, _ = ref.run(r.full, {r.full.inputs[0]: x})
            graph = r.full
        else:
            _, split = r.run_stitched(x, return_split=True)
            env, _ = ref.run(r.stage2, {}, int8_feeds={schedule["split_tensor"]: split})
            graph = r.stage2
        src = {op.output: op.inputs[0] for op in graph.ops if op.kind == "dequantize"}
        result.append([env[src[name]] for name in schedule["outputs"]])
    return result


def ort_detections(export_dir: "str | Path", mode: str, images: np.ndarray, schedule: dict, conf: float):
    """Detections (decode + NMS at ``conf``) of onnxruntime on the int8 models of the mode."""
    from tinydet.export.runtime import onnx_runner
    from tinydet.models.decode import postprocess

    det = schedule["detector"]
    _, h, w = schedule["input"]["shape"]
    outs = onnx_runner(export_dir, int8=True, patched=(mode == "patch"))(np.asarray(images, np.float32))
    return postprocess([np.asarray(o) for o in outs], anchors=det["anchors"], strides=det["strides"],
                       input_size=(h, w), conf_thresh=conf, nms_iou=float(det.get("nms_iou", 0.6)),
                       max_det=int(det.get("max_det", 100)))


def validate_run(info: dict, run: RunResult, images: np.ndarray, schedule: dict) -> dict:
    """The validation figures of one firmware run on ``images`` [K, 3, H, W]."""
    from tinydet.ops.boxes import match_detections as detections_match

    export_dir, mode = info["export"], info["mode"]
    expected = reference_outputs(export_dir, mode, images, schedule)
    mismatches = 0
    for got_img, exp_img in zip(run.outputs, expected):
        for got, exp in zip(got_img, exp_img):
            if got.shape != exp.shape:
                raise TinydetError(f"firmware output shape {list(got.shape)} differs from the reference's "
                                   f"{list(exp.shape)}")
            mismatches += int((got != exp).sum())
    report = {"images": int(images.shape[0]), "outputs_bit_exact_vs_reference": mismatches == 0,
              "output_mismatches_vs_reference": mismatches}
    if schedule.get("detector"):
        from tinydet.models.decode import postprocess

        ort = ort_detections(export_dir, mode, images, schedule, info["conf"])
        matches = [detections_match(a, b) for a, b in zip(run.detections, ort)]
        report["detections_match_fraction_vs_onnxruntime"] = float(np.mean(matches))
        # the C decode + NMS against tinydet.models.decode on the same int8 outputs
        det = schedule["detector"]
        _, h, w = schedule["input"]["shape"]
        same = []
        for got, exp_img in zip(run.detections, expected):
            maps = output_maps([exp_img], info["outputs"])
            py = postprocess(maps, anchors=det["anchors"], strides=det["strides"], input_size=(h, w),
                             conf_thresh=info["conf"], nms_iou=float(det.get("nms_iou", 0.6)),
                             max_det=int(det.get("max_det", 100)))[0]
            same.append(detections_match(got, py))
        report["detections_match_fraction_vs_python_decode"] = float(np.mean(same))
        report["detections_per_image"] = [int(len(d[0])) for d in run.detections]
    else:
        report["detections_match_fraction_vs_onnxruntime"] = None
    return report


def device_figures(run: RunResult) -> dict:
    """Instructions per inference (QEMU, -icount shift=0: exact up to one counter tick per reading)
    and the per-layer breakdown of the first image; counter ticks where the counter is not an
    instruction count (host)."""
    ipt = run.instructions_per_tick
    fig: dict = {"counter": run.counter, "stack_bytes": run.stack_bytes}
    if ipt > 0:
        fig["instructions_per_inference"] = int(round(np.mean(run.ticks) * ipt))
        fig["instructions_input_read"] = int(round(np.mean(run.input_ticks) * ipt))
        fig["instructions_decode"] = int(round(np.mean(run.detect_ticks) * ipt))
        fig["per_layer_instructions"] = {k: int(round(v * ipt)) for k, v in run.layer_ticks.items()}
    else:
        fig["instructions_per_inference"] = None
        fig["per_layer_instructions"] = None
        fig["ticks_per_inference"] = float(np.mean(run.ticks))
        fig["ticks_decode"] = float(np.mean(run.detect_ticks))
    return fig
