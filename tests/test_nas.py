"""Joint architecture + schedule search: space, constraints, supernet, evolution, CLI."""
from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout

import pytest
import torch

from tinydet.arch import HeadSpec, build, get_spec, lower, load_spec, save_spec
from tinydet.errors import TinydetError
from tinydet.nas.constraints import Budget, LatencyTable, evaluate_constraints, flash_bytes, parse_bytes
from tinydet.nas.evolution import Evolution, EvolutionConfig, crossover, mutate, pareto_front
from tinydet.nas.space import Candidate, SearchSpace, StageSpace, space_from_config
from tinydet.nas.supernet import Supernet, extract, sandwich
from tinydet.schedule import MemoryRules, peak_sram_per_layer, plan_patches

TINY = SearchSpace(
    stages=(StageSpace(8, 1, (1,), kernels=(3,), expands=(1,)), StageSpace(16, 2, (1, 2)),
            StageSpace(24, 2, (1, 2)), StageSpace(32, 2, (1, 2)), StageSpace(48, 2, (1, 2))),
    kernels=(3, 5, 7), expands=(3, 4, 6), widths=(0.5, 1.0), resolutions=(64, 96), grids=(1, 2, 3),
    stem_out=16, head_stages=(3, 4), max_split_stage=2)
HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=16)


# --- space -------------------------------------------------------------------------------------
def test_candidate_round_trip_and_spec(tmp_path):
    rng = random.Random(3)
    for _ in range(20):
        cand = TINY.sample(rng)
        TINY.validate(cand)
        again = Candidate.from_dict(json.loads(json.dumps(cand.to_dict())))
        assert again == cand and hash(again) == hash(cand) and again.key() == cand.key()
        spec = cand.to_spec(TINY, "found")
        path = tmp_path / "found.yaml"
        save_spec(spec, path)
        assert get_spec(str(path)) == load_spec(path) == spec
        assert len(spec.blocks) == 1 + sum(cand.depths)
        assert [spec.blocks[i].kernel for i in range(2, len(spec.blocks))] == [k for ks in cand.kernels[1:] for k in ks]
        # heads read the last block of the head stages: strides 16 and 32
        strides = []
        for i in spec.head_from:
            s = 1
            for b in spec.blocks[: i + 1]:
                s *= b.stride
            strides.append(s)
        assert strides == [16, 32]


def test_space_rejects_out_of_space_and_bad_config():
    cand = TINY.largest()
    with pytest.raises(TinydetError, match="kernels\\[1\\]"):
        TINY.validate(Candidate(cand.resolution, cand.width, ((3,), (9,), *cand.kernels[2:]), cand.expands,
                                cand.grid, cand.split))
    with pytest.raises(TinydetError, match="split"):
        TINY.validate(Candidate(cand.resolution, cand.width, cand.kernels, cand.expands, 2, 99))
    with pytest.raises(TinydetError, match="search.kernels"):
        space_from_config({"kernels": [3, 4]})
    with pytest.raises(TinydetError, match="search.depths"):
        space_from_config({"depths": [[1], [2]]})
    space = space_from_config({"widths": [0.35], "depths": [[1], [1, 2], [2], [2], [1], [1], [1]]})
    assert space.stages[1].depths == (1, 2) and space.widths == (0.35,)


def test_parse_bytes():
    assert parse_bytes("256kB") == 262144 and parse_bytes("1MB") == 1 << 20 and parse_bytes("4096") == 4096
    with pytest.raises(TinydetError, match="--sram"):
        parse_bytes("lots", "--sram")


