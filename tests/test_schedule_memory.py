"""Memory model, receptive field / region arithmetic and the patch planner (pure, no torch)."""
import json

import pytest

from tinydet.arch import ArchSpec, BlockSpec, HeadSpec, get_spec, list_presets, lower
from tinydet.errors import TinydetError
from tinydet.geometry import Pads
from tinydet.schedule import (MemoryRules, PatchPlan, Rect, halo, input_region, layer_working_sets, max_split,
                              pareto_front, peak_sram_per_layer, per_layer, per_layer_plan, plan_patches, receptive_field, search_plans,
                              tile_bounds)

MBV2 = lower(get_spec("mbv2-w1.0"), 224)


def ws_of(graph, name, rules=MemoryRules()):
    return layer_working_sets(graph, rules)[[op.name for op in graph.ops].index(name)]


def test_mbv2_peak_is_the_papers_number_at_the_first_expansion():
    ws = layer_working_sets(MBV2)
    assert max(ws) == peak_sram_per_layer(MBV2) == 1_404_928
    assert MBV2.ops[ws.index(max(ws))].name == "blocks.2.expand"  # 16 -> 96 channels at 112x112


def test_working_sets_by_hand():
    # stem: the input image counts (per-layer execution) + its output
    assert ws_of(MBV2, "blocks.0.conv") == 3 * 224 * 224 + 32 * 112 * 112
    # in-place depthwise: input + one output channel; without the rule input + output
    assert ws_of(MBV2, "blocks.2.dw") == 96 * 112 * 112 + 56 * 56
    assert ws_of(MBV2, "blocks.2.dw", MemoryRules(inplace_dw=False)) == 96 * 112 * 112 + 96 * 56 * 56
    # residual block 3: the shortcut (block 2 output) stays alive across the block
    assert ws_of(MBV2, "blocks.3.expand") == 24 * 56 * 56 + 144 * 56 * 56
    assert ws_of(MBV2, "blocks.3.dw") == 24 * 56 * 56 + 144 * 56 * 56 + 56 * 56
    # fused residual: the projection writes into the shortcut's buffer
    assert ws_of(MBV2, "blocks.3.project") == 144 * 56 * 56 + 24 * 56 * 56
    assert ws_of(MBV2, "blocks.3.project", MemoryRules(fused_residual=False)) == 144 * 56 * 56 + 2 * 24 * 56 * 56
    no_rules = MemoryRules(False, False)
    # without in-place depthwise the stride-2 depthwise after the expansion becomes the peak
    assert peak_sram_per_layer(MBV2, no_rules) == 96 * 112 * 112 + 96 * 56 * 56
    assert ws_of(MBV2, "blocks.2.dw", no_rules) > ws_of(MBV2, "blocks.2.dw")


def test_detector_liveness_keeps_head_outputs_and_tapped_features():
    g = lower(get_spec("mbv2-w0.35"), 160, head=HeadSpec(num_classes=2))
    t = g.tensors
    # the tapped feature feeds the head and the next block: the head's depthwise cannot run in place
    f13 = t["blocks.13.project"].nbytes
    assert ws_of(g, "heads.0.dw") == f13 + t["heads.0.dw"].nbytes
    # head 0's output stays alive to the end, so it is part of every later working set
    out0 = t["heads.0.out"].nbytes
    assert ws_of(g, "blocks.14.expand") == f13 + t["blocks.14.expand"].nbytes + out0
    assert ws_of(g, "heads.1.out") == t["heads.1.pw"].nbytes + t["heads.1.out"].nbytes + out0


def test_receptive_field_and_halo_of_the_split():
    idx = MBV2.block_end(4) - 1  # output of block 4 (28x28x32)
    assert receptive_field(MBV2, idx) == (27, 8)
    before, after = halo(MBV2, idx)
    assert (before, after) == (13, 6)
    assert 7 * 8 + before + after == 75  # interior 7x7 output tile -> 75x75 input tile


def test_input_region_interior_and_border():
    stem = MBV2.ops[0]  # 3x3 stride 2 pad 1, 224 -> 112
    rect, pad = input_region(stem, Rect(10, 20, 30, 40))
    assert rect == Rect(19, 40, 59, 80) and pad == Pads()
    rect, pad = input_region(stem, Rect(0, 5, 107, 112))
    assert rect == Rect(0, 10, 213, 224) and pad == Pads(top=1)  # top border only: the bottom row is unused
    # odd map: 3x3 stride 2 on 7 rows -> 4 rows, the last output row needs a zero row below
    spec = ArchSpec("odd", (BlockSpec("conv", 8, kernel=3, stride=2),))
    op = lower(spec, (7, 9)).ops[0]
    assert op.out_shape == (8, 4, 5)
    rect, pad = input_region(op, Rect(3, 4, 4, 5))
    assert rect == Rect(5, 7, 7, 9) and pad == Pads(bottom=1, right=1)


