"""int8 PTQ: calibration, QDQ conventions, the int8 graph reader and the numpy reference.

The export folder is a random-weight tiny detector (randomised BN, so folding matters) with a
non-square 48x64 input, a 3x3 grid, and the split after block 3, in the middle of the 16-channel
residual stage (blocks 2-4): stage 2 starts with a residual block whose shortcut is the split tensor.
"""
import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from tinydet.arch import lower
from tinydet.arch.spec import spec_from_dict
from tinydet.errors import TinydetError
from tinydet.export import load_export
from tinydet.geometry import Pads
from tinydet.quant.calibrate import calibrate, kl_threshold
from tinydet.pipeline.quantize import quantize_export
from tinydet.quant.params import params_from_range
from tinydet.quant.qdq import activation_params, quantize_model
from tinydet.quant.qgraph import load_qgraph
from tinydet.quant.reference import Int8Reference, layer_lsb_vs_ort, run_full

from fixtures import RES, calib_images, make_export
from test_export_utils import random_network

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant") / "out"
    model, graph = make_export(out)
    ranges = calibrate(str(out / "full.onnx"), calib_images(), "minmax")
    quantize_export(out, ranges, {"kind": "ptq", "method": "minmax", "images": 6})
    return out, model, graph


def test_params_from_range_contains_zero_and_rounds_zero_point():
    p = params_from_range(0.0, 6.0)
    assert p.zero_point == -128 and abs(p.scale - 6.0 / 255) < 1e-7
    p = params_from_range(0.5, 2.0)  # widened to [0, 2]: 0.0 must stay exact
    assert p.zero_point == -128 and abs(p.scale - 2.0 / 255) < 1e-7
    p = params_from_range(-1.0, 3.0)
    assert p.scale == float(np.float32(4.0 / 255))
    # hand-computed: -128 + 1 / (4/255) = -64.25 -> -64; real 0.0 is the integer -64 exactly
    assert p.zero_point == -64
    assert p.scale * (np.clip(np.rint(0.0 / p.scale) + p.zero_point, -128, 127) - p.zero_point) == 0.0
    # both ends representable within half a step: lo -> -128 + 0.25 (rounded to -128), hi -> 127
    assert (-1.0 / p.scale + p.zero_point) == pytest.approx(-127.75) and round(3.0 / p.scale + p.zero_point) == 127
    # a range entirely below zero is widened up to 0: zero point at the top of the int8 range
    assert params_from_range(-2.0, -1.0).zero_point == 127


def test_degenerate_range_follows_tflite():
    # TFLite ChooseQuantizationParams: rmin == rmax (== 0) -> zero_point 0 (scale 0, which QDQ
    # cannot hold; a positive stand-in scale keeps 0.0 exact)
    p = params_from_range(0.0, 0.0)
    assert p.zero_point == 0 and p.scale == float(np.float32(1 / 255))
    assert params_from_range(0.0, 1e-45).zero_point == 0  # float32 scale 0 after rounding: degenerate too
    with pytest.raises(ValueError):
        params_from_range(0.0, float("inf"))


def test_kl_threshold_clips_rare_outliers():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.normal(0, 1, 200_000), [60.0, -55.0]]))
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    t = kl_threshold(hist, edges[1] - edges[0], 128)
    assert 2.0 < t < 15.0  # far below the outliers, well above the bulk of the Gaussian


def test_calibrate_minmax_matches_torch_activations(folder):
    out, model, _ = folder
    images = calib_images()
    ranges = calibrate(str(out / "full.onnx"), images, "minmax")
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: seen.setdefault(name, []).append(o.detach()))
        for name in ("blocks.1.dw", "blocks.2.expand", "heads.0.out")]
    with torch.no_grad():
        for x in images:
            model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    for name, outs in seen.items():
        t = torch.cat([o.flatten() for o in outs])
        assert ranges[name][0] == pytest.approx(float(t.min()), abs=1e-4)
        assert ranges[name][1] == pytest.approx(float(t.max()), abs=1e-4)
    # the projection before its shortcut add and the sum both get a range
    assert "blocks.3.project/conv" in ranges and "blocks.3.project" in ranges


