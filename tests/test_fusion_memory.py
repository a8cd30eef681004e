"""The memory model of fused, row-streamed inverted residuals (tinydet.schedule.fusion): working sets
by hand, the streaming overlap against a row-by-row simulation, tiles (border and interior) and
stage 2, and the defaults (fusion off) unchanged."""
import pytest

from tinydet.arch import ArchSpec, BlockSpec, get_spec, lower
from tinydet.errors import TinydetError
from tinydet.geometry import Rect
from tinydet.schedule import FUSED_IR, SINK, MemoryRules, layer_working_sets, per_layer, plan_patches, stage1
from tinydet.schedule.fusion import first_live_row, fusable_blocks, overlap_offset

# odd sizes everywhere: 37x29 input, stride-2 blocks with and without expansion, k3 and k5,
# residual and plain blocks
SPEC = ArchSpec("fuse-tiny", (
    BlockSpec("conv", 8, kernel=3, stride=2),                 # 0: stem 19x15
    BlockSpec("mbconv", 8, kernel=3, stride=1, expand=1),     # 1: expand-1, residual (8 -> 8)
    BlockSpec("mbconv", 16, kernel=3, stride=2, expand=4),    # 2: stride 2, no shortcut -> 10x8
    BlockSpec("mbconv", 16, kernel=3, stride=1, expand=3),    # 3: stride 1, residual
    BlockSpec("mbconv", 24, kernel=5, stride=2, expand=2),    # 4: k5 stride 2 -> 5x4
    BlockSpec("mbconv", 24, kernel=3, stride=1, expand=6),    # 5: residual, stage 2
), absolute_channels=True)
G = lower(SPEC, (37, 29))
ALL = MemoryRules(fused_blocks=(1, 2, 3, 4, 5))


def ws(graph, name, rules):
    return layer_working_sets(graph, rules)[[op.name for op in graph.ops].index(name)]


def simulate_offset(dw, expanded, x_rect, x_row, y_rect, y_row):
    """The least offset of X behind Y found by running the fused loop row by row and checking
    every written output row against the input rows still live (independent of the formula)."""
    for d in range(0, x_rect.h * x_row + y_rect.h * y_row + 1):
        live = set(range(x_rect.y0, x_rect.y1))
        ok = True
        for y in range(y_rect.y0, y_rect.y1):
            top = y * dw.stride - dw.padding
            window = [r for r in range(top, top + dw.kernel) if x_rect.y0 <= r < x_rect.y1]
            if expanded:  # the rows of this window are expanded into the ring: their input rows die
                live -= {r for r in range(x_rect.y0, max(window) + 1)}
            lo, hi = (y - y_rect.y0) * y_row, (y - y_rect.y0 + 1) * y_row
            for r in live:
                xs = d + (r - x_rect.y0) * x_row
                if xs < hi and lo < xs + x_row:
                    ok = False
            if not expanded:  # rows below the next window are read no more
                live -= {r for r in live if r < (y + 1) * dw.stride - dw.padding}
        if ok:
            return d
    raise AssertionError("no offset works")


def test_fusable_blocks_and_modes():
    assert fusable_blocks(G) == [1, 2, 3, 4, 5]
    st = per_layer(G, ALL)
    assert {st.modes[i] for i, op in enumerate(G.ops) if op.block >= 1} == {FUSED_IR}
    s1 = stage1(G, 3, ALL)
    assert s1.modes[-1] == SINK and s1.modes[-2] == FUSED_IR  # the sink keeps its mode


def test_defaults_are_unfused_and_rules_round_trip():
    assert MemoryRules().fused_blocks == ()
    assert layer_working_sets(G) == layer_working_sets(G, MemoryRules(fused_blocks=()))
    r = MemoryRules(fused_blocks=(3, 1, 3))
    assert r.fused_blocks == (1, 3) and MemoryRules.from_dict(r.to_dict()) == r
    assert MemoryRules.from_dict({"inplace_dw": True, "fused_residual": True}) == MemoryRules()  # format 2


