"""The MCUNet-zoo presets against the published block lists and figures.

Both are mirrored here from the reference notes (mcunet README's model list; block lists from the
zoo's net_config files and, for VWW, the sources named in tinydet/arch/presets.py), in their own
notation, so a wrong kernel, expansion, width, stride, shortcut or eps in a preset fails.
"""
import pytest

from tinydet.arch import HeadSpec, build, get_spec, lower
from tinydet.schedule.profile import op_flash_bytes, op_params

# net_id: (MACs in M, params in M, TinyEngine SRAM kB, Flash kB, resolution), mcunet README
PUBLISHED = {
    "mcunet-mbv2-w0.35": (23.5, 0.75, 308, 862, 144),
    "mcunet-proxyless-w0.3": (38.3, 0.75, 292, 892, 176),
    "mcunet-in0": (6.4, 0.75, 266, 889, 48),
    "mcunet-in1": (12.8, 0.64, 307, 992, 96),
    "mcunet-in2": (67.3, 0.73, 242, 878, 160),
    "mcunet-in3": (81.8, 0.74, 293, 897, 176),
    "mcunet-in4": (125.9, 1.73, 456, 1876, 160),
    "mcunet-vww0": (6.0, 0.37, 146, 617, 64),
    "mcunet-vww1": (11.6, 0.43, 162, 689, 80),
    "mcunet-vww2": (55.8, 0.64, 311, 897, 144),
}
BN_EPS = {"mcunet-mbv2-w0.35": 1e-3, "mcunet-proxyless-w0.3": 1e-3}