# --- constraints: checked against the built torch network, not the functions under test -----------
def _traced_resources(cand: Candidate, rules: MemoryRules, space: SearchSpace = TINY) -> tuple[int, int, int]:
    """(per-layer peak SRAM, MACs, Flash) of ``cand`` measured on the built torch network.

    The network runs once with hooks on every conv layer (ConvBNAct) in torch's own execution
    order; a residual block's add is attributed to its projection conv. The SRAM model is DESIGN.md's,
    written here from its text (int8, a tensor alive from its producer to its last reader, the
    network outputs to the end; in-place depthwise costs one output channel, a fused residual
    nothing), independently of tinydet.schedule.memory and of the arch lowering."""
    from tinydet.arch.modules import ConvBNAct, InvertedResidual

    net = build(cand.to_spec(space), head=HEAD).eval()
    ops: list[dict] = []

    def conv_hook(module, inputs, output):
        ops.append({"src": inputs[0], "out": output, "conv": module.conv, "add": None})

    def block_hook(module, inputs, output):
        if module.use_res:
            ops[-1].update(add=inputs[0], out=output)

    hooks = [m.register_forward_hook(conv_hook) for m in net.modules() if type(m) is ConvBNAct]
    hooks += [m.register_forward_hook(block_hook) for m in net.modules() if isinstance(m, InvertedResidual)]
    x = torch.zeros(1, 3, cand.resolution, cand.resolution)
    with torch.no_grad():
        outputs = net(x)  # every traced tensor stays referenced in ops: data_ptr identifies it
    for h in hooks:
        h.remove()
    key = lambda t: t.data_ptr()  # noqa: E731
    produced, last, size = {key(x): -1}, {key(x): -1}, {key(x): x.numel()}
    for i, op in enumerate(ops):
        for t in [op["src"]] + ([op["add"]] if op["add"] is not None else []):
            last[key(t)] = i
        produced[key(op["out"])] = i
        last.setdefault(key(op["out"]), i)
        size[key(op["out"])] = op["out"].numel()
    pinned = {key(o) for o in outputs}
    for t in pinned:
        last[t] = len(ops) - 1
    peak = macs = 0
    for i, op in enumerate(ops):
        conv, src, out = op["conv"], key(op["src"]), op["out"]
        macs += out.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
        held = sum(size[t] for t in produced if produced[t] <= i <= last[t] and t != key(out))
        depthwise = conv.groups == conv.in_channels == conv.out_channels
        if rules.inplace_dw and depthwise and last[src] == i and src not in pinned and produced[src] >= 0:
            held += out.shape[2] * out.shape[3]
        elif not (rules.fused_residual and op["add"] is not None and last[key(op["add"])] == i
                  and key(op["add"]) not in pinned):
            held += out.numel()
        peak = max(peak, held)
    # Flash: every conv's int8 weights + int32 bias, multiplier and shift per output channel
    flash = sum(m.weight.numel() + 12 * m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    return peak, macs, flash


def _schedule_resources(cand: Candidate) -> tuple[int, int, float]:
    """(peak SRAM, Flash, MAC overhead) of ``cand``'s schedule: traced per layer, the planner's
    figures for a patch grid (checked against execution in the schedule tests)."""
    per_layer, _, flash = _traced_resources(cand, MemoryRules())
    if cand.grid == 1:
        return per_layer, flash, 0.0
    plan = plan_patches(lower(cand.to_spec(TINY), cand.resolution, head=HEAD), cand.grid, cand.split, MemoryRules())
    return plan.peak_sram_patch, flash, plan.mac_overhead


def test_constraints_match_the_built_network():
    rng = random.Random(0)
    budget = Budget(sram=40_000, flash=60_000, max_overhead=0.3)
    seen = {True: 0, False: 0}
    for rules in (MemoryRules(), MemoryRules(inplace_dw=False, fused_residual=False)):
        for _ in range(30):
            cand = TINY.sample(rng)
            m = evaluate_constraints(cand, TINY, HEAD, budget, rules)
            if m["reason"].startswith("grid"):
                continue  # the planner refuses a grid finer than the split map: infeasible by construction
            per_layer, macs, flash = _traced_resources(cand, rules)
            assert (m["peak_sram_per_layer"], m["macs"], m["flash_bytes"]) == (per_layer, macs, flash)
            if cand.grid == 1:  # per-layer execution: its peak, no recomputation
                assert (m["peak_sram"], m["mac_overhead"]) == (per_layer, 0.0)
            else:  # patch-based: the planner's figures (checked against execution in the schedule tests)
                plan = plan_patches(lower(cand.to_spec(TINY), cand.resolution, head=HEAD), cand.grid, cand.split,
                                    rules)
                assert (m["peak_sram"], m["mac_overhead"]) == (plan.peak_sram_patch, pytest.approx(plan.mac_overhead))
            assert m["feasible"] == (m["peak_sram"] <= budget.sram and flash <= budget.flash
                                     and m["mac_overhead"] <= 0.3)
            seen[m["feasible"]] += 1
    assert seen[True] and seen[False], "the budget should split the sample"


def test_latency_table_scales_macs(tmp_path):
    table = tmp_path / "cycles.json"
    table.write_text(json.dumps({"layers": [{"kind": "conv", "kernel": 1, "macs": 100, "cycles": 200},
                                            {"kind": "dwconv", "kernel": 3, "macs": 100, "cycles": 500},
                                            {"kind": "conv", "kernel": 3, "stride": 2, "macs": 50, "cycles": 150}]}))
    lat = LatencyTable.load(table)
    cand = TINY.smallest()
    graph = lower(cand.to_spec(TINY), cand.resolution, head=HEAD)

    def rate(op):  # exact (kind, kernel, stride) entry, else the kind's average, cycles per MAC
        if op.kind == "dwconv":
            return 5.0
        return {(3, 2): 3.0, (1, 1): 2.0}.get((op.kernel, op.stride), 350 / 150)

    expected = sum(op.macs * rate(op) for op in graph.ops)
    assert lat.cycles(graph) == pytest.approx(expected)
    m = evaluate_constraints(cand, TINY, HEAD, Budget(1 << 30, 1 << 30, 1.0), latency=lat)
    assert m["latency_unit"] == "cycles" and m["latency"] == pytest.approx(expected)
    # deploy's per-layer instruction counts joined by name with `tinydet profile --json` layers
    from tinydet.schedule import profile_graph

    prof = profile_graph(graph)
    counts = {layer["name"]: 4 * layer["macs"] for layer in prof["layers"] if layer["kind"] == "conv"}
    counts.update({layer["name"]: 9 * layer["macs"] for layer in prof["layers"] if layer["kind"] == "dwconv"})
    joined = tmp_path / "deploy.json"
    joined.write_text(json.dumps({"per_layer_instructions": counts, "layers": prof["layers"]}))
    lat2 = LatencyTable.load(joined)
    want = sum(op.macs * (9 if op.kind == "dwconv" else 4) for op in graph.ops)
    assert lat2.cycles(graph) == pytest.approx(want)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"kind": "conv"}]))
    with pytest.raises(TinydetError, match="bad.json: layers\\[0\\]"):
        LatencyTable.load(bad)


