"""Spec extensions published networks need: ``residual: false``, absolute channel counts, the
network's BatchNorm eps, and input normalisation (a ``blocks.0.norm`` op), each through the
graph, the module, folding, ONNX export, int8 and the generated firmware."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from tinydet.arch import HeadSpec, build, load_spec, lower, save_spec
from tinydet.arch.spec import spec_from_dict
from tinydet.errors import TinydetError
from tinydet.export.fold import fold_network, run_folded

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=16)


def small(**extra):
    data = {"name": "zs", "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4, "kernel": 5},
        {"type": "mbconv", "out": 24, "stride": 2, "expand": 3}], "head_from": [4]}
    data.update(extra)
    return spec_from_dict(data)


def randomise(model, seed=0, var=(0.3, 2.5)):
    """Random BN statistics/affines (so folding matters); the normalisation constants stay."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(*var)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def test_residual_false_drops_the_shortcut_and_true_is_checked():
    auto = lower(small(), 32)
    assert auto.op("blocks.3.project").add == "blocks.2.project"
    spec = small(blocks=[dict(b, residual=False) if i == 3 else b for i, b in enumerate(small().to_dict()["blocks"])])
    assert lower(spec, 32).op("blocks.3.project").add is None
    assert not build(spec).blocks[3].use_res
    with pytest.raises(TinydetError, match=r"blocks\[2\].residual: true needs an mbconv with stride 1"):
        small(blocks=[dict(b, residual=True) if i == 2 else b for i, b in enumerate(small().to_dict()["blocks"])])


def test_absolute_channels_are_taken_as_written():
    blocks = [{"type": "conv", "out": 12, "stride": 2}, {"type": "mbconv", "out": 20, "expand": 3}]
    rounded = spec_from_dict({"name": "r", "blocks": blocks})
    absolute = spec_from_dict({"name": "a", "blocks": blocks, "absolute_channels": True})
    assert [rounded.channels(i) for i in range(2)] == [16, 24]
    assert [absolute.channels(i) for i in range(2)] == [12, 20] and absolute.hidden_channels(1) == 36
    with pytest.raises(TinydetError, match="absolute_channels is true, so width_mult must be 1.0"):
        spec_from_dict({"name": "a", "blocks": blocks, "absolute_channels": True, "width_mult": 0.5})
    with pytest.raises(TinydetError, match="width_mult must stay 1.0"):
        absolute.with_width(0.5)


def test_bn_eps_is_built_and_folded_exactly():
    spec = small(bn_eps=1e-3)
    model = randomise(build(spec, head=HEAD), var=(0.001, 0.01))  # small variances: eps 1e-3 vs 1e-5 shows
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    folded = fold_network(model, lower(spec, (32, 48), head=HEAD))["blocks.2.expand"].weight
    layer = model.blocks[2].expand
    scale = layer.bn.weight.double() / torch.sqrt(layer.bn.running_var.double() + 1e-3)
    expected = (layer.conv.weight.double() * scale[:, None, None, None]).detach().numpy()
    np.testing.assert_allclose(folded, expected, rtol=1e-6)
    wrong_scale = layer.bn.weight.double() / torch.sqrt(layer.bn.running_var.double() + 1e-5)
    assert not np.allclose(folded, (layer.conv.weight.double() * wrong_scale[:, None, None, None]).detach().numpy(),
                           rtol=1e-3)


def test_normalisation_is_a_frozen_stage_applied_before_zero_padding():
    spec = small(input_mean=list(MEAN), input_std=list(STD))
    plain = randomise(build(small()))
    model = build(spec)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["blocks.0.norm.conv.weight", "blocks.0.norm.conv.bias"] and not unexpected
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    assert all("norm" not in name for name, _ in model.named_parameters())
    x = torch.rand(2, 3, 32, 32)
    normed = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x)[0], plain(normed)[0], rtol=1e-5, atol=1e-5)
    graph = lower(spec, 32)
    first = graph.ops[0]
    assert (first.name, first.kind, first.kernel, first.role, first.bias) == ("blocks.0.norm", "dwconv", 1, "norm", True)
    assert graph.ops[1].padding == 1  # the stem pads the normalised image with zeros
    assert lower(small(), 32).ops[0].name == "blocks.0.conv"


def test_normalised_network_exports_to_onnx_exactly(tmp_path):
    import onnxruntime as ort

    from tinydet.export.folder import export_network

    spec = small(input_mean=list(MEAN), input_std=list(STD), bn_eps=1e-3)
    model = randomise(build(spec, head=HEAD))
    export_network(model, lower(spec, (32, 48), head=HEAD), tmp_path / "e", 3, (2, 2))
    session = ort.InferenceSession(str(tmp_path / "e" / "full.onnx"))
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    x[..., 0, :] = 0.0  # a dark border: where padding raw pixels instead would differ most
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
    ref = model(torch.from_numpy(x))[0].detach().numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_normalised_network_is_bit_exact_on_the_host_firmware_in_patch_mode(tmp_path):
    from tinydet.deploy import deploy
    from tinydet.export.folder import export_network
    from tinydet.quant.calibrate import calibrate
    from tinydet.pipeline.quantize import quantize_export

    spec = small(input_mean=list(MEAN), input_std=list(STD))
    model = randomise(build(spec, head=HEAD))
    out = tmp_path / "e"
    detector = {"num_classes": 2, "class_names": ["a", "b"], "anchors": [[[8, 8], [20, 16]]], "strides": [8],
                "conf_thresh": 0.05, "nms_iou": 0.6, "max_det": 50}
    export_network(model, lower(spec, (48, 64), head=HEAD), out, 3, (3, 3), detector=detector)
    rng = np.random.default_rng(1)
    quantize_export(out, calibrate(str(out / "full.onnx"), [rng.random((1, 3, 48, 64), dtype=np.float32)
                                                             for _ in range(4)], "minmax"), {"kind": "ptq"})
    images = rng.random((2, 3, 48, 64), dtype=np.float32)
    result = deploy(out, "host", tmp_path / "b", mode="patch", validate=True, images=images, conf=0.1)
    assert result["outputs_bit_exact_vs_reference"] is True and result["tiles"] == 9


@pytest.mark.parametrize("extra, expected", [
    ({"input_mean": [0.5, 0.5, 0.5]}, "input_mean is set but input_std is not"),
    ({"input_mean": [0.5, 0.5], "input_std": [0.5, 0.5]}, "input_mean: expected a list of 3 numbers"),
    ({"input_mean": [0.5] * 3, "input_std": [0.5, 0.0, 0.5]}, "input_std: expected positive numbers"),
    ({"bn_eps": 0}, r"bn_eps: expected a number in \(0, 1\)"),
])
def test_bad_extension_fields_are_one_line_errors(extra, expected):
    with pytest.raises(TinydetError, match=expected):
        small(**extra)


def test_extended_spec_round_trips(tmp_path):
    spec = small(input_mean=list(MEAN), input_std=list(STD), bn_eps=1e-3, absolute_channels=True)
    for suffix in (".yaml", ".json"):
        save_spec(spec, tmp_path / f"s{suffix}")
        assert load_spec(tmp_path / f"s{suffix}") == spec
