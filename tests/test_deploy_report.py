"""tinydet.deploy.report.patch_overhead: patch-mode cost split into recomputed MACs and the rest."""
import pytest

from tinydet.deploy.report import LayerFigures, patch_overhead
from tinydet.errors import TinydetError


def _f(name, macs, ins):
    return LayerFigures(name=name, kind="conv", macs=macs, instructions=ins, instructions_per_mac=None,
                        working_set_bytes=0)


def test_recomputed_macs_are_priced_at_each_layers_own_cost():
    layer = [_f("stem", 1000, 4000), _f("project", 1000, 1000)]
    # the stem recomputes 20% at 4 instr/MAC, plus 30 instructions of per-tile setup; project none
    patch = [_f("stem", 1200, 4830), _f("project", 1000, 1000)]
    o = patch_overhead(patch, layer)
    assert o.mac_overhead == 0.1
    assert o.recompute_instructions == 800
    assert o.excess_instructions == 30 and o.excess_by_layer == {"stem": 30}
    assert o.weighted_mac_overhead == 0.16  # the halo lands on the expensive layer: 16% > 10% MACs
    assert o.instruction_overhead == 0.166


def test_runs_of_different_exports_are_refused():
    with pytest.raises(TinydetError, match="same layers"):
        patch_overhead([_f("a", 1, 1)], [_f("b", 1, 1)])