# --- supernet ------------------------------------------------------------------------------------
def test_supernet_extracted_network_equals_supernet():
    torch.manual_seed(0)
    supernet = Supernet(TINY, HEAD)
    rng = random.Random(1)
    supernet.train()
    with torch.no_grad():  # move the shared BN statistics away from their initial values
        for cand in sandwich(TINY, rng, 3):
            supernet(torch.rand(2, 3, cand.resolution, cand.resolution), cand)
    for cand in [TINY.largest(), TINY.smallest()] + [TINY.sample(rng) for _ in range(3)]:
        supernet.recalibrate(cand, [torch.rand(2, 3, cand.resolution, cand.resolution) for _ in range(2)])
        net = extract(supernet, cand).eval()
        supernet.eval()
        x = torch.rand(1, 3, cand.resolution, cand.resolution)
        with torch.no_grad():
            ours, theirs = supernet(x, cand), net(x)
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and a.shape[1] == HEAD.out_channels
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the kernel slice is the centre of the 7x7 weight, and expand slices share channels
    layer = supernet.blocks[2].dw
    assert torch.equal(layer.weight_slice(0, 4, 3), layer.conv.weight[:4, :, 2:5, 2:5])


def test_supernet_training_step_updates_shared_weights():
    torch.manual_seed(0)
    supernet = Supernet(TINY, HEAD)
    before = supernet.blocks[2].dw.conv.weight.detach().clone()
    opt = torch.optim.SGD(supernet.parameters(), lr=0.1)
    small = TINY.smallest()
    loss = sum(o.square().mean() for o in supernet(torch.rand(2, 3, 64, 64), small))
    loss.backward()
    opt.step()
    after = supernet.blocks[2].dw.conv.weight.detach()
    changed = (after - before).abs().sum(dim=(1, 2, 3)) > 0
    hidden = small.to_spec(TINY).hidden_channels(2)
    # the smallest net trains the first `hidden` channels, centre 3x3 only
    assert changed[:hidden].all() and not changed[hidden:].any()
    assert torch.equal(after[:, :, 0, :], before[:, :, 0, :])


