"""The numpy int8 reference runs fused inverted residuals row by row through a ring of k expanded
rows, bit exact with the op-by-op run: whole maps (stride 1 and 2, with and without shortcut, the
expand-1 block, a 5x5 kernel) and the tiles of stage 1 (border and interior, per-tile pads) plus
stage 2; a ring one row too short is not."""
import copy
import json

import numpy as np
import pytest

from fixtures import calib_images, make_int8_export
from tinydet.quant import reference as R
from tinydet.quant.qgraph import load_qgraph

BLOCKS = [1, 2, 3, 4, 5]  # every inverted residual of the fixture (block 0 is the stem conv)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuse_ref") / "exp"
    make_int8_export(out)
    return out


def _images():
    return np.concatenate(calib_images(3, seed=7))  # batch 3


def test_fused_ops_are_found_in_each_stage(export):
    full = load_qgraph(export / "full.int8.onnx")
    s1 = load_qgraph(export / "stage1_patch.int8.onnx")
    f_full = R.fused_ops(full, BLOCKS)
    assert [f.dw for f in f_full] == [f"blocks.{b}.dw" for b in BLOCKS]
    assert f_full[0].expand is None and all(f.expand for f in f_full[1:]) and all(f.pad is None for f in f_full)
    f_s1 = R.fused_ops(s1, BLOCKS)
    assert [f.dw for f in f_s1] == ["blocks.1.dw", "blocks.2.dw", "blocks.3.dw"]  # split 4: blocks 0..3 per tile
    assert all(f.pad for f in f_s1)  # per-tile border pads


def test_full_graph_fused_is_bit_exact(export):
    full = load_qgraph(export / "full.int8.onnx")
    x = _images()
    plain = R.run_full(full, x)
    fused = R.run_full(full, x, BLOCKS)
    assert all(np.array_equal(a, b) for a, b in zip(plain, fused))
    short = R.run_full(full, x, BLOCKS, ring_short=1)
    assert not all(np.array_equal(a, b) for a, b in zip(plain, short))


def test_stitched_tiles_and_stage_two_fused_are_bit_exact(export):
    s1 = load_qgraph(export / "stage1_patch.int8.onnx")
    s2 = load_qgraph(export / "stage2.int8.onnx")
    schedule = json.loads((export / "schedule.json").read_text())
    fused = copy.deepcopy(schedule)
    fused["memory"]["rules"]["fused_blocks"] = BLOCKS
    x = _images()
    plain, split_plain = R.run_stitched(s1, s2, schedule, x, return_split=True)
    got, split_fused = R.run_stitched(s1, s2, fused, x, return_split=True)
    assert np.array_equal(split_plain, split_fused)  # every tile, border and interior
    assert all(np.array_equal(a, b) for a, b in zip(plain, got))
    _, split_short = R.run_stitched(s1, s2, fused, x, return_split=True, ring_short=1)
    assert not np.array_equal(split_plain, split_short)


def _as_v2(schedule: dict) -> dict:
    """A v3 schedule.json mapping the way format version 2 wrote it: no fusion keys."""
    old = json.loads(json.dumps(schedule))
    memory = old["memory"]
    for holder in (memory, memory["plan"], old["arena"], old["arena_layer"]):
        del holder["rules"]["fused_blocks"]
    for arena in (old["arena"], old["arena_layer"]):
        for step in [*arena["steps"], *(s for t in arena["tiles"] for s in t)]:
            del step["fused_ops"], step["input_from"]
    memory["plan"]["format_version"] = 2
    old["format_version"] = 2
    return old


def test_fused_export_is_v3_and_v2_folders_still_load(tmp_path):
    from fixtures import GRID, RES, SPLIT
    from test_export_folder import rewrite_schedule
    from tinydet.export.folder import export_network
    from tinydet.export.schedule_file import load_export
    from tinydet.schedule import MemoryRules

    from fixtures import HEAD, residual_spec
    from test_export_utils import random_network

    model = random_network(residual_spec(), HEAD, seed=2)
    graph = model.graph(RES)
    everything = MemoryRules(fused_blocks=tuple(BLOCKS))
    out = tmp_path / "fused"
    export_network(model, graph, out, SPLIT, GRID, rules=everything, check_images=1)
    sched = load_export(out).schedule
    assert sched["format_version"] == 3 and sched["memory"]["rules"]["fused_blocks"] == BLOCKS
    assert sched["arena"]["arena_bytes"] == sched["memory"]["peak_sram_patch"]
    assert any(s["fused_ops"] for t in sched["arena"]["tiles"] for s in t)
    # a folder of format version 2 (before fusion) reads exactly as the current format
    plain = tmp_path / "plain"
    export_network(model, graph, plain, SPLIT, GRID, check_images=1)
    v3 = load_export(plain).schedule
    rewrite_schedule(plain, _as_v2(v3))
    again = load_export(plain)
    assert again.source_version == 2 and again.schedule == v3
    # the fused folder deploys: tests/test_fusion_deploy.py
