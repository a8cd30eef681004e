"""`tinydet import` (tinydet.zoo): torchvision, timm and MCUNet/OFA networks -> spec + weights
with identical logits, the refusals, and ``model.pretrained`` in a detector. All offline: the
source networks are built with random weights and random BN statistics, compared in float64."""
import copy
import json
import random

import pytest
import torch

from tinydet.arch import build, get_spec, load_spec
from tinydet.cli import main
from tinydet.errors import TinydetError
from tinydet.zoo import import_network, import_torch_module, write_import

from test_export_utils import randomise_batchnorm

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def random_bn(model, seed=0):
    return randomise_batchnorm(model, seed).double()


def tinydet_net(imported):
    net = build(imported.spec)
    net.load_state_dict(imported.state_dict, strict=True)
    return net.eval().double()


def assert_same_logits(net, source, normalise, size=48):
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = net(x)[0], source(normalise(x))
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() <= 1e-5
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in source.parameters())


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_torchvision_mobilenet_v2_imports_with_identical_logits(width):
    import torchvision

    source = random_bn(torchvision.models.mobilenet_v2(width_mult=width))
    imported = import_torch_module("torchvision", source, f"mbv2-{width}")
    assert imported.spec.input_mean == (0.485, 0.456, 0.406) and imported.spec.head_from == (13, 17)
    assert_same_logits(tinydet_net(imported), source, lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD)


TIMM_NAMES = ["mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_110d",
              "mobilenetv2_120d", "mobilenetv2_140"]


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_mobilenetv2_imports_with_identical_logits(name):
    timm = pytest.importorskip("timm")
    assert sorted(timm.list_models("mobilenetv2_*")) == TIMM_NAMES  # every family member is tested
    source = random_bn(timm.create_model(name))
    imported = import_torch_module("timm", source, name)
    assert_same_logits(tinydet_net(imported), source, lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD)


def mcunet_nets():
    from mcunet.tinynas.elastic_nn.networks import OFAProxylessNASNets
    from mcunet.tinynas.nn.networks import MobileNetV2

    yield "mcunet-mbv2-w0.35", MobileNetV2(n_classes=10, width_mult=0.35)
    ofa = OFAProxylessNASNets(n_classes=10, width_mult_list=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                              depth_list=[2, 3, 4])
    random.seed(0)
    for i in range(3):
        ofa.sample_active_subnet()
        yield f"ofa-subnet-{i}", ofa.get_active_subnet(preserve_weight=True)


def to_ofa_form(config, state):
    """The newer OFA net_config form (ResidualBlock / conv / MBConvLayer) of the same network."""
    config = copy.deepcopy(config)
    for block in config["blocks"]:
        block["name"] = "ResidualBlock"
        block["conv"] = block.pop("mobile_inverted_conv")
        block["conv"]["name"] = "MBConvLayer"
    return config, {k.replace(".mobile_inverted_conv.", ".conv."): v for k, v in state.items()}