# --- evolution (fake score, real constraints) -----------------------------------------------------
BUDGET = Budget(sram=40_000, flash=60_000, max_overhead=0.4)


def _check(cand):
    return evaluate_constraints(cand, TINY, HEAD, BUDGET)


def _score(cand):
    # a deterministic accuracy stand-in that prefers big networks (so the SRAM limit binds)
    spec = cand.to_spec(TINY)
    return lower(spec, cand.resolution, head=HEAD).macs / 1e7 + 0.01 * sum(sum(k) for k in cand.kernels)


def _evo(tmp_path, name, seed=0, **kw):
    cfg = EvolutionConfig(population=6, generations=3, seed=seed, mutation_prob=0.3, crossover_prob=0.5)
    return Evolution(TINY, _check, _score, cfg, tmp_path / name, progress=False, **kw)


def test_evolution_respects_constraints_and_is_deterministic(tmp_path):
    r1 = _evo(tmp_path, "a.json").run()
    r2 = _evo(tmp_path, "b.json").run()
    assert r1["evaluated"] == r2["evaluated"] and r1["best"] == r2["best"]
    r3 = _evo(tmp_path, "c.json", seed=5).run()
    assert [p["key"] for p in r3["evaluated"]] != [p["key"] for p in r1["evaluated"]]
    assert len(r1["evaluated"]) > 6  # later generations added new candidates
    for p in r1["evaluated"] + r3["evaluated"]:
        cand = Candidate.from_dict(p["candidate"])
        TINY.validate(cand)
        peak, flash, overhead = _schedule_resources(cand)
        assert peak <= BUDGET.sram and flash <= BUDGET.flash and overhead <= BUDGET.max_overhead
    best_score = max(p["score"] for p in r1["evaluated"])
    assert r1["best_score"] == best_score
    front = r1["pareto"]
    assert front and all(not (q["score"] >= p["score"] and q["peak_sram"] < p["peak_sram"])
                         for p in front for q in r1["evaluated"])
    assert not list(tmp_path.glob("*.tmp"))


def test_evolution_resume_equals_uninterrupted(tmp_path):
    full = _evo(tmp_path, "full.json").run()
    calls = []
    first = _evo(tmp_path, "part.json")
    first.score = lambda c: calls.append(c) or _score(c)
    first.run(stop_after=1)
    state = json.loads((tmp_path / "part.json").read_text())
    assert state["generation"] == 1 and len(state["history"]) == 2
    resumed = _evo(tmp_path, "part.json")
    resumed_calls = []
    resumed.score = lambda c: resumed_calls.append(c) or _score(c)
    out = resumed.run(resume=True)
    assert out["evaluated"] == full["evaluated"] and out["history"] == full["history"]
    assert out["best"] == full["best"]
    # nothing from the finished generations was evaluated again
    assert not {c.key() for c in calls} & {c.key() for c in resumed_calls}
    # a state from other settings is refused with a one-line error
    other = Evolution(TINY, _check, _score, EvolutionConfig(population=7, generations=3), tmp_path / "part.json",
                      progress=False)
    with pytest.raises(TinydetError, match="part.json: fingerprint"):
        other.run(resume=True)


