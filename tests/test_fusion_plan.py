"""Planner and arena with fused inverted residuals: the joint grid x split x fusion search (against
brute force over fusion subsets), what bounds the peak, arena == plan with the offsets checked
byte by byte, and the MobileNetV2 acceptance figure."""
from dataclasses import replace
from itertools import combinations

import pytest

from tinydet.arch import HeadSpec, get_spec, lower
from tinydet.schedule import (MemoryRules, allocate, check_arena, max_split, peak_breakdown, per_layer, per_layer_plan,
                              plan_fused, plan_patches, search_plans, with_fusion)
from tinydet.schedule.fusion import fusable_blocks

from test_fusion_memory import G  # the odd-sized tiny spec with every block kind

MBV2 = lower(get_spec("mbv2-w1.0"), 224)


def subsets(items):
    for n in range(len(items) + 1):
        yield from combinations(items, n)


@pytest.mark.parametrize("grid,split", [((1, 1), 0), ((2, 2), 3), ((3, 2), 4), ((2, 3), 5)])
def test_per_block_choice_is_the_brute_force_optimum(grid, split):
    fusable = fusable_blocks(G)

    def plan(blocks):
        rules = MemoryRules(fused_blocks=blocks)
        return plan_patches(G, grid, split, rules) if split else per_layer_plan(G, rules)

    brute = min(plan(s).peak for s in subsets(fusable))
    chosen = plan_fused(G, grid, split)
    assert chosen.peak == brute
    # the mixed plan is exactly the plan made with the chosen blocks fused
    again = plan(chosen.rules.fused_blocks)
    assert (again.peak, again.peak_sram_stage1, again.peak_sram_stage2, again.peak_sram_per_layer) == \
        (chosen.peak, chosen.peak_sram_stage1, chosen.peak_sram_stage2, chosen.peak_sram_per_layer)
    assert [t.working_sets for t in again.tiles] == [t.working_sets for t in chosen.tiles]
    # every fused block is needed: unfusing any one raises the peak
    for b in chosen.rules.fused_blocks:
        assert plan(tuple(v for v in chosen.rules.fused_blocks if v != b)).peak > chosen.peak
    # fusion costs no MACs
    assert chosen.macs_patch == plan(()).macs_patch


def test_search_with_fusion_dominates_and_defaults_stay_unfused():
    grids = (1, 2, 3)
    plain_best, plain_front = search_plans(G, grids=grids)
    assert all(p.rules.fused_blocks == () for p in plain_front)
    best, front = search_plans(G, grids=grids, fusion=True)
    assert best.peak <= plain_best.peak and front[0].peak < plain_front[0].peak
    assert any(p.rules.fused_blocks for p in front)


def test_mbv2_acceptance_half_the_papers_peak():
    best, front = search_plans(MBV2, max_overhead=0.10, fusion=True)
    assert best.peak == 85_771 <= 88_064 and best.mac_overhead <= 0.10
    assert (best.grid, best.split) == ((4, 4), 5)
    zero = front[-1]  # the front runs from the lowest peak to no MAC overhead
    # without MAC overhead the stem output (112x112x32, made by a normal conv) must exist whole
    at = peak_breakdown(MBV2, zero)
    assert zero.mac_overhead == 0 and at.bound == "blocks.0.conv" and at.parts["blocks.0.conv"] == 32 * 112 * 112
    assert zero.peak == 405_024 and front[0].peak < best.peak
    # unfused, the same grid and split is the paper's 172 kB (tests/test_schedule_memory.py)
    assert plan_patches(MBV2, 4, 5).peak == 176_400


def test_peak_breakdown_sums_to_the_peak_in_every_stage():
    plans = [plan_fused(G, 1, 0), plan_fused(G, 2, 3), plan_fused(G, (2, 3), 5), plan_patches(G, 2, 4)]
    stages = set()
    for plan in plans:
        at = peak_breakdown(G, plan)
        assert sum(at.parts.values()) == at.peak == plan.peak
        stages.add(at.stage)
    assert {"per_layer", "stage1"} <= stages
    fused_stage2 = plan_fused(MBV2, 4, 5)
    at = peak_breakdown(MBV2, fused_stage2)
    assert at.stage == "stage1" and at.op == "blocks.0.conv" and at.tile == (1, 1)
    ring = peak_breakdown(MBV2, plan_patches(MBV2, 7, 5, MemoryRules(fused_blocks=(5, 6))))
    assert sum(ring.parts.values()) == ring.peak


@pytest.mark.parametrize("name,res,head", [("mbv2-w0.35", 160, None), ("mcunet-in4", 160, HeadSpec(num_classes=2)),
                                           ("mcunetv2-h7", 128, None), ("mcunet-vww2", 96, HeadSpec(num_classes=3))])
def test_arena_equals_the_fused_plan_and_passes_the_byte_check(name, res, head):
    g = lower(get_spec(name), res, head=head)
    everything = MemoryRules(fused_blocks=tuple(fusable_blocks(g)))
    plans = [per_layer_plan(g, everything), plan_patches(g, 3, 3, everything),
             plan_patches(g, 2, max_split(g), everything), with_fusion(g, plan_patches(g, 3, 4))]
    for plan in plans:
        arena = allocate(g, plan)
        assert arena.arena_bytes == plan.peak
        check_arena(g, plan, arena)


