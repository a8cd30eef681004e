"""Necks as architecture data: spec round trip and errors, graph lowering, modules, liveness,
arena, float export (full and split stages) and the patch executor with a neck node whose inputs
come from both stages of a patch plan."""
import numpy as np
import pytest
import torch

from tinydet.arch import HeadSpec, load_spec, lower, save_spec
from tinydet.arch.spec import spec_from_dict
from tinydet.errors import TinydetError
from tinydet.schedule import MemoryRules, allocate, check_arena, peak_sram_per_layer, plan_patches
from tinydet.schedule.memory import per_layer

from test_export_utils import random_network

HEAD = HeadSpec(num_classes=2, num_anchors=2)
RES = (48, 64)


def neck_dict():
    """Every neck node kind: stride4 (block 3) and stride8 (block 4) taps, top-down with an add
    and a concat, bottom-up with a max-pool, a 3x3 conv, expand-form heads."""
    return {"name": "tinyneck", "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4},
        {"type": "mbconv", "out": 24, "stride": 2, "expand": 4}],
        "neck": {"nodes": [
            {"name": "top", "type": "conv", "inputs": ["stride8"], "out": 16},
            {"name": "up", "type": "upsample", "inputs": ["top"]},
            {"name": "fuse", "type": "add", "inputs": ["up", "stride4"]},
            {"name": "cat", "type": "concat", "inputs": ["fuse", "stride4"]},
            {"name": "p4", "type": "mbconv", "inputs": ["cat"], "out": 16, "expand": 2, "kernel": 3},
            {"name": "down", "type": "maxpool", "inputs": ["p4"]},
            {"name": "mix", "type": "concat", "inputs": ["down", "stride8"]},
            {"name": "p8", "type": "conv", "inputs": ["mix"], "out": 24, "kernel": 3},
            {"name": "p8r", "type": "mbconv", "inputs": ["p8"], "out": 24, "expand": 2, "kernel": 3}],
            "outputs": ["p4", "p8r"]},
        "head": {"template": "expand", "kernel": 3, "expand": [16, 32], "channels": [8, 16]}}


def neck_spec():
    return spec_from_dict(neck_dict(), "tinyneck.yaml")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_neck_spec_round_trip(tmp_path, suffix):
    spec = neck_spec()
    assert spec.head_from == (3, 4)  # the blocks the neck reads
    assert spec.num_scales == 2 and spec.scale_strides() == [4, 8]
    save_spec(spec, tmp_path / f"s{suffix}")
    back = load_spec(tmp_path / f"s{suffix}")
    assert back == spec and back.to_dict() == spec.to_dict()


def test_specs_without_neck_keep_todays_keys():
    spec = spec_from_dict({"name": "plain", "blocks": [{"type": "conv", "out": 8, "stride": 2}], "head_from": [0]})
    assert "neck" not in spec.to_dict() and "head" not in spec.to_dict()


def _edit(path, **changes):
    data = neck_dict()
    for node in data["neck"]["nodes"]:
        if node["name"] == path:
            node.update(changes)
    return data


@pytest.mark.parametrize("data,expected", [
    (_edit("up", inputs=["topp"]), r"neck node 'up': unknown input 'topp'.*did you mean 'top'"),
    (_edit("top", inputs=["p4"]), r"neck node '\w+': its inputs form a cycle .*->"),
    (_edit("fuse", inputs=["up", "stride8"]), r"neck node 'fuse' \(add\): shape mismatch .*stride 4.*stride 8"),
    (_edit("fuse", inputs=["top", "stride8"]), r"neck node 'fuse' \(add\): shape mismatch .*16 ch.*24 ch"),
    (_edit("mix", inputs=["p4", "stride8"]), r"neck node 'mix' \(concat\): shape mismatch.*equal strides"),
    (_edit("up", type="upsample2"), r"node 'up'\)\.type: expected one of .*did you mean 'upsample'"),
    (_edit("down", inputs=["p4", "fuse"]), r"node 'down'\)\.inputs: a maxpool node reads exactly one input"),
    (_edit("p4", residual=True), r"neck node 'p4' \(mbconv\): residual: true needs equal input and output channels"),
    (_edit("up", out=4), r"node 'up'\)\.out: a upsample node has no 'out'"),
    ({**neck_dict(), "neck": {**neck_dict()["neck"], "outputs": ["p4", "p9"]}}, r"neck\.outputs: unknown node 'p9'"),
    ({**neck_dict(), "head": {"template": "expand", "expand": [16], "channels": [8, 16]}},
     r"head\.expand: expected 2 positive channel counts"),
])
def test_malformed_neck_is_one_line_error_naming_the_node(data, expected):
    with pytest.raises(TinydetError, match=expected) as info:
        spec_from_dict(data, "bad.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.yaml")


