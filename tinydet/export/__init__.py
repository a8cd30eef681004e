"""Export of a trained network to the export folder (docs/export_format.md).

    folded = fold_network(model, graph)               # BN folded, numpy weights (fold.py)
    full_model(folded); stage1_model(folded, split)   # onnx.ModelProto (onnx_writer.py)
    export_network(model, graph, out, split, grid)  /  load_export(dir)  /  add_files(dir, {...})
    onnx_runner(dir, int8=False, patched=True)(images)                   (runtime.py)

Names are resolved lazily so ``import tinydet.export`` stays cheap (no torch / onnx import).
"""
from __future__ import annotations

from tinydet.lazy import lazy_getattr

_API = {
    "FoldedGraph": "fold", "FoldedOp": "fold", "fold_network": "fold", "run_folded": "fold",
    "check_exportable": "fold",
    "full_model": "onnx_writer", "stage1_model": "onnx_writer", "stage2_model": "onnx_writer",
    "stage1_ops": "onnx_writer", "split_tensor": "onnx_writer", "tile_inputs": "onnx_writer",
    "tile_pads": "tiles",
    "ExportFolder": "schedule_file", "load_export": "schedule_file", "add_files": "schedule_file",
    "FORMAT_VERSION": "schedule_file",
    "onnx_runner": "runtime", "float_stitched_max_abs_diff": "runtime",
    "export_network": "folder", "write_export": "folder",
}

__all__ = sorted(_API)


__getattr__ = lazy_getattr(__name__, _API)
