"""tinydet.deploy.lower: export folder -> typed table rows (pure Python, no compiler)."""
import copy

import numpy as np
import pytest

from tinydet.deploy import emit_c
from tinydet.deploy import lower as lw
from tinydet.errors import TinydetError
from tinydet.export import load_export
from tinydet.geometry import Pads

from test_deploy import folder  # noqa: F401  (the session's quantized tiny export)


@pytest.fixture(scope="module")
def export(folder):  # noqa: F811
    e = load_export(folder)
    return e, lw.load_models(e)


def test_patch_rows_follow_the_plan(export):
    e, models = export
    sched = e.schedule
    m = lw.lower_export(e, models, "patch")
    assert m.arena_bytes == m.planned_peak_bytes == sched["memory"]["peak_sram_patch"]
    assert len(m.tiles) == len(sched["tiles"])
    s1 = list(sched["stage1_ops"])
    for t, (row, tile, steps) in enumerate(zip(m.tiles, sched["tiles"], sched["arena"]["tiles"])):
        assert row.rect.to_list() == tile["in_rect"] and row.input == sched["arena"]["tile_inputs"][t]
        mine = m.tile_steps[row.first_step:row.first_step + row.num_steps]
        assert [s.op for s in mine] == s1
        for s, a in zip(mine, steps):
            mode = lw.STAGED_DW if a.get("staged") else a["mode"]  # the arena's staged depthwise
            assert (s.input, s.mode, s.reverse) == (a["input"], mode, a["reverse"])
            if a.get("staged"):
                assert s.temp == a["temp"] and a["temp_bytes"] == a["output_bytes"]
            assert isinstance(s.pad, Pads) and s.pad.top >= 0 and s.pad.left >= 0
        # the sink writes the tile's out_rect of the stage-1 map
        c, _, w = sched["tensors"][sched["split_tensor"]] if sched["split_tensor"] in sched.get("tensors", {}) \
            else next(op["out_shape"] for op in sched["ops"] if op["output"] == sched["split_tensor"])
        oy0, _, ox0, _ = tile["out_rect"]
        assert mine[-1].mode == "sink" and mine[-1].out_pitch == w
        assert mine[-1].output == steps[-1]["output"] + (oy0 * w + ox0) * c
    # a layer's const data is written once for all tiles
    assert len({layer.name for layer in m.layers}) == len(m.layers) == len(sched["ops"])
    assert [s.op for s in m.steps] == [a["op"] for a in sched["arena"]["steps"]]


def test_layer_rows_use_the_layer_arena(export):
    e, models = export
    m = lw.lower_export(e, models, "layer")
    arena = e.schedule["arena_layer"]
    assert m.arena_bytes == arena["arena_bytes"] == e.schedule["memory"]["peak_sram_per_layer"]
    assert [(s.input, s.output) for s in m.steps] == [(a["input"], a["output"]) for a in arena["steps"]]
    assert m.tiles == [] and m.input_offset == arena["input"]


def test_detector_tables(export):
    e, models = export
    m = lw.lower_export(e, models, "patch", conf=0.3)
    det = m.detector
    assert det is not None and det.conf_thresh == 0.3 and len(det.heads) == len(m.outputs)
    for hd, o in zip(det.heads, m.outputs):
        assert hd.offset == o.offset and hd.sigmoid.dtype == np.float32 and hd.sigmoid.shape == (256,)
        assert np.all(np.diff(hd.sigmoid) >= 0)
        assert hd.objectness_min == lw.objectness_min(hd.sigmoid, 0.3)
    assert m.decode_bytes == lw.CANDIDATE_BYTES * det.max_candidates + lw.DETECTION_BYTES * det.max_det


def test_emitted_c_is_designated_data_only(export, tmp_path):
    e, models = export
    m = lw.lower_export(e, models, "patch")
    src = emit_c.model_c(m)
    s = m.tile_steps[0]
    assert (f".pad = {{.top = {s.pad.top}, .left = {s.pad.left}, .bottom = {s.pad.bottom}, "
            f".right = {s.pad.right}}}") in src
    assert f"sizeof(tinydet_candidate) == {lw.CANDIDATE_BYTES}" in src
    # data only: no function bodies in generated code
    assert "{\n    return" not in src and "for (" not in src and "switch" not in src
    assert emit_c.c_float(0.1) == "0x1.99999a0000000p-4f"


def test_bad_plans_are_refused(export):
    e, models = export
    bad = copy.copy(e)
    bad.schedule = copy.deepcopy(e.schedule)
    bad.schedule["arena"]["arena_bytes"] += 8
    with pytest.raises(TinydetError, match="planner's patch peak"):
        lw.lower_export(bad, models, "patch")
    bad.schedule = copy.deepcopy(e.schedule)
    bad.schedule["arena"]["tiles"][0][0]["mode"] = "teleport"
    with pytest.raises(TinydetError, match="mode 'teleport'"):
        lw.lower_export(bad, models, "patch")
    with pytest.raises(TinydetError, match="--mode"):
        lw.lower_export(e, models, "tiles")
    with pytest.raises(TinydetError, match="crops its input on the top/left"):
        lw._check_pads("x", Pads(-1, 0, 0, 0), (5, 5), lw.layer_row(models[0].ops[1]), (5, 5), "here")


def test_a_version_1_folder_lowers_to_the_same_rows(folder, tmp_path):  # noqa: F811
    """Old folders (pads as lists, no arena_layer) still deploy: load_export upgrades them."""
    import json
    import shutil

    from test_export_folder import _as_v1

    old = tmp_path / "v1"
    shutil.copytree(folder, old)
    (old / "schedule.json").write_text(json.dumps(_as_v1(load_export(folder).schedule)))
    (old / "manifest.json").unlink()  # version-1 folders had no manifest
    e1, e2 = load_export(old), load_export(folder)
    assert e1.source_version == 1
    for mode in lw.MODES:
        a = lw.lower_export(e1, lw.load_models(e1), mode)
        b = lw.lower_export(e2, lw.load_models(e2), mode)
        assert a.steps == b.steps and a.tile_steps == b.tile_steps and a.tiles == b.tiles
        assert emit_c.model_c(a) == emit_c.model_c(b)


def test_budgets_come_from_target_json_and_sizes_parse_like_plan():
    import json

    from tinydet.deploy import targets, toolchain
    from tinydet.units import parse_bytes

    for name in toolchain.list_targets():
        b = targets.budget(name)
        if name == "host":
            assert b.sram is None and b.flash is None
            continue
        d = json.loads((toolchain.TARGETS_DIR / name / "target.json").read_text())
        assert (b.sram, b.flash) == (d["sram_bytes"], d["flash_bytes"])
    assert targets.budget("stm32f746", sram="256 KiB", flash="1M").sram == 262144 == parse_bytes("256kB")
    with pytest.raises(TinydetError, match="--sram: expected a size"):
        targets.budget("stm32f746", sram="lots")
    with pytest.raises(TinydetError, match="--target: expected one of host, qemu-mps2-an500"):
        targets.budget("stm32f747")


def test_struct_sizes_the_budget_assumes_are_checked_by_the_compiler(folder, tmp_path, monkeypatch):  # noqa: F811
    from tinydet.deploy.build import build_firmware

    monkeypatch.setattr(lw, "CANDIDATE_BYTES", lw.CANDIDATE_BYTES + 4)
    with pytest.raises(TinydetError, match="compiling firmware"):
        build_firmware(folder, "host", tmp_path / "b", mode="layer")
    assert "td_check_candidate_bytes" in (tmp_path / "b" / "firmware.build.log").read_text()
