"""Run an export folder (or one ONNX file) in onnxruntime: the full model, or stage 1 on every
tile of schedule.json + stitching + stage 2. The int8 QDQ files take the same code path with
other file names, so float and int8 stitching can never diverge.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tinydet.errors import TinydetError
from tinydet.export.schedule_file import ExportFolder, load_export
from tinydet.io.onnxrt import session

Runner = Callable[[np.ndarray], list]


def _check_images(images: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise TinydetError(f"{where}: expected images [B, {', '.join(map(str, shape))}] (NCHW float in [0, 1]), "
                           f"got shape {list(images.shape)}")
    return images


def _file_runner(path: Path, threads: int | None) -> Runner:
    sess = session(path, threads)
    inp = sess.get_inputs()[0]
    shape = tuple(inp.shape[1:])

    def run(images: np.ndarray) -> list[np.ndarray]:
        if all(isinstance(d, int) for d in shape):
            images = _check_images(images, shape, str(path))
        return sess.run(None, {inp.name: np.asarray(images, np.float32)})

    return run


def _check_tiling(export: ExportFolder, shape: tuple[int, int, int]) -> None:
    """The tiles' output rectangles must cover the split tensor exactly once."""
    count = np.zeros(shape[1:], np.int32)
    for tile in export.schedule["tiles"]:
        y0, y1, x0, x1 = tile["out_rect"]
        count[y0:y1, x0:x1] += 1
    if not (count == 1).all():
        raise TinydetError(f"{export.root / 'schedule.json'}: tiles: the output rectangles do not cover the "
                           f"{shape[1]}x{shape[2]} split tensor exactly once")


def patched_runner(export: ExportFolder, int8: bool = False, threads: int | None = 1) -> Runner:
    """Stage 1 on every tile (with its Pad vectors), stitching into the split tensor, then stage 2."""
    suffix = ".int8.onnx" if int8 else ".onnx"
    sched = export.schedule
    s1 = session(export.path(f"stage1_patch{suffix}"), threads)
    s2 = session(export.path(f"stage2{suffix}"), threads)
    split_name = sched["split_tensor"]
    split_shape = tuple(sched["tensors"][split_name])
    _check_tiling(export, split_shape)
    s1_inputs = {i.name for i in s1.get_inputs()}
    tiles = []
    for tile in sched["tiles"]:
        pads = {name: np.asarray(v, np.int64) for name, v in tile["onnx_pads"].items()}
        missing = s1_inputs - set(pads) - {sched["input"]["name"]}
        if missing:
            raise TinydetError(f"{export.root / 'schedule.json'}: tile ({tile['row']}, {tile['col']}) has no pads "
                               f"for stage-1 input '{sorted(missing)[0]}'")
        tiles.append((tile["in_rect"], tile["out_rect"], pads))
    in_shape = tuple(sched["input"]["shape"])

    def run(images: np.ndarray) -> list[np.ndarray]:
        images = _check_images(images, in_shape, str(export.root))
        stitched = np.zeros((images.shape[0], *split_shape), np.float32)
        for (y0, y1, x0, x1), (oy0, oy1, ox0, ox1), pads in tiles:
            feeds = {sched["input"]["name"]: np.ascontiguousarray(images[:, :, y0:y1, x0:x1]), **pads}
            out = s1.run([split_name], feeds)[0]
            if out.shape[2:] != (oy1 - oy0, ox1 - ox0):
                raise TinydetError(f"{export.root}: stage 1 made a {out.shape[2]}x{out.shape[3]} tile where "
                                   f"schedule.json expects {oy1 - oy0}x{ox1 - ox0} at {[oy0, oy1, ox0, ox1]}")
            stitched[:, :, oy0:oy1, ox0:ox1] = out
        return s2.run(None, {split_name: stitched})

    return run


def onnx_runner(path_or_export_dir: "str | Path", int8: bool = False, patched: bool = False,
                threads: int | None = 1) -> Runner:
    """``callable(images float32 [B, 3, H, W]) -> list[np.ndarray]`` (outputs in schedule.json order).

    A ``.onnx`` file runs as is; a folder is verified (:func:`load_export`) and runs
    ``full[.int8].onnx``, or with ``patched`` the stitched stages ``stage1_patch[.int8].onnx`` +
    ``stage2[.int8].onnx``.
    """
    path = Path(path_or_export_dir)
    if path.is_file():
        if patched:
            raise TinydetError(f"{path}: patched execution needs the export folder (schedule.json), not one ONNX file")
        return _file_runner(path, threads)
    if not path.exists():
        raise TinydetError(f"{path}: no such ONNX file or export folder")
    export = load_export(path, strict=int8)  # a broken int8 part does not stop float runs
    if patched:
        return patched_runner(export, int8=int8, threads=threads)
    return _file_runner(export.path("full.int8.onnx" if int8 else "full.onnx"), threads)


def float_stitched_max_abs_diff(export_dir: "str | Path", images: np.ndarray, int8: bool = False,
                                threads: int | None = 1) -> float:
    """Max |stitched stages - full model| over all outputs on ``images``, in onnxruntime."""
    full = onnx_runner(export_dir, int8=int8, threads=threads)(images)
    stitched = onnx_runner(export_dir, int8=int8, patched=True, threads=threads)(images)
    return float(max(np.abs(a.astype(np.float64) - b).max() for a, b in zip(full, stitched)))
