"""Detector necks on the device (issue 14).

* The C kernels of max pool (``arm_max_pool_s8``: bundled, or ARM's with CMSIS_NN_ROOT), nearest
  upsampling and channel concat against the numpy reference (:mod:`tinydet.quant.kernels`) bit
  for bit, on the host and on QEMU (odd channel counts and sizes, loop tails, padded pools,
  requantized and copied concat inputs).
* Whole detectors with a neck, random weights and randomised BN, minmax PTQ: MIT's person-det at
  96x128 through profile -> export -> int8 (also as full.int8.tflite in LiteRT) -> firmware on QEMU
  in patch and layer mode (split after the stride-8 tap, so the neck's first add reads the stage-1
  map and a stage-2 tensor), and a small concat neck on the host; outputs bit exact vs the int8
  reference, arena == the plan. With CMSIS_NN_ROOT set, the firmware is built on ARM's kernels.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import needs
from tinydet.arch import HeadSpec, get_spec, lower
from tinydet.arch.spec import spec_from_dict
from tinydet.deploy import deploy, toolchain
from tinydet.deploy.emit_c import generate
from tinydet.export import load_export
from tinydet.geometry import conv_out_size
from tinydet.quant import kernels
from tinydet.quant.arith import quantize_multiplier

sys.path.insert(0, str(Path(__file__).parent / "c"))
import driver as drv  # noqa: E402
from fixtures import run_cli  # noqa: E402
from test_export_utils import random_network  # noqa: E402

NECK_DRIVER = Path(__file__).parent / "c" / "neck_driver.c"
OP_MAXPOOL, OP_UPSAMPLE, OP_CONCAT = 1, 2, 3


def _maxpool_case(rng):
    k = int(rng.choice([2, 2, 3, 5]))
    s = int(rng.choice([1, 2, 2]))
    p = int(rng.integers(0, (k - 1) // 2 + 1)) if k > 2 else 0
    h, w, c = int(rng.integers(k, 12)), int(rng.integers(k, 13)), int(rng.integers(1, 20))
    n = 1 if rng.random() < 0.8 else 2
    out_hw = (conv_out_size(h, k, s, p, p), conv_out_size(w, k, s, p, p))
    lo, hi = (-128, 127) if rng.random() < 0.7 else (int(rng.integers(-128, 0)), int(rng.integers(0, 128)))
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    want = kernels.max_pool_s8(x, k, stride=s, padding=p, out_hw=out_hw, act_min=lo, act_max=hi)
    rec = drv.record(OP_MAXPOOL, [n, h, w, c, k, k, s, s, p, p, *out_hw, lo, hi], [x])
    return rec, want, f"maxpool k{k} s{s} p{p} {h}x{w}x{c} n{n}"


def _upsample_case(rng):
    sh, sw = (2, 2) if rng.random() < 0.7 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 19))
    x = rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)
    return (drv.record(OP_UPSAMPLE, [n, h, w, c, sh, sw], [x]), kernels.upsample_nearest_s8(x, (sh, sw)),
            f"upsample x{sh}x{sw} {h}x{w}x{c} n{n}")


def _concat_case(rng):
    k = int(rng.integers(1, 5))
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 9))
    xs, rqs, params = [], [], [n, h, w, k]
    s_out, zp_out = float(np.float32(rng.uniform(0.01, 0.1))), int(rng.integers(-128, 128))
    for _ in range(k):
        c = int(rng.integers(1, 12))
        same = rng.random() < 0.3
        # input scales around the output's: multipliers below and above 1 (right and left shifts)
        s_in = s_out if same else float(np.float32(s_out * rng.choice([rng.uniform(0.05, 1), rng.uniform(1, 9)])))
        zp_in = zp_out if same else int(rng.integers(-128, 128))
        rq = kernels.Requant.between(s_in, zp_in, s_out, zp_out)
        xs.append(rng.integers(-128, 128, (n, h, w, c), dtype=np.int8))
        rqs.append(rq)
        params += [c, rq.input_offset, rq.mult, rq.shift, rq.output_offset, int(rq.identity)]
    return drv.record(OP_CONCAT, params, xs), kernels.concat_s8(xs, rqs), f"concat of {k} ({[x.shape[3] for x in xs]})"


def _batch(seed, n=24):
    rng = np.random.default_rng(seed)
    cases = [make(rng) for _ in range(n) for make in (_maxpool_case, _upsample_case, _concat_case)]
    # an extreme requantization: the largest left shift TFLite's multiplier allows, saturating
    big = kernels.Requant(-3, 2**31 - 1, 30, 5, False)
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 8, 8)
    cases.append((drv.record(OP_CONCAT, [1, 4, 8, 1, 8, -3, 2**31 - 1, 30, 5, 0], [x]),
                  kernels.concat_s8([x], [big]), "concat saturating"))
    return zip(*cases)


def _check(outputs, want, labels):
    assert len(outputs) == len(want)
    for (status, _, data), w, label in zip(outputs, want, labels):
        assert status == 0, label
        got = np.frombuffer(data, np.int8)
        assert np.array_equal(got, np.ascontiguousarray(w).reshape(-1)), label


@pytest.fixture(scope="module")
def host_driver(tmp_path_factory):
    return toolchain.compile([NECK_DRIVER], "host", tmp_path_factory.mktemp("neck") / "neck_driver")


def test_neck_kernels_bit_exact_vs_numpy_on_host(host_driver, tmp_path):
    recs, want, labels = _batch(seed=3)
    _check(drv.run_records(host_driver, tmp_path, list(recs), toolchain.run_host), want, labels)


def test_neck_kernels_refuse_bad_arguments(host_driver, tmp_path):
    x = np.zeros((1, 3, 3, 2), np.int8)
    recs = [drv.record(OP_MAXPOOL, [1, 3, 3, 2, 2, 2, 2, 2, 0, 0, 3, 3, -128, 127], [x]),  # a window off the input
            drv.record(OP_UPSAMPLE, [1, 3, 3, 2, 0, 2], [x]),  # a zero factor
            drv.record(OP_CONCAT, [1, 3, 3, 0], [])]  # nothing to concatenate
    out = drv.run_records(host_driver, tmp_path, recs, toolchain.run_host)
    assert [o[0] for o in out] == [-1, -1, -1]


def test_neck_kernels_bit_exact_vs_numpy_on_qemu(tmp_path):
    """The Cortex-M7 build (DSP paths, the ARM compiler's memcpy) of the same kernels."""
    elf = toolchain.compile([NECK_DRIVER], "qemu-mps2-an500", tmp_path / "neck_driver.elf",
                            defines={"TINYDET_BOARD": 1})
    recs, want, labels = _batch(seed=5, n=10)
    _check(drv.run_records(elf, tmp_path / "run", list(recs), toolchain.run_qemu), want, labels)


@needs.cmsis_nn
def test_cmsis_nn_max_pool_gives_identical_outputs(tmp_path):
    """CMSIS_NN_ROOT: max pool is ARM's arm_max_pool_s8; upsample and concat stay tinydet's."""
    exe = toolchain.compile([NECK_DRIVER], "host", tmp_path / "neck_cmsis", cmsis_nn_root=os.environ["CMSIS_NN_ROOT"])
    recs, want, labels = _batch(seed=9, n=12)
    _check(drv.run_records(exe, tmp_path / "run", list(recs), toolchain.run_host), want, labels)


# ---- whole detectors with a neck --------------------------------------------------------------------

ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]
HEAD = HeadSpec(num_classes=1, num_anchors=3, channels=16)


