"""Architecture specs: torchvision equivalence, round trips, user spec files, errors."""
import json

import pytest
import torch
import torchvision

from tinydet.arch import HeadSpec, build, get_spec, list_presets, load_spec, lower, save_spec
from tinydet.arch.spec import make_divisible, spec_from_dict
from tinydet.errors import TinydetError


def torchvision_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() // out.shape[0] * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name,width", [("mbv2-w1.0", 1.0), ("mbv2-w0.35", 0.35)])
def test_mobilenet_v2_presets_equal_torchvision(name, width):
    spec = get_spec(name)
    tv = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
    ours = build(spec)
    tv_convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups)
                for m in tv.modules() if isinstance(m, torch.nn.Conv2d)]
    our_convs = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups)
                 for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    assert our_convs == tv_convs
    assert [p.shape for p in ours.parameters()] == [p.shape for p in tv.parameters()]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())
    x = torch.zeros(1, 3, 224, 224)
    assert lower(spec, 224).macs == torchvision_macs(tv, x)
    # same weights -> same logits: the builder is a drop-in for torchvision's model
    ours.load_state_dict(dict(zip(ours.state_dict().keys(), tv.state_dict().values())))
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x)[0], tv.eval()(x), rtol=1e-4, atol=1e-5)


def test_mbv2_known_figures():
    assert lower(get_spec("mbv2-w1.0"), 224).macs == 300_774_272
    assert make_divisible(32 * 0.35) == 16 and make_divisible(1280 * 1.0) == 1280


@pytest.mark.parametrize("name", list_presets())
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_presets_round_trip_and_load_by_path(name, suffix, tmp_path):
    spec = get_spec(name)
    path = tmp_path / f"{name}{suffix}"
    save_spec(spec, path)
    assert load_spec(path) == spec
    assert get_spec(str(path)) == spec


@pytest.mark.parametrize("name", list_presets())
def test_presets_build_detector_and_shapes_match_graph(name):
    spec = get_spec(name)
    head = HeadSpec(num_classes=3, num_anchors=2, channels=16)
    model = build(spec, head=head).eval()
    graph = lower(spec, (64, 96), head=head)
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [graph.tensors[t].shape for t in graph.outputs]
    assert all(o.shape[1] == head.out_channels for o in outs)


def test_user_spec_with_repeat(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nwidth_mult: 0.5\nhead_from: [2, 3]\nblocks:\n"
        "  - {type: conv, out: 16, stride: 2}\n"
        "  - {type: mbconv, out: 24, expand: 4, stride: 2, repeat: 2, kernel: 5}\n"
        "  - {type: mbconv, out: 32, expand: 6, stride: 2}\n")
    spec = get_spec(str(path))
    assert len(spec.blocks) == 4 and spec.blocks[2].stride == 1 and spec.blocks[2].kernel == 5
    assert spec.channels(1) == 16 and spec.has_residual(2) and not spec.has_residual(1)
    out = build(spec, head=HeadSpec(1)).eval()(torch.rand(1, 3, 64, 64))
    assert [o.shape[-1] for o in out] == [16, 8]


@pytest.mark.parametrize("text,expected", [
    ("name: x\nblocks:\n  - {type: conv, out: 8, strde: 2}\n", "unknown key 'strde' (did you mean 'stride'?)"),
    ("name: x\nblocks:\n  - {type: conv, out: 8, stride: 3}\n", "blocks[0].stride: expected 1 or 2"),
    ("name: x\nblocks:\n  - {type: conv, out: 8, kernel: 4}\n", "blocks[0].kernel: expected an odd kernel size"),
    ("name: x\nblocks:\n  - {type: mbcnv, out: 8}\n", "blocks[0].type: expected one of conv, mbconv"),
    ("name: x\nblocks:\n  - {type: conv, out: eight}\n", "blocks[0].out: expected a positive integer"),
    ("name: x\nblocks: [\n", "malformed YAML"),
    ("name: x\nblocks: []\n", "'blocks' must be a non-empty list"),
    ("name: x\nhead_from: [5]\nblocks:\n  - {type: conv, out: 8}\n", "head_from: block index 5 out of range"),
    ("name: x\nblocks:\n  - {type: mbconv, out: 8}\n", "the first block must be a 'conv'"),
])
def test_malformed_spec_files_give_one_line_errors(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TinydetError) as err:
        load_spec(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_unknown_preset_suggests_close_name():
    with pytest.raises(TinydetError, match="did you mean 'mbv2-w0.35'"):
        get_spec("mbv2-w035")
    with pytest.raises(TinydetError, match="does not exist"):
        get_spec("nope/missing.yaml")


def test_resolution_errors():
    spec = get_spec("mbv2-w0.35")
    with pytest.raises(TinydetError, match="too small .* at least 32"):
        lower(spec, 16)
    with pytest.raises(TinydetError, match="expected N or HxW"):
        lower(spec, "big")
    assert lower(spec, "96x128").resolution == (96, 128)


def test_spec_from_dict_json_round_trip():
    spec = get_spec("mcunetv2-m4")
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_named_feature_taps():
    """Every preset names its maps by total stride (the deepest block at each); head_from takes the
    names; an unknown name is a one-line error with the closest name."""
    from tinydet.arch.spec import feature_taps

    spec = get_spec("mbv2-w1.0")
    # stride 32 ends with torchvision's last 1x1 conv (block 18); the preset's detector taps the
    # inverted residual before it (block 17, 320 channels) to keep the head small
    assert spec.taps == {"stride2": 1, "stride4": 3, "stride8": 6, "stride16": 13, "stride32": 18}
    assert spec.head_from == (spec.taps["stride16"], 17)
    for name in ("mcunet-in2", "mcunet-vww1", "mcunetv2-m4"):
        zoo = get_spec(name)
        # the preset's detector taps are named maps (stride 16, and the deepest block)
        assert zoo.head_from[0] == zoo.taps["stride16"]
    data = get_spec("mbv2-w0.35").to_dict()
    data["head_from"] = ["stride8", "stride16"]
    named = spec_from_dict(data)
    assert named.head_from == (6, 13)
    assert spec_from_dict(named.to_dict()) == named  # written back as indices, same spec
    data["head_from"] = ["stride61"]
    with pytest.raises(TinydetError, match=r"head_from: unknown tap 'stride61'.*stride16"):
        spec_from_dict(data, "my.yaml")
    assert feature_taps(get_spec("mbv2-w1.0").blocks[:4]) == {"stride2": 1, "stride4": 3}


def test_profile_reports_taps(capsys):
    from tinydet.cli import main

    assert main(["profile", "--arch", "mcunet-in1", "--resolution", "96", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["taps"] == get_spec("mcunet-in1").taps and out["head_from"] == list(get_spec("mcunet-in1").head_from)