def test_tile_bounds_unequal_tiles_partition():
    assert tile_bounds(28, 4) == [0, 7, 14, 21, 28]
    assert tile_bounds(10, 3) == [0, 3, 7, 10]
    plan = plan_patches(lower(get_spec("mbv2-w0.35"), (96, 160)), (3, 4), 5)
    covered = set()
    for t in plan.tiles:
        cells = {(y, x) for y in range(t.out_rect.y0, t.out_rect.y1) for x in range(t.out_rect.x0, t.out_rect.x1)}
        assert not covered & cells
        covered |= cells
    assert covered == {(y, x) for y in range(12) for x in range(20)}
    plan = plan_patches(lower(get_spec("mbv2-w0.35"), 160), 3, 5)  # 20 rows over 3 tiles: 7, 6, 7
    assert sorted({t.out_rect.h for t in plan.tiles}) == [6, 7]


def test_paper_configuration_mbv2():
    plan = plan_patches(MBV2, 4, 5)
    assert plan.split_shape == (32, 28, 28)
    assert plan.peak_sram_per_layer == 1_404_928  # 1372 kB
    assert plan.max_tile_input == (75, 75)
    assert plan.peak_sram_patch == 176_400  # 172.3 kB, the paper's 172 kB
    assert plan.peak_sram_stage1 == 32 * 28 * 28 + (16 * 35 * 35 + 96 * 35 * 35)  # buffer + interior expansion
    assert 0.08 < plan.mac_overhead < 0.11  # paper: +10%
    assert plan.input_streamed
    interior = next(t for t in plan.tiles if (t.row, t.col) == (1, 1))
    assert interior.pad == Pads() and interior.in_rect.h == 75
    corner = plan.tiles[0]
    assert corner.pad == Pads(top=1, left=1) and corner.in_rect == Rect(0, 62, 0, 62)


def test_paper_configuration_receptive_field_redistributed():
    plan = plan_patches(lower(get_spec("mbv2-w1.0-rd"), 224), 4, 3)
    assert plan.split_shape == (32, 28, 28)
    assert plan.max_tile_input == (63, 63)
    base = plan_patches(MBV2, 4, 5)
    assert plan.mac_overhead < 0.04 < base.mac_overhead


def test_residual_shortcut_is_a_crop_of_the_chain_region():
    plan = plan_patches(MBV2, 4, 5)
    t = next(t for t in plan.tiles if (t.row, t.col) == (1, 2))
    proj, expand = t.regions["blocks.3.project"], t.regions["blocks.3.expand"]
    assert expand.in_rect.contains(proj.out_rect) and expand.in_rect != proj.out_rect
    assert t.regions["blocks.2.project"].out_rect == expand.in_rect  # block input = what the chain needs


def test_grid_one_has_no_overhead_and_macs_grow_with_grid():
    g = lower(get_spec("mbv2-w0.35"), 128)
    overheads = [plan_patches(g, n, 5).mac_overhead for n in (1, 2, 4, 8)]
    assert overheads[0] == 0.0
    assert overheads == sorted(overheads) and overheads[-1] > overheads[1] > 0


def test_plan_round_trips_through_json():
    plan = plan_patches(lower(get_spec("mbv2-w0.35"), (96, 128), head=HeadSpec(3)), (2, 3), 4)
    data = json.loads(json.dumps(plan.to_dict()))
    assert PatchPlan.from_dict(data) == plan
    with pytest.raises(TinydetError, match="malformed plan"):
        PatchPlan.from_dict({"arch": "x"})


@pytest.mark.parametrize("grid,split,match", [
    (30, 5, "larger than the split feature map 28x28"),
    (4, 0, r"expected a block count in 1\.\.19"),
    (4, 20, r"expected a block count in 1\.\.19"),
    ("2x", 5, "grid"),
])
def test_plan_errors_are_one_line(grid, split, match):
    with pytest.raises(TinydetError, match=match) as exc:
        plan_patches(MBV2, grid, split)
    assert "\n" not in str(exc.value)


def test_detector_split_must_keep_heads_in_stage_two():
    g = lower(get_spec("mbv2-w1.0"), 224, head=HeadSpec(2))
    assert max_split(g) == 14  # the first head reads block 13
    plan_patches(g, 2, 14)
    with pytest.raises(TinydetError, match="at most 14"):
        plan_patches(g, 2, 15)


def _all_plans(g, grids):
    """The whole plan space search_plans looks at, enumerated here: per layer + every grid x split."""
    plans = [per_layer_plan(g)]
    for split in range(1, max_split(g) + 1):
        _, h, w = g.ops[g.block_end(split - 1) - 1].out_shape
        plans += [plan_patches(g, n, split) for n in grids if n <= min(h, w)]
    return plans


