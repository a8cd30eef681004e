"""The published MCUNet person detector (preset ``mcunet-person-det``): MACs, parameters and every
layer's output shape against the official int8 model (tinyengine assets/detection.tflite), its
YOLOv3 decode parameters, and the model at another resolution (96x128) through profile and the
float export."""
import json

import numpy as np
import pytest
import torch

from tinydet.arch import HeadSpec, build, get_spec, lower
from tinydet.arch.presets import PERSON_DET_ANCHORS, PERSON_DET_RESOLUTION
from tinydet.schedule.profile import op_params

from fixtures import run_cli
from test_export_utils import random_network

HEAD = HeadSpec(num_classes=1, num_anchors=3)
NORM_MACS = 3 * 128 * 160  # our (x - 0.5) / 0.5 op; the tflite quantizes the input instead

# (op, C x H x W) of every op after the backbone at 128x160, in the tflite's layer order per branch
NECK_AND_HEADS = {
    "neck.p5_lat": (32, 4, 5), "neck.p5_up": (32, 8, 10), "neck.p4_sum": (32, 8, 10),
    "neck.p4_td.expand": (96, 8, 10), "neck.p4_td.dw": (96, 8, 10), "neck.p4_td.project": (32, 8, 10),
    "neck.p4_lat": (16, 8, 10), "neck.p4_up": (16, 16, 20), "neck.p3_sum": (16, 16, 20),
    "neck.n3.expand": (32, 16, 20), "neck.n3.dw": (32, 16, 20), "neck.n3.project": (16, 16, 20),
    "neck.n3_down": (16, 8, 10), "neck.n3_lat": (32, 8, 10), "neck.n4_sum": (32, 8, 10),
    "neck.n4.expand": (64, 8, 10), "neck.n4.dw": (64, 8, 10), "neck.n4.project": (32, 8, 10),
    "neck.n4_down": (32, 4, 5), "neck.n4_lat": (48, 4, 5), "neck.n5_sum": (48, 4, 5),
    "neck.n5.expand": (96, 4, 5), "neck.n5.dw": (96, 4, 5), "neck.n5.project": (48, 4, 5),
    "heads.0.expand": (64, 16, 20), "heads.0.dw": (64, 16, 20), "heads.0.pw": (48, 16, 20), "heads.0.out": (18, 16, 20),
    "heads.1.expand": (64, 8, 10), "heads.1.dw": (64, 8, 10), "heads.1.pw": (96, 8, 10), "heads.1.out": (18, 8, 10),
    "heads.2.expand": (192, 4, 5), "heads.2.dw": (192, 4, 5), "heads.2.pw": (144, 4, 5), "heads.2.out": (18, 4, 5),
}
BACKBONE = [  # block outputs: stem, then the 9 inverted residuals
    (16, 64, 80), (16, 64, 80), (16, 32, 40), (16, 16, 20), (16, 16, 20), (32, 8, 10), (32, 8, 10),
    (48, 4, 5), (48, 4, 5), (48, 4, 5)]


def test_person_det_macs_params_and_every_shape():
    spec = get_spec("mcunet-person-det")
    graph = lower(spec, PERSON_DET_RESOLUTION, head=HEAD)
    # the official model's 18,296,320 MACs (README: 18.3M) and 163,494 int8 weights + biases
    assert graph.macs - NORM_MACS == 18_296_320
    deployed = sum(op.weight_count + op.out_shape[0] for op in graph.ops
                   if op.kind in ("conv", "dwconv") and op.role != "norm")
    assert deployed == 163_494  # README: ~0.16M
    assert {op.name: op.out_shape for op in graph.ops if op.block < 0} == NECK_AND_HEADS
    ends = [graph.ops[graph.block_end(b) - 1].out_shape for b in range(graph.num_blocks)]
    assert ends == BACKBONE
    assert [graph.tensors[o].shape for o in graph.outputs] == [(18, 16, 20), (18, 8, 10), (18, 4, 5)]
    assert spec.scale_strides() == [8, 16, 32] and spec.taps["stride8"] == 4 and spec.head_from == (4, 6, 9)
    # shortcuts exactly where the tflite has its ADDs (blocks 4, 8, 9; the neck's four mbconvs)
    assert sorted(op.name for op in graph.ops if op.add) == [
        "blocks.4.project", "blocks.8.project", "blocks.9.project", "neck.n3.project", "neck.n4.project",
        "neck.n5.project", "neck.p4_td.project"]
    model = build(spec, head=HEAD).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *PERSON_DET_RESOLUTION))
    assert [tuple(o.shape[1:]) for o in out] == [graph.tensors[o].shape for o in graph.outputs]
    # float parameters: BN adds a weight and a bias per channel where the int8 model has one bias
    assert sum(p.numel() for p in model.parameters()) == sum(op_params(op) for op in graph.ops if op.role != "norm")


def test_person_det_decode_parameters():
    spec = get_spec("mcunet-person-det")
    assert spec.input_mean == (0.5, 0.5, 0.5) and spec.input_std == (0.5, 0.5, 0.5)  # (x/255)*2-1
    assert PERSON_DET_ANCHORS[0] == ((10, 13), (16, 30), (33, 23))  # stride 8
    assert PERSON_DET_ANCHORS[2] == ((116, 90), (156, 198), (373, 326))  # stride 32