def test_resolution_not_divisible_names_the_add():
    with pytest.raises(TinydetError, match=r"neck node 'fuse' \(add\): input shapes differ at resolution 36x36"):
        lower(neck_spec(), 36, head=HEAD)


def test_graph_modules_and_taps_alive_until_the_neck_reads_them():
    spec = neck_spec()
    graph = lower(spec, RES, head=HEAD)
    kinds = {op.kind for op in graph.ops if op.name.startswith("neck.")}
    assert kinds == {"conv", "dwconv", "upsample", "maxpool", "add", "concat"}
    assert graph.op("neck.cat").out_shape == (32, 12, 16) and graph.op("neck.mix").out_shape == (40, 6, 8)
    assert [graph.tensors[o].shape for o in graph.outputs] == [(2 * 7, 12, 16), (2 * 7, 6, 8)]
    assert graph.op("heads.1.expand").out_shape == (32, 6, 8) and graph.op("heads.1.pw").out_shape == (16, 6, 8)
    model = random_network(spec, HEAD)
    out = model(torch.rand(1, 3, *RES))
    assert [tuple(o.shape[1:]) for o in out] == [graph.tensors[o].shape for o in graph.outputs]
    # liveness: the stride4 tap (blocks.3.project) stays alive until its last reader, the concat
    st = per_layer(graph, MemoryRules())
    names = [op.name for op in st.ops]
    last = names.index("neck.cat")
    tap = "blocks.3.project"
    assert all(tap in st.alive[i] for i in range(names.index(tap), last + 1))
    assert tap not in st.alive[last + 1] and tap in st.dies[last]


def test_float_export_full_and_split_stages_equal_the_network(tmp_path):
    import onnxruntime as ort

    from tinydet.export.fold import fold_network, run_folded
    from tinydet.export.folder import export_network

    spec = neck_spec()
    model = random_network(spec, HEAD, seed=2)
    graph = lower(spec, RES, head=HEAD)
    x = torch.rand(2, 3, *RES)
    ref = [t.detach().numpy() for t in model(x)]
    folded = fold_network(model, graph)
    assert max(np.abs(a - b).max() for a, b in zip(ref, run_folded(folded, x.numpy()))) < 1e-5
    summary = export_network(model, graph, tmp_path / "exp", 4, (2, 2))
    assert summary["float_stitched_max_abs_diff"] < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "exp" / "full.onnx"))
    got = sess.run(None, {"input": x.numpy()})
    assert max(np.abs(a - b).max() for a, b in zip(ref, got)) < 1e-5
    assert summary["arena_bytes"] == summary["peak_sram_patch"]
    # schedule.json carries the neck: its spec and head rebuild the same graph and per-layer arena
    # (what the reader of older folders does), and multi-input ops list every input
    import json

    from tinydet.export.schedule_file import layer_arena

    sched = json.loads((tmp_path / "exp" / "schedule.json").read_text())
    assert layer_arena(sched) == sched["arena_layer"]
    assert {op["name"]: op["inputs"] for op in sched["ops"] if "inputs" in op} == {
        "neck.fuse": ["neck.up", "blocks.3.project"], "neck.cat": ["neck.fuse", "blocks.3.project"],
        "neck.mix": ["neck.down", "blocks.4.project"]}


