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


def residual_spec(num_classes=0, last=24):
    """Blocks 2-4 form one 16-channel stage (3 and 4 residual); block 5 feeds the head, or with
    ``num_classes`` the classifier (global pool + fully connected); ``last`` = block 5's channels
    (exact: odd counts exercise the kernels' loop tails)."""
    return spec_from_dict({"name": "qtiny", "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4, "kernel": 5},
        {"type": "mbconv", "out": last, "stride": 2, "expand": 4}], "head_from": [5],
        "num_classes": num_classes, "absolute_channels": last % 8 != 0})


def make_export(out, seed=0, grid=GRID, split=SPLIT, num_classes=0, last=24):
    """Export the tiny residual detector (seeded random weights) to ``out``; returns (model, graph).
    ``num_classes`` > 0 exports the same backbone as a classifier (``residual_spec``'s ``last``)."""
    spec = residual_spec(num_classes, last)
    head = None if num_classes else HEAD
    model = random_network(spec, head, seed=seed)
    if num_classes:
        centre_classifier(model, calib_images())
    graph = lower(spec, RES, head=head)
    export_network(model, graph, out, split, grid, detector=None if num_classes else DETECTOR)
    return model, graph


def centre_classifier(model, images):
    """Make a random classifier's top-1 depend on the image: its fully connected layer centred on
    the pooled features' mean over ``images`` and scaled by their spread (randomised BN offsets
    otherwise give one class to every image). In place; returns the model."""
    import torch

    feats = []
    hook = model.classifier.fc.register_forward_hook(lambda m, inp, out: feats.append(inp[0]))
    with torch.no_grad():
        model(torch.from_numpy(np.concatenate(images)))
        hook.remove()
        fc = model.classifier.fc
        fc.weight /= feats[0].std(0) + 1e-3
        fc.bias.copy_(-(fc.weight @ feats[0].mean(0)))
    return model


def make_int8_export(out, **kw):
    """:func:`make_export` quantized with minmax PTQ on :func:`calib_images`; returns (model, graph)."""
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate

    model, graph = make_export(out, **kw)
    quantize_export(out, calibrate(str(out / "full.onnx"), calib_images(), "minmax"),
                    {"kind": "ptq", "method": "minmax", "images": 6})
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