def test_per_layer_residual_block_by_hand():
    # block 3: X = 16x10x8 (the shortcut, overwritten in place row by row), ring 3 rows of the 48-channel
    # expansion, one depthwise pixel of 48 channels
    x = 16 * 10 * 8
    assert ws(G, "blocks.3.expand", ALL) == ws(G, "blocks.3.dw", ALL) == ws(G, "blocks.3.project", ALL) \
        == x + 3 * 8 * 48 + 48
    # unfused it held the whole expansion
    assert ws(G, "blocks.3.expand", MemoryRules()) == x + 48 * 10 * 8
    # without the fused-residual rule the output needs its own buffer
    assert ws(G, "blocks.3.dw", MemoryRules(fused_residual=False, fused_blocks=(3,))) == 2 * x + 3 * 8 * 48 + 48


def test_expand_one_block_by_hand():
    # block 1 (no expansion, residual): the depthwise reads X directly; no ring, one 8-channel pixel.
    # Not in place: output row y over X row y would destroy a row the window of row y + 1 still reads
    # (the C runtime ran that plan and was not bit exact), so X and Y stay apart
    x = 8 * 19 * 15
    assert ws(G, "blocks.1.dw", MemoryRules(fused_blocks=(1,))) == 2 * x + 8


@pytest.mark.parametrize("block", [2, 4])
def test_stride_two_overlap_is_the_simulated_minimum(block):
    st = per_layer(G, ALL)
    fb = next(f for f in st.fused if f.block == block)
    dw, proj, exp = G.ops[fb.dw], G.ops[fb.project], G.ops[fb.expand]
    cx, hx, wx = exp.in_shape
    cy, hy, wy = proj.out_shape
    xr, yr = Rect.full(hx, wx), Rect.full(hy, wy)
    d = overlap_offset(dw, True, xr, wx * cx, yr, wy * cy)
    assert d == simulate_offset(dw, True, xr, wx * cx, yr, wy * cy)
    ring = dw.kernel * wx * dw.in_shape[0]
    assert st.working_sets()[fb.dw] == max(d + cx * hx * wx, cy * hy * wy) + ring + dw.out_shape[0]


@pytest.mark.parametrize("kernel,stride,x_rows,y_rows", [(3, 1, 9, 9), (3, 2, 9, 5), (5, 2, 11, 6), (7, 2, 13, 7), (5, 1, 6, 6)])
@pytest.mark.parametrize("expanded", [True, False])
@pytest.mark.parametrize("x_row,y_row", [(24, 8), (8, 24), (16, 16)])
def test_overlap_formula_equals_the_simulation(kernel, stride, x_rows, y_rows, expanded, x_row, y_row):
    from tinydet.arch.graph import Op

    pad = kernel // 2
    dw = Op("dw", "dwconv", "dw", 0, ("x",), "dw", (4, x_rows, 3), (4, y_rows, 3), kernel, stride, pad, 4)
    for x_rect, y_rect in [(Rect(0, x_rows, 0, 3), Rect(0, y_rows, 0, 3)),
                           (Rect(1, x_rows, 0, 3), Rect(1, y_rows, 0, 3))]:  # a region inside the map
        got = overlap_offset(dw, expanded, x_rect, x_row, y_rect, y_row)
        assert got == simulate_offset(dw, expanded, x_rect, x_row, y_rect, y_row)


def test_first_live_row_clips_to_the_region():
    dw = G.ops[per_layer(G, ALL).fused[1].dw]  # block 2: k3 s2 p1
    r = Rect(0, 19, 0, 15)
    assert [first_live_row(dw, y, True, r) for y in (0, 1, 9)] == [2, 4, 19]
    assert [first_live_row(dw, y, False, r) for y in (0, 1, 9)] == [0, 1, 17]