def test_percentile_and_entropy_ranges_lie_inside_minmax(folder):
    out, _, _ = folder
    images = calib_images()
    mm = calibrate(str(out / "full.onnx"), images, "minmax")
    for method in ("percentile", "entropy"):
        r = calibrate(str(out / "full.onnx"), images, method)
        assert set(r) == set(mm)
        for name, (lo, hi) in r.items():
            assert mm[name][0] - 1e-6 <= lo <= hi <= mm[name][1] + 1e-6, (method, name)
        narrower = sum(hi - lo < mm[n][1] - mm[n][0] - 1e-6 for n, (lo, hi) in r.items())
        assert narrower > len(r) // 2, method


def test_entropy_ignores_exact_zeros_and_keeps_asymmetric_sides():
    """A ReLU output, half exact zeros and uniform above: no tail, so KL keeps (almost) the whole
    range; the zero spike must not drag the threshold down. A skewed signed tensor gets two sides."""
    from onnx import TensorProto

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["r"], name="relu"),
                               helper.make_node("Add", ["input", "shift"], ["s"], name="add")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 64, 64])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "shift")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    images = [rng.uniform(-1, 1, (1, 1, 64, 64)).astype(np.float32) for _ in range(4)]
    r = calibrate(model, images, "entropy")
    assert r["r"][0] == 0.0 and r["r"][1] > 0.9
    assert r["s"][0] == pytest.approx(1.0, abs=0.01) and r["s"][1] > 2.7  # [1, 3]: all positive


def test_empty_calibration_set_and_bad_method_are_clear_errors(folder):
    out, _, _ = folder
    with pytest.raises(TinydetError, match="calibration set is empty"):
        calibrate(str(out / "full.onnx"), [], "minmax")
    with pytest.raises(TinydetError, match="method: expected one of minmax, percentile, entropy"):
        calibrate(str(out / "full.onnx"), calib_images(1), "mse")


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_qdq_tflite_conventions(folder):
    out, _, graph = folder
    model = onnx.load(str(out / "full.int8.onnx"))
    inits = _inits(model)
    assert not [n for n in model.graph.node if n.op_type in ("Clip", "Relu")]  # ReLU6 folded into ranges
    assert float(inits["input/scale"]) == pytest.approx(1 / 255) and int(inits["input/zero_point"]) == -128
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [n.name for n in convs] == [op.name for op in graph.ops if op.kind in ("conv", "dwconv")]
    for op in graph.ops:
        w = inits[f"{op.name}.weight/q"]
        assert w.dtype == np.int8 and w.min() >= -127 and w.max() <= 127
        assert not inits[f"{op.name}.weight/zero_point"].any()
        ws = inits[f"{op.name}.weight/scale"]
        assert ws.shape == (op.out_shape[0],)  # per output channel
        assert np.all(np.abs(w).reshape(len(ws), -1).max(axis=1) == 127)  # symmetric: max |w| hits 127
        b, bs = inits[f"{op.name}.bias/q"], inits[f"{op.name}.bias/scale"]
        assert b.dtype == np.int32 and not inits[f"{op.name}.bias/zero_point"].any()
        s_in = float(inits[f"{op.inputs[0]}/scale"])
        np.testing.assert_array_equal(bs, np.float32(s_in) * ws)
        if op.act == "relu6":  # fused activation: range [0, <= 6]
            assert int(inits[f"{op.output}/zero_point"]) == -128
            assert float(inits[f"{op.output}/scale"]) <= 6 / 255 + 1e-9
    # shortcut add: the projection result and the sum have their own parameters
    assert "blocks.3.project/conv/scale" in inits and "blocks.3.project/scale" in inits
    assert float(inits["blocks.3.project/conv/scale"]) != float(inits["blocks.3.project/scale"])


