"""Quantization of an export folder (``tinydet quantize``): the ranges (calibration on the
config's train split, or a QAT checkpoint), then the three ``*.int8.onnx`` + ``quant.json`` added
to the folder. :mod:`tinydet.quant` keeps the arithmetic, calibration and the QDQ construction;
this module decides which images, which folder and which files.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

from tinydet.errors import TinydetError


def config_for(folder: Path, schedule: dict, config: str | None, overrides) -> "object":
    """The experiment config: ``-c``, else the one `tinydet export` recorded in the folder
    (``config.yaml``, covered by the manifest), else an older folder's schedule.json ``config``
    (a path, relative to the working directory or to the folder)."""
    from tinydet.config import load_config
    from tinydet.export.schedule_file import CONFIG_FILE

    if config is None:
        if CONFIG_FILE in schedule.get("files", {}):  # listed in the verified manifest
            return load_config(Path(folder) / CONFIG_FILE, overrides)
        stored = schedule.get("config")
        if isinstance(stored, dict):
            stored = stored.get("path")
        if not stored:
            raise TinydetError(f"{folder}: no config.yaml recorded (exported by an older tinydet); pass the "
                               f"experiment config with -c X.yaml")
        path = Path(stored)
        if not path.is_file() and (folder / path).is_file():
            path = folder / path
        config = str(path)
    return load_config(config, overrides)


OTHER_DATA_HINT = "or pass --other-data to calibrate on another data set on purpose"


def check_config_matches(cfg, export) -> None:
    """A config other than the recorded one must describe the exported model: its input size
    (``model.resolution``) must be the export's; the classes are compared with the data set's
    once it is read (:func:`tinydet.pipeline.images.split_images` ``classes``)."""
    from tinydet.arch.graph import parse_resolution

    source = getattr(cfg, "source", "config")
    _, h, w = export.input_shape
    res = tuple(parse_resolution(cfg["model"]["resolution"]))
    if res != (h, w):
        raise TinydetError(f"{source}: model.resolution {res[0]}x{res[1]} differs from the input {h}x{w} of the "
                           f"export {export.root} (schedule.json: input.shape); pass the config the model was "
                           f"exported with{_recorded_hint(export)}, {OTHER_DATA_HINT}")


def _recorded_hint(export) -> str:
    return f" (omit -c to use {export.config_path})" if export.config_path is not None else ""


def export_classes(export) -> list[str] | None:
    """The class names the exported detector was trained on (None for other networks)."""
    det = export.schedule.get("detector") or {}
    return list(det["class_names"]) if det.get("class_names") else None


INT8_FILES = ("full", "stage1_patch", "stage2")


def quantize_export(folder, ranges: Mapping[str, tuple[float, float]], source: Mapping | None = None) -> dict:
    """Quantize the three float models of an export folder with one activation table and add
    ``full.int8.onnx``, ``stage1_patch.int8.onnx``, ``stage2.int8.onnx`` and ``quant.json`` to it
    (:func:`tinydet.export.add_files`: the new files and the new manifest are staged and swapped in
    with one rename, so a failure or a kill leaves the folder as it was, and a folder whose int8
    part an interrupted run left broken is repaired). A TFLite model made from the previous int8
    models is removed.

    ``ranges`` come from :func:`tinydet.quant.calibrate.calibrate` on ``full.onnx`` or from a QAT
    checkpoint; ``source`` (method, images, checkpoint ...) is recorded in quant.json.
    """
    import onnx

    from tinydet.export import add_files, load_export
    from tinydet.quant.params import input_params
    from tinydet.quant.qdq import activation_params, quantize_model, table_to_json

    export = load_export(folder, strict=False)  # a broken int8 part is what this rewrites
    input_name = export.schedule.get("input", {}).get("name", "input")
    full_path = export.path("full.onnx")
    full = onnx.load(str(full_path))
    table = activation_params(full, ranges, image_inputs=[input_name], where=str(full_path))
    files: dict[str, bytes] = {}
    for name in INT8_FILES:
        path = export.path(f"{name}.onnx")
        files[f"{name}.int8.onnx"] = quantize_model(onnx.load(str(path)), table, where=str(path)).SerializeToString()
    split = export.schedule.get("split_tensor")
    info = {"format": "qdq-int8", "conventions": "tflite-int8", "source": dict(source or {}),
            "input": {"name": input_name, **input_params().to_dict()},
            "split_tensor": split, "activations": table_to_json(table)}
    files["quant.json"] = (json.dumps(info, indent=1) + "\n").encode()
    stale = sorted(n for n in export.schedule["files"] if n.endswith(".tflite"))
    if stale:
        print(f"tinydet quantize: removing {', '.join(stale)} (made from the previous int8 models; "
              f"re-run `tinydet tflite {export.root}`)", file=sys.stderr)
    for name, why in sorted(export.broken.items()):
        print(f"tinydet quantize: {export.root / name}: {why}, replaced", file=sys.stderr)
    add_files(folder, files, drop=stale, strict=False)
    return {"out": str(export.root), "files": sorted(files), "tensors": len(table),
            "split_params": table[split].to_dict() if split in table else None, "source": dict(source or {})}


def quantize_folder(folder: "str | Path", *, qat: "str | Path | None" = None, calib: int | None = None,
                    method: str | None = None, percentile: float = 99.99, config: str | None = None,
                    overrides: Iterable[str] = (), other_data: bool = False) -> dict:
    """``tinydet quantize``: ranges from the QAT checkpoint ``qat``, else from calibrating
    ``full.onnx`` on ``calib`` images (default quant.calib) of the config's train split with
    ``method`` (default quant.method); then :func:`quantize_export`. Returns its summary plus
    ``seconds``. The config is ``config``, else the one the export recorded; its input size and
    its data set's classes must be the export's unless ``other_data``."""
    from tinydet.export import load_export
    from tinydet.quant.calibrate import METHODS

    folder = Path(folder)
    export = load_export(folder, strict=False)
    start = time.time()
    if qat is not None:
        from tinydet.quant.qat import ranges_from_checkpoint

        if calib is not None or method is not None:
            raise TinydetError("--qat: the ranges come from the checkpoint; do not combine it with --calib/--method")
        ranges = ranges_from_checkpoint(qat)
        source = {"kind": "qat", "checkpoint": str(qat)}
        print(f"tinydet quantize: {len(ranges)} QAT ranges from {qat}", file=sys.stderr)
    else:
        from tinydet.pipeline.images import split_images
        from tinydet.quant.calibrate import calibrate

        cfg = config_for(folder, export.schedule, config, overrides)
        source_name = getattr(cfg, "source", config or "config")
        if not other_data:
            check_config_matches(cfg, export)
        count = calib if calib is not None else int(cfg["quant"]["calib"])
        method = method or cfg["quant"]["method"]
        if method not in METHODS:
            raise TinydetError(f"{source_name}: quant.method: expected one of {', '.join(METHODS)}, got {method!r}")
        _, h, w = export.input_shape
        images = split_images(cfg, count, (h, w), source_name,
                              classes=None if other_data else export_classes(export),
                              classes_of=f"the export {folder} (schedule.json: detector.class_names"
                                         f"{_recorded_hint(export)}; {OTHER_DATA_HINT})")
        print(f"tinydet quantize: calibrating {folder / 'full.onnx'} on {len(images)} images ({method})",
              file=sys.stderr)
        ranges = calibrate(str(export.path("full.onnx")), images, method, percentile,
                           input_name=export.schedule["input"]["name"], where=f"{source_name}: calibration")
        source = {"kind": "ptq", "method": method, "images": len(images), "config": str(source_name)}
        if method == "percentile":
            source["percentile"] = percentile
    result = quantize_export(folder, ranges, source)
    result["seconds"] = round(time.time() - start, 3)
    return result
