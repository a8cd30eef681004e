"""The patch executor gives the normal forward pass's outputs for every preset, grid, resolution
(unequal tiles, non-square), batch size and detector heads; padding between tiles would not."""
from dataclasses import replace

import pytest
import torch

from tinydet.arch import HeadSpec, get_spec, list_presets
from tinydet.arch.modules import build
from tinydet.errors import TinydetError
from tinydet.geometry import Pads
from tinydet.schedule import OpRegion, PatchPlan, plan_patches, run_patched

TOL = 1e-5


def _randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics, so a border that used the wrong pixels shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def _model(name: str, head: HeadSpec | None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = replace(get_spec(name), num_classes=0)  # backbone features: outputs of usable scale
    model = build(spec, head=head).eval()
    _randomize_bn(model, seed)
    return model


def _stride8_split(graph) -> int:
    """Split after the first block at total stride 8 (the MCUNetV2 style split)."""
    for k in range(1, graph.num_blocks + 1):
        if graph.ops[graph.block_end(k - 1) - 1].out_shape[1] * 8 <= graph.resolution[0]:
            return k
    return 1


def _max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b))


CASES = [  # (resolution, grids)
    ((96, 128), [2, (2, 3), 4]),   # non-square input, non-square grid
    (112, [3, (3, 2)]),            # 14x14 split map over 3 rows: tiles 5, 4, 5
    (100, [2, 3]),                 # odd feature maps (25, 13, 7): bottom/right zero padding
]


def _cases(spec):
    """CASES at the resolutions ``spec`` takes: a neck's adds need sides divisible by its total stride."""
    div = spec.total_stride if spec.neck is not None else 1
    return [(r, g) for r, g in CASES
            if all(side % div == 0 for side in ((r, r) if isinstance(r, int) else r))]


@pytest.mark.parametrize("name", list_presets())
def test_patched_equals_forward_backbone(name):
    model = _model(name, None)
    torch.manual_seed(1)
    for resolution, grids in _cases(model.spec):
        graph = model.graph(resolution)
        split = _stride8_split(graph)
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        x = torch.rand(2, 3, h, w)
        ref = model(x)
        for grid in grids:
            plan = plan_patches(graph, grid, split)
            out = run_patched(model, plan, x)
            assert _max_diff(out, ref) <= TOL, (name, resolution, grid, split)
            assert [o.shape for o in out] == [r.shape for r in ref]


@pytest.mark.parametrize("name", ["mbv2-w0.35", "mcunetv2-m4", "mbv2-w1.0-rd"])
def test_patched_equals_forward_detector(name):
    head = HeadSpec(num_classes=2, num_anchors=3)
    model = _model(name, head, seed=3)
    graph = model.graph((128, 96))
    x = torch.rand(3, 3, 128, 96)
    ref = model(x)
    assert len(ref) == 2 and ref[0].shape[1] == 21
    splits = sorted({_stride8_split(graph), min(get_spec(name).head_from) + 1})
    for split in splits:  # incl. the deepest split: the first head's feature map is the split map
        for grid in (2, (3, 2), 4):
            plan = plan_patches(graph, grid, split)
            assert _max_diff(run_patched(model, plan, x), ref) <= TOL, (name, split, grid)


def test_classifier_graph_and_plan_from_json():
    torch.manual_seed(0)
    model = build("mbv2-w0.35").eval()
    _randomize_bn(model, 5)
    graph = model.graph(96)
    assert graph.mode == "classifier"
    plan = PatchPlan.from_dict(plan_patches(graph, 4, 5).to_dict())
    x = torch.rand(2, 3, 96, 96)
    ref = model(x)
    out = run_patched(model, plan, x)
    assert out[0].shape == (2, 1000)
    # logits are small (fc init std 0.01): compare relative to their scale as well
    assert _max_diff(out, ref) <= TOL * max(1.0, ref[0].abs().max().item())
    assert _max_diff(out, ref) < 1e-3 * ref[0].abs().max().item()


def _pad_between_tiles(graph, plan: PatchPlan) -> PatchPlan:
    """The naive schedule: every tile zero-pads each conv on every side instead of reading its
    neighbours' halo (same buffer sizes, different pixels)."""
    tiles = []
    for t in plan.tiles:
        regions = {}
        for name, reg in t.regions.items():
            p = graph.op(name).padding
            pad, rect = reg.pad, reg.in_rect
            top, l, b, r = pad.top, pad.left, pad.bottom, pad.right
            if p and top == 0:
                rect, top = replace(rect, y0=rect.y0 + p), p
            if p and b == 0:
                rect, b = replace(rect, y1=rect.y1 - p), p
            if p and l == 0:
                rect, l = replace(rect, x0=rect.x0 + p), p
            if p and r == 0:
                rect, r = replace(rect, x1=rect.x1 - p), p
            regions[name] = OpRegion(rect, Pads(top, l, b, r), reg.out_rect)
        tiles.append(replace(t, regions=regions))
    return replace(plan, tiles=tiles)


def test_borders_are_exact_padding_between_tiles_differs():
    model = _model("mbv2-w0.35", None, seed=7)
    graph = model.graph(96)
    x = torch.rand(1, 3, 96, 96)
    ref = model(x)
    plan = plan_patches(graph, 3, 5)
    assert _max_diff(run_patched(model, plan, x), ref) <= TOL
    naive = _pad_between_tiles(graph, plan)
    assert naive.tiles[4].regions["blocks.0.conv"] != plan.tiles[4].regions["blocks.0.conv"]
    assert _max_diff(run_patched(model, naive, x), ref) > 100 * TOL
    # the plan really pads only at the image border: the centre tile reads real pixels everywhere
    centre = plan.tiles[4]
    assert all(reg.pad.is_zero for reg in centre.regions.values())
    assert plan.tiles[0].regions["blocks.0.conv"].pad == Pads(top=1, left=1)


def test_wrong_input_size_or_graph_is_an_error():
    model = _model("mbv2-w0.35", None)
    plan = plan_patches(model.graph(96), 2, 5)
    with pytest.raises(TinydetError, match="expected 96x96"):
        run_patched(model, plan, torch.rand(1, 3, 64, 64))
    other = _model("mbv2-w1.0-rd", None)
    with pytest.raises(TinydetError, match="stage-1 ops do not match"):
        run_patched(other, plan, torch.rand(1, 3, 96, 96))


def test_user_spec_whose_split_map_is_an_output():
    from tinydet.arch.spec import spec_from_dict

    spec = spec_from_dict({"name": "odd", "head_from": [1, 2], "blocks": [
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "mbconv", "out": 8, "expand": 1},
        {"type": "mbconv", "out": 16, "stride": 2, "expand": 4},
        {"type": "mbconv", "out": 16, "expand": 4, "kernel": 5}]})
    torch.manual_seed(0)
    model = build(spec).eval()
    _randomize_bn(model, 2)
    x = torch.rand(2, 3, 45, 38)  # odd sizes all the way down
    ref = model(x)
    graph = model.graph((45, 38))
    for grid, split in [((3, 2), 2), (4, 1), (2, 2)]:
        out = run_patched(model, plan_patches(graph, grid, split), x)
        assert _max_diff(out, ref) <= TOL, (grid, split)
