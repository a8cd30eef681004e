"""The export folder: stitched stages == full model (float, onnxruntime), schedule.json content,
checksums, add_files, and the atomic write."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from tinydet.arch import get_spec
from tinydet.errors import TinydetError
from tinydet.export import add_files, load_export, onnx_runner
from tinydet.export.folder import export_network
from tinydet.export.runtime import float_stitched_max_abs_diff
from tinydet.geometry import Pads
from tinydet.schedule import PatchPlan, plan_patches

from test_export_utils import HEAD, random_network, tiny_spec


def _images(shape, n=2, seed=3):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _torch_outputs(model, images):
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(images))]


# (spec, head, resolution HxW, grid, split): non-square inputs, 3x3 / 2x3 / 3x2 grids with unequal
# tiles, splits inside residual stages, detectors with two heads and a classifier
CASES = {
    # 10x14 split map, rows 3+4+3: block 3 (residual, 16 ch) is in stage 2, block 2 in stage 1
    "tiny-det-3x2-split3": (tiny_spec(), HEAD, (40, 56), (3, 2), 3),
    "tiny-det-3x3-split2": (tiny_spec(), HEAD, (52, 36), (3, 3), 2),
    "tiny-cls-2x3-split5": (tiny_spec(num_classes=5), None, (48, 72), (2, 3), 5),
    # MobileNetV2 split 6: blocks 4-6 are the 32-channel stage; 5 runs per patch, 6 per layer
    "mbv2-det-3x3-split6": (get_spec("mbv2-w0.35"), HEAD, (96, 128), (3, 3), 6),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stitched_stages_equal_full_and_torch(case, tmp_path):
    spec, head, res, grid, split = CASES[case]
    model = random_network(spec, head=head, seed=4)
    graph = model.graph(res)
    out = tmp_path / "exp"
    summary = export_network(model, graph, out, split, grid, check_images=1)
    assert summary["float_stitched_max_abs_diff"] <= 1e-4
    assert summary["grid"] == list(grid) and summary["split"] == split
    images = _images((3, *res))
    ref = _torch_outputs(model, images)
    full = onnx_runner(out)(images)
    stitched = onnx_runner(out, patched=True)(images)
    assert [a.shape for a in full] == [a.shape for a in ref] == [a.shape for a in stitched]
    for r, f, s in zip(ref, full, stitched):
        assert np.abs(r - f).max() <= 1e-4
        assert np.abs(f - s).max() <= 1e-4
        assert np.abs(r).max() > 1e-2  # the outputs carry signal, so equality means something
    assert float_stitched_max_abs_diff(out, images) <= 1e-4


def test_schedule_json_content(tmp_path):
    model = random_network(tiny_spec(), head=HEAD, seed=5)
    graph = model.graph((40, 56))
    export_network(model, graph, tmp_path / "e", 3, (3, 2),
                   detector={"num_classes": 2, "class_names": ["a", "b"], "anchors": [[[1, 2], [3, 4]]] * 2,
                             "strides": [4, 8], "conf_thresh": 0.1, "nms_iou": 0.5, "max_det": 10})
    export = load_export(tmp_path / "e")
    s = export.schedule
    assert s["format_version"] == 3 and s["arch"]["name"] == "tiny" and s["arch"]["spec"] == tiny_spec().to_dict()
    assert s["input"]["shape"] == [3, 40, 56] and s["grid"] == [3, 2] and s["split"] == 3
    assert s["outputs"] == ["heads.0.out", "heads.1.out"] and s["split_tensor"] == "blocks.2.project"
    assert s["stage1_ops"] == [op.name for op in graph.ops if 0 <= op.block < 3]
    assert set(s["files"]) == {"full.onnx", "stage1_patch.onnx", "stage2.onnx"}
    assert s["detector"]["class_names"] == ["a", "b"]
    plan = plan_patches(graph, (3, 2), 3)  # the plan export_network makes, recomputed
    assert s["memory"]["peak_sram_patch"] == plan.peak_sram_patch and s["macs"]["patch"] == plan.macs_patch
    assert s["macs"]["mac_overhead"] == plan.mac_overhead == plan.macs_patch / graph.macs - 1
    assert max(s["memory"]["layer_working_sets"].values()) == s["memory"]["peak_sram_per_layer"]
    assert s["arena"]["arena_bytes"] == s["memory"]["peak_sram_patch"]  # the C arena is the planned peak
    assert len(s["arena"]["tiles"]) == len(s["tiles"])
    # 10x14 split map in 3 rows: 3, 4, 3 rows -> unequal tiles, covering the map exactly once
    rows = sorted({(t["out_rect"][0], t["out_rect"][1]) for t in s["tiles"]})
    assert rows == [(0, 3), (3, 7), (7, 10)]
    stem = "blocks.0.conv"
    for t in s["tiles"]:
        pads = t["pads"][stem]
        assert set(pads) == {"top", "left", "bottom", "right"}  # named, format version 2
        # zero padding exactly at the image border, none inside
        assert pads["top"] == (1 if t["in_rect"][0] == 0 else 0)
        assert pads["left"] == (1 if t["in_rect"][2] == 0 else 0)
        assert pads["bottom"] == 0 and pads["right"] == 0 or t["in_rect"][1] == 40 or t["in_rect"][3] == 56
        assert t["regions"][stem]["pad"] == pads
        assert t["onnx_pads"][f"{stem}/pads"] == [0, 0, pads["top"], pads["left"], 0, 0, pads["bottom"], pads["right"]]
        assert all(v <= 0 for crop in t["shortcut_crop"].values() for v in crop.values())
        assert set(t["onnx_pads"]) == {i["name"] for i in s["tile_inputs"]}
    interior = [t for t in s["tiles"] if t["row"] == 1]
    assert interior and all(t["pads"][stem]["top"] == t["pads"][stem]["bottom"] == 0 for t in interior)
    # the per-layer arena is in the folder too: the allocator's plan for per-layer execution
    layer = s["arena_layer"]
    assert layer["patched"] is False and layer["arena_bytes"] == s["memory"]["peak_sram_per_layer"]
    assert [st["op"] for st in layer["steps"]] == [op["name"] for op in s["ops"]]
    assert PatchPlan.from_dict(s["memory"]["plan"]).tiles[0].regions[stem].pad == Pads.load(s["tiles"][0]["pads"][stem])


def _as_v1(schedule: dict) -> dict:
    """A v2 schedule.json mapping rewritten the way format version 1 wrote it: pads as
    [left, right, top, bottom] lists, no arena_layer."""
    old = json.loads(json.dumps(schedule))
    v1 = lambda p: [p["left"], p["right"], p["top"], p["bottom"]]  # noqa: E731
    tiles = old["tiles"] + old["memory"]["plan"]["tiles"]
    for t in tiles:
        if "pad" in t:
            t["pad"] = v1(t["pad"])
        for r in t["regions"].values():
            r["pad"] = v1(r["pad"])
        for key in ("pads", "shortcut_crop"):
            if key in t:
                t[key] = {op: v1(p) for op, p in t[key].items()}
    old["memory"]["plan"]["format_version"] = 1
    del old["arena_layer"]
    old["format_version"] = 1
    return old


def write_v1(folder, v1):
    """Make ``folder`` a version-1 folder (schedule ``v1``, no manifest: they came later)."""
    (folder / "schedule.json").write_text(json.dumps(v1))
    (folder / "manifest.json").unlink(missing_ok=True)


def rewrite_schedule(folder, schedule):
    """Edit schedule.json and re-hash the manifest, as a tamperer who knows the format would."""
    from tinydet.io.manifest import MANIFEST, build_manifest

    (folder / "schedule.json").write_text(json.dumps(schedule))
    (folder / MANIFEST).write_text(json.dumps(build_manifest(folder).to_dict()))


def test_v1_folder_still_loads_as_v2(tmp_path):
    """A folder written by format version 1 reads exactly as the v2 folder of the same export."""
    model = random_network(tiny_spec(), head=HEAD, seed=5)
    out = tmp_path / "e"
    export_network(model, model.graph((40, 56)), out, 3, (3, 2), check_images=1)
    v2 = load_export(out).schedule
    v1 = _as_v1(v2)
    assert v1["tiles"][0]["pads"]["blocks.0.conv"] == [1, 0, 1, 0]  # (left, right, top, bottom) at the corner
    write_v1(out, v1)
    export = load_export(out)
    assert export.source_version == 1 and export.schedule == v2
    assert json.loads((out / "schedule.json").read_text()) == v1  # loading does not rewrite the folder
    # the patched float runner still works on the v1 folder
    images = np.random.default_rng(0).random((1, 3, 40, 56), dtype=np.float32)
    assert float_stitched_max_abs_diff(out, images) <= 1e-4
    # a malformed v1 pad is named
    v1["tiles"][1]["regions"]["blocks.0.conv"]["pad"] = [1, 2]
    write_v1(out, v1)
    with pytest.raises(TinydetError, match=r"tiles\[1\]: regions: blocks.0.conv: pad: expected pads"):
        load_export(out)


def test_tampered_missing_and_unlisted_files(tmp_path):
    model = random_network(tiny_spec(), head=HEAD, seed=6)
    out = tmp_path / "e"
    export_network(model, model.graph(32), out, 2, 2, check_images=1)
    load_export(out)
    data = (out / "stage2.onnx").read_bytes()
    (out / "stage2.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(TinydetError, match="checksum mismatch: stage2.onnx was modified after export"):
        load_export(out)
    with pytest.raises(TinydetError, match="checksum mismatch: stage2.onnx"):
        onnx_runner(out, patched=True)
    (out / "stage2.onnx").write_bytes(data)
    (out / "full.onnx").unlink()
    with pytest.raises(TinydetError, match="full.onnx is missing"):
        load_export(out)
    with pytest.raises(TinydetError, match="full.onnx is missing"):
        onnx_runner(out)


def test_format_version_and_unlisted_file(tmp_path):
    model = random_network(tiny_spec(), head=HEAD, seed=6)
    out = tmp_path / "e"
    export_network(model, model.graph(32), out, 2, 2, check_images=1)
    (out / "extra.onnx").write_bytes(b"x")
    with pytest.raises(TinydetError, match="extra.onnx is not listed"):
        load_export(out)
    (out / "extra.onnx").unlink()
    sched = json.loads((out / "schedule.json").read_text())
    sched["format_version"] = 99
    rewrite_schedule(out, sched)
    with pytest.raises(TinydetError, match="format_version: expected one of 1, 2, 3, got 99"):
        load_export(out)
    with pytest.raises(TinydetError, match="export folder does not exist"):
        load_export(tmp_path / "nope")


def test_add_files_and_int8_path(tmp_path):
    model = random_network(tiny_spec(), head=HEAD, seed=7)
    out = tmp_path / "e"
    export_network(model, model.graph((40, 56)), out, 3, (3, 2), check_images=1)
    with pytest.raises(TinydetError, match="no full.int8.onnx.*tinydet quantize"):
        onnx_runner(out, int8=True)
    # the int8 path is the float path with other file names: copies of the float files must run the same
    blobs = {f"{n}.int8.onnx": (out / f"{n}.onnx").read_bytes() for n in ("full", "stage1_patch", "stage2")}
    add_files(out, blobs)
    export = load_export(out)
    assert {"full.int8.onnx", "stage1_patch.int8.onnx", "stage2.int8.onnx"} <= set(export.schedule["files"])
    images = _images((3, 40, 56), n=1)
    a = onnx_runner(out, int8=True, patched=True)(images)
    b = onnx_runner(out)(images)
    assert all(np.abs(x - y).max() <= 1e-4 for x, y in zip(a, b))
    with pytest.raises(TinydetError, match="cannot be replaced"):
        add_files(out, {"full.onnx": b"x"})
    with pytest.raises(TinydetError, match="plain file name"):
        add_files(out, {"../evil.onnx": b"x"})
    (out / "stage2.int8.onnx").write_bytes(b"changed")
    with pytest.raises(TinydetError, match="stage2.int8.onnx was modified"):
        load_export(out)


def test_wrong_image_shape_is_a_clear_error(tmp_path):
    model = random_network(tiny_spec(), head=HEAD, seed=8)
    export_network(model, model.graph((40, 56)), tmp_path / "e", 3, 2, check_images=1)
    with pytest.raises(TinydetError, match=r"expected images \[B, 3, 40, 56\]"):
        onnx_runner(tmp_path / "e", patched=True)(np.zeros((1, 3, 56, 40), np.float32))


@pytest.mark.parametrize("stage", ["onnx", "check"])
def test_failed_export_leaves_nothing_half_written(stage, tmp_path, monkeypatch):
    import tinydet.export.folder as folder

    model = random_network(tiny_spec(), head=HEAD, seed=9)
    graph = model.graph(32)
    out = tmp_path / "e"

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    # a failure before anything is written, and one after the ONNX files and schedule.json are on disk
    monkeypatch.setattr(folder, "stage2_model" if stage == "onnx" else "float_stitched_max_abs_diff", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_network(model, graph, out, 2, 2)
    assert os.listdir(tmp_path) == []  # no folder, no temporary folder
    monkeypatch.undo()
    export_network(model, graph, out, 2, 2, check_images=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(folder, "stage2_model" if stage == "onnx" else "float_stitched_max_abs_diff", boom)
    with pytest.raises(RuntimeError):
        export_network(random_network(tiny_spec(), head=HEAD, seed=10), graph, out, 3, 2)
    assert sorted(os.listdir(tmp_path)) == ["e"]  # the old export is untouched
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    load_export(out)


def test_stitch_mismatch_is_refused(tmp_path, monkeypatch):
    """A plan whose pads are wrong is caught by the check run at export time."""
    import tinydet.export.folder as folder

    real = folder.tile_pads

    def off_by_one(*args, **kwargs):
        pads = real(*args, **kwargs)
        name = next(iter(pads))
        p = pads[name]
        if p.top == 0 and p.bottom == 0:  # an interior tile: shift its rows by one
            pads[name] = replace(p, top=1, bottom=-1)
        return pads

    monkeypatch.setattr(folder, "tile_pads", off_by_one)
    model = random_network(tiny_spec(), head=HEAD, seed=11)
    with pytest.raises(TinydetError, match="stitched stages differ from full.onnx"):
        export_network(model, model.graph((64, 48)), tmp_path / "e", 3, 3, check_images=1)
    assert not (tmp_path / "e").exists()