def _neck_export(out, spec, res, split, grid):
    """Export + minmax PTQ of ``spec`` (random weights, randomised BN); returns the graph."""
    from tinydet.export.folder import export_network
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate

    graph = lower(spec, res, head=HEAD)
    n = len(graph.outputs)
    det = {"num_classes": 1, "class_names": ["person"], "anchors": ANCHORS[:n], "strides": [8, 16, 32][:n],
           "conf_thresh": 0.05, "nms_iou": 0.6, "max_det": 20}
    export_network(random_network(spec, HEAD, seed=0), graph, out, split, grid, detector=det, check_images=1)
    rng = np.random.default_rng(1)
    images = [rng.random((1, 3) + tuple(res), dtype=np.float32) for _ in range(3)]
    quantize_export(out, calibrate(str(out / "full.onnx"), images, "minmax"), {"kind": "ptq", "method": "minmax"})
    return graph


def test_person_det_96x128_profile_export_int8_qemu_both_modes(tmp_path, capsys):
    res, split, grid = (96, 128), 5, (2, 2)
    rc, out, _ = run_cli(capsys, ["profile", "--arch", "mcunet-person-det", "--resolution", "96x128",
                                  "--head-classes", "1", "--anchors", "3", "--patches", "2", "--split", str(split),
                                  "--json"])
    assert rc == 0
    prof = json.loads(out)
    graph = _neck_export(tmp_path / "pd", get_spec("mcunet-person-det"), res, split, grid)
    # the split tensor is the stride-8 tap: the neck's first add reads it (stage 1) and a stage-2 tensor
    split_tensor = graph.ops[graph.block_end(split - 1) - 1].output
    both = [op for op in graph.ops if op.kind == "add" and split_tensor in op.inputs]
    assert both and all(graph.op(t).block < 0 for op in both for t in op.inputs if t != split_tensor)
    low = generate(tmp_path / "pd", tmp_path / "gen", mode="patch").lowered
    assert {n.kind for n in low.necks} == {"upsample", "add", "maxpool"} and len(low.necks) == 8
    # that add's step reads the stage-1 map where the plan keeps it
    stage1_buffer = load_export(tmp_path / "pd").schedule["arena"]["stage1_buffer"]
    step = next(s for s in low.steps if s.op == both[0].name)
    assert step.neck >= 0 and step.inputs[both[0].inputs.index(split_tensor)] == stage1_buffer
    image = np.random.default_rng(2).random((1, 3) + res, dtype=np.float32)
    if importlib.util.find_spec("ai_edge_litert") is not None:  # TFLite's own kernels agree (LiteRT installed)
        from tinydet.export.tflite import TFLITE_FILE, compare_litert, write_tflite
        from tinydet.quant.qgraph import load_qgraph

        write_tflite(tmp_path / "pd")
        lite = compare_litert((tmp_path / "pd" / TFLITE_FILE).read_bytes(),
                              load_qgraph(tmp_path / "pd" / "full.int8.onnx"), image)
        assert lite["bit_exact_images"] == 1, lite
    for mode, peak in (("patch", "peak_sram_patch"), ("layer", "peak_sram_per_layer")):
        r = deploy(tmp_path / "pd", "qemu-mps2-an500", tmp_path / mode, mode=mode, validate=True, images=image,
                   conf=0.05)
        assert r["outputs_bit_exact_vs_reference"] is True, mode
        assert r["sram_arena_bytes"] == r["planned_peak_bytes"] == prof[peak], mode
        assert r["instructions_per_inference"] > 0


