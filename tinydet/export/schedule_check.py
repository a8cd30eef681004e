"""The values of an export folder's ``schedule.json``, checked on load (:func:`check_schedule`).

The checksums (``manifest.json``) say the file is the one export wrote; these checks say its
numbers make sense, so that no reader (deploy, validate, eval) trusts a value it has not
checked, even in a folder whose manifest was regenerated after an edit:

* every arena offset lies inside its arena, with the buffer's whole size (``arena`` and
  ``arena_layer``: steps, tile steps, stage-1 buffer, inputs, outputs), a staged step is an
  in-place depthwise whose ``temp`` holds its whole output, and each arena is at
  least its planned peak (``memory.peak_sram_patch`` / ``peak_sram_per_layer``, themselves at
  least the largest layer working set);
* the input shape, the outputs and their shapes are those of ``full.onnx``;
* for a detector: ``num_classes`` = the number of class names, anchors and strides per output,
  each output with ``anchors x (5 + num_classes)`` channels at input size / stride, decode
  thresholds in range;
* the tile grid: one tile (and one arena tile) per grid cell, rectangles inside their maps.

Each failure is a one-line TinydetError naming the file and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tinydet.errors import TinydetError

# (offset key, size key) of an arena step; a step's result and move_from are output-sized
STEP_BUFFERS = (("input", "input_bytes"), ("output", "output_bytes"), ("result", "output_bytes"),
                ("shortcut", "shortcut_bytes"), ("temp", "temp_bytes"), ("move_from", "output_bytes"),
                ("input_from", "input_bytes"))


LOAD_HINT = "the file was modified after export (re-export the folder with `tinydet export`)"


class _Checker:
    def __init__(self, where: str, hint: str):
        self.where, self.hint = where, hint

    def fail(self, field: str, expected: str, got: Any) -> None:
        raise TinydetError(f"{self.where}: {field}: expected {expected}, got {got!r}" +
                           (f"; {self.hint}" if self.hint else ""))

    def get(self, data: Any, key: Any, field: str) -> Any:
        try:
            return data[key]
        except (KeyError, IndexError, TypeError):
            self.fail(field, "a value (missing)", None)

    def int(self, value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"in [{lo if lo is not None else '-inf'}, {hi}]"
            self.fail(field, f"an integer {bounds}", value)
        return value

    def number(self, value: Any, field: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.fail(field, f"a number in [{lo}, {hi}]", value)
        return float(value)

    def shape(self, value: Any, field: str, rank: int = 3) -> list[int]:
        if not isinstance(value, list) or len(value) != rank:
            self.fail(field, f"a shape of {rank} positive integers", value)
        return [self.int(v, f"{field}[{i}]", 1) for i, v in enumerate(value)]

    def buffer(self, offset: Any, size: int, arena: int, field: str) -> None:
        """``[offset, offset + size)`` inside ``[0, arena)`` (``offset`` None = no such buffer)."""
        if offset is None:
            return
        self.int(offset, field, 0, arena - size)


def _check_arena(c: _Checker, arena: Any, name: str, peak: int, tensors: Mapping[str, list[int]]) -> None:
    if not isinstance(arena, dict):
        c.fail(name, "the arena plan (a mapping)", arena)
    total = c.int(c.get(arena, "arena_bytes", f"{name}.arena_bytes"), f"{name}.arena_bytes", 1)
    if total < peak:
        c.fail(f"{name}.arena_bytes", f"at least the planned peak {peak} B", total)
    c.buffer(arena.get("input"), c.int(arena.get("input_bytes", 0), f"{name}.input_bytes", 0), total, f"{name}.input")
    c.buffer(arena.get("stage1_buffer"), c.int(arena.get("stage1_buffer_bytes", 0), f"{name}.stage1_buffer_bytes", 0),
             total, f"{name}.stage1_buffer")
    tiles = arena.get("tiles", [])
    steps = [(f"{name}.steps[{i}]", s) for i, s in enumerate(c.get(arena, "steps", f"{name}.steps") or [])]
    if not isinstance(tiles, list):
        c.fail(f"{name}.tiles", "a list of tile step lists", tiles)
    for t, tile in enumerate(tiles):
        if not isinstance(tile, list):
            c.fail(f"{name}.tiles[{t}]", "a list of steps", tile)
        steps += [(f"{name}.tiles[{t}][{i}]", s) for i, s in enumerate(tile)]
    for field, step in steps:
        if not isinstance(step, dict):
            c.fail(field, "an arena step (a mapping)", step)
        for key, size_key in STEP_BUFFERS:
            size = c.int(step.get(size_key, 0), f"{field}.{size_key}", 0)
            c.buffer(step.get(key), size, total, f"{field}.{key}")
        for i, off in enumerate(step.get("inputs") or []):  # several inputs (add / concat): their starts
            c.buffer(off, 1, total, f"{field}.inputs[{i}]")
        staged = step.get("staged", False)  # absent in exports made before staging
        if not isinstance(staged, bool):
            c.fail(f"{field}.staged", "true or false", staged)
        if staged and (step.get("mode") != "inplace_dw" or step.get("temp") is None
                       or step.get("temp_bytes") != step.get("output_bytes")):
            c.fail(f"{field}.staged", "only on an inplace_dw step whose temp holds the whole output "
                   "(temp_bytes = output_bytes)", staged)
    for t, off in enumerate(arena.get("tile_inputs", [])):
        c.buffer(off, 1, total, f"{name}.tile_inputs[{t}]")
    for out, off in (arena.get("outputs") or {}).items():
        shape = tensors.get(out)
        size = shape[0] * shape[1] * shape[2] if isinstance(shape, list) and len(shape) == 3 else 1
        c.buffer(off, size, total, f"{name}.outputs.{out}")


def _onnx_io(path: Path) -> tuple[list[list[Any]], list[tuple[str, list[Any]]]]:
    """Input shapes and (name, shape) of the outputs of an ONNX file (symbolic dims as strings)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    return [dims(v) for v in graph.input if v.name not in inits], [(v.name, dims(v)) for v in graph.output]


