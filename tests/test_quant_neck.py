"""int8 neck ops (issue 14): max pool, nearest upsample, channel concat and the add of two branches
with different scales, through calibration, QDQ, the int8 graph reader and the numpy reference.

The float graph is written with onnx.helper as tinydet/export writes its models (Conv + Clip for
ReLU6, NCHW, opset 17): a small two-level neck at a 24x28 input (stride-2 and stride-4 maps of
12x14 and 6x7, so the widths are odd), top-down (1x1, upsample x2, add) and bottom-up (concat,
max pool 2x2, 1x1, add). Against onnxruntime's QDQ execution the reference is exact where the op
only moves or compares values and within 1 LSB where it requantizes (onnxruntime requantizes in
float, rounding half to even; TFLite and the reference in integers).
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinydet.errors import TinydetError
from tinydet.quant import kernels
from tinydet.quant.arith import quantize_multiplier, requantize
from tinydet.quant.calibrate import calibrate
from tinydet.quant.qdq import activation_params, quantize_model
from tinydet.quant.qgraph import load_qgraph
from tinydet.quant.reference import layer_lsb_vs_ort, ort_int8_tensors, run, run_full

H, W = 24, 28


class _G:
    """A float ONNX graph under construction (NCHW, random weights)."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.shapes = [], [], {"input": (3, H, W)}

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(self, name, x, cout, k=1, stride=1, relu6=True):
        cin, h, w = self.shapes[x]
        wt = self.rng.normal(0, 1.0 / np.sqrt(cin * k * k), (cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.3, cout).astype(np.float32)
        p = (k - 1) // 2
        out = f"{name}/conv" if relu6 else name
        self.nodes.append(helper.make_node("Conv", [x, self.const(f"{name}.weight", wt), self.const(f"{name}.bias", b)],
                                           [out], name=name, kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[p, p, p, p]))
        if relu6:
            self.nodes.append(helper.make_node("Clip", [out, self.const(f"{name}.min", np.float32(0)),
                                                        self.const(f"{name}.max", np.float32(6))], [name],
                                               name=f"{name}/relu6"))
        self.shapes[name] = (cout, (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1)
        return name

    def upsample(self, name, x, coord="asymmetric", nearest="floor"):
        c, h, w = self.shapes[x]
        self.nodes.append(helper.make_node("Resize", [x, "", self.const(f"{name}.scales", np.array([1, 1, 2, 2], np.float32))],
                                           [name], name=name, mode="nearest", coordinate_transformation_mode=coord,
                                           nearest_mode=nearest))
        self.shapes[name] = (c, 2 * h, 2 * w)
        return name

    def maxpool(self, name, x, k=2, s=2, p=0):
        c, h, w = self.shapes[x]
        self.nodes.append(helper.make_node("MaxPool", [x], [name], name=name, kernel_shape=[k, k], strides=[s, s],
                                           pads=[p, p, p, p]))
        self.shapes[name] = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        return name

    def add(self, name, a, b):
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        self.shapes[name] = self.shapes[a]
        return name

    def concat(self, name, *xs):
        self.nodes.append(helper.make_node("Concat", list(xs), [name], name=name, axis=1))
        c = sum(self.shapes[x][0] for x in xs)
        self.shapes[name] = (c,) + self.shapes[xs[0]][1:]
        return name

    def model(self, outputs):
        vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, *s])  # noqa: E731
        g = helper.make_graph(self.nodes, "neck", [vi("input", self.shapes["input"])],
                              [vi(o, self.shapes[o]) for o in outputs], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 9
        onnx.checker.check_model(m, full_check=True)
        return m


def neck_model(seed=0, coord="asymmetric", nearest="floor"):
    g = _G(seed)
    p3 = g.conv("p3", "input", 8, k=3, stride=2)                  # 8 x 12 x 14
    p4 = g.conv("p4", p3, 12, k=3, stride=2)                      # 12 x 6 x 7
    lat = g.conv("lat", p4, 8, relu6=False)                       # linear 1x1: a signed range
    td = g.add("td", g.upsample("up", lat, coord, nearest), p3)   # different scales
    cat = g.concat("cat", td, p3)                                 # 16 x 12 x 14, inputs requantized
    bu = g.conv("bu", g.maxpool("pool", cat), 12)                 # 12 x 6 x 7
    n4 = g.add("n4", bu, p4)
    pool3 = g.maxpool("pool3", n4, k=3, s=1, p=1)                 # padded max pool (TFLite SAME): 12 x 6 x 7
    return g.model([g.conv("out0", cat, 6, relu6=False), g.conv("out1", n4, 6, relu6=False),
                    g.conv("out2", pool3, 6, relu6=False)])


def images(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, H, W), dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def quantized():
    model = neck_model()
    table = activation_params(model, calibrate(model, images(), "minmax"))
    return model, table, quantize_model(model, table)


def test_neck_op_conventions(quantized):
    _, table, qmodel = quantized
    # max pool and upsample keep their input's parameters; add and concat have their own
    assert table["up"] == table["lat"] and table["pool"] == table["cat"] and table["pool3"] == table["n4"]
    assert len({table["td"], table["p3"], table["lat"]}) == 3
    # minmax: the concat's range is the union of its inputs', here the sum's (which contains p3's)
    assert table["cat"] == table["td"] != table["p3"]
    qg = load_qgraph(qmodel)
    kinds = {op.name: op.kind for op in qg.ops}
    assert [kinds[n] for n in ("up", "td", "cat", "pool", "n4", "pool3")] == \
        ["upsample", "add", "concat", "maxpool", "add", "maxpool"]
    # the neck's adds stay adds (the plan has them as ops): neither is fused into the conv before it
    assert qg.op("bu").add is None and qg.op("n4").inputs == ["bu", "p4"]
    assert qg.op("up").scale == (2, 2) and qg.op("pool3").kernel == (3, 3) and qg.op("pool3").padding.top == 1
    cat = qg.op("cat")
    assert [r.identity for r in cat.requant] == [True, False]  # a copy, and a requantized input
    s_p3, z_p3 = qg.tensors["p3"]
    m, s = quantize_multiplier(np.float64(np.float32(s_p3)) / np.float64(np.float32(cat.out_scale)))
    assert (cat.requant[1].mult, cat.requant[1].shift, cat.requant[1].input_offset) == (int(m), int(s), -z_p3)


def test_reference_vs_onnxruntime_per_layer(quantized):
    _, _, qmodel = quantized
    qg = load_qgraph(qmodel)
    for x in images(3, seed=7):
        lsb = layer_lsb_vs_ort(qg, qmodel, x)
        # comparisons and copies are exact; requantizing ops within 1 LSB (float vs integer rounding)
        assert all(lsb[n] == 0 for n in ("up", "pool", "pool3")), lsb
        assert all(lsb[n] <= 1 for n in lsb), lsb


def test_concat_and_add_requantize_as_tflite(quantized):
    """The concat output is each input requantized by TFLite's Requantize (QUANTIZE int8 -> int8):
    recomputed here with the arithmetic primitives, not the kernel, on onnxruntime's int8 inputs."""
    _, _, qmodel = quantized
    qg = load_qgraph(qmodel)
    ort = ort_int8_tensors(qmodel, {"input": images(1, seed=3)[0]})
    cat = qg.op("cat")
    got, _ = run(qg, {}, int8_feeds={"input": ort["input"]})
    parts = []
    for name, rq in zip(cat.inputs, cat.requant):
        s_in, z_in = qg.tensors[name]
        m, s = quantize_multiplier(np.float64(np.float32(s_in)) / np.float64(np.float32(cat.out_scale)))
        q = requantize(got[name].astype(np.int64) - z_in, m, s) + cat.out_zp
        parts.append(np.clip(q, -128, 127))
    assert np.array_equal(np.concatenate(parts, axis=3), got["cat"])
    # the add of branches of different scales: TFLite ADD (left shift 20, rescale to twice the larger)
    add = qg.op("td")
    p = add.add["params"]
    assert p["left_shift"] == 20 and p["input_1_offset"] == -add.in_zp[0] and p["input_2_offset"] == -add.in_zp[1]
    assert add.in_scale[0] != add.in_scale[1]


def test_reference_end_to_end_close_to_onnxruntime(quantized):
    model, _, qmodel = quantized
    qg = load_qgraph(qmodel)
    x = images(1, seed=11)[0]
    from tinydet.io.onnxrt import session

    sess = session(qmodel, 1)
    want = sess.run(None, {"input": x})
    got = run_full(qg, x)
    for g, w, name in zip(got, want, qg.outputs):
        scale = qg.tensors[name][0]
        assert np.abs(g - w).max() <= 4 * scale + 1e-6, name


@pytest.mark.parametrize("coord,nearest", [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                                           ("pytorch_half_pixel", "round_prefer_ceil")])
def test_upsample_modes_that_read_index_half(coord, nearest):
    model = neck_model(seed=2, coord=coord, nearest=nearest)
    table = activation_params(model, calibrate(model, images(2), "minmax"))
    qmodel = quantize_model(model, table)
    lsb = layer_lsb_vs_ort(load_qgraph(qmodel), qmodel, images(1, seed=5)[0])
    assert lsb["up"] == 0


def test_unsupported_neck_forms_are_refused():
    for coord, nearest in [("align_corners", "floor"), ("asymmetric", "ceil")]:
        model = neck_model(coord=coord, nearest=nearest)
        with pytest.raises(TinydetError, match=r"Resize.*does not read input index out // 2"):
            quantize_model(model, activation_params(model, calibrate(model, images(1), "minmax")))
    model = neck_model()
    pool = next(n for n in model.graph.node if n.name == "pool")
    pool.attribute.append(helper.make_attribute("ceil_mode", 1))
    with pytest.raises(TinydetError, match=r"node 'pool' \(MaxPool.*floor mode"):
        quantize_model(model, activation_params(model, calibrate(neck_model(), images(1), "minmax")))


def test_numpy_kernels_by_hand():
    x = np.array([[[[1], [-5], [3]], [[7], [-128], [0]], [[2], [2], [-9]]]], np.int8)  # 1 x 3 x 3 x 1
    assert kernels.max_pool_s8(x, 2, stride=2).reshape(-1).tolist() == [7]
    # padding is skipped, never read as a value: an all-negative window at the border stays negative
    neg = np.clip(-np.abs(x.astype(np.int64)) - 1, -128, 127).astype(np.int8)
    y = kernels.max_pool_s8(neg, 3, stride=2, padding=1, out_hw=(2, 2))
    assert y.reshape(-1).tolist() == [-2, -1, -3, -1]
    assert kernels.max_pool_s8(x, 2, stride=1, act_min=0, act_max=3).reshape(-1).tolist() == [3, 3, 3, 2]
    u = kernels.upsample_nearest_s8(x, (2, 2))
    assert u.shape == (1, 6, 6, 1) and u[0, 5, 3, 0] == x[0, 2, 1, 0] and u[0, 2, 1, 0] == x[0, 1, 0, 0]
    a = np.array([[[[10, -20]]]], np.int8)
    b = np.array([[[[5]]]], np.int8)
    same = kernels.Requant.between(0.5, 3, 0.5, 3)
    half = kernels.Requant.between(0.25, 5, 0.5, -1)  # q -> (q - 5) / 2 - 1, halves rounded up (TFLite's SRDHM)
    assert same.identity and not half.identity
    assert kernels.concat_s8([a, b], [same, half]).reshape(-1).tolist() == [10, -20, -1]
    assert kernels.requantize_s8(np.array([8, 2, -128], np.int8), half).tolist() == [1, -2, -67]


def test_litert_runs_the_neck_bit_exact(quantized):
    """TFLite's own kernels (LiteRT reference kernels: MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR, ADD with
    input rescaling, QUANTIZE + CONCATENATION) give the numpy reference's integers bit for bit."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    from tinydet.export.tflite import build_tflite, compare_litert, tflite_op_counts

    _, _, qmodel = quantized
    qg = load_qgraph(qmodel)
    counts = tflite_op_counts(qg, (3, H, W))
    assert counts["QUANTIZE"] == 1 and counts["CONCATENATION"] == 1 and counts["MAX_POOL_2D"] == 2
    assert counts["RESIZE_NEAREST_NEIGHBOR"] == 1 and counts["ADD"] == 2
    result = compare_litert(build_tflite(qg, (3, H, W)), qg, np.concatenate(images(3, seed=13)))
    assert result["bit_exact_images"] == 3, result


def test_qat_of_a_neck_detector_simulates_its_int8_graph(tmp_path):
    """QAT on person-det: every add of the neck gets an observer (``neck_fq.<node>``), so the
    learned ranges cover every tensor the int8 export needs (without them the export stops at the
    first sum), and the fake-quantized forward is the int8 reference up to rounding."""
    import torch

    from tinydet.arch import HeadSpec, get_spec, lower
    from tinydet.export.folder import export_network
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.qat import prepare_qat, qat_ranges
    from tinydet.quant.reference import Int8Reference

    from test_export_utils import random_network

    res, head = (64, 96), HeadSpec(num_classes=1, num_anchors=3, channels=16)
    spec = get_spec("mcunet-person-det")
    model = prepare_qat(random_network(spec, head, seed=3))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # observers learn their ranges in training mode
            model(torch.from_numpy(rng.random((2, 3) + res, dtype=np.float32)))
    model.eval()
    ranges = qat_ranges(model)
    sums = [n.name for n in spec.neck.nodes if n.type == "add"]
    assert sums and all(f"neck.{name}" in ranges for name in sums)
    out = tmp_path / "qat"
    export_network(model, lower(spec, res, head=head), out, 4, (2, 2), check_images=1)
    quantize_export(out, ranges, {"kind": "qat"})  # no tensor without a range
    images = rng.random((2, 3) + res, dtype=np.float32)
    got = Int8Reference(out).run_full(images)
    ref = Int8Reference(out)
    with torch.no_grad():
        fake = [t.numpy() for t in model(torch.from_numpy(images))]
    for g, f, name in zip(got, fake, ref.full.outputs):
        lsb = np.abs(g - f) / ref.full.tensors[name][0]
        assert lsb.max() <= 3 and lsb.mean() < 0.5, name  # fixed-point vs float rounding only


def test_qat_refuses_a_sum_read_by_a_weightless_op():
    from tinydet.arch import HeadSpec
    from tinydet.arch.spec import spec_from_dict
    from tinydet.errors import TinydetError
    from tinydet.quant.qat import prepare_qat

    from test_export_utils import random_network

    spec = spec_from_dict({"name": "sum-pool", "blocks": [
        {"type": "conv", "out": 8, "stride": 2}, {"type": "mbconv", "out": 8, "stride": 2, "expand": 2},
        {"type": "mbconv", "out": 8, "stride": 2, "expand": 2}], "neck": {"nodes": [
            {"name": "up", "type": "upsample", "inputs": ["stride8"]},
            {"name": "sum", "type": "add", "inputs": ["up", "stride4"]},
            {"name": "down", "type": "maxpool", "inputs": ["sum"]},
            {"name": "out", "type": "conv", "inputs": ["down"], "out": 8}], "outputs": ["out"]}})
    net = random_network(spec, HeadSpec(num_classes=1, num_anchors=1, channels=8))
    with pytest.raises(TinydetError, match=r"neck node 'down' \(maxpool\) reads 'sum' \(add\)"):
        prepare_qat(net)
