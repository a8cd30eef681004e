"""QAT: fake-quant modules, learned ranges into the QDQ export, int8 reference vs fake-quant torch."""
import json

import numpy as np
import pytest
import torch

from tinydet.arch import lower
from tinydet.cli import main
from tinydet.errors import TinydetError
from tinydet.export import load_export
from tinydet.export.folder import export_network
from tinydet.quant.qat import (ActFakeQuant, QATConvBNAct, fake_quant_weight, prepare_qat, qat_ranges,
                               ranges_from_state_dict)
from tinydet.pipeline.quantize import quantize_export
from tinydet.quant.params import params_from_range
from tinydet.quant.reference import Int8Reference

from test_export_utils import random_network
from fixtures import HEAD, RES, residual_spec


class Wrapper(torch.nn.Module):
    """Stands for the training engineer's detector: the Network sits one level down."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def _fine_tune(steps=6, seed=0):
    torch.manual_seed(seed)
    model = Wrapper(random_network(residual_spec(), HEAD, seed=seed))
    prepare_qat(model, None)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    target = torch.from_numpy(rng.normal(0, 1, (4, HEAD.out_channels, 6, 8)).astype(np.float32))
    losses = []
    for _ in range(steps):
        x = torch.from_numpy(rng.random((4, 3) + RES, dtype=np.float32))
        loss = ((model(x)[0] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


@pytest.fixture(scope="module")
def qat_export(tmp_path_factory):
    model, losses = _fine_tune()
    out = tmp_path_factory.mktemp("qat") / "out"
    export_network(model, lower(residual_spec(), RES, head=HEAD), out, 4, (2, 2))
    quantize_export(out, qat_ranges(model), {"kind": "qat"})
    return model, out, losses


def test_prepare_qat_replaces_layers_and_freezes_bn():
    model = Wrapper(random_network(residual_spec(), HEAD))
    prepare_qat(model, None)
    net = model.net
    assert isinstance(net.get_submodule("blocks.3.expand"), QATConvBNAct)
    assert isinstance(net.get_submodule("heads.0.out"), QATConvBNAct)
    assert isinstance(net.blocks[3].add_fq, ActFakeQuant) and not hasattr(net.blocks[2], "add_fq")
    model.train()
    assert not net.get_submodule("blocks.3.expand").bn.training  # running statistics stay frozen
    mean = net.get_submodule("blocks.3.expand").bn.running_mean.clone()
    model(torch.rand(2, 3, *RES))
    assert torch.equal(mean, net.get_submodule("blocks.3.expand").bn.running_mean)
    with pytest.raises(TinydetError, match="already prepared"):
        prepare_qat(model, None)


def test_fake_quant_weight_is_per_channel_symmetric_with_ste():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    q = fake_quant_weight(w)
    scale = w.detach().abs().flatten(1).amax(1) / 127
    levels = q.detach() / scale.view(-1, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 127 + 1e-4
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_activation_observer_matches_export_params():
    fq = ActFakeQuant(bounds=(0.0, 6.0))
    fq.train()
    x = torch.linspace(0, 7.5, 101)
    fq(x)
    assert float(fq.lo) == 0.0 and float(fq.hi) == 6.0  # clipped to the ReLU6 range
    fq.eval()
    y = fq(x)
    p = params_from_range(0.0, 6.0)
    want = (np.clip(np.rint(x.numpy() / p.scale) + p.zero_point, -128, 127) - p.zero_point) * p.scale
    np.testing.assert_allclose(y.detach().numpy(), want, atol=1e-6)


def test_qat_and_export_parameters_agree_on_degenerate_and_random_ranges():
    """QAT trains with exactly the (scale, zero point) the export writes, the degenerate all-zero
    range included: TFLite's rule gives zero point 0 there (QAT used to give -128)."""
    from tinydet.quant.qat import _qparams

    fq = ActFakeQuant()
    fq.train()
    fq(torch.zeros(4, 3))  # an always-zero activation (a dead channel group, a zero input)
    assert float(fq.lo) == 0.0 and float(fq.hi) == 0.0
    scale, zp = _qparams(fq.lo, fq.hi)
    p = params_from_range(0.0, 0.0)
    assert (float(scale), int(zp)) == (p.scale, p.zero_point) and p.zero_point == 0
    fq.eval()
    x = torch.tensor([-0.3, 0.0, 0.002, 0.3])
    want = (np.clip(np.rint(x.numpy() / p.scale) + p.zero_point, -128, 127) - p.zero_point) * p.scale
    np.testing.assert_array_equal(fq(x).detach().numpy(), want.astype(np.float32))
    rng = np.random.default_rng(0)
    for lo, hi in zip(-rng.exponential(3.0, 300) * (rng.random(300) < 0.7), rng.exponential(3.0, 300)):
        lo32, hi32 = torch.tensor(np.float32(lo)), torch.tensor(np.float32(hi))
        scale, zp = _qparams(lo32, hi32)
        p = params_from_range(float(lo32), float(hi32))
        assert (float(scale), int(zp)) == (p.scale, p.zero_point), (lo, hi)


def test_qat_training_changes_ranges_and_lowers_loss(qat_export):
    model, _, losses = qat_export
    assert losses[-1] < losses[0]
    ranges = qat_ranges(model)
    assert "blocks.3.project/conv" in ranges and "blocks.3.project" in ranges
    assert ranges["blocks.1.dw"][0] >= 0.0 and ranges["blocks.1.dw"][1] <= 6.0