def test_patch_executor_with_a_neck_node_reading_both_stages():
    from tinydet.schedule.executor import run_patched

    spec = neck_spec()
    model = random_network(spec, HEAD, seed=4)
    graph = lower(spec, RES, head=HEAD)
    split = 4  # blocks 0..3 per patch: the stride4 tap is the stage-1 output
    stage1 = set(plan_patches(graph, 2, split).stage1_ops)
    fuse = graph.op("neck.fuse")
    made_in = ["stage 1" if graph.op(t).name in stage1 else "stage 2" for t in fuse.inputs]
    assert sorted(made_in) == ["stage 1", "stage 2"]
    x = torch.rand(2, 3, *RES)
    ref = model(x)
    for grid in (2, (2, 3), 3):
        out = run_patched(model, plan_patches(graph, grid, split), x)
        assert max((a - b).abs().max().item() for a, b in zip(out, ref)) < 1e-5


@pytest.mark.parametrize("rules", [MemoryRules(), MemoryRules(False, True), MemoryRules(True, False),
                                   MemoryRules(False, False)])
def test_arena_places_neck_tensors_and_equals_the_plan(rules):
    graph = lower(neck_spec(), RES, head=HEAD)
    arena = allocate(graph, None, rules)
    assert arena.arena_bytes == peak_sram_per_layer(graph, rules)
    check_arena(graph, None, arena)
    steps = {s.op: s for s in arena.steps}
    cat = steps["neck.cat"]
    assert cat.inputs == [steps["neck.fuse"].result, steps["blocks.3.project"].result]
    for grid, split in [(2, 4), ((2, 3), 3), (3, 2)]:
        plan = plan_patches(graph, grid, split, rules)
        arena = allocate(graph, plan)
        assert arena.arena_bytes == plan.peak_sram_patch, (grid, split)
        check_arena(graph, plan, arena)


def test_profile_and_memory_plot_show_the_neck(tmp_path, capsys):
    from fixtures import run_cli

    spec_path = tmp_path / "tinyneck.yaml"
    save_spec(neck_spec(), spec_path)
    rc, out, _ = run_cli(capsys, ["plan", "--arch", str(spec_path), "--resolution", "48x64", "--head-classes", "2",
                                  "--anchors", "2", "--grids", "2", "--no-fusion", "--plot", str(tmp_path / "m.png")])
    assert rc == 0 and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    rc, out, _ = run_cli(capsys, ["profile", "--arch", str(spec_path), "--resolution", "48x64", "--head-classes", "2"])
    assert rc == 0 and "neck.fuse" in out and "neck.down" in out and "heads.1.expand" in out


def test_detector_scales_and_strides_come_from_the_neck_outputs():
    """One tap (stride8) feeding two head scales (stride 4 through an upsample, and stride 8)."""
    from tinydet.models.detector import Detector, head_strides

    data = neck_dict()
    data["neck"] = {"nodes": [{"name": "up", "type": "upsample", "inputs": ["stride8"]},
                              {"name": "fine", "type": "conv", "inputs": ["up"], "out": 16},
                              {"name": "coarse", "type": "conv", "inputs": ["stride8"], "out": 24}],
                    "outputs": ["fine", "coarse"]}
    spec = spec_from_dict(data, "one_tap.yaml")
    assert spec.head_from == (4,) and head_strides(spec) == [4, 8]
    model = Detector(spec, 2, [[[4, 4], [8, 8]], [[12, 12], [20, 20]]], input_size=RES).eval()
    out = model(torch.rand(1, 3, *RES))
    assert model.strides.tolist() == [4.0, 8.0] and [tuple(o.shape[-2:]) for o in out] == [(12, 16), (6, 8)]
    with pytest.raises(TinydetError, match=r"model.anchors: 1 scales given but arch tinyneck has 2 head maps "
                                           r"\(neck outputs \['fine', 'coarse'\]"):
        Detector(spec, 2, [[[4, 4], [8, 8]]], input_size=RES)
