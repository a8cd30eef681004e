"""The runtime's decode + NMS (deploy/runtime/src/detect.c) against tinydet.models.decode.postprocess.

The C code runs on the host (tests/c/detect_driver.c) with the tables tinydet.deploy.lower makes
for the firmware, on random raw int8 head maps; boxes, scores and labels must be identical (float
equality, not a tolerance).
"""
import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from tinydet.deploy import lower as lw
from tinydet.deploy import toolchain
from tinydet.models.decode import decode, postprocess
from tinydet.quant.arith import dequantize

DRIVER = Path(__file__).parent / "c" / "detect_driver.c"
ANCHORS = [[[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]], [[30.0, 61.0], [62.0, 45.0], [59.0, 119.0]]]
STRIDES = [8, 16]
INPUT = (48, 64)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return toolchain.compile([DRIVER], "host", tmp_path_factory.mktemp("detect") / "detect_driver")


def _maps(rng, classes, obj_shift=0):
    """Random int8 NHWC head maps (stride 8 and 16 on a 48x64 input) with their output rows."""
    maps, rows, offset = [], [], 0
    for s in STRIDES:
        h, w, c = INPUT[0] // s, INPUT[1] // s, 3 * (5 + classes)
        q = rng.integers(-128, 128, (h, w, c), dtype=np.int8)
        obj = q.reshape(h, w, 3, 5 + classes)[..., 4]
        obj[...] = np.clip(obj.astype(np.int32) + obj_shift, -128, 127)
        rows.append(lw.OutputRow(name=f"out{s}", offset=offset, c=c, h=h, w=w,
                                 scale=float(rng.uniform(0.02, 0.08)), zp=int(rng.integers(-20, 20))))
        maps.append(q)
        offset += q.size
    return maps, rows


def _pack(det: lw.DetectorRow, maps) -> bytes:
    blob = b"".join(np.ascontiguousarray(m).tobytes() for m in maps)
    out = struct.pack("<7i2f", len(det.heads), det.num_anchors, det.num_classes, det.max_candidates, det.max_det,
                      det.input_h, det.input_w, det.conf_thresh, det.nms_iou)
    for hd in det.heads:
        out += struct.pack("<4i", hd.offset, hd.h, hd.w, hd.objectness_min)
        out += np.asarray([hd.stride, *np.asarray(hd.anchors).reshape(-1)], np.float32).tobytes()
        out += np.asarray(hd.sigmoid, np.float32).tobytes()
    return out + struct.pack("<i", len(blob)) + blob + b"\0" * ((4 - len(blob) % 4) % 4)


def _run_c(driver, workdir: Path, cases):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "din.bin").write_bytes(b"".join(_pack(d, m) for d, m in cases))
    code, out, log = toolchain.run_host(driver, workdir, timeout_s=60)
    assert code == 0, f"detect driver exit {code} (log {log})"
    data, pos, results = (workdir / "dout.bin").read_bytes(), 0, []
    for _ in cases:
        (n,) = struct.unpack_from("<i", data, pos)
        pos += 4
        rec = np.frombuffer(data[pos:pos + 24 * n], dtype=[("box", "<f4", 4), ("score", "<f4"), ("label", "<i4")])
        pos += 24 * n
        results.append((rec["box"].copy(), rec["score"].copy(), rec["label"].astype(np.int64)))
    return results


def _python(det: lw.DetectorRow, maps, rows, conf):
    nchw = [dequantize(m, r.scale, r.zp).transpose(2, 0, 1)[None] for m, r in zip(maps, rows)]
    return postprocess(nchw, anchors=ANCHORS, strides=STRIDES, input_size=INPUT, conf_thresh=conf,
                       nms_iou=det.nms_iou, max_det=det.max_det, max_candidates=det.max_candidates)[0]


def _detector(rows, conf, nms_iou=0.5, max_det=100, **over):
    det = lw.detector_row({"anchors": ANCHORS, "strides": STRIDES, "nms_iou": nms_iou, "max_det": max_det}, rows,
                          INPUT, conf, "test")
    return dataclasses.replace(det, **over) if over else det


def _same(got, want):
    assert len(got[0]) == len(want[0])
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])