def test_int8_reference_agrees_with_fake_quant_torch(qat_export):
    model, out, _ = qat_export
    ref = Int8Reference(out)
    images = np.random.default_rng(9).random((2, 3) + RES, dtype=np.float32)
    with torch.no_grad():
        fake = model(torch.from_numpy(images))[0].numpy()
    got = ref.run_full(images)[0]
    scale = next(op.in_scale[0] for op in ref.full.ops if op.kind == "dequantize")
    lsb = np.abs(got - fake) / scale
    assert lsb.max() <= 4  # fixed-point vs float rounding, compounded over 16 layers
    assert np.mean(lsb > 0.5) < 0.3
    # and much closer than the float model is: the fake quant simulates the int8 graph
    net = model.net
    with torch.no_grad():
        saved = {}
        for name, m in net.named_modules():
            if isinstance(m, ActFakeQuant):
                saved[name] = m.initialized.clone()
                m.initialized.fill_(False)  # pass-through: the float network (weights still fake-quantized)
        float_out = model(torch.from_numpy(images))[0].numpy()
        for name, m in net.named_modules():
            if isinstance(m, ActFakeQuant):
                m.initialized.copy_(saved[name])
    assert np.abs(got - fake).mean() < 0.5 * np.abs(got - float_out).mean()


def test_ranges_from_state_dict_maps_prefixed_keys():
    state = {
        "model.net.blocks.0.conv.out_fq.lo": torch.tensor(0.0), "model.net.blocks.0.conv.out_fq.hi": torch.tensor(3.0),
        "model.net.blocks.0.conv.out_fq.initialized": torch.tensor(True),
        "model.net.blocks.1.project.out_fq.lo": torch.tensor(-1.0), "model.net.blocks.1.project.out_fq.hi": torch.tensor(1.0),
        "model.net.blocks.1.add_fq.lo": torch.tensor(-2.0), "model.net.blocks.1.add_fq.hi": torch.tensor(4.0),
        "model.net.blocks.0.conv.conv.weight": torch.zeros(1),
    }
    r = ranges_from_state_dict(state)
    assert r == {"blocks.0.conv": (0.0, 3.0), "blocks.1.project/conv": (-1.0, 1.0), "blocks.1.project": (-2.0, 4.0)}
    with pytest.raises(TinydetError, match="no QAT ranges"):
        ranges_from_state_dict({"blocks.0.conv.conv.weight": torch.zeros(1)}, "plain.ckpt")


def test_quantize_cli_with_qat_checkpoint(qat_export, tmp_path, capsys):
    model, out, _ = qat_export
    ckpt = tmp_path / "qat.ckpt"
    state = {f"ema.module.{k}": v for k, v in model.state_dict().items()}
    # the training copy's observers differ; export (and so quantize) use the EMA copy
    state.update({f"model.{k}": (v + 1.0 if k.endswith(".hi") else v) for k, v in model.state_dict().items()})
    torch.save({"state_dict": state}, ckpt)
    before = json.loads((out / "quant.json").read_text())["activations"]
    rc = main(["quantize", str(out), "--qat", str(ckpt), "--json"])
    stdout, _ = capsys.readouterr()
    assert rc == 0
    result = json.loads(stdout)
    assert result["source"] == {"kind": "qat", "checkpoint": str(ckpt)}
    assert json.loads((out / "quant.json").read_text())["activations"] == before  # the same learned ranges
    load_export(out)
    rc = main(["quantize", str(out), "--qat", str(ckpt), "--calib", "4"])
    assert rc == 2 and "do not combine" in capsys.readouterr().err


def test_train_qat_export_quantize_validate_end_to_end(tmp_path, capsys):
    """`tinydet train --set quant.qat=true --ckpt C` -> export -> `quantize --qat` -> validate."""
    from train_helpers import make_voc, tiny_config

    from tinydet.quant.qat import ranges_from_checkpoint

    cfg = tiny_config(tmp_path, make_voc(tmp_path / "voc"), tmp_path / "runs")
    assert main(["train", "-c", str(cfg), "--json"]) == 0
    qat_dir = tmp_path / "qat"
    assert main(["train", "-c", str(cfg), "--set", "quant.qat=true", f"train.out_dir={qat_dir}",
                 "--ckpt", str(tmp_path / "runs" / "last.ckpt"), "--json"]) == 0
    ckpt = qat_dir / "last.ckpt"
    out = tmp_path / "out"
    assert main(["export", "-c", str(cfg), "--ckpt", str(ckpt), "--out", str(out), "--patches", "2",
                 "--split", "4", "--json"]) == 0
    assert main(["quantize", str(out), "--qat", str(ckpt), "--json"]) == 0
    capsys.readouterr()
    ranges = ranges_from_checkpoint(ckpt)
    table = json.loads((out / "quant.json").read_text())["activations"]
    p = params_from_range(*ranges["blocks.3.expand"])
    assert table["blocks.3.expand"] == {"scale": pytest.approx(p.scale), "zero_point": p.zero_point}
    rc = main(["validate", str(out), "--images", "2", "-c", str(cfg), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"]
    assert report["int8_stitched_mismatches"] == 0 and report["int8_layer_max_lsb_vs_ort"] <= 1