BLOCK_LISTS = {
    "mcunet-in0": "stem 24; k3 e1 16 s1; k5 e4 16 s2; k3 e3 16 s1 r; k3 e4 16 s1 r; k7 e5 24 s2; k5 e4 24 s1 r; k5 e5 24 s1 r; k7 e5 48 s2; k5 e4 48 s1 r; k3 e5 56 s1; k5 e4 56 s1 r; k3 e5 56 s1 r; k3 e6 112 s2; k5 e4 112 s1 r; k3 e6 192 s1; mix none; fc 192->1000",
    "mcunet-in1": "stem 16; k3 e1 8 s1; k3 e4 16 s2; k3 e3 16 s1 r; k7 e3 24 s2; k3 e5 24 s1 r; k3 e5 40 s2; k7 e4 40 s1 r; k5 e4 48 s1; k3 e3 48 s1 r; k3 e4 48 s1 r; k7 e5 96 s2; k5 e4 96 s1 r; k5 e4 96 s1 r; k3 e6 160 s1; mix none; fc 160->1000",
    "mcunet-in2": "stem 16; k3 e1 8 s1; k5 e3 16 s2; k7 e6 16 s1 r; k3 e5 16 s1 r; k5 e5 16 s1 r; k3 e5 24 s2; k7 e6 24 s1 r; k5 e6 24 s1 r; k7 e4 40 s2; k5 e5 40 s1 r; k3 e5 48 s1; k5 e5 48 s1 r; k3 e4 48 s1 r; k5 e6 96 s2; k5 e4 96 s1 r; k5 e3 96 s1 r; k3 e4 96 s1 r; k5 e5 160 s1; mix none; fc 160->1000",
    "mcunet-in3": "stem 16; k3 e1 8 s1; k7 e3 16 s2; k3 e5 16 s1 r; k7 e5 16 s1 r; k5 e4 16 s1 r; k5 e5 24 s2; k5 e5 24 s1 r; k5 e5 24 s1 r; k3 e5 40 s2; k7 e6 40 s1 r; k5 e4 40 s1 r; k5 e5 48 s1; k7 e5 48 s1 r; k3 e5 48 s1 r; k3 e6 96 s2; k7 e5 96 s1 r; k3 e4 96 s1 r; k7 e5 160 s1; mix none; fc 160->1000",
    "mcunet-in4": "stem 32; k3 e1 16 s1; k7 e3 24 s2; k3 e5 24 s1 r; k5 e4 24 s1 r; k7 e5 40 s2; k3 e4 40 s1 r; k7 e4 40 s1 r; k7 e3 80 s2; k3 e3 80 s1 r; k7 e3 80 s1 r; k3 e4 96 s1; k5 e3 96 s1 r; k5 e3 96 s1 r; k7 e4 192 s2; k7 e3 192 s1 r; k5 e3 192 s1 r; k5 e4 320 s1; mix none; fc 320->1000",
    "mcunet-mbv2-w0.35": "stem 16; k3 e1 8 s1; k3 e6 8 s2; k3 e6 8 s1 r; k3 e6 16 s2; k3 e6 16 s1 r; k3 e6 16 s1 r; k3 e6 24 s2; k3 e6 24 s1 r; k3 e6 24 s1 r; k3 e6 24 s1 r; k3 e6 32 s1; k3 e6 32 s1 r; k3 e6 32 s1 r; k3 e6 56 s2; k3 e6 56 s1 r; k3 e6 56 s1 r; k3 e6 112 s1; mix 1x1 448; fc 448->1000",
    "mcunet-proxyless-w0.3": "stem 16; k3 e1 8 s1; k5 e3 16 s2; k3 e3 16 s1 r; skip; skip; k7 e3 16 s2; k3 e3 16 s1 r; k5 e3 16 s1 r; k5 e3 16 s1 r; k7 e6 24 s2; k5 e3 24 s1 r; k5 e3 24 s1 r; k5 e3 24 s1 r; k5 e6 32 s1; k5 e3 32 s1 r; k5 e3 32 s1 r; k5 e3 32 s1 r; k7 e6 64 s2; k7 e6 64 s1 r; k7 e3 64 s1 r; k7 e3 64 s1 r; k7 e6 96 s1; mix 1x1 384; fc 384->1000",
    "mcunet-vww0": "stem 16; k3 e1 8 s1; k5 e6 16 s2; k3 e4 16 s1; k3 e5 24 s2; k3 e4 24 s1; k3 e4 24 s1; k3 e5 40 s2; k3 e4 40 s1; k7 e3 40 s1; k3 e3 48 s1; k3 e4 48 s1; k7 e5 96 s2; k5 e5 96 s1; k7 e4 160 s1; GAP; fc 160->2",
    "mcunet-vww1": "stem 16; k3 e1 8 s1; k3 e6 16 s2; k3 e3 16 s1; k3 e3 16 s1; k7 e3 24 s2; k3 e6 24 s1; k5 e5 24 s1; k7 e6 40 s2; k7 e6 40 s1; k3 e6 48 s1; k3 e4 48 s1; k5 e5 96 s2; k3 e5 96 s1; k3 e4 96 s1; k7 e3 160 s1; GAP; fc 160->2",
    "mcunet-vww2": "stem 16; k3 e1 8 s1; k3 e3 16 s2; k3 e5 16 s1; k5 e6 16 s1; k3 e3 16 s1; k7 e5 24 s2; k5 e4 24 s1; k3 e4 24 s1; k7 e6 24 s1; k3 e6 40 s2; k7 e6 40 s1; k5 e4 40 s1; k3 e5 40 s1; k5 e5 48 s1; k5 e3 48 s1; k3 e4 48 s1; k5 e3 48 s1; k3 e4 96 s2; k5 e5 96 s1; k5 e4 96 s1; k3 e4 96 s1; k3 e5 160 s1; GAP; fc 160->2",
}