def test_same_parameters_at_the_split_in_all_three_models(folder):
    out, _, _ = folder
    split = load_export(out).schedule["split_tensor"]
    got = []
    for name in ("full", "stage1_patch", "stage2"):
        inits = _inits(onnx.load(str(out / f"{name}.int8.onnx")))
        got.append((float(inits[f"{split}/scale"]), int(inits[f"{split}/zero_point"])))
    assert got[0] == got[1] == got[2]


def test_quantize_export_records_checksums_and_detects_edits(folder, tmp_path):
    out, _, _ = folder
    export = load_export(out)
    for name in ("full.int8.onnx", "stage1_patch.int8.onnx", "stage2.int8.onnx", "quant.json"):
        assert export.has(name)
    import json
    import shutil

    info = json.loads((out / "quant.json").read_text())
    assert info["input"] == {"name": "input", "scale": pytest.approx(1 / 255), "zero_point": -128}
    assert info["source"]["method"] == "minmax"
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "stage2.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(TinydetError, match="stage2.int8.onnx was modified"):
        load_export(copy)


def test_unsupported_node_names_itself(folder):
    out, _, _ = folder
    model = onnx.load(str(out / "full.onnx"))
    node = next(n for n in model.graph.node if n.name == "heads.0.out")
    node.output[0] = "heads.0.out/pre"
    model.graph.node.append(helper.make_node("Sigmoid", ["heads.0.out/pre"], ["heads.0.out"], name="heads.0.sigmoid"))
    ranges = calibrate(model, calib_images(2), "minmax")
    with pytest.raises(TinydetError, match=r"node 'heads.0.sigmoid' \(Sigmoid, node \d+ of \d+\) cannot be quantized"):
        quantize_model(model, activation_params(model, {**ranges, "heads.0.out": (-1.0, 1.0)}))


def test_missing_range_is_named(folder):
    out, _, _ = folder
    model = onnx.load(str(out / "full.onnx"))
    ranges = calibrate(model, calib_images(2), "minmax")
    del ranges["blocks.2.dw"]
    with pytest.raises(TinydetError, match="tensor 'blocks.2.dw' has no calibrated range"):
        activation_params(model, ranges)


def test_qgraph_layouts_multipliers_and_fused_adds(folder):
    out, _, graph = folder
    qg = load_qgraph(out / "full.int8.onnx")
    inits = _inits(onnx.load(str(out / "full.int8.onnx")))
    layers = [op for op in qg.ops if op.kind in ("conv", "dwconv")]
    assert [op.name for op in layers] == [op.name for op in graph.ops]
    for op, gop in zip(layers, graph.ops):
        w = inits[f"{op.name}.weight/q"]
        if op.kind == "conv":
            np.testing.assert_array_equal(op.weight, w.transpose(0, 2, 3, 1))  # OHWI
        else:
            assert gop.kind == "dwconv" and op.weight.shape == (1, gop.kernel, gop.kernel, gop.out_shape[0])
            np.testing.assert_array_equal(op.weight[0], w[:, 0].transpose(1, 2, 0))
        target = op.add["conv_scale"] if op.add else op.out_scale
        real = op.in_scale[0] * op.weight_scale.astype(np.float64) / target
        approx = op.mult.astype(np.float64) * 2.0 ** (op.shift.astype(np.float64) - 31)
        np.testing.assert_allclose(approx, real, rtol=1e-8)
        assert op.padding == Pads.symmetric(gop.padding) and op.stride == (gop.stride, gop.stride)
        assert (op.add is not None) == (gop.add is not None)
        if op.add:
            assert op.add["shortcut"] == gop.add and op.output == gop.output
            assert op.add["conv_tensor"] == f"{gop.name}/conv"
    s1 = load_qgraph(out / "stage1_patch.int8.onnx")
    pads = [op for op in s1.ops if op.kind == "pad"]
    assert pads and all(op.pads_input for op in pads)
    assert set(s1.pad_inputs) == {op.pads_input for op in pads}


def test_qgraph_rejects_a_float_model(folder):
    out, _, _ = folder
    with pytest.raises(TinydetError, match="not a tinydet int8 model"):
        load_qgraph(out / "full.onnx")


