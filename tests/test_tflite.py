"""``tinydet tflite``: full.int8.tflite from the export folder's own int8 parameters, bit exact in LiteRT."""
import json

import numpy as np
import pytest

from tinydet.arch import HeadSpec, lower
from tinydet.arch.spec import load_spec
from tinydet.cli import main
from tinydet.errors import TinydetError
from tinydet.export import load_export
from tinydet.export.folder import export_network
from tinydet.export.tflite import TFLITE_FILE, build_tflite, compare_litert, conv_padding, same_padding
from tinydet.geometry import Pads
from tinydet.quant.calibrate import calibrate
from tinydet.pipeline.quantize import quantize_export
from tinydet.quant.qgraph import QOp, load_qgraph

from test_export_utils import random_network
from fixtures import RES, calib_images, make_eval_export, make_export

tflite_schema = pytest.importorskip("tflite", reason="the tflite schema package is not installed")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) cannot be installed here")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "out"
    make_export(out)
    quantize_export(out, calibrate(str(out / "full.onnx"), calib_images(), "minmax"), {"kind": "ptq"})
    return out


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """The demo's detector (configs/synth_face.yaml: mbv2_w035_s8 at 192, 1 class, head 32 x 3
    anchors), random weights, calibrated on random images, exported with a 2x2 grid."""
    out = tmp_path_factory.mktemp("tflite_demo") / "out"
    spec = load_spec("configs/arch/mbv2_w035_s8.yaml")
    head = HeadSpec(num_classes=1, num_anchors=3, channels=32, kernel=3)
    export_network(random_network(spec, head, seed=3), lower(spec, (192, 192), head=head), out, 3, (2, 2))
    rng = np.random.default_rng(5)
    images = [rng.random((1, 3, 192, 192), dtype=np.float32) for _ in range(4)]
    quantize_export(out, calibrate(str(out / "full.onnx"), images, "minmax"), {"kind": "ptq"})
    return out


