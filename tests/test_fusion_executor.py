"""The patch executor runs fused inverted residuals row by row through a ring of k expanded rows and
equals the normal forward pass: both strides, with and without shortcut, the expand-1 case, odd
heights, border and interior tiles, stage 2, batch > 1; a ring one row too short does not."""
from dataclasses import replace

import pytest
import torch

from tinydet.arch import HeadSpec, get_spec
from tinydet.arch.modules import build
from tinydet.schedule import MemoryRules, per_layer_plan, plan_fused, plan_patches, run_patched
from tinydet.schedule.fusion import fusable_blocks

from test_fusion_memory import ALL, SPEC
from test_patch_executor import _randomize_bn

TOL = 1e-5


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = build(SPEC).eval()
    _randomize_bn(model, seed)
    return model


def _close(a, b):
    return all(torch.allclose(u, v, atol=TOL, rtol=TOL) for u, v in zip(a, b))


@pytest.mark.parametrize("plan_of", [
    lambda g: per_layer_plan(g, ALL),                      # every block fused on whole maps
    lambda g: plan_patches(g, (2, 2), 3, ALL),             # fused blocks in tiles and in stage 2
    lambda g: plan_patches(g, (3, 2), 4, ALL),             # unequal tiles, k5 stride-2 block in stage 2
    lambda g: plan_patches(g, (2, 3), 6, ALL),             # everything in tiles, the sink fused
    lambda g: plan_patches(g, (3, 3), 5, MemoryRules(fused_blocks=(2, 4))),  # some fused, some not
], ids=["per-layer", "2x2-split3", "3x2-split4", "2x3-split6", "3x3-partial"])
def test_fused_schedules_equal_the_forward_pass(plan_of):
    model = _tiny()
    x = torch.rand(3, 3, 37, 29)  # batch 3, odd sizes
    plan = plan_of(model.graph((37, 29)))
    assert plan.rules.fused_blocks
    ref = model(x)
    assert _close(run_patched(model, plan, x), ref)
    # negative control: a ring one row short of the kernel height overwrites a row still needed
    if any(b in plan.rules.fused_blocks for b in (2, 3, 4, 5)):
        assert not _close(run_patched(model, plan, x, ring_short=1), ref)


def test_fused_detector_from_the_search():
    torch.manual_seed(1)
    spec = replace(get_spec("mbv2-w0.35"), num_classes=0)
    model = build(spec, head=HeadSpec(num_classes=2)).eval()
    _randomize_bn(model, 1)
    g = model.graph((96, 128))
    plan = plan_fused(g, 3, 6)
    assert plan.rules.fused_blocks
    x = torch.rand(2, 3, 96, 128)
    assert _close(run_patched(model, plan, x), model(x))
    assert _close(run_patched(model, per_layer_plan(g, MemoryRules(fused_blocks=tuple(fusable_blocks(g)))), x), model(x))
