"""Shared test data and helpers: the in-process CLI (:func:`run_cli`) and the int8 export folder of the quantization, validation, deploy and TFLite
tests (a random-weight tiny detector with randomised BN, so folding matters, a non-square 48x64
input, a 3x3 grid, and the split after block 3, in the middle of the 16-channel residual stage:
stage 2 starts with a residual block whose shortcut is the split tensor), and its calibration images.

Import from here (``from fixtures import make_export``), not from another test module.
"""
import numpy as np

from tinydet.arch import HeadSpec, lower
from tinydet.arch.spec import spec_from_dict
from tinydet.export.folder import export_network

from test_export_utils import random_network

RES = (48, 64)
HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=16)
SPLIT = 4
GRID = (3, 3)
DETECTOR = {"num_classes": 2, "class_names": ["a", "b"], "anchors": [[[8, 8], [20, 16]]], "strides": [8],
            "conf_thresh": 0.05, "nms_iou": 0.6, "max_det": 50}


def residual_spec():
    """Blocks 2-4 form one 16-channel stage (3 and 4 residual); block 5 feeds the head."""
    return spec_from_dict({"name": "qtiny", "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4, "kernel": 5},
        {"type": "mbconv", "out": 24, "stride": 2, "expand": 4}], "head_from": [5]})


def make_export(out, seed=0, grid=GRID, split=SPLIT):
    """Export the tiny residual detector (seeded random weights) to ``out``; returns (model, graph)."""
    spec = residual_spec()
    model = random_network(spec, HEAD, seed=seed)
    graph = lower(spec, RES, head=HEAD)
    export_network(model, graph, out, split, grid, detector=DETECTOR)
    return model, graph


def calib_images(n=6, seed=1):
    """``n`` seeded uniform images [1, 3, 48, 64] in [0, 1]."""
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3) + RES, dtype=np.float32) for _ in range(n)]


def run_cli(capsys, argv):
    """The tinydet CLI in process: (exit code, stdout, stderr) of ``tinydet ARGV``."""
    from tinydet.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def make_eval_export(tmp):
    """The tiny training config's detector (mbv2-w0.35, 64 px, 5 classes, 4 test images of a
    generated VOC set) with random weights, exported with a 2x2 grid and quantized: a folder that
    ``tinydet eval --export`` can score. Returns (config path, export folder)."""
    from tinydet.arch.presets import mbv2_w035
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate
    from train_helpers import make_voc, tiny_config

    cfg = tiny_config(tmp, make_voc(tmp / "voc"), tmp / "runs")
    spec, head = mbv2_w035(), HeadSpec(num_classes=5, num_anchors=3, channels=16, kernel=3)
    out = tmp / "exp"
    export_network(random_network(spec, head, seed=1), lower(spec, (64, 64), head=head), out, 3, (2, 2))
    rng = np.random.default_rng(2)
    quantize_export(out, calibrate(str(out / "full.onnx"), [rng.random((1, 3, 64, 64), dtype=np.float32)
                                                           for _ in range(3)], "minmax"), {"kind": "ptq"})
    return cfg, out