def concat_neck_spec():
    """A small backbone (taps at strides 8 and 16) with a concat neck: top-down (1x1, upsample,
    concat with the stride-8 tap, mbconv) and bottom-up (max pool, concat with the stride-16 tap)."""
    return spec_from_dict({"name": "concat-neck", "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "stride": 2, "expand": 2},
        {"type": "mbconv", "out": 12, "stride": 2, "expand": 3},    # stride8
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 3}],   # stride16
        "head_from": [2, 3], "neck": {"nodes": [
            {"name": "lat", "type": "conv", "inputs": ["stride16"], "out": 8, "act": "none"},
            {"name": "up", "type": "upsample", "inputs": ["lat"]},
            {"name": "cat3", "type": "concat", "inputs": ["up", "stride8"]},
            {"name": "n3", "type": "mbconv", "inputs": ["cat3"], "out": 12, "expand": 2},
            {"name": "down", "type": "maxpool", "inputs": ["n3"]},
            {"name": "cat4", "type": "concat", "inputs": ["stride16", "down"]},
            {"name": "n4", "type": "conv", "inputs": ["cat4"], "out": 16}], "outputs": ["n3", "n4"]}})


def test_concat_neck_bit_exact_on_host_both_modes(tmp_path):
    _neck_export(tmp_path / "cat", concat_neck_spec(), (48, 80), 2, (2, 3))
    low = generate(tmp_path / "cat", tmp_path / "gen", mode="layer").lowered
    cats = [n for n in low.necks if n.kind == "concat"]
    assert len(cats) == 2 and all(q.channels > 0 for n in cats for q in n.parts)
    assert any(not q.copy for n in cats for q in n.parts)  # at least one input requantized
    image = np.random.default_rng(4).random((2, 3, 48, 80), dtype=np.float32)
    for mode in ("patch", "layer"):
        r = deploy(tmp_path / "cat", "host", tmp_path / mode, mode=mode, validate=True, images=image, conf=0.05)
        assert r["outputs_bit_exact_vs_reference"] is True and r["sram_arena_bytes"] == r["planned_peak_bytes"], mode