def test_network_input_and_living_tensors_are_never_overwritten():
    # block 0 of a spec that starts with an inverted residual reads the network input: no overlap
    spec = ArchSpec("ir-first", (BlockSpec("mbconv", 8, kernel=3, stride=2, expand=2),), in_channels=4,
                    absolute_channels=True)
    g = lower(spec, 9)
    x, y = 4 * 9 * 9, 8 * 5 * 5
    assert layer_working_sets(g, MemoryRules(fused_blocks=(0,)))[0] == x + y + 3 * 9 * 8 + 8


@pytest.mark.parametrize("grid", [(2, 2), (3, 2)])
def test_tiles_border_and_interior_by_hand(grid):
    # fused blocks inside the tiles of stage 1 (split 4: blocks 0..3); every tile's fused working set
    # is the model's formula on that tile's own regions, border tiles included
    plan = plan_patches(G, grid, 4, ALL)
    s1 = stage1(G, 4, ALL)
    fb3 = next(f for f in s1.fused if f.block == 3)
    for tile in plan.tiles:
        rects = s1.tile_rects(tile)
        x3 = rects["blocks.2.project"]
        e3 = rects["blocks.3.expand"]
        # block 3 is the sink here (its output goes to the stage-1 buffer): input + ring + pixel
        assert tile.working_sets[fb3.dw] == 16 * x3.area + min(3, e3.h) * e3.w * 48 + 48
    assert plan.peak_sram_stage1 == plan.stage1_buffer_bytes + max(max(t.working_sets) for t in plan.tiles)
    # stage 2 runs block 4 and 5 fused on whole maps
    layer = per_layer(G, ALL).working_sets()
    assert plan.peak_sram_stage2 == max(layer[G.block_end(3):])


def test_fusion_never_raises_a_tile_above_the_unfused_expansion_by_more_than_the_ring():
    # the fused working set of a stride-1 residual block is below the unfused one whenever the
    # region is taller than the kernel
    plan_u = plan_patches(G, 2, 4, MemoryRules())
    plan_f = plan_patches(G, 2, 4, ALL)
    i = G.block_end(2)  # blocks.3.expand
    for tu, tf in zip(plan_u.tiles, plan_f.tiles):
        assert tf.working_sets[i] < tu.working_sets[i]


def test_bad_fused_block_is_one_line():
    with pytest.raises(TinydetError, match=r"block 0 .* not a fusable inverted residual"):
        per_layer(G, MemoryRules(fused_blocks=(0,)))
    with pytest.raises(TinydetError, match="not a fusable"):
        per_layer(G, MemoryRules(fused_blocks=(42,)))


def test_mbv2_fused_paper_grid_by_hand():
    # MobileNetV2 @ 224, 4x4 patches, split 5, every block fused: stage 2 is bounded by the final 1x1
    # conv (7x7x320 -> 7x7x1280), stage 1 by the stem of an interior tile (75x75 input pixels, 37x37
    # stem output) beside the 28x28x32 stage-1 buffer
    g = lower(get_spec("mbv2-w1.0"), 224)
    plan = plan_patches(g, 4, 5, MemoryRules(fused_blocks=tuple(fusable_blocks(g))))
    assert plan.peak_sram_stage2 == 7 * 7 * (320 + 1280)
    t = plan.tiles[5]  # row 1, col 1
    stem = t.regions["blocks.0.conv"]
    assert (t.in_rect.h, t.in_rect.w, stem.out_rect.h, stem.out_rect.w) == (75, 75, 37, 37)
    assert plan.peak_sram_stage1 == 32 * 28 * 28 + 3 * 75 * 75 + 32 * 37 * 37 == 85_771
    assert plan.peak == 85_771 <= 88_064 and plan.mac_overhead < 0.10  # MACs: fusion costs none
    assert plan.macs_patch == plan_patches(g, 4, 5).macs_patch