def parse(text):
    """-> stem, [(kernel, expand, out, stride, shortcut or None when unmarked)], mix, classes."""
    items = [t.strip() for t in text.split(";")]
    stem = int(items[0].split()[1])
    marked = any(t.endswith(" r") for t in items)
    rows, mix = [], None
    for item in items[1:]:
        if item == "skip" or item == "GAP" or item == "mix none":
            continue
        if item.startswith("mix 1x1"):
            mix = int(item.split()[-1])
        elif item.startswith("fc"):
            classes = int(item.split("->")[1])
        else:
            k, e, out, s = item.split()[:4]
            rows.append((int(k[1:]), int(e[1:]), int(out), int(s[1:]), item.endswith(" r") if marked else None))
    return stem, rows, mix, classes


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_blocks_equal_the_published_list(name):
    spec = get_spec(name)
    stem, rows, mix, classes = parse(BLOCK_LISTS[name])
    assert (spec.blocks[0].type, spec.channels(0), spec.blocks[0].kernel, spec.blocks[0].stride) == ("conv", stem, 3, 2)
    body = spec.blocks[1:-1] if mix else spec.blocks[1:]
    assert len(body) == len(rows)
    for i, (block, (k, e, out, s, shortcut)) in enumerate(zip(body, rows), start=1):
        assert (block.type, block.kernel, block.expand, spec.channels(i), block.stride) == ("mbconv", k, e, out, s), i
        if shortcut is not None:
            assert spec.has_residual(i) == shortcut, i
    if mix:
        assert (spec.blocks[-1].type, spec.blocks[-1].kernel, spec.channels(len(spec.blocks) - 1)) == ("conv", 1, mix)
    assert spec.num_classes == classes and spec.absolute_channels
    assert spec.bn_eps == BN_EPS.get(name, 1e-5)
    assert spec.input_mean == spec.input_std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_macs_and_params_equal_the_published_figures(name):
    """At the published resolution, classifier included; the published figures do not count the
    input normalisation (preprocessing there), so its op is left out of the comparison."""
    macs_m, params_m, _, _, resolution = PUBLISHED[name]
    graph = lower(get_spec(name), resolution)
    ops = [op for op in graph.ops if op.role != "norm"]
    assert round(sum(op.macs for op in ops) / 1e6, 1) == macs_m
    assert round(sum(op_params(op) for op in ops) / 1e6, 2) == params_m
    model = build(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_m


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_is_a_detector_backbone_with_stride_16_and_32_taps(name):
    """(test_arch builds every preset as a detector; here: which blocks the head taps.)"""
    spec = get_spec(name)
    graph = lower(spec, (64, 96), head=HeadSpec(num_classes=3, num_anchors=2, channels=16))
    assert [graph.tensors[t].shape[1:] for t in graph.outputs] == [(4, 6), (2, 3)]
    assert spec.head_from[-1] == len(spec.blocks) - (2 if spec.blocks[-1].kernel == 1 else 1)
    assert f"blocks {list(spec.head_from)}" in spec.description


def test_profile_cli_reports_the_published_figures(capsys):
    import json

    from tinydet.cli import main

    assert main(["profile", "--arch", "mcunet-in2", "--resolution", "160", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    norm = sum(layer["macs"] for layer in data["layers"] if layer["name"] == "blocks.0.norm")
    assert norm == 3 * 160 * 160 and round((data["macs"] - norm) / 1e6, 1) == 67.3
    assert round(data["params"] / 1e6, 2) == 0.73


# config: (Flash budget, the MCUNet zoo net_config its model.pretrained names)
ZOO_CONFIGS = {"voc_mcunet_in4_h7": (2 << 20, "mcunet-512kb-2mb_imagenet"),
               "voc_mcunet_in2_m4": (1 << 20, "mcunet-256kb-1mb_imagenet"),
               "wider_mcunet_in1_face": (1 << 20, "mcunet-5fps_imagenet")}


@pytest.mark.parametrize("name", sorted(ZOO_CONFIGS))
def test_zoo_configs_fit_their_budgets_with_their_patch_plan(name):
    from pathlib import Path

    from tinydet.arch.presets import MCUNET_ZOO
    from tinydet.models.detector import detector_from_config
    from tinydet.schedule import plan_patches
    from tinydet.config import load_config

    flash_budget, net_config = ZOO_CONFIGS[name]
    cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    model = detector_from_config(cfg, 1 if cfg.data.format == "wider" else 20)
    graph = lower(model.spec, cfg.model.resolution, head=model.head_spec)
    plan = plan_patches(graph, (cfg.export.grid, cfg.export.grid), cfg.export.split)
    assert plan.peak <= cfg.export.sram_budget < plan.peak_sram_per_layer
    assert sum(op_flash_bytes(op) for op in graph.ops) <= flash_budget
    assert cfg.model.pretrained == f"mcunet:weights/{net_config}.json"
    assert MCUNET_ZOO[cfg.model.arch]["source"] == net_config
