"""int8 quantization: calibration, QDQ export (PTQ), QAT, the int8 graph reader and the numpy
reference interpreter (DESIGN.md "Int8 arithmetic").

    ranges = calibrate(full_model, images, "percentile")          # calibrate.py (onnxruntime)
    table = activation_params(full_model, ranges)                 # qdq.py: one table for all three
    int8 = quantize_model(stage_model, table)                     # qdq.py: QDQ ONNX
    qg = load_qgraph("out/x/full.int8.onnx")                      # qgraph.py: numpy + onnx only
    outputs = run_full(qg, images)                                # reference.py: integer-only
    model = prepare_qat(model, cfg)                               # qat.py: fake-quant fine-tuning

Names resolve lazily so ``import tinydet.quant`` pulls in neither onnxruntime nor torch. Which
folder, which images and which files: the pipeline (:mod:`tinydet.pipeline.quantize`).
"""
from __future__ import annotations

from tinydet.lazy import lazy_getattr

_API = {
    "calibrate": "calibrate", "METHODS": "calibrate",
    "QParams": "params", "params_from_range": "params", "input_params": "params",
    "activation_params": "qdq", "quantize_model": "qdq",
    "QGraph": "qgraph", "QOp": "qgraph", "load_qgraph": "qgraph",
    "run": "reference", "run_full": "reference", "run_stitched": "reference", "Int8Reference": "reference",
    "layer_lsb_vs_ort": "reference",
    "ranges_from_checkpoint": "qat",
    "prepare_qat": "qat", "qat_ranges": "qat",
}

__all__ = sorted(_API)


__getattr__ = lazy_getattr(__name__, _API)
