"""Validation of firmware outputs: bit exact against the numpy int8 reference, detections against
onnxruntime (the same checks as ``tinydet validate``), and the device figures.

Reference per mode: ``layer`` runs ``full.int8.onnx``; ``patch`` runs ``stage1_patch.int8.onnx``
on every tile + stitching + ``stage2.int8.onnx`` -- what the firmware computes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tinydet.deploy.run import RunResult, output_maps
from tinydet.errors import TinydetError


def reference_outputs(export_dir: "str | Path", mode: str, images: np.ndarray, schedule: dict) -> list[list[np.ndarray]]:
    """int8 NHWC output tensors of the numpy reference, per image, in ``schedule['outputs']`` order
    (a classifier's logits ``[1, C]`` as the firmware's ``[1, 1, 1, C]``)."""
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
        result.append([_nhwc(env[src[name]]) for name in schedule["outputs"]])
    return result


def _nhwc(t: np.ndarray) -> np.ndarray:
    return t.reshape(t.shape[0], 1, 1, t.shape[1]) if t.ndim == 2 else t


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


def ort_note(report: dict) -> str | None:
    """What ``detections_match_fraction_vs_onnxruntime`` means, for stderr when it is below 1 (it
    does not gate ``deploy --validate``; ``outputs_bit_exact_vs_reference`` does)."""
    fraction = report.get("detections_match_fraction_vs_onnxruntime")
    if fraction is None or fraction >= 1.0:
        return None
    return (f"detections_match_fraction_vs_onnxruntime {fraction:g} is the share of images whose detections equal "
            "onnxruntime's on the QDQ models; onnxruntime requantizes in float (round half to even), up to 1 LSB "
            "per layer away from the integer arithmetic the firmware shares with the numpy reference, so boxes "
            "near the score threshold or an NMS tie can differ. It is informational: the gate is "
            f"outputs_bit_exact_vs_reference ({report.get('outputs_bit_exact_vs_reference')}) and the C decode "
            "agrees with the Python decode on the same outputs (detections_match_fraction_vs_python_decode "
            f"{report.get('detections_match_fraction_vs_python_decode')})")


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
    if info.get("classifier"):
        report.update(classification_figures(info, run, images, expected))
    return report


def read_class_scores(workdir: "str | Path", count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, the firmware's ``cls_<i>.txt`` (``deploy/demo/main.c``): int8 logits and float32 scores."""
    out = []
    for i in range(count):
        path = Path(workdir) / f"cls_{i}.txt"
        if not path.is_file():
            raise TinydetError(f"{path}: missing; the classifier firmware writes one score file per image")
        rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        if any(len(r) != 3 or int(r[0]) != k for k, r in enumerate(rows)):
            raise TinydetError(f"{path}: expected lines 'class int8_logit score' for classes 0, 1, ...")
        out.append((np.asarray([int(r[1]) for r in rows], np.int8),
                    np.asarray([float(r[2]) for r in rows], np.float32)))
    return out


def classification_figures(info: dict, run: RunResult, images: np.ndarray, expected: list[list[np.ndarray]]) -> dict:
    """A classifier run's checks: the firmware's top-1 against the int8 reference's (and the
    onnxruntime int8 model's), its logits bit for bit and its dequantized scores exactly as the
    int8 graph's DequantizeLinear on the reference logits."""
    from tinydet.export.runtime import onnx_runner
    from tinydet.quant.arith import dequantize

    row = info["classifier"]
    scores = read_class_scores(Path(run.log).parent, len(run.outputs))
    # the top-1 the firmware itself returned (tinydet_model_classify), one line per image
    firmware_top1 = np.asarray([int(v) for v in re.findall(r"^class \d+ top1=(\d+)", run.stdout, re.M)])
    if firmware_top1.size != len(run.outputs):
        raise TinydetError(f"firmware printed {firmware_top1.size} 'class' lines for {len(run.outputs)} images; "
                           f"log kept: {run.log}")
    ref_logits = np.stack([exp[row["output"]].reshape(-1) for exp in expected])
    ort = onnx_runner(info["export"], int8=True, patched=info["mode"] == "patch")(np.asarray(images, np.float32))
    ort_top1 = np.argmax(np.asarray(ort[row["output"]]).reshape(len(images), -1), axis=1)
    ref_top1 = np.argmax(ref_logits, axis=1)
    return {"top1_agreement_vs_reference": float(np.mean(firmware_top1 == ref_top1)),
            "top1_agreement_vs_onnxruntime": float(np.mean(firmware_top1 == ort_top1)),
            "logits_bit_exact_vs_reference": bool(np.array_equal(np.stack([q for q, _ in scores]), ref_logits)),
            "scores_equal_dequantized_reference": bool(np.array_equal(
                np.stack([s for _, s in scores]), dequantize(ref_logits, row["scale"], row["zp"]))),
            "top1_per_image": firmware_top1.tolist()}


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