def test_no_feasible_candidate_is_a_clear_error(tmp_path):
    evo = Evolution(TINY, lambda c: evaluate_constraints(c, TINY, HEAD, Budget(1000, 1 << 20, 0.1)), _score,
                    EvolutionConfig(population=4, generations=1, max_tries=50), tmp_path / "s.json", progress=False,
                    constraint_text="SRAM <= 1,000 B")
    with pytest.raises(TinydetError, match="no random candidate satisfies the constraints \\(SRAM <= 1,000 B\\) in 50 tries"):
        evo.check_space()


def test_operators_stay_in_space():
    rng = random.Random(2)
    for _ in range(200):
        a, b = TINY.sample(rng), TINY.sample(rng)
        TINY.validate(mutate(TINY, a, rng, 0.5))
        TINY.validate(crossover(TINY, a, b, rng))
    assert mutate(TINY, a, rng, 0.0) == a


def test_pareto_front():
    pts = [{"key": "a", "score": 0.5, "peak_sram": 10}, {"key": "b", "score": 0.4, "peak_sram": 20},
           {"key": "c", "score": 0.7, "peak_sram": 30}, {"key": "d", "score": 0.6, "peak_sram": 5}]
    assert [p["key"] for p in pareto_front(pts)] == ["d", "c"]


# --- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    from tinydet.data.synth import synth_voc

    root = tmp_path_factory.mktemp("nasdata")
    synth_voc(str(root / "data"), 16, seed=0, size=96, classes=["circle", "square"])
    cfg = root / "tiny.yaml"
    cfg.write_text(f"""
name: tiny-search
model:
  resolution: 96
  head: {{channels: 16, num_anchors: 2, kernel: 3}}
  anchors: [[[12, 12], [24, 24]], [[32, 32], [56, 56]]]
data:
  format: voc
  root: {root / 'data'}
  train: [[2007, train]]
  val: [[2007, val]]
  test: [[2007, test]]
  classes: [circle, square]
train: {{batch_size: 4, num_workers: 0}}
search:
  population: 4
  generations: 2
  supernet_epochs: 1
  kernels: [3, 5]
  expands: [3, 6]
  widths: [0.25, 0.35]
  resolutions: [64, 96]
  grids: [1, 2, 3]
  depths: [[1], [1, 2], [1, 2], [1, 2], [1], [1], [1]]
  recal_batches: 1
""")
    return cfg