@pytest.mark.parametrize("classes", [1, 3])
def test_c_decode_is_identical_to_python_on_random_maps(driver, tmp_path, classes):
    rng = np.random.default_rng(classes)
    cases, wants = [], []
    for conf, nms_iou, shift in [(0.001, 0.5, 0), (0.25, 0.6, 0), (0.5, 0.4, 40), (0.05, 0.0, 0), (0.3, 1.0, 20)]:
        maps, rows = _maps(rng, classes, shift)
        det = _detector(rows, conf, nms_iou, max_det=60)
        cases.append((det, maps))
        wants.append(_python(det, maps, rows, conf))
    assert sum(len(w[0]) for w in wants) > 100  # the cases do keep detections
    for got, want in zip(_run_c(driver, tmp_path, cases), wants):
        _same(got, want)


def test_candidate_cap_under_pressure(driver, tmp_path):
    """More candidates than max_candidates: both sides keep the same best ones (and the cap matters)."""
    rng = np.random.default_rng(7)
    maps, rows = _maps(rng, 2, obj_shift=60)
    conf = 0.001
    det = _detector(rows, conf, 0.5, max_det=300, max_candidates=40)
    n_pass = len(decode([dequantize(m, r.scale, r.zp).transpose(2, 0, 1)[None] for m, r in zip(maps, rows)],
                        ANCHORS, STRIDES, INPUT, conf)[0][1])
    assert n_pass > 4 * det.max_candidates
    capped, uncapped = _run_c(driver, tmp_path, [(det, maps), (dataclasses.replace(det, max_candidates=n_pass), maps)])
    _same(capped, _python(det, maps, rows, conf))
    assert len(capped[0]) <= det.max_candidates < len(uncapped[0])


def test_exact_ties_keep_the_earlier_slot_on_both_sides(driver, tmp_path):
    """Every slot with the same score: the cap and NMS keep the earliest slots, in slot order, in C,
    in the numpy decode and in the torch decode."""
    import torch

    rng = np.random.default_rng(3)
    maps, rows = _maps(rng, 1)
    for m in maps:
        v = m.reshape(m.shape[0], m.shape[1], 3, 6)
        v[..., 4] = 100
        v[..., 5] = 90  # identical score everywhere; boxes still differ
    det = _detector(rows, 0.25, 0.3, max_det=50, max_candidates=25)
    got = _run_c(driver, tmp_path, [(det, maps)])[0]
    want = _python(det, maps, rows, 0.25)
    _same(got, want)
    assert len(set(got[1].tolist())) == 1 and len(got[0]) > 1
    nchw = [dequantize(m, r.scale, r.zp).transpose(2, 0, 1)[None] for m, r in zip(maps, rows)]
    np_boxes = decode(nchw, ANCHORS, STRIDES, INPUT, 0.25, max_candidates=25)[0][0]
    t_boxes = decode([torch.from_numpy(x) for x in nchw], ANCHORS, STRIDES, INPUT, 0.25, max_candidates=25)[0][0]
    all_boxes = decode(nchw, ANCHORS, STRIDES, INPUT, 0.25)[0][0]
    assert np.array_equal(np_boxes, all_boxes[:25])  # the earliest 25 slots, in order
    # torch's sigmoid differs from numpy's in the last bits; the order (the same slots) must not
    assert np.allclose(t_boxes.numpy(), np_boxes, atol=1e-4)


def test_objectness_threshold_is_the_exact_int8_bound(driver, tmp_path):
    """objectness_min is the smallest int8 value whose sigmoid passes conf: a slot one value below
    cannot pass, the one at it can; at conf == table[q] exactly, q itself is out."""
    rng = np.random.default_rng(5)
    table = lw.sigmoid_table(0.05, 3)
    for q in (-40, 0, 37):
        conf = float(table[q + 128])
        qmin = lw.objectness_min(table, conf)
        assert table[qmin + 128] > np.float32(conf) and np.all(table[:qmin + 128] <= np.float32(conf))
    # end to end at a threshold equal to a table value: C and Python agree on the boundary slots
    maps, rows = _maps(rng, 1)
    rows = [dataclasses.replace(r, scale=0.05, zp=3) for r in rows]
    for m in maps:
        v = m.reshape(m.shape[0], m.shape[1], 3, 6)
        v[..., 5] = 127
        v[..., 4] = rng.choice([-1, 0, 1, 2], v[..., 4].shape)
    conf = float(np.float32(table[0 + 128] * table[127 + 128]))
    det = _detector(rows, conf, 0.5, max_det=200)
    assert det.heads[0].objectness_min == 0
    got = _run_c(driver, tmp_path, [(det, maps)])[0]
    _same(got, _python(det, maps, rows, conf))
    assert len(got[0]) > 0
