"""``model.pretrained``: a detector starts from the source network's backbone, exactly; wrong or
incomplete sources fail; and an imported MCUNet network goes import -> train -> export ->
quantize -> deploy on QEMU bit exact, input normalisation included, in patch mode (the CLI)."""
import json
import shutil

import pytest
import torch
import yaml

from tinydet.cli import main
from tinydet.errors import TinydetError
from tinydet.models.detector import detector_from_config, load_pretrained
from tinydet.config import from_dict
from tinydet.zoo import import_torch_module, write_import

from test_zoo_import import IMAGENET_MEAN, IMAGENET_STD, random_bn
from train_helpers import TINY_ANCHORS, make_voc, tiny_config

HEAD = {"channels": 16, "num_anchors": 3, "kernel": 3}


@pytest.fixture(scope="module")
def torchvision_dir(tmp_path_factory):
    import torchvision

    source = random_bn(torchvision.models.mobilenet_v2(width_mult=0.35)).float()
    out = tmp_path_factory.mktemp("tv") / "mbv2"
    write_import(import_torch_module("torchvision", source, "tv-mbv2-w0.35"), out)
    return out, source


def config(arch, pretrained, source="<test>"):
    return from_dict({"model": {"arch": str(arch), "pretrained": pretrained and str(pretrained), "resolution": 64,
                                "head": HEAD, "anchors": TINY_ANCHORS}}, source)


def backbone_features(model, x):
    feats = []
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            x = block(x)
            if i in model.spec.head_from:
                feats.append(x)
    return feats


def test_detector_has_exactly_the_source_backbone_features(torchvision_dir, capsys):
    folder, source = torchvision_dir
    model = detector_from_config(config(folder, folder), 3)
    loaded = load_pretrained(model, config(folder, folder))
    backbone = [k for k in model.state_dict() if k.startswith("blocks.") and ".norm." not in k]
    assert loaded == len(backbone) + 2  # + the normalisation constants
    assert "loaded %d backbone tensors" % loaded in capsys.readouterr().err
    model = model.eval().double()
    source = source.double()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = (x - IMAGENET_MEAN) / IMAGENET_STD
        refs = [source.features[:14](ref), source.features[:18](ref)]
    for ours, theirs in zip(backbone_features(model, x), refs):
        assert torch.equal(ours, theirs) or (ours - theirs).abs().max() <= 1e-10 * theirs.abs().max()


def test_a_tinydet_checkpoint_is_a_pretrained_source(torchvision_dir, tmp_path):
    folder, _ = torchvision_dir
    cfg = config(folder, folder)
    trained = detector_from_config(cfg, 3)
    load_pretrained(trained, cfg)
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
                "tinydet": {"config": cfg.to_dict(), "arch": trained.spec.to_dict(), "class_names": ["a", "b", "c"],
                            "format_version": 1}}, tmp_path / "c.ckpt")
    fresh = detector_from_config(config(folder, tmp_path / "c.ckpt"), 5)  # other classes: a new head
    assert load_pretrained(fresh, config(folder, tmp_path / "c.ckpt")) > 0
    for key, value in fresh.state_dict().items():
        if key.startswith("blocks."):
            assert torch.equal(value, trained.state_dict()[key]), key


@pytest.mark.parametrize("arch, expected", [
    ("mbv2-w0.35", r"input_mean is \(0.485, 0.456, 0.406\) in the source but None in model.arch mbv2-w0.35"),
    ("mbv2-w1.0", r"block 0 out channels is 16 in the source but 32 in model.arch mbv2-w1.0"),
])
def test_a_source_that_is_not_the_backbone_fails(torchvision_dir, arch, expected):
    folder, _ = torchvision_dir
    cfg = config(arch, folder)
    with pytest.raises(TinydetError, match=expected):
        load_pretrained(detector_from_config(cfg, 3), cfg)


def test_incomplete_or_missing_weights_fail(torchvision_dir, tmp_path):
    folder, _ = torchvision_dir
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = torch.load(broken / "weights.pt")
    del state["blocks.5.dw.bn.running_var"]
    torch.save(state, broken / "weights.pt")
    cfg = config(folder, broken)
    with pytest.raises(TinydetError, match=r"1 backbone tensors are missing in the source \(first: "
                                           r"'blocks.5.dw.bn.running_var'\)"):
        load_pretrained(detector_from_config(cfg, 3), cfg)
    cfg = config(folder, tmp_path / "nowhere")
    with pytest.raises(TinydetError, match="neither a torchvision/timm/mcunet source, an imported folder nor a .ckpt"):
        load_pretrained(detector_from_config(cfg, 3), cfg)
    cfg = config(folder, f"mcunet:{tmp_path / 'net.json'}")
    with pytest.raises(TinydetError, match=r"no weights for .*net.json: give mcunet:.*or place net.pth"):
        load_pretrained(detector_from_config(cfg, 3), cfg)