def _cli(argv):
    from tinydet.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def test_search_cli_outputs_and_resume(tiny_config, tmp_path, capsys):
    from tinydet.pipeline.search import run_search

    out = tmp_path / "run"
    code, stdout = _cli(["search", "-c", str(tiny_config), "--sram", "48kB", "--flash", "1MB",
                         "--max-overhead", "0.5", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(stdout)  # exactly one JSON object
    for key in ("peak_sram_patch", "flash_bytes", "macs", "mac_overhead", "val_map50", "grid", "split",
                "resolution", "arch"):
        assert key in result
    for name in ("best_arch.yaml", "schedule.json", "pareto.json", "pareto.png", "state.json", "supernet.ckpt"):
        assert (out / name).stat().st_size > 0
    assert result["peak_sram_patch"] <= 48 * 1024 and result["flash_bytes"] <= 1 << 20
    assert result["mac_overhead"] <= 0.5
    # the spec is usable by path and its resources are what the search reported
    spec = get_spec(result["arch"])
    cand = Candidate.from_dict(result["candidate"])
    space = space_from_config({"kernels": [3, 5], "expands": [3, 6], "widths": [0.25, 0.35], "resolutions": [64, 96],
                               "grids": [1, 2, 3], "depths": [[1], [1, 2], [1, 2], [1, 2], [1], [1], [1]]})
    assert spec == cand.to_spec(space, spec.name)
    head = HeadSpec(num_classes=2, num_anchors=2, channels=16)
    graph = lower(spec, result["resolution"], head=head)
    assert graph.macs == result["macs"] and flash_bytes(graph) == result["flash_bytes"]
    # ... and it trains as model.arch: the detector built from it has the searched resolution's maps
    from tinydet.models.detector import Detector

    det = Detector(spec, 2, result["anchors"], head_channels=16, input_size=result["resolution"])
    r = result["resolution"]
    maps = det(torch.rand(1, 3, r, r))
    assert [tuple(m.shape[-2:]) for m in maps] == [(-(-r // 16),) * 2, (-(-r // 32),) * 2]
    sched = json.loads((out / "schedule.json").read_text())
    assert sched["grid"] == result["grid"] and sched["split"] == result["split"]
    if cand.grid > 1:
        assert plan_patches(graph, cand.grid, cand.split).peak_sram_patch == result["peak_sram_patch"]
    else:
        assert peak_sram_per_layer(graph) == result["peak_sram_patch"]
    pareto = json.loads((out / "pareto.json").read_text())["front"]
    assert all(p["peak_sram"] <= 48 * 1024 for p in pareto)
    # the chosen network is the best-scoring feasible one, so it is on the front with its score
    assert result["val_map50"] == max(p["val_map50"] for p in pareto)
    assert result["candidate"] in [p["candidate"] for p in pareto if p["val_map50"] == result["val_map50"]]

    # a search killed after generation 1 and resumed ends exactly like the uninterrupted one
    part = tmp_path / "part"
    run_search(str(tiny_config), 48 * 1024, 1 << 20, 0.5, part, progress=False, stop_after=1)
    assert json.loads((part / "state.json").read_text())["generation"] == 1
    resumed = run_search(str(tiny_config), 48 * 1024, 1 << 20, 0.5, part, resume=True, progress=False)
    assert {k: v for k, v in resumed.items() if k not in ("arch", "out")} == \
        {k: v for k, v in result.items() if k not in ("arch", "out")}
    capsys.readouterr()


def test_search_cli_errors(tiny_config, tmp_path, capsys):
    code, stdout = _cli(["search", "-c", str(tiny_config), "--sram", "1kB", "--flash", "1MB",
                         "--out", str(tmp_path / "x"), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and stdout == ""
    assert "no random candidate satisfies the constraints" in err and "smallest network" in err
    assert not (tmp_path / "x" / "supernet.ckpt").exists()  # failed before training
    code, _ = _cli(["search", "-c", str(tiny_config), "--sram", "big", "--flash", "1MB", "--out", str(tmp_path / "y")])
    assert code == 2 and "--sram: expected a size" in capsys.readouterr().err


def test_head_stages_at_stride_8_and_16():
    space = space_from_config({"head_stages": [2, 4], "widths": [0.35], "resolutions": [64], "grids": [1, 2],
                               "depths": [[1], [1], [1, 2], [1, 2], [1], [1], [1]]})
    head = HeadSpec(num_classes=2, num_anchors=2, channels=8)
    rng = random.Random(0)
    feasible = 0
    for _ in range(30):
        cand = space.sample(rng)
        spec = cand.to_spec(space)
        graph = lower(spec, 64, head=head)
        assert len(cand.depths) == 5  # stages after the stride-16 head are not searched
        assert graph.num_blocks == len(spec.blocks) == 1 + sum(cand.depths)
        m = evaluate_constraints(cand, space, head, Budget(1 << 30, 1 << 30, 10.0))
        # a split that puts the stride-8 head's block inside the patch stage (not as its output) is refused
        if cand.grid > 1:
            try:
                plan_patches(graph, cand.grid, cand.split)
                ok = True
            except TinydetError:
                ok = False
            assert m["feasible"] == ok
        feasible += m["feasible"]
    assert feasible
    torch.manual_seed(0)
    supernet = Supernet(space, head).eval()
    cand = space.sample(rng)
    net = extract(supernet, cand).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = supernet(x, cand), net(x)
    assert [tuple(o.shape[-2:]) for o in ours] == [(8, 8), (4, 4)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    with pytest.raises(TinydetError, match="search.head_stages"):
        space_from_config({"head_stages": [-1]})
