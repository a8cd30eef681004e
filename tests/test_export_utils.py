"""Shared helpers of the export tests (tiny random networks), and tests of the tile pad arithmetic."""
import pytest
import torch

from tinydet.arch import build
from tinydet.arch.spec import ArchSpec, BlockSpec, HeadSpec
from tinydet.errors import TinydetError

HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=16)


def tiny_spec(width: float = 1.0, num_classes: int = 0) -> ArchSpec:
    """6 blocks, residuals in blocks 1, 3 and 5 (block 1 without expansion), a 5x5 kernel, two head taps."""
    blocks = (BlockSpec("conv", 8, 3, 2), BlockSpec("mbconv", 8, 3, 1, 1), BlockSpec("mbconv", 16, 3, 2, 4),
              BlockSpec("mbconv", 16, 3, 1, 4), BlockSpec("mbconv", 24, 5, 2, 4), BlockSpec("mbconv", 24, 3, 1, 4))
    return ArchSpec("tiny", blocks, width_mult=width, head_from=(3, 5), num_classes=num_classes)


def random_network(spec: ArchSpec, head: HeadSpec | None = HEAD, seed: int = 0):
    """A built network with randomised BN statistics and affine parameters (so folding matters), in eval mode."""
    torch.manual_seed(seed)
    return randomise_batchnorm(build(spec, head=head), seed)


def randomise_batchnorm(model, seed: int = 0):
    """Random BN statistics and affine parameters (and conv biases) in place, in eval mode: the
    state a trained or imported network is in, where folding and weight mapping matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _plan(res=(40, 56), grid=(3, 2), split=3, spec=None):
    from tinydet.schedule import plan_patches

    graph = random_network(spec or tiny_spec(), head=HEAD).graph(res)
    return graph, plan_patches(graph, grid, split)


def test_tile_pads_equal_the_planners_border_pads():
    """Two computations of the same padding (plan regions vs the stage-1 Pad amounts) must agree,
    and no interior tile gets zero padding."""
    from tinydet.export.onnx_writer import tile_inputs
    from tinydet.export.tiles import tile_pads

    graph, plan = _plan()
    for tile in plan.tiles:
        pads = tile_pads(graph, 3, tile.in_rect, {k: r.out_rect for k, r in tile.regions.items()})
        for name, op, kind in tile_inputs(graph, 3):
            if kind == "pads":
                assert pads[name] == tile.regions[op].pad, (tile.row, tile.col, op)
            else:  # shortcut crops only drop rows/columns
                p = pads[name]
                assert max(p.top, p.left, p.bottom, p.right) <= 0
        if 0 < tile.row < plan.grid[0] - 1:
            assert all(pads[f"{op}/pads"].top == pads[f"{op}/pads"].bottom == 0
                       for _, op, kind in tile_inputs(graph, 3) if kind == "pads")


def test_tile_pads_reject_a_plan_that_misses_data():
    from tinydet.export.tiles import tile_pads
    from tinydet.schedule import Rect

    graph, plan = _plan()
    tile = next(t for t in plan.tiles if t.row == 1)  # interior rows: no border padding allowed
    regions = {k: r.out_rect for k, r in tile.regions.items()}
    r = regions["blocks.1.expand" if "blocks.1.expand" in regions else "blocks.0.conv"]
    regions["blocks.0.conv"] = Rect(r.y0 + 1, r.y1, r.x0, r.x1)  # one row short at the top
    with pytest.raises(TinydetError, match=r"tile \(1, .*blocks\.1\.dw.*misses data on the top side"):
        tile_pads(graph, 3, tile.in_rect, regions, where=f"tile ({tile.row}, {tile.col})")
    regions = {k: r.out_rect for k, r in tile.regions.items()}
    del regions["blocks.2.dw"]
    with pytest.raises(TinydetError, match="no region for stage-1 op 'blocks.2.dw'"):
        tile_pads(graph, 3, tile.in_rect, regions)
    regions = {k: r.out_rect for k, r in tile.regions.items()}
    e = regions["blocks.2.expand"]
    regions["blocks.2.expand"] = Rect(e.y0, e.y1 - 1, e.x0, e.x1)  # 1x1 conv output smaller than its input
    with pytest.raises(TinydetError, match="'blocks.2.expand' .*expected the plan to give a 1x1 conv exactly its input"):
        tile_pads(graph, 3, tile.in_rect, regions)


def test_split_errors_name_the_problem():
    from tinydet.export.onnx_writer import check_split

    graph = random_network(tiny_spec(), head=HEAD).graph(32)
    with pytest.raises(TinydetError, match="split: expected a block count"):
        check_split(graph, 0)
    with pytest.raises(TinydetError, match="heads.0"):
        check_split(graph, 5)  # head 0 reads block 3, which would be inside stage 1
    from dataclasses import replace

    backbone = random_network(replace(tiny_spec(), head_from=()), head=None).graph(32)
    check_split(backbone, 5)
    with pytest.raises(TinydetError, match="leaves no op for stage 2"):
        check_split(backbone, 6)
