"""Fused inverted residuals on the firmware: a folder exported with every block fused (the expand-1
residual block 1, the stride-2 blocks 2 and 5, the residual blocks 3 and 4 with a 5x5 depthwise,
per-tile border pads in stage 1 and a fused sink with cropped shortcuts) deploys on QEMU in patch
and layer mode, bit exact with the numpy int8 reference, in an arena of exactly the planned peak;
a pixel placed one row inside the ring (a ring one row short) is not bit exact. With CMSIS_NN_ROOT
set, ARM's kernels run the same fused steps bit exact."""
import dataclasses

import numpy as np
import pytest

import needs
from fixtures import DETECTOR, GRID, HEAD, RES, SPLIT, calib_images, residual_spec
from test_export_utils import random_network
from tinydet.deploy import deploy
from tinydet.deploy import lower as lw
from tinydet.errors import TinydetError
from tinydet.export import load_export

BLOCKS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tinydet.export.folder import export_network
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate
    from tinydet.schedule import MemoryRules

    out = tmp_path_factory.mktemp("fused_deploy") / "exp"
    model = random_network(residual_spec(), HEAD, seed=0)
    export_network(model, model.graph(RES), out, SPLIT, GRID, rules=MemoryRules(fused_blocks=BLOCKS),
                   detector=DETECTOR, check_images=1)
    quantize_export(out, calibrate(str(out / "full.onnx"), calib_images(), "minmax"), {"kind": "ptq"})
    return out


def _images():
    return np.random.default_rng(5).random((2, 3, *RES), dtype=np.float32)


def _lowered(folder, mode):
    exp = load_export(folder)
    return lw.lower_export(exp, lw.load_models(exp), mode=mode)


def test_lowering_has_a_fused_row_per_block_and_tile(folder):
    low = _lowered(folder, "patch")
    fused = [s for s in low.tile_steps + low.steps if s.mode == "fused_ir"]
    tiles = GRID[0] * GRID[1]
    assert len(fused) == len(low.fused) == 3 * tiles + 2  # blocks 1-3 in every tile, 4-5 in stage 2
    rows = {low.layers[low.fused[s.fused].project].name: low.fused[s.fused] for s in fused}
    assert rows["blocks.1.project"].expand == -1 and rows["blocks.1.project"].ring_rows == 0
    assert all(rows[f"blocks.{b}.project"].ring_rows == (5 if b == 4 else 3) for b in (3, 4))
    assert {s.pad for s in fused if s.op == "blocks.2.project"} > {lw.Pads()}  # border and interior tiles
    sink = [s for s in low.tile_steps if s.op == "blocks.3.project"]
    assert all(s.out_pitch > s.out_w for s in sink)  # the fused sink writes into the stage-1 map
    assert low.arena_bytes == low.planned_peak_bytes == load_export(folder).schedule["memory"]["peak_sram_patch"]


@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_qemu_fused_is_bit_exact_in_the_planned_arena(folder, tmp_path, mode):
    r = deploy(folder, "qemu-mps2-an500", tmp_path / mode, mode=mode, validate=True, images=_images(), conf=0.1)
    sched = load_export(folder).schedule
    planned = sched["memory"]["peak_sram_patch" if mode == "patch" else "peak_sram_per_layer"]
    assert r["outputs_bit_exact_vs_reference"] is True and r["output_mismatches_vs_reference"] == 0
    assert r["sram_arena_bytes"] == r["planned_peak_bytes"] == planned
    assert r["detections_match_fraction_vs_python_decode"] == 1.0


def test_pixel_inside_the_ring_is_not_bit_exact(folder, tmp_path, monkeypatch):
    """Negative control through lower's rows: every fused pixel placed one expanded row back, as if
    the ring were one row short, overwrites ring values the depthwise still reads."""
    real = lw.lower_export

    def short_ring(export, models, mode="patch", conf=lw.DEFAULT_CONF):
        low = real(export, models, mode=mode, conf=conf)
        steps = {s.fused: s for s in low.tile_steps + low.steps if s.fused >= 0}
        low.fused = [dataclasses.replace(f, pixel=f.pixel - steps[i].in_w * low.layers[f.dw].in_channels)
                     if f.ring_rows else f for i, f in enumerate(low.fused)]
        return low

    monkeypatch.setattr(lw, "lower_export", short_ring)
    r = deploy(folder, "host", tmp_path / "short", mode="layer", validate=True, images=_images(), conf=0.1)
    assert r["outputs_bit_exact_vs_reference"] is False and r["output_mismatches_vs_reference"] > 0


def test_fused_step_with_a_wrong_ring_size_is_refused(folder):
    exp = load_export(folder)
    step = next(s for s in exp.schedule["arena_layer"]["steps"] if s["op"] == "blocks.3.project")
    step["temp_bytes"] -= 1
    with pytest.raises(TinydetError, match="blocks.3.project.*ring of 3 expanded rows"):
        lw.lower_export(exp, lw.load_models(exp), mode="layer")


@needs.cmsis_nn
@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_qemu_fused_with_arm_kernels_is_bit_exact(folder, tmp_path, mode):
    """The fused step calls the kernels' public entry points only, so ARM's library runs it too."""
    r = deploy(folder, "qemu-mps2-an500", tmp_path / mode, mode=mode, validate=True, images=_images(), conf=0.1)
    assert r["kernels"].startswith("cmsis-nn") and r["outputs_bit_exact_vs_reference"] is True
