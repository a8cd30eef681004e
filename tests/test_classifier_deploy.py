"""Classifiers through the deploy chain: global average pool + fully connected in the lowering, the
generated tables and the firmware (arm_avgpool_s8 / arm_fully_connected_s8 API), bit exact against
the numpy int8 reference on the host and on QEMU in patch and layer mode, with the firmware's
class scores and top-1.

The export is fixtures.make_export's residual backbone as a 7-class classifier whose last block has
13 channels (odd: the kernels' loop tails), its fully connected layer centred so that the top-1
changes with the image; 3x3 tiles, split after block 4.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import needs
from tinydet.deploy import deploy
from tinydet.deploy.emit_c import generate
from tinydet.export import load_export

from fixtures import RES, make_int8_export, run_cli

sys.path.insert(0, str(Path(__file__).parent / "c"))
import driver as drv  # noqa: E402

CLASSES, LAST = 7, 13
CLS_DRIVER = Path(__file__).parent / "c" / "classifier_driver.c"
OP_GAP, OP_FC = 1, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "tinycls"
    make_int8_export(out, num_classes=CLASSES, last=LAST)
    return out


def images():
    """Random and flat images: the reference's top-1 is not the same class for all of them."""
    rng = np.random.default_rng(5)
    flat = np.stack([np.full((3,) + RES, v, np.float32) for v in (0.0, 0.3)])
    return np.concatenate([rng.random((2, 3) + RES, dtype=np.float32), flat])


def test_lowering_has_pool_and_fc_rows_and_the_c_tables(folder, tmp_path):
    sched = load_export(folder).schedule
    for mode in ("patch", "layer"):
        gen = generate(folder, tmp_path / mode, mode=mode)
        low = gen.lowered
        pool, fc = low.layers[-2], low.layers[-1]
        assert (pool.op, pool.name, pool.in_channels, pool.out_channels) == ("avgpool", "classifier.pool", LAST, LAST)
        _, h, w = next(op for op in sched["ops"] if op["name"] == "classifier.pool")["in_shape"]
        assert pool.kernel == (h, w) and pool.weights.size == 0 and pool.const_bytes == 0
        # per-channel weights (TFLite's FULLY_CONNECTED default): a multiplier per class
        assert (fc.op, fc.weights.shape, fc.mult.size, fc.shift.size) == ("fc", (CLASSES, LAST), CLASSES, CLASSES)
        assert len(set(fc.mult.tolist())) > 1 and fc.const_bytes == CLASSES * LAST + 12 * CLASSES
        # the pool's C int32 sums and the FC's row sums fit the scratch (ARM's buffer sizes)
        assert low.scratch_bytes >= 4 * max(LAST, CLASSES)
        assert low.classifier is not None and low.classifier.num_classes == CLASSES and low.detector is None
        src, hdr = gen.model_c.read_text(), gen.model_h.read_text()
        assert ".op = TINYDET_OP_AVGPOOL" in src and ".op = TINYDET_OP_FC" in src
        assert '{.name = "classifier.pool", .weights = NULL, .bias = NULL, .mult = NULL, .shift = NULL' in src
        assert "#define TINYDET_IS_CLASSIFIER 1" in hdr and f"#define TINYDET_NUM_CLASSES {CLASSES}" in hdr
        # the planner's working sets of the pool and the FC are what the arena steps allocate
        arena = sched["arena" if mode == "patch" else "arena_layer"]
        ws = sched["memory"]["layer_working_sets"]
        for step in arena["steps"][-2:]:
            assert step["input_bytes"] + step["output_bytes"] == ws[step["op"]]
        assert low.steps[-1].out_h == low.steps[-1].out_w == 1