def _dominated(p, others, eps=1e-12):
    return any(q.peak <= p.peak and q.mac_overhead <= p.mac_overhead + eps
               and (q.peak < p.peak or q.mac_overhead < p.mac_overhead - eps) for q in others)


def test_front_is_the_brute_force_pareto_set():
    """Every plan of the space is either on the front or dominated by a front plan, and no front
    plan is dominated by any plan of the space (checked pair by pair, not with pareto_front)."""
    g = lower(get_spec("mbv2-w0.35"), 96)
    grids = (2, 3, 4)
    space = _all_plans(g, grids)
    _, front = search_plans(g, grids=grids)
    expected = {(p.peak, round(p.mac_overhead, 12)) for p in space if not _dominated(p, space)}
    assert {(p.peak, round(p.mac_overhead, 12)) for p in front} == expected
    assert len(front) == len(expected) >= 3  # one plan per trade-off point, and a real trade-off
    assert [p.peak for p in front] == sorted(p.peak for p in front)
    assert all(a.mac_overhead > b.mac_overhead for a, b in zip(front, front[1:]))
    # the ends: the lowest peak of the space, and a zero-overhead plan no higher than per layer
    assert front[0].peak == min(p.peak for p in space)
    assert front[-1].mac_overhead == 0.0 and front[-1].peak <= peak_sram_per_layer(g)
    # order of the input does not matter
    assert [(p.split, p.grid) for p in pareto_front(reversed(space))] == [(p.split, p.grid) for p in front]


def test_search_best_is_the_brute_force_optimum():
    g = lower(get_spec("mbv2-w0.35"), 96)
    grids = (2, 3, 4)
    space = _all_plans(g, grids)
    for limit in (0.02, 0.1, 0.5):
        best, _ = search_plans(g, grids=grids, max_overhead=limit)
        ok = [p for p in space if p.mac_overhead <= limit + 1e-12]
        assert best.mac_overhead <= limit and best.peak == min(p.peak for p in ok)
        assert best.mac_overhead == min(p.mac_overhead for p in ok if p.peak == best.peak)
    peaks = sorted({p.peak for p in space})
    for budget in peaks[1:4]:
        best, _ = search_plans(g, grids=grids, sram_budget=budget)
        fits = [p for p in space if p.peak <= budget]
        assert best.peak <= budget and best.mac_overhead == min(p.mac_overhead for p in fits)
    # a budget the per-layer schedule meets: no patches, no overhead
    roomy, _ = search_plans(g, grids=grids, sram_budget=peak_sram_per_layer(g))
    assert not roomy.patched and roomy.mac_overhead == 0.0
    none, _ = search_plans(g, grids=grids, sram_budget=peaks[0] - 1)
    assert none is None


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_plans(name):
    g = lower(get_spec(name), 160, head=HeadSpec(2))
    best, front = search_plans(g, grids=(2, 3, 4))
    # without limits the best plan is the lowest peak, the front's first point; the front's last
    # point costs no extra MACs and needs at most the per-layer peak (that plan is a candidate)
    assert (best.peak, best.mac_overhead) == (front[0].peak, front[0].mac_overhead)
    assert best.patched and best.peak < peak_sram_per_layer(g)
    assert front[-1].mac_overhead == 0.0 and front[-1].peak <= peak_sram_per_layer(g)


def test_stage_context_is_the_plans():
    """The one stage-1 context (planner, allocator, checker and executor all use it) agrees with the
    plan it was made for, and refuses a plan of another graph."""
    from tinydet.schedule import SINK, plan_stage1, stage1

    g = lower(get_spec("mbv2-w0.35"), 96, head=HeadSpec(2))
    plan = plan_patches(g, 3, 4)
    st = plan_stage1(g, plan)
    assert [op.name for op in st.ops] == plan.stage1_ops and st.sink == plan.stage1_output
    assert st.modes[-1] == SINK and SINK not in st.modes[:-1]
    assert st == stage1(g, 4, plan.rules)
    corner = plan.tiles[0]
    nbytes, channel = st.sizes(corner)
    assert nbytes(g.input) == 3 * corner.in_rect.area
    assert nbytes(st.sink) == plan.split_shape[0] * corner.out_rect.area
    assert channel(len(st) - 1) == corner.out_rect.area
    whole = per_layer(g, plan.rules)
    assert not any(set(d) & set(g.outputs) for d in whole.dies)  # outputs stay to the end
    assert whole.sizes()[0](g.input) == g.tensors[g.input].nbytes
    for other in (lower(get_spec("mbv2-w0.35"), 128, head=HeadSpec(2)), lower(get_spec("mbv2-w1.0"), 96)):
        with pytest.raises(TinydetError, match=r"stage-1 ops do not match graph .*\(the plan is for mbv2-w0.35 at 96x96\)"):
            plan_stage1(other, plan)