def test_person_det_96x128_profile_and_float_export(tmp_path, capsys):
    import onnxruntime as ort

    from tinydet.export.folder import export_network

    rc, out, _ = run_cli(capsys, ["profile", "--arch", "mcunet-person-det", "--resolution", "96x128",
                                  "--head-classes", "1", "--patches", "2", "--json"])
    assert rc == 0
    prof = json.loads(out)
    names = [layer["name"] for layer in prof["layers"]]
    assert "neck.p4_up" in names and "neck.n4_down" in names
    assert prof["arena_bytes"] == prof["peak_sram_patch"] < prof["peak_sram_per_layer"]
    strides = {layer["name"]: layer["stride"] for layer in prof["layers"]}
    picked = ("neck.p5_lat", "neck.p4_up", "neck.n3.project", "neck.n3_down", "neck.n4_down")
    assert [strides[name] for name in picked] == [32, 8, 8, 16, 32]
    spec = get_spec("mcunet-person-det")
    model = random_network(spec, HEAD, seed=5)
    graph = lower(spec, (96, 128), head=HEAD)
    summary = export_network(model, graph, tmp_path / "pd", prof["split"], tuple(prof["grid"]))
    assert summary["peak_sram_patch"] == prof["peak_sram_patch"] == summary["arena_bytes"]
    assert summary["float_stitched_max_abs_diff"] < 1e-4
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    got = ort.InferenceSession(str(tmp_path / "pd" / "full.onnx")).run(None, {"input": x})
    assert [g.shape for g in got] == [(1, 18, 12, 16), (1, 18, 6, 8), (1, 18, 3, 4)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) < 1e-4
    sched = json.loads((tmp_path / "pd" / "schedule.json").read_text())
    adds = [op for op in sched["ops"] if op["kind"] == "add"]
    assert adds and all(len(op["inputs"]) == 2 and op["stage"] == 2 for op in adds)


def test_person_det_trains_on_synthetic_person_set_with_three_strides(tmp_path):
    """configs/voc_person_det.yaml (at 64x96, one epoch of 3 steps) on `tinydet data synth --format
    voc --classes person`: targets over the three strides, validation mAP through the three-scale
    decode, and the checkpoint reloads and predicts."""
    import yaml

    from tinydet.config import load_config
    from tinydet.data.synth import synth_voc
    from tinydet.io.checkpoint import load_detector
    from tinydet.train.run import train

    synth_voc(str(tmp_path / "voc"), images=20, seed=0, size=96, classes=["person"])
    cfg = yaml.safe_load(open("configs/voc_person_det.yaml"))
    cfg["model"]["resolution"] = [64, 96]
    cfg["model"]["anchors"] = [[[6, 12], [10, 20], [16, 28]], [[20, 40], [28, 52], [36, 64]],
                               [[44, 72], [56, 80], [64, 92]]]
    cfg["data"].update(root=str(tmp_path / "voc"), train=[[2007, "train"]], val=[[2007, "val"]],
                       test=[[2007, "test"]], skip_bad=False)
    cfg["train"] = {"epochs": 1, "batch_size": 4, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                    "out_dir": str(tmp_path / "run"), "warmup_epochs": 0.5, "progress_bar": False,
                    "optimizer": "adamw", "lr": 0.003, "check_val_every_n_epoch": 1}
    cfg["eval"]["split"] = "val"
    path = tmp_path / "person.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path)
    result = train(config)
    assert result["global_step"] == 3 and result["val_map50"] is not None and 0.0 <= result["val_map50"] <= 1.0
    model = load_detector(config, result["last_ckpt"])
    assert model.strides.tolist() == [8.0, 16.0, 32.0] and model.num_classes == 1
    boxes = model.eval().predict(torch.rand(2, 3, 64, 96), conf_thresh=0.0, max_det=5)
    assert len(boxes) == 2 and boxes[0][0].shape[-1] == 4


def test_planner_splits_in_the_backbone_with_the_neck_in_stage_2_and_names_the_peak_buffers():
    from tinydet.errors import TinydetError
    from tinydet.schedule import check_split, max_split, plan_patches
    from tinydet.schedule.planner import peak_breakdown

    graph = lower(get_spec("mcunet-person-det"), PERSON_DET_RESOLUTION, head=HEAD)
    # the stride-8 tap (block 4) is read by the neck: it may be the stage-1 output, not inside stage 1
    assert max_split(graph) == 5
    with pytest.raises(TinydetError, match=r"split: 6 puts blocks\.4\.project inside the per-patch stage"):
        check_split(graph, 6)
    plan = plan_patches(graph, 4, 4)
    why = peak_breakdown(graph, plan)
    assert (why.stage, why.op, why.peak) == ("stage2", "heads.0.pw", plan.peak_sram_patch)
    assert sum(why.parts.values()) == why.peak
    # held across the stride-8 head: the neck's stride-16 and stride-32 results and N3 itself
    assert {"neck.p4_td.project", "blocks.9.project", "neck.n3.project", "heads.0.dw"} <= set(why.parts)
    assert why.bound == "heads.0.dw"


def test_arena_equals_the_plan_with_fused_blocks_before_the_neck():
    from tinydet.schedule import allocate, check_arena, search_plans

    graph = lower(get_spec("mcunet-person-det"), PERSON_DET_RESOLUTION, head=HEAD)
    best, _ = search_plans(graph, max_overhead=0.10, fusion=True)
    assert best.rules.fused_blocks and best.split <= max(best.rules.fused_blocks)  # a fused block in stage 2
    arena = allocate(graph, best)
    assert arena.arena_bytes == best.peak
    check_arena(graph, best, arena)