@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_host_firmware_is_bit_exact_with_the_planned_arena_and_top1(folder, tmp_path, mode):
    imgs = images()
    r = deploy(folder, "host", tmp_path / mode, mode=mode, validate=True, images=imgs)
    planned = load_export(folder).schedule["memory"]["peak_sram_patch" if mode == "patch" else "peak_sram_per_layer"]
    assert r["sram_arena_bytes"] == r["planned_peak_bytes"] == planned
    assert r["outputs_bit_exact_vs_reference"] is True and r["logits_bit_exact_vs_reference"] is True
    assert r["scores_equal_dequantized_reference"] is True
    assert r["top1_agreement_vs_reference"] == 1.0
    # onnxruntime requantizes in float (1 LSB per layer): close logits may rank differently
    assert 0.0 <= r["top1_agreement_vs_onnxruntime"] <= 1.0
    assert len(set(r["top1_per_image"])) > 1  # the agreement is not one class for every image
    assert r["classifier"]["num_classes"] == CLASSES and r["detections_match_fraction_vs_onnxruntime"] is None
    lines = (tmp_path / mode / "run" / "cls_0.txt").read_text().splitlines()
    assert [int(ln.split()[0]) for ln in lines] == list(range(CLASSES))


def test_qemu_cli_both_modes_bit_exact_with_top1(folder, tmp_path, capsys):
    rc, out, err = run_cli(capsys, ["deploy", str(folder), "--target", "qemu-mps2-an500", "--out", str(tmp_path / "q"),
                                    "--mode", "both", "--run", "--validate", "--images", "3", "--json"])
    assert rc == 0, err
    r = json.loads(out)
    sched = load_export(folder).schedule
    for mode, peak in (("patch", "peak_sram_patch"), ("layer", "peak_sram_per_layer")):
        m = r[mode]
        assert m["sram_arena_bytes"] == sched["memory"][peak]
        assert m["outputs_bit_exact_vs_reference"] is True and m["logits_bit_exact_vs_reference"] is True
        assert m["top1_agreement_vs_reference"] == 1.0 and m["scores_equal_dequantized_reference"] is True
        layers = {f["name"]: f for f in m["per_layer"]}
        assert layers["classifier.pool"]["instructions"] > 0 and layers["classifier.fc"]["instructions"] > 0
    assert r["arena_saved_bytes"] == sched["memory"]["peak_sram_per_layer"] - sched["memory"]["peak_sram_patch"] > 0


def test_a_wrong_avgpool_rounding_is_caught(folder, tmp_path, monkeypatch):
    """Negative control: a reference whose global pool truncates instead of rounding (half away
    from zero, as arm_avgpool_s8) no longer matches the firmware."""
    from tinydet.quant import kernels

    def truncating(x, act_min=-128, act_max=127):
        s = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        q = np.trunc(s / (x.shape[1] * x.shape[2])).astype(np.int64)
        return np.clip(q, act_min, act_max).astype(np.int8)

    monkeypatch.setattr(kernels, "global_avgpool_s8", truncating)
    r = deploy(folder, "host", tmp_path / "neg", mode="layer", validate=True, images=images())
    assert r["outputs_bit_exact_vs_reference"] is False and r["logits_bit_exact_vs_reference"] is False


def test_int8_reference_pool_and_fc_within_one_lsb_of_onnxruntime(folder):
    import onnx

    from tinydet.quant.qgraph import load_qgraph
    from tinydet.quant.reference import layer_lsb_vs_ort

    model = onnx.load(str(folder / "full.int8.onnx"))
    lsb = layer_lsb_vs_ort(load_qgraph(folder / "full.int8.onnx"), model, images())
    assert lsb["classifier.pool"] <= 1 and lsb["classifier.fc"] <= 1


@needs.cmsis_nn
@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_arm_cmsis_nn_pool_and_fc_on_qemu_are_bit_exact(folder, tmp_path, mode):
    r = deploy(folder, "qemu-mps2-an500", tmp_path / mode, mode=mode, validate=True, images=images()[:2])
    assert r["kernels"].startswith("cmsis-nn")
    assert r["logits_bit_exact_vs_reference"] is True and r["top1_agreement_vs_reference"] == 1.0


def test_other_int8_ops_are_still_refused_naming_the_node():
    from types import SimpleNamespace

    from tinydet.deploy import lower
    from tinydet.errors import TinydetError

    graph = SimpleNamespace(ops=[SimpleNamespace(name="classifier.pool", kind="avgpool"),
                                 SimpleNamespace(name="up", kind="resize")])
    with pytest.raises(TinydetError, match=r"x.onnx: node 'up' \(resize\) is not supported by the C code generator"):
        lower._check_supported(graph, "x.onnx")