@pytest.mark.parametrize("form", ["proxyless", "ofa"])
def test_mcunet_package_networks_import_with_identical_logits(tmp_path, form):
    pytest.importorskip("mcunet")
    for name, net in mcunet_nets():
        source = random_bn(net)
        config, state = source.config, source.state_dict()
        if form == "ofa":
            config, state = to_ofa_form(config, state)
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
        torch.save({"state_dict": state}, tmp_path / f"{name}.pth")
        imported = import_network("mcunet", str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.pth"))
        assert imported.spec.bn_eps == 1e-3 and imported.spec.input_mean == (0.5, 0.5, 0.5)
        assert imported.tensors == len(state)
        assert_same_logits(tinydet_net(imported), source, lambda x: (x - 0.5) / 0.5)


def test_zero_blocks_are_skipped_and_missing_shortcuts_kept(tmp_path):
    pytest.importorskip("mcunet")
    from mcunet.tinynas.nn.networks import MobileNetV2, ProxylessNASNets

    config = MobileNetV2(n_classes=10, width_mult=0.35).config
    channels = config["blocks"][3]["mobile_inverted_conv"]["out_channels"]
    zero = {"name": "MobileInvertedResidualBlock", "mobile_inverted_conv": {"name": "ZeroLayer", "stride": 1},
            "shortcut": {"name": "IdentityLayer", "in_channels": [channels], "out_channels": [channels],
                         "use_bn": False, "act_func": None, "dropout_rate": 0, "ops_order": "weight_bn_act"}}
    config["blocks"].insert(4, zero)
    config["blocks"][4 + 1]["shortcut"] = None  # stride 1, same widths, but no shortcut in the source
    source = random_bn(ProxylessNASNets.build_from_config(copy.deepcopy(config)))
    (tmp_path / "z.json").write_text(json.dumps(config))
    torch.save(source.state_dict(), tmp_path / "z.pth")
    imported = import_network("mcunet", str(tmp_path / "z.json"), str(tmp_path / "z.pth"))
    assert imported.skipped == ["blocks.4"]
    assert imported.spec.blocks[5].residual is False and not imported.spec.has_residual(5)
    assert_same_logits(tinydet_net(imported), source, lambda x: (x - 0.5) / 0.5)


def zoo_config():
    from mcunet.tinynas.nn.networks import MobileNetV2

    return MobileNetV2(n_classes=10, width_mult=0.35).config


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(use_se=True), r"blocks\[2\]: SE \(squeeze-excitation\)"),
    (lambda c: c["blocks"][3]["mobile_inverted_conv"].update(act_func="h_swish"), r"blocks\[3\]: activation 'h-swish'"),
    (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(expand_ratio=2.5), r"blocks\[2\]: fractional expand ratio 2.5"),
    (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(mid_channels=40), r"blocks\[2\]: mid_channels 40 disagrees"),
    (lambda c: c["first_conv"].update(act_func="h_swish"), r"first_conv: activation 'h-swish'"),
])
def test_net_config_features_the_spec_cannot_represent_are_refused(tmp_path, edit, expected):
    pytest.importorskip("mcunet")
    config = zoo_config()
    edit(config)
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(TinydetError, match=expected) as info:
        import_network("mcunet", str(tmp_path / "c.json"))
    assert "\n" not in str(info.value)


def test_group_norm_and_weight_standardisation_are_refused():
    timm = pytest.importorskip("timm")
    from timm.layers import StdConv2d

    model = timm.create_model("mobilenetv2_035")
    model.blocks[1][0].bn2 = torch.nn.GroupNorm(4, model.blocks[1][0].bn2.num_features)
    with pytest.raises(TinydetError, match=r"blocks\.1\.0\.bn2: GroupNorm \(GroupNorm\) is not supported"):
        import_torch_module("timm", model, "gn")
    model = timm.create_model("mobilenetv2_035")
    old = model.blocks[2][1].conv_pw
    model.blocks[2][1].conv_pw = StdConv2d(old.in_channels, old.out_channels, 1, bias=False)
    with pytest.raises(TinydetError, match=r"blocks\.2\.1\.conv_pw: weight standardisation \(StdConv2d\)"):
        import_torch_module("timm", model, "ws")
    model = timm.create_model("mobilenetv2_035")
    model.blocks[3][0].bn1.act = torch.nn.Hardswish()
    with pytest.raises(TinydetError, match=r"blocks\.3\.0\.bn1\.act: activation h-swish is not supported"):
        import_torch_module("timm", model, "hs")


def test_se_and_other_activations_are_refused():
    timm = pytest.importorskip("timm")
    from timm.models._efficientnet_blocks import SqueezeExcite

    model = timm.create_model("mobilenetv2_035")
    model.blocks[1][0].se = SqueezeExcite(model.blocks[1][0].conv_dw.out_channels)
    with pytest.raises(TinydetError, match=r"blocks\.1\.0\.se: SE \(squeeze-excitation, SqueezeExcite\)"):
        import_torch_module("timm", model, "se")
    with pytest.raises(TinydetError, match=r"mnasnet_100: bn1.act: activation ReLU is not supported"):
        import_torch_module("timm", timm.create_model("mnasnet_100"), "mnasnet_100")
    with pytest.raises(TinydetError, match=r"timm resnet18: ResNet networks are not supported"):
        import_torch_module("timm", timm.create_model("resnet18"), "resnet18")