@pytest.mark.parametrize("value, expected", [
    ("tensorflow:mbv2", r"model.pretrained: unknown scheme 'tensorflow:'"),
    ("timm:", r"model.pretrained: 'timm:' names no timm weights"),
])
def test_bad_pretrained_values_are_config_errors(value, expected):
    with pytest.raises(TinydetError, match=expected):
        config("mbv2-w0.35", value)


def test_imported_mcunet_network_trains_exports_and_runs_bit_exact_on_qemu(tmp_path, capsys):
    """The whole user path on the CLI; the MCUNet network normalises its input (mean/std 0.5)."""
    pytest.importorskip("mcunet")
    from mcunet.tinynas.nn.networks import MobileNetV2

    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("qemu-system-arm / arm-none-eabi-gcc not installed")
    source = random_bn(MobileNetV2(n_classes=10, width_mult=0.35)).float()
    (tmp_path / "net.json").write_text(json.dumps(source.config))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "net.pth")
    assert main(["import", "mcunet", str(tmp_path / "net.json"), "--weights", str(tmp_path / "net.pth"),
                 "--out", str(tmp_path / "zoo"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_mean"] == [0.5, 0.5, 0.5]
    cfg_path = tiny_config(tmp_path, make_voc(tmp_path / "voc"), tmp_path / "run", max_steps=1)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"].update(arch=str(tmp_path / "zoo"), pretrained=f"mcunet:{tmp_path / 'net.json'}")
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(cfg_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "model.pretrained" in err and "loaded" in err
    ckpt = json.loads(out.strip().splitlines()[-1])["last_ckpt"]
    assert main(["export", "-c", str(cfg_path), "--ckpt", ckpt, "--out", str(tmp_path / "exp"),
                 "--patches", "2", "--split", "5", "--json"]) == 0
    import onnx

    first = onnx.load(str(tmp_path / "exp" / "full.onnx")).graph.node[0]
    assert first.op_type == "Conv" and "blocks.0.norm" in first.name  # the normalisation stage, on [0, 1] input
    assert main(["quantize", str(tmp_path / "exp"), "-c", str(cfg_path), "--calib", "4", "--json"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(tmp_path / "exp"), "--target", "qemu-mps2-an500", "--out", str(tmp_path / "fw"),
                 "--mode", "patch", "--run", "--validate", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outputs_bit_exact_vs_reference"] is True and result["tiles"] == 4


@pytest.mark.parametrize("scheme", ["torchvision", "timm"])
def test_hub_schemes_with_a_local_file_load_the_source_backbone(tmp_path, scheme):
    """``torchvision:mobilenet_v2:W.pth`` / ``timm:NAME:W.safetensors``: the offline spellings."""
    if scheme == "torchvision":
        import torchvision

        source = random_bn(torchvision.models.mobilenet_v2()).float()
        torch.save(source.state_dict(), tmp_path / "w.pth")
        value, name = f"torchvision:mobilenet_v2:{tmp_path / 'w.pth'}", "mobilenet_v2"
    else:
        timm = pytest.importorskip("timm")
        from safetensors.torch import save_file

        source = random_bn(timm.create_model("mobilenetv2_050")).float()
        save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
        value, name = f"timm:mobilenetv2_050:{tmp_path / 'w.safetensors'}", "mobilenetv2_050"
    write_import(import_torch_module(scheme, source, name), tmp_path / "arch")
    cfg = config(tmp_path / "arch", value)
    model = detector_from_config(cfg, 3)
    assert load_pretrained(model, cfg) > 0
    reference = detector_from_config(config(tmp_path / "arch", tmp_path / "arch"), 3)
    load_pretrained(reference, config(tmp_path / "arch", tmp_path / "arch"))
    x = torch.rand(1, 3, 64, 64)
    for ours, theirs in zip(backbone_features(model.eval(), x), backbone_features(reference.eval(), x)):
        assert torch.equal(ours, theirs)