def _check_detector(c: _Checker, det: Any, sched: Mapping[str, Any], tensors: Mapping[str, list[int]]) -> None:
    if not isinstance(det, dict):
        c.fail("detector", "the detector entry (a mapping) or null", det)
    n = c.int(c.get(det, "num_classes", "detector.num_classes"), "detector.num_classes", 1)
    names = c.get(det, "class_names", "detector.class_names")
    if not isinstance(names, list) or len(names) != n or not all(isinstance(x, str) for x in names):
        c.fail("detector.class_names", f"{n} class names (detector.num_classes)", names)
    anchors, strides = c.get(det, "anchors", "detector.anchors"), c.get(det, "strides", "detector.strides")
    outputs = sched["outputs"]
    if not isinstance(anchors, list) or len(anchors) != len(outputs):
        c.fail("detector.anchors", f"one anchor list per output ({len(outputs)})", anchors)
    if not isinstance(strides, list) or len(strides) != len(outputs):
        c.fail("detector.strides", f"one stride per output ({len(outputs)})", strides)
    _, h, w = sched["input"]["shape"]
    for s, (out, scale, stride) in enumerate(zip(outputs, anchors, strides)):
        if not isinstance(scale, list) or not scale:
            c.fail(f"detector.anchors[{s}]", "a non-empty list of [w, h]", scale)
        for a, wh in enumerate(scale):
            if not isinstance(wh, list) or len(wh) != 2:
                c.fail(f"detector.anchors[{s}][{a}]", "[w, h]", wh)
            for v in wh:
                c.number(v, f"detector.anchors[{s}][{a}]", 1e-6, 1e6)
        stride = c.int(stride, f"detector.strides[{s}]", 1)
        want = [len(scale) * (5 + n), -(-h // stride), -(-w // stride)]
        if tensors.get(out) != want:
            c.fail(f"detector (output {out})", f"a map {tensors.get(out)} = anchors x (5 + num_classes), "
                   f"input / stride; the detector entry gives {want}", {"anchors": len(scale), "num_classes": n,
                                                                         "stride": stride})
    c.number(c.get(det, "conf_thresh", "detector.conf_thresh"), "detector.conf_thresh", 0.0, 1.0)
    c.number(c.get(det, "nms_iou", "detector.nms_iou"), "detector.nms_iou", 0.0, 1.0)
    c.int(c.get(det, "max_det", "detector.max_det"), "detector.max_det", 1)


def _inside(c: _Checker, rect: Any, shape: list[int], field: str) -> None:
    if not isinstance(rect, list) or len(rect) != 4:
        c.fail(field, "a rectangle [y0, y1, x0, x1]", rect)
    y0, y1, x0, x1 = (c.int(v, field) for v in rect)
    if not (0 <= y0 < y1 <= shape[1] and 0 <= x0 < x1 <= shape[2]):
        c.fail(field, f"a rectangle inside the {shape[1]}x{shape[2]} map", rect)


def check_schedule(sched: Mapping[str, Any], root: "str | Path", with_models: bool = True,
                   hint: str = LOAD_HINT, where: str | None = None) -> None:
    """Check the values of ``root``'s schedule.json (``sched``, in the current format; see the
    module docstring). ``with_models`` also compares with ``full.onnx`` (verified files only).
    Errors name ``where`` (default ``root/schedule.json``) and end with ``hint``."""
    root = Path(root)
    c = _Checker(where or str(root / "schedule.json"), hint)
    inp = c.get(sched, "input", "input")
    shape = c.shape(c.get(inp, "shape", "input.shape"), "input.shape")
    tensors = c.get(sched, "tensors", "tensors")
    outputs = c.get(sched, "outputs", "outputs")
    if not isinstance(tensors, dict) or not isinstance(outputs, list) or not outputs:
        c.fail("outputs", "a non-empty list of tensor names (with their shapes in tensors)", outputs)
    if tensors.get(inp.get("name")) not in (None, shape):
        c.fail(f"tensors.{inp.get('name')}", f"the input shape {shape}", tensors.get(inp.get("name")))
    for out in outputs:
        c.shape(tensors.get(out), f"tensors.{out}")
    if with_models:
        ins, outs = _onnx_io(root / "full.onnx")
        if not ins or list(ins[0][1:]) != shape:
            c.fail("input.shape", f"the input of full.onnx {ins[0][1:] if ins else None}", shape)
        if [name for name, _ in outs] != list(outputs):
            c.fail("outputs", f"the outputs of full.onnx {[name for name, _ in outs]}", outputs)
        for name, dims in outs:  # [batch, C, H, W], or [batch, C] for a classifier's [C, 1, 1]
            flat = len(dims) == 2 and tensors[name][1:] == [1, 1]
            if list(dims[1:]) != (tensors[name][:1] if flat else tensors[name]):
                c.fail(f"tensors.{name}", f"the shape of full.onnx output {name} {dims[1:]}", tensors[name])
    mem = c.get(sched, "memory", "memory")
    per_layer = c.int(c.get(mem, "peak_sram_per_layer", "memory.peak_sram_per_layer"), "memory.peak_sram_per_layer", 1)
    patch = c.int(c.get(mem, "peak_sram_patch", "memory.peak_sram_patch"), "memory.peak_sram_patch", 1)
    sets = mem.get("layer_working_sets") or {}
    if sets and per_layer < max(sets.values()):
        c.fail("memory.peak_sram_per_layer", f"at least the largest layer working set {max(sets.values())} B", per_layer)
    _check_arena(c, sched.get("arena"), "arena", patch, tensors)
    _check_arena(c, sched.get("arena_layer"), "arena_layer", per_layer, tensors)
    grid = c.get(sched, "grid", "grid")
    if not isinstance(grid, list) or len(grid) != 2:
        c.fail("grid", "[rows, cols]", grid)
    rows, cols = (c.int(v, "grid", 1) for v in grid)
    tiles = c.get(sched, "tiles", "tiles")
    if not isinstance(tiles, list) or len(tiles) != rows * cols:
        c.fail("tiles", f"{rows * cols} tiles ({rows}x{cols} grid)", len(tiles) if isinstance(tiles, list) else tiles)
    arena_tiles = sched["arena"].get("tiles", [])
    if sched["arena"].get("patched", True) and len(arena_tiles) != len(tiles):
        c.fail("arena.tiles", f"one step list per tile ({len(tiles)})", len(arena_tiles))
    split_shape = tensors.get(sched.get("split_tensor"))
    for t, tile in enumerate(tiles):
        _inside(c, c.get(tile, "in_rect", f"tiles[{t}].in_rect"), shape, f"tiles[{t}].in_rect")
        if isinstance(split_shape, list) and len(split_shape) == 3:
            _inside(c, c.get(tile, "out_rect", f"tiles[{t}].out_rect"), split_shape, f"tiles[{t}].out_rect")
    if sched.get("detector") is not None:
        _check_detector(c, sched["detector"], sched, tensors)