def test_reference_stitched_equals_full_bit_for_bit(folder):
    out, _, _ = folder
    ref = Int8Reference(out)
    assert len(ref.schedule["tiles"]) == 9
    images = np.random.default_rng(5).random((2, 3) + RES, dtype=np.float32)
    full = ref.run_full(images)
    stitched, split_map = ref.run_stitched(images, return_split=True)
    for a, b in zip(full, stitched):
        np.testing.assert_array_equal(a, b)
    assert split_map.dtype == np.int8 and len(np.unique(split_map)) > 10


def test_reference_layers_within_one_lsb_of_onnxruntime(folder):
    out, _, graph = folder
    ref = Int8Reference(out)
    images = np.random.default_rng(6).random((2, 3) + RES, dtype=np.float32)
    lsb = layer_lsb_vs_ort(ref.full, onnx.load(str(out / "full.int8.onnx")), images)
    assert set(lsb) == {op.name for op in graph.ops}
    assert max(lsb.values()) <= 1


def test_layer_check_catches_a_wrong_multiplier(folder):
    out, _, _ = folder
    qg = load_qgraph(out / "full.int8.onnx")
    op = qg.op("blocks.2.expand")
    op.mult = (op.mult.astype(np.int64) * 103 // 100).astype(np.int32)  # 3% off
    images = np.random.default_rng(6).random((1, 3) + RES, dtype=np.float32)
    lsb = layer_lsb_vs_ort(qg, onnx.load(str(out / "full.int8.onnx")), images)
    assert lsb["blocks.2.expand"] > 1
    assert lsb["blocks.2.dw"] <= 1  # layers get onnxruntime's inputs: the error does not spread


def test_reference_tracks_the_float_model(folder):
    out, model, _ = folder
    images = np.random.default_rng(7).random((2, 3) + RES, dtype=np.float32)
    qg = load_qgraph(out / "full.int8.onnx")
    got = run_full(qg, images)[0]
    with torch.no_grad():
        want = model(torch.from_numpy(images))[0].numpy()
    err = np.abs(got - want)
    assert err.max() < 0.1 * np.abs(want).max()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_classifier_pool_and_fc_within_one_lsb(tmp_path):
    """The classifier path: GlobalAveragePool (keeps its input's params) -> Flatten -> Gemm
    (per-channel weight scales, arm_fully_connected_per_channel_s8)."""
    from tinydet.export import fold_network, full_model

    spec = spec_from_dict({"name": "cls", "num_classes": 5, "blocks": [
        {"type": "conv", "out": 8, "stride": 2}, {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4}]})
    model = random_network(spec, head=None)
    graph = lower(spec, (24, 40))
    assert graph.mode == "classifier"
    full = full_model(fold_network(model, graph))
    ranges = calibrate(full, [np.random.default_rng(i).random((1, 3, 24, 40), dtype=np.float32) for i in range(4)])
    int8 = quantize_model(full, activation_params(full, ranges))
    qg = load_qgraph(int8)
    kinds = [op.kind for op in qg.ops]
    assert kinds[-4:] == ["avgpool", "flatten", "fc", "dequantize"]
    pool = qg.op("classifier.pool")
    assert (pool.out_scale, pool.out_zp) == (pool.in_scale[0], pool.in_zp[0])
    fc = qg.op("classifier.fc")  # per output row, as TFLite quantizes FULLY_CONNECTED
    assert fc.weight_scale.size == fc.mult.size == 5 and len(set(fc.weight_scale.tolist())) > 1
    images = np.random.default_rng(9).random((2, 3, 24, 40), dtype=np.float32)
    lsb = layer_lsb_vs_ort(qg, int8, images)
    assert {"classifier.pool", "classifier.fc"} <= set(lsb) and max(lsb.values()) <= 1
    logits = run_full(qg, images)[0]
    with torch.no_grad():
        want = model(torch.from_numpy(images))[0].numpy()
    assert logits.shape == want.shape == (2, 5)
    assert np.abs(logits - want).max() < 0.15 * np.abs(want).max() + 1e-3