def _main(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_tflite_cli_is_bit_exact_in_litert_and_checksummed(folder, capsys):
    rc, out, err = _main(capsys, ["tflite", str(folder), "--images", "3", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["bit_exact_images"] == 3 and result["reference"]["mismatched_elements"] == 0
    assert set(result["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD"} and result["ops"]["ADD"] == 3
    export = load_export(folder)  # verifies every checksum, the new file's included
    assert export.has(TFLITE_FILE) and export.schedule["files"][TFLITE_FILE]["bytes"] == result["bytes"]
    # tinydet validate counts the bit-exact images too
    rc, out, err = _main(capsys, ["validate", str(folder), "--images", "2", "--json"])
    assert rc == 0, err
    assert json.loads(out)["tflite_bit_exact_images"] == 2


def test_tflite_carries_the_qdq_parameters_not_a_requantization(folder):
    from tflite.Model import Model
    from tflite.TensorType import TensorType

    data = build_tflite(load_qgraph(folder / "full.int8.onnx"), load_export(folder).input_shape)
    m = Model.GetRootAsModel(data, 0)
    g = m.Subgraphs(0)
    tensors = {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}
    qg = load_qgraph(folder / "full.int8.onnx")
    inp = g.Tensors(g.Inputs(0))
    assert inp.Type() == TensorType.INT8 and inp.ShapeAsNumpy().tolist() == [1, RES[0], RES[1], 3]
    assert all(g.Tensors(g.Outputs(k)).Type() == TensorType.INT8 for k in range(g.OutputsLength()))
    quant = json.loads((folder / "quant.json").read_text())
    table = quant.get("tensors", quant)
    checked = 0
    for op in qg.ops:
        if op.kind in ("conv", "dwconv"):
            w = tensors[f"{op.name}.weight"]
            q = w.Quantization()
            assert q.ScaleAsNumpy().tolist() == np.asarray(op.weight_scale, np.float32).tolist()
            assert q.QuantizedDimension() == (3 if op.kind == "dwconv" else 0)
            assert np.frombuffer(m.Buffers(w.Buffer()).DataAsNumpy().tobytes(), np.int8).tolist() == \
                op.weight.reshape(-1).tolist()
            out = tensors[op.output]
            assert out.Quantization().ScaleAsNumpy()[0] == np.float32(op.out_scale)
            assert out.Quantization().ZeroPointAsNumpy()[0] == op.out_zp
            checked += 1
    assert checked >= 10 and table


def test_demo_model_is_bit_exact_in_litert(demo_folder, capsys):
    rc, out, err = _main(capsys, ["tflite", str(demo_folder), "--images", "2", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["bit_exact_images"] == 2 and result["reference"]["max_abs_diff_lsb"] == 0


def test_a_changed_or_unlisted_tflite_file_is_caught(folder, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert _main(capsys, ["tflite", str(copy), "--no-check", "--json"])[0] == 0
    (copy / "other.tflite").write_bytes(b"x")
    with pytest.raises(TinydetError, match="other.tflite is not listed in manifest.json"):
        load_export(copy)
    (copy / "other.tflite").unlink()
    path = copy / TFLITE_FILE
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(TinydetError, match=f"checksum mismatch: {TFLITE_FILE}"):
        load_export(copy)


def test_missing_litert_is_a_clear_error(folder, monkeypatch, capsys):
    import tinydet.export.tflite as tfl

    monkeypatch.setattr(tfl, "litert_available", lambda: False)
    rc, out, err = _main(capsys, ["tflite", str(folder), "--json"])
    assert rc == 2 and "pip install ai-edge-litert" in err and out == ""


def test_a_wrong_integer_is_seen_by_the_comparison(folder):
    """The check can fail: one bias changed by 1000 makes LiteRT differ from the reference."""
    qg = load_qgraph(folder / "full.int8.onnx")
    shape = load_export(folder).input_shape
    good = build_tflite(qg, shape)
    conv = next(op for op in qg.ops if op.kind == "conv")
    conv.bias = conv.bias + 1000
    bad = build_tflite(qg, shape)
    qg = load_qgraph(folder / "full.int8.onnx")
    images = np.random.default_rng(0).random((2, 3) + RES, dtype=np.float32)
    assert compare_litert(good, qg, images)["bit_exact_images"] == 2
    assert compare_litert(bad, qg, images)["bit_exact_images"] == 0


def test_padding_rule_same_valid_or_explicit():
    def op(k, s, pads):
        return QOp("c", "conv", ["x"], "y", kernel=(k, k), stride=(s, s), padding=Pads(*pads))

    assert same_padding(48, 3, 2) == (24, 0)  # TFLite puts the odd padding row after
    assert conv_padding((48, 64), op(3, 1, (1, 1, 1, 1))) == "SAME"
    assert conv_padding((48, 64), op(1, 1, (0, 0, 0, 0))) == "SAME"
    assert conv_padding((48, 64), op(3, 2, (1, 1, 1, 1))) is None  # torch's symmetric stride-2 padding
    assert conv_padding((47, 63), op(3, 2, (1, 1, 1, 1))) == "SAME"
    assert conv_padding((48, 64), op(3, 1, (0, 0, 0, 0))) == "VALID"


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """:func:`fixtures.make_eval_export`, written as .tflite too."""
    cfg, out = make_eval_export(tmp_path_factory.mktemp("engines"))
    assert main(["tflite", str(out), "--no-check", "--json"]) == 0
    return cfg, out


def test_eval_engines_reference_litert_identical(eval_setup, capsys):
    cfg, out = eval_setup
    capsys.readouterr()
    common = ["eval", "-c", str(cfg), "--export", str(out), "--int8", "--split", "test", "--json",
              "--set", "eval.conf_thresh=0.3"]
    results = {}
    for engine in ("reference", "litert", "onnxruntime"):
        rc, stdout, err = _main(capsys, common + ["--engine", engine])
        assert rc == 0, err
        results[engine] = json.loads(stdout)
        assert results[engine]["engine"] == engine
    rc, stdout, err = _main(capsys, common)
    assert rc == 0 and json.loads(stdout)["engine"] == "reference"  # the default
    assert sum(c["n_det"] for c in results["reference"]["per_class"].values()) > 0
    keys = ("map50", "map50_area", "map_coco", "per_class")
    # bit-exact outputs: the device's detections, hence the same figures
    assert {k: results["reference"][k] for k in keys} == {k: results["litert"][k] for k in keys}
    assert results["onnxruntime"]["n_images"] == results["reference"]["n_images"]
    rc, _, err = _main(capsys, common + ["--engine", "litert", "--patched"])
    assert rc == 2 and "drop --patched" in err
    rc, _, err = _main(capsys, ["eval", "-c", str(cfg), "--export", str(out), "--engine", "litert"])
    assert rc == 2 and "add --int8" in err


def test_engine_runners_agree_bit_for_bit(eval_setup):
    from tinydet.export.tflite import litert_runner
    from tinydet.quant.reference import Int8Reference

    _, out = eval_setup
    images = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    ref = Int8Reference(out, load_export(out).schedule)
    for a, b, c in zip(ref.run_full(images), litert_runner(out)(images), ref.run_stitched(images)):
        assert np.array_equal(a, b) and np.array_equal(a, c)