def test_arena_uses_both_overlap_placements():
    # a fused block whose input sits on the low end moves it up first (input_from); on the high end
    # the output streams below it and moves to the slot's end afterwards (move_from)
    g = lower(get_spec("mcunetv2-h7"), 160)
    rules = MemoryRules(fused_blocks=tuple(fusable_blocks(g)))
    arena = allocate(g, per_layer_plan(g, rules))
    costs = {b: c.overlap for b, c in per_layer(g, rules).fused_costs().items()}
    overlapping = [s for s in arena.steps if s.fused_ops and costs[g.op(s.op).block]]
    assert any(s.input_from is not None for s in overlapping) and any(s.move_from is not None for s in overlapping)


def test_check_arena_catches_an_output_streamed_too_close_to_its_input():
    from tinydet.geometry import Rect
    from tinydet.schedule.fusion import overlap_offset

    g = lower(get_spec("mcunetv2-h7"), 160)
    rules = MemoryRules(fused_blocks=tuple(fusable_blocks(g)))
    plan = per_layer_plan(g, rules)
    arena = allocate(g, plan)
    check_arena(g, plan, arena)
    st = per_layer(g, rules)
    fb = {f.block: f for f in st.fused}
    tampered = 0
    for i, s in enumerate(arena.steps):
        if not s.fused_ops or not st.fused_costs()[g.op(s.op).block].overlap:
            continue
        f = fb[g.op(s.op).block]
        dw, x = g.ops[f.dw], g.ops[f.first]
        y = g.ops[f.project]
        d = overlap_offset(dw, f.expand is not None, Rect.full(*x.in_shape[1:]), x.in_shape[0] * x.in_shape[2],
                           Rect.full(*y.out_shape[1:]), y.out_shape[0] * y.out_shape[2])
        if s.move_from is not None:  # the output would start one byte too close to the input
            bad = replace(s, move_from=s.input - d + 1)
        else:
            bad = replace(s, input=s.output + d - 1)
        broken = replace(arena, steps=arena.steps[:i] + [bad] + arena.steps[i + 1:])
        with pytest.raises(AssertionError):
            check_arena(g, plan, broken)
        tampered += 1
    assert tampered >= 2


def test_plan_cli_fuses_by_default(capsys):
    import json

    from tinydet.cli import main

    assert main(["plan", "--arch", "mbv2-w1.0", "--resolution", "224", "--max-overhead", "0.10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    b = r["best"]
    assert r["fusion"] is True and r["peak_sram_per_layer"] == 1_404_928  # the unfused per-layer figure
    assert b["peak_sram"] == 85_771 == b["arena_bytes"] and b["mac_overhead"] <= 0.10
    assert b["fused_blocks"] and b["peak_at"]["bound"] == "blocks.0.conv" and b["peak_at"]["tile"] == [1, 1]
    assert all("fused_blocks" in p for p in r["pareto"])
    assert main(["plan", "--arch", "mbv2-w0.35", "--resolution", "128", "--max-overhead", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "fused blocks:" in out and "bounded by" in out


def test_nas_constraints_use_the_fused_model_when_enabled():
    import random

    from tinydet.nas.constraints import Budget, candidate_graph, evaluate_constraints

    from test_nas import HEAD, TINY

    rng = random.Random(3)
    budget = Budget(1 << 30, 1 << 30, 1.0)
    lower_somewhere = False
    for _ in range(12):
        cand = TINY.sample(rng)
        plain = evaluate_constraints(cand, TINY, HEAD, budget)
        fused = evaluate_constraints(cand, TINY, HEAD, budget, fusion=True)
        if plain["reason"]:
            continue
        g = candidate_graph(cand, TINY, HEAD)
        want = plan_fused(g, (cand.grid, cand.grid), cand.split if cand.grid > 1 else 0)
        assert fused["peak_sram"] == want.peak <= plain["peak_sram"]
        assert fused["fused_blocks"] == list(want.rules.fused_blocks) and plain["fused_blocks"] == []
        assert (fused["macs"], fused["mac_overhead"], fused["peak_sram_per_layer"]) == \
            (plain["macs"], plain["mac_overhead"], plain["peak_sram_per_layer"])
        lower_somewhere |= fused["peak_sram"] < plain["peak_sram"]
    assert lower_somewhere
    # a budget only the fused schedule meets
    cand = next(c for c in (TINY.sample(rng) for _ in range(200))
                if evaluate_constraints(c, TINY, HEAD, budget, fusion=True)["peak_sram"]
                < evaluate_constraints(c, TINY, HEAD, budget)["peak_sram"])
    tight = Budget(evaluate_constraints(cand, TINY, HEAD, budget, fusion=True)["peak_sram"], 1 << 30, 1.0)
    assert evaluate_constraints(cand, TINY, HEAD, tight, fusion=True)["feasible"]
    assert not evaluate_constraints(cand, TINY, HEAD, tight)["feasible"]
