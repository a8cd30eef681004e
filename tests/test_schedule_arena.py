"""Arena allocation: arena_bytes equals the planned peak, and a byte-level simulation of the
schedule finds no buffer overwritten while alive."""
import json
from dataclasses import replace

import pytest

from tinydet.arch import HeadSpec, get_spec, list_presets, lower
from tinydet.schedule import (ArenaPlan, MemoryRules, allocate, check_arena, peak_sram_per_layer, plan_patches)

ALL_RULES = [MemoryRules(), MemoryRules(False, True), MemoryRules(True, False), MemoryRules(False, False)]


@pytest.mark.parametrize("name", list_presets())
@pytest.mark.parametrize("head", [None, HeadSpec(num_classes=2)], ids=["classifier", "detector"])
def test_arena_equals_peak_per_layer_and_patch(name, head):
    g = lower(get_spec(name), 160, head=head)
    for rules in ALL_RULES:
        arena = allocate(g, None, rules)
        assert arena.arena_bytes == peak_sram_per_layer(g, rules)
        check_arena(g, None, arena)
        for grid, split in [(4, 5), ((2, 3), 3), (3, 2)]:
            plan = plan_patches(g, grid, split, rules)
            arena = allocate(g, plan)
            assert arena.arena_bytes == plan.peak_sram_patch, (name, rules, grid, split)
            check_arena(g, plan, arena)


def test_arena_paper_configuration_and_layout():
    g = lower(get_spec("mbv2-w1.0"), 224)
    plan = plan_patches(g, 4, 5)
    arena = allocate(g, plan)
    assert arena.arena_bytes == plan.peak_sram_patch == 176_400
    check_arena(g, plan, arena)
    # the stage-1 output buffer is pinned at the top end of the arena
    assert arena.stage1_buffer == arena.arena_bytes - 32 * 28 * 28
    assert len(arena.tiles) == 16 and len(arena.tiles[0]) == len(plan.stage1_ops)
    steps = {s.op: s for s in arena.tiles[5]}
    dw = steps["blocks.2.dw"]
    assert dw.mode == "inplace_dw" and dw.input <= dw.output < dw.input + dw.input_bytes
    proj = steps["blocks.3.project"]
    assert proj.mode == "fused_residual" and proj.shortcut_bytes > proj.output_bytes  # shortcut is a crop
    assert steps[plan.stage1_ops[-1]].mode == "sink" and steps[plan.stage1_ops[-1]].output == arena.stage1_buffer
    assert arena.steps[0].input == arena.stage1_buffer  # stage 2 starts from the stitched map
    assert ArenaPlan.from_dict(json.loads(json.dumps(arena.to_dict()))) == arena


def test_checker_catches_overlap_and_stale_reads():
    g = lower(get_spec("mbv2-w0.35"), 96, head=HeadSpec(2))
    arena = allocate(g)
    check_arena(g, None, arena)
    # move an op's output onto its own (still needed) input
    i = next(i for i, s in enumerate(arena.steps) if s.mode == "normal" and s.op.endswith("expand"))
    bad = replace(arena, steps=list(arena.steps))
    bad.steps[i] = replace(arena.steps[i], output=arena.steps[i].input, result=arena.steps[i].input)
    with pytest.raises(AssertionError):
        check_arena(g, None, bad)
    # read an input from the wrong place
    bad = replace(arena, steps=list(arena.steps))
    bad.steps[i] = replace(arena.steps[i], input=arena.steps[i].input + 1)
    with pytest.raises(AssertionError, match="no longer intact"):
        check_arena(g, None, bad)
    # head output overwritten later: pin it somewhere a later tensor goes
    out0 = next(s for s in arena.steps if s.op == "heads.0.out")
    later = next(s for s in arena.steps if s.op == "blocks.14.expand")
    bad = replace(arena, steps=[replace(s, output=later.output, result=later.output) if s is out0 else s
                                for s in arena.steps])
    with pytest.raises(AssertionError):
        check_arena(g, None, bad)
    # an arena one byte too small
    with pytest.raises(AssertionError, match="outside the arena"):
        check_arena(g, None, replace(arena, arena_bytes=arena.arena_bytes - 1))


def test_checker_catches_a_tile_that_overwrites_the_stage1_buffer():
    g = lower(get_spec("mbv2-w0.35"), 96)
    plan = plan_patches(g, 3, 5)
    arena = allocate(g, plan)
    check_arena(g, plan, arena)
    tiles = [list(t) for t in arena.tiles]
    s = tiles[1][0]
    off = arena.stage1_buffer - s.output_bytes + 16  # 16 bytes into the stitched map
    tiles[1][0] = replace(s, output=off, result=off)
    with pytest.raises(AssertionError, match="overwrites a live tensor"):
        check_arena(g, plan, replace(arena, tiles=tiles))