def test_cli_import_writes_a_spec_and_strict_weights(tmp_path, capsys):
    import torchvision
    from safetensors.torch import save_file

    source = random_bn(torchvision.models.mobilenet_v2(width_mult=0.5)).float()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    rc = main(["import", "torchvision", "mobilenet_v2", "--weights", str(tmp_path / "w.pth"),
               "--out", str(tmp_path / "tv"), "--json"])
    assert rc == 2  # a width-0.5 file does not fit torchvision's default (width 1.0) mobilenet_v2
    assert "do not fit the model" in capsys.readouterr().err
    source = random_bn(torchvision.models.mobilenet_v2()).float()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    rc = main(["import", "torchvision", "mobilenet_v2", "--weights", str(tmp_path / "w.pth"),
               "--out", str(tmp_path / "tv"), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tensors"] == len(source.state_dict()) and result["head_from"] == [13, 17]
    assert {"source": "features.0.0", "tinydet": "blocks.0.conv.conv"} in result["mapping"]
    spec = load_spec(tmp_path / "tv" / "spec.yaml")
    assert get_spec(str(tmp_path / "tv")) == spec  # the folder works wherever a preset name does
    net = build(spec)
    net.load_state_dict(torch.load(tmp_path / "tv" / "weights.pt"), strict=True)
    assert_same_logits(net.eval().double(), source.double(), lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD)
    timm = pytest.importorskip("timm")
    source = random_bn(timm.create_model("mobilenetv2_050")).float()
    save_file(source.state_dict(), str(tmp_path / "t.safetensors"))
    assert main(["import", "timm", "mobilenetv2_050", "--weights", str(tmp_path / "t.safetensors"),
                 "--out", str(tmp_path / "timm")]) == 0
    assert "wrote" in capsys.readouterr().out
    net = build(str(tmp_path / "timm"))
    net.load_state_dict(torch.load(tmp_path / "timm" / "weights.pt"), strict=True)
    assert_same_logits(net.eval().double(), source.double(), lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD)


def test_unreadable_weights_are_one_line_errors(tmp_path):
    (tmp_path / "g.pth").write_text("not a checkpoint")
    with pytest.raises(TinydetError, match=r"g.pth: cannot read weights \(UnpicklingError\); expected a state_dict"):
        import_network("torchvision", "mobilenet_v2", str(tmp_path / "g.pth"))
    with pytest.raises(TinydetError, match=r"nope.pth: weights file does not exist"):
        import_network("torchvision", "mobilenet_v2", str(tmp_path / "nope.pth"))


def test_missing_timm_names_the_pip_package(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(TinydetError, match=r"needs the 'timm' package: pip install timm"):
        import_network("timm", "mobilenetv2_100")


def test_offline_torchvision_weights_name_the_file_and_folder(monkeypatch, tmp_path):
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(TinydetError, match=r"cannot download https://download.pytorch.org/models/"
                                           r"mobilenet_v2-7ebf99e0.pth .*place that file at .*th/hub/checkpoints/"
                                           r"mobilenet_v2-7ebf99e0.pth"):
        import_network("torchvision", "mobilenet_v2", "IMAGENET1K_V2")
    with pytest.raises(TinydetError, match="neither a weights file nor a torchvision weights name"):
        import_network("torchvision", "mobilenet_v2", "IMAGENET9K")


def test_offline_timm_hub_weights_name_the_hub_file(monkeypatch):
    timm = pytest.importorskip("timm")
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("offline")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(TinydetError, match=r"timm mobilenetv2_100: cannot download the pretrained weights \(OSError\); "
                                           r"on an offline machine download the weights file \(model.safetensors\) "
                                           r"from https://huggingface.co/timm/mobilenetv2_100.ra_in1k"):
        import_network("timm", "mobilenetv2_100", "hub")