def test_a_per_tensor_fc_lowers_to_repeated_multipliers():
    """A graph quantized with one FC weight scale (TFLite's per-tensor option) still deploys: the
    per-channel kernel with equal multipliers is the per-tensor kernel."""
    from types import SimpleNamespace

    from tinydet.deploy.lower import classifier_row

    w = np.arange(-10, 11, dtype=np.int8).reshape(3, 7)
    op = SimpleNamespace(name="classifier.fc", kind="fc", weight=w, bias=np.array([1, 2, 3]), mult=np.array([1 << 30]),
                         shift=np.array([-7]), in_zp=[-3], out_zp=5, act_min=-128, act_max=127)
    row = classifier_row(op, (7, 1, 1))
    assert row.mult.tolist() == [1 << 30] * 3 and row.shift.tolist() == [-7] * 3
    assert (row.in_channels, row.out_channels, row.input_offset, row.output_offset) == (7, 3, 3, 5)


def _kernel_batch(seed: int, n: int = 8):
    """Records for the classifier driver with odd sizes (loop tails of 4-channel / 4-deep blocks)
    and their numpy references (tinydet.quant.kernels)."""
    from tinydet.quant import kernels
    from tinydet.quant.arith import quantize_multiplier

    rng = np.random.default_rng(seed)
    recs, want, labels = [], [], []
    for i in range(n):
        h, w, c = int(rng.integers(1, 10)), int(rng.integers(1, 10)), int(rng.integers(1, 38))
        lo, hi = (-128, 127) if i % 2 else (int(rng.integers(-128, 0)), int(rng.integers(0, 128)))
        x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        recs.append(drv.record(OP_GAP, [h, w, c, lo, hi, -1], [x]))
        want.append(kernels.global_avgpool_s8(x, lo, hi).reshape(-1))
        labels.append(f"gap#{i} {h}x{w}x{c}")
    for i in range(n):
        depth, cout = int(rng.integers(1, 68)), int(rng.integers(1, 14))
        x = rng.integers(-128, 128, (1, depth), dtype=np.int8)
        wt = rng.integers(-127, 128, (cout, depth), dtype=np.int8)
        bias = rng.integers(-20000, 20000, cout).astype(np.int32)
        mult, shift = quantize_multiplier(rng.uniform(2 ** -14, 2 ** -6, cout))
        mult, shift = np.asarray(mult, np.int32), np.asarray(shift, np.int32)
        zi, zo = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        lo, hi = (-128, 127) if i % 2 else (zo, 127)
        recs.append(drv.record(OP_FC, [depth, cout, -zi, zo, lo, hi, -1], [x, wt, bias, mult, shift]))
        want.append(kernels.fully_connected_s8(x, wt, bias, input_offset=-zi, output_offset=zo, mult=mult,
                                               shift=shift, act_min=lo, act_max=hi).reshape(-1))
        labels.append(f"fc#{i} {depth}->{cout}")
    return recs, want, labels


def _check_kernels(out, want, labels):
    assert len(out) == len(want)
    for (status, _, data), exp, label in zip(out, want, labels):
        assert status == 0, label
        assert np.array_equal(np.frombuffer(data, np.int8), exp), label


def test_classifier_kernels_bit_exact_vs_numpy_on_host_and_refuse_bad_arguments(tmp_path):
    from tinydet.deploy import toolchain

    exe = toolchain.compile([CLS_DRIVER], "host", tmp_path / "cls_driver")
    recs, want, labels = _kernel_batch(seed=3)
    _check_kernels(drv.run_records(exe, tmp_path / "ok", recs, toolchain.run_host), want, labels)
    x = np.zeros((1, 2, 2, 6), np.int8)
    z = np.zeros(3, np.int32)
    bad = [drv.record(OP_GAP, [2, 2, 6, -128, 127, 8], [x]),  # scratch smaller than 6 int32 sums
           drv.record(OP_FC, [0, 3, 0, 0, -128, 127, -1], [x, x, z, z, z])]  # no depth
    assert [o[0] for o in drv.run_records(exe, tmp_path / "bad", bad, toolchain.run_host)] == [-1, -1]