def test_fused_residual_and_inplace_placement_in_tiles():
    # residual blocks on both ends of the arena across these plans: forward and reverse both occur
    seen, moved_any = set(), False
    for name, res, grid, split in [("mbv2-w1.0-rd", 128, 2, 5), ("mbv2-w1.0", 128, 3, 7)]:
        g = lower(get_spec(name), res)
        plan = plan_patches(g, grid, split)
        arena = allocate(g, plan)
        check_arena(g, plan, arena)
        fused = [s for t in arena.tiles for s in t if s.mode == "fused_residual"]
        seen |= {s.reverse for s in fused}
        for s in fused:
            assert s.shortcut_bytes > s.output_bytes  # a tile's shortcut holds the larger block input region
            if s.reverse:  # output at the slot's end: pixels last to first, or memmove from the start
                assert s.output + s.output_bytes == s.shortcut + s.shortcut_bytes and s.move_from == s.shortcut
            else:
                assert s.output == s.shortcut and s.move_from is None
        # per layer the shortcut and the output have the same size: never reversed, never moved
        assert not any(s.reverse or s.move_from is not None for s in arena.steps if s.mode == "fused_residual")
        moved = [s for t in arena.tiles for s in t if s.mode == "inplace_dw" and s.move_from is not None]
        assert all(s.move_from == s.input and s.output > s.input for s in moved)
        if moved:
            moved_any = True
            tiles = [[replace(s, move_from=None) if s.mode == "inplace_dw" else s for s in t] for t in arena.tiles]
            with pytest.raises(AssertionError, match="move_from"):
                check_arena(g, plan, replace(arena, tiles=tiles))
    assert seen == {True, False} and moved_any


def test_staged_depthwise_takes_free_bytes_only():
    """An in-place depthwise runs as the ordinary kernel into free arena bytes where its whole
    output fits there (tiles and roomy per-layer steps), stays in place where it does not (the
    per-layer peak layer's depthwise), and the arena does not grow; a staged temp over a live tensor
    is caught by the simulation."""
    g = lower(get_spec("mbv2-w0.35"), 192, head=HeadSpec(num_classes=1))
    for plan in (None, plan_patches(g, 3, 4)):
        plain, arena = allocate(g, plan, stage_dw=False), allocate(g, plan)
        assert arena.arena_bytes == plain.arena_bytes
        check_arena(g, plan, arena)
        steps = [s for t in arena.tiles for s in t] + arena.steps
        dw = [s for s in steps if s.mode == "inplace_dw"]
        staged = [s for s in dw if s.staged]
        assert staged and all(s.temp_bytes == s.output_bytes and s.move_from is None for s in staged)
        assert not any(s.staged for s in [s for t in plain.tiles for s in t] + plain.steps)
        if plan is None:  # blocks.2.dw's output does not fit beside the peak layer's input
            assert {s.op for s in dw if not s.staged} == {"blocks.2.dw"}
        else:
            assert all(s.staged for t in arena.tiles for s in t if s.mode == "inplace_dw")
        where = next(i for i, s in enumerate(arena.steps) if s.staged)
        bad = list(arena.steps)
        bad[where] = replace(bad[where], temp=bad[where].input)
        with pytest.raises(AssertionError, match="overwrites a live tensor"):
            check_arena(g, plan, replace(arena, steps=bad))


def _odd_spec():
    """A user spec where the memory rules must step aside: a block without expansion (its
    depthwise reads the shortcut, so not in place) and a residual whose shortcut is a pinned
    backbone output (so not fused)."""
    from tinydet.arch.spec import spec_from_dict

    return spec_from_dict({"name": "odd", "head_from": [1, 2], "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4, "kernel": 5},
        {"type": "mbconv", "out": 24, "stride": 2, "expand": 3}]})


def test_arena_for_a_user_spec_with_pinned_shortcuts():
    g = lower(_odd_spec(), (48, 40))
    assert g.mode == "backbone" and g.outputs == ["blocks.1.project", "blocks.2.project"]
    modes = {s.op: s.mode for s in allocate(g).steps}
    assert modes["blocks.1.dw"] == "normal" and modes["blocks.3.project"] == "normal"
    assert modes["blocks.4.dw"] == "inplace_dw"
    for rules in ALL_RULES:
        arena = allocate(g, None, rules)
        assert arena.arena_bytes == peak_sram_per_layer(g, rules)
        check_arena(g, None, arena)
        for grid in (2, (3, 2)):
            plan = plan_patches(g, grid, 2, rules)
            arena = allocate(g, plan)
            assert arena.arena_bytes == plan.peak_sram_patch
            check_arena(g, plan, arena)


def test_allocate_rejects_rules_that_differ_from_the_plan():
    from tinydet.errors import TinydetError

    g = lower(get_spec("mbv2-w0.35"), 96)
    plan = plan_patches(g, 2, 3)
    with pytest.raises(TinydetError, match="differ from the plan"):
        allocate(g, plan, MemoryRules(inplace_dw=False))