def test_classifier_kernels_bit_exact_vs_numpy_on_qemu(tmp_path):
    """The Cortex-M7 build (the SMLAD dot of the bundled fully connected kernel)."""
    from tinydet.deploy import toolchain

    elf = toolchain.compile([CLS_DRIVER], "qemu-mps2-an500", tmp_path / "cls_driver.elf", defines={"TINYDET_BOARD": 1})
    recs, want, labels = _kernel_batch(seed=5)
    _check_kernels(drv.run_records(elf, tmp_path / "run", recs, toolchain.run_qemu), want, labels)


@needs.cmsis_nn
def test_classifier_kernels_over_arm_cmsis_nn_on_qemu(tmp_path):
    """CMSIS_NN_ROOT: tinydet_global_avgpool_s8 / tinydet_fully_connected_s8 over ARM's
    arm_avgpool_s8 (DSP: needs its sums buffer) and arm_fully_connected_per_channel_s8."""
    from tinydet.deploy import toolchain

    elf = toolchain.compile([CLS_DRIVER], "qemu-mps2-an500", tmp_path / "cls_arm.elf", defines={"TINYDET_BOARD": 1},
                            cmsis_nn_root=os.environ["CMSIS_NN_ROOT"])
    recs, want, labels = _kernel_batch(seed=7)
    _check_kernels(drv.run_records(elf, tmp_path / "run", recs, toolchain.run_qemu), want, labels)


def test_a_trained_classifier_checkpoint_exports_quantizes_and_deploys_by_cli(tmp_path, capsys):
    """The CLI chain of a ``task: classify`` config: train (one epoch) -> export -> quantize
    (calibration and deploy images through the classifier's centre crop) -> firmware on the host."""
    import yaml

    from tinydet.config import load_config
    from tinydet.data.synth import synth_imagefolder
    from tinydet.train.run import train

    synth_imagefolder(str(tmp_path / "shapes"), 36, seed=0, size=40, classes=["circle", "cross", "square"])
    (tmp_path / "net.yaml").write_text(yaml.safe_dump({"name": "clsnet", "blocks": [
        {"type": "conv", "out": 8, "stride": 2}, {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 2}, {"type": "mbconv", "out": 16, "expand": 2}]}))
    cfg = tmp_path / "cls.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "cls", "task": "classify", "model": {"arch": str(tmp_path / "net.yaml"), "resolution": 32},
        "data": {"format": "imagefolder", "root": str(tmp_path / "shapes")},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                  "out_dir": str(tmp_path / "run"), "progress_bar": False, "loggers": ["csv"]}}))
    ckpt = train(load_config(cfg))["last_ckpt"]
    exp = tmp_path / "exp"
    for argv in (["export", "-c", str(cfg), "--ckpt", ckpt, "--out", str(exp), "--patches", "2", "--split", "2"],
                 ["quantize", str(exp), "-c", str(cfg), "--calib", "6"]):
        rc, _, err = run_cli(capsys, argv)
        assert rc == 0, err
    sched = load_export(exp).schedule
    assert sched["arch"]["mode"] == "classifier" and sched["detector"] is None and sched["outputs"] == ["classifier.fc"]
    rc, out, err = run_cli(capsys, ["deploy", str(exp), "--target", "host", "--out", str(tmp_path / "b"), "--mode",
                                    "both", "--validate", "--images", "3", "--data-config", str(cfg), "--json"])
    assert rc == 0, err
    r = json.loads(out)
    for mode in ("patch", "layer"):
        assert r[mode]["image_source"] == f"{cfg}: val" and r[mode]["images"] == 3
        assert r[mode]["logits_bit_exact_vs_reference"] is True and r[mode]["top1_agreement_vs_reference"] == 1.0
        assert r[mode]["classifier"]["num_classes"] == 3
    # accuracy of the firmware itself on the val split = the int8 reference's, image for image
    tops = {}
    for engine in ("reference", "qemu"):
        rc, out, err = run_cli(capsys, ["eval", "-c", str(cfg), "--export", str(exp), "--int8", "--engine", engine,
                                        "--json"])
        assert rc == 0, err
        tops[engine] = json.loads(out)
    assert tops["qemu"]["top1"] == tops["reference"]["top1"]
    assert tops["qemu"]["per_class"] == tops["reference"]["per_class"]
    assert tops["qemu"]["device"]["decode"].startswith("firmware's int8 logits")
