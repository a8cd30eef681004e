"""Per-layer device figures: instructions (the firmware's own counters), MACs the mode executes,
instructions/MAC and the SRAM working set, as ``tinydet deploy --run --json`` reports them and
``--profile PNG`` draws them.

MACs per layer come from ``schedule.json``: a layer's MACs on the full map (layer mode, stage 2),
or summed over the tiles' output regions for a stage-1 layer in patch mode (a convolution costs the
same per output pixel, so a region's MACs are its area times the layer's MACs per pixel; the tiles'
overlap is what patch mode pays extra). Working sets are the planner's (memory.layer_working_sets,
and :func:`tinydet.schedule.plot.patch_working_sets` for patch mode).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from tinydet.errors import TinydetError
from tinydet.geometry import Rect


@dataclass(frozen=True)
class LayerFigures:
    """One layer on the device."""

    name: str
    kind: str
    macs: int
    instructions: int
    instructions_per_mac: float | None
    working_set_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_macs(schedule: Mapping[str, Any], mode: str) -> dict[str, int]:
    """MACs each layer executes in ``mode`` (patch: stage-1 layers over every tile's region)."""
    macs = {op["name"]: int(op["macs"]) for op in schedule["ops"]}
    if mode != "patch":
        return macs
    for op in schedule["ops"]:
        if op["name"] not in schedule["stage1_ops"]:
            continue
        _, h, w = op["out_shape"]
        area = sum(Rect.from_list(t["regions"][op["name"]]["out_rect"]).area for t in schedule["tiles"])
        macs[op["name"]] = int(op["macs"]) * area // (int(h) * int(w))
    return macs


def working_sets(schedule: Mapping[str, Any], mode: str) -> dict[str, int]:
    """The planner's SRAM working set of each layer in ``mode``."""
    layer_ws = schedule["memory"]["layer_working_sets"]
    names = [op["name"] for op in schedule["ops"]]
    if mode != "patch":
        return {n: int(layer_ws[n]) for n in names}
    from tinydet.schedule.plot import patch_working_sets
    from tinydet.schedule.planner import PatchPlan

    plan = PatchPlan.from_dict(schedule["memory"]["plan"])
    return dict(zip(names, patch_working_sets(plan, [int(layer_ws[n]) for n in names])))


def layer_figures(schedule: Mapping[str, Any], mode: str, instructions: Mapping[str, int]) -> list[LayerFigures]:
    """Per-layer figures of one run (``instructions``: the firmware's per-layer counts)."""
    macs, ws = layer_macs(schedule, mode), working_sets(schedule, mode)
    out = []
    for op in schedule["ops"]:
        name = op["name"]
        if name not in instructions:
            raise TinydetError(f"firmware run: no instruction count for layer '{name}'")
        n, m = int(instructions[name]), macs[name]
        out.append(LayerFigures(name=name, kind=op["kind"], macs=m, instructions=n,
                                instructions_per_mac=round(n / m, 3) if m else None, working_set_bytes=ws[name]))
    return out


def plot_profile(layers: list[LayerFigures], path: "str | Path", title: str) -> Path:
    """PNG: the SRAM working set per layer above, instructions per layer (bars) and
    instructions/MAC (line, right axis) below, on the same layer axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinydet.io.atomic import atomic_open

    x = list(range(len(layers)))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(8.0, 0.22 * len(x) + 3), 7.0))
    top.bar(x, [f.working_set_bytes / 1024 for f in layers], color="#2e86c1")
    top.set_ylabel("SRAM working set (kB)")
    top.set_title(title)
    bottom.bar(x, [f.instructions / 1e6 for f in layers], color="#9aa7b8", label="instructions")
    bottom.set_ylabel("instructions (millions)")
    ratio = bottom.twinx()
    ratio.plot([i for i, f in zip(x, layers) if f.instructions_per_mac is not None],
               [f.instructions_per_mac for f in layers if f.instructions_per_mac is not None],
               color="#c0392b", marker=".", linewidth=1.0, label="instructions / MAC")
    ratio.set_ylabel("instructions / MAC", color="#c0392b")
    bottom.set_xticks(x)
    bottom.set_xticklabels([f.name.replace("blocks.", "b") for f in layers], rotation=90, fontsize=6)
    bottom.set_xlabel("layer (execution order)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class PatchOverhead:
    """What patch mode costs over per-layer mode, split into the recomputed halo and the rest.

    ``recompute_instructions`` prices every layer's extra MACs at that layer's own per-layer-mode
    instructions/MAC; ``excess_instructions`` is what the tiles cost beyond that (per-tile setup,
    smaller maps' borders, moves). ``weighted_mac_overhead`` = recompute / per-layer instructions:
    the instruction overhead patch mode would have with no per-tile cost at all (it exceeds
    ``mac_overhead`` when the halo lands on layers that cost more than average per MAC)."""

    mac_overhead: float
    instruction_overhead: float
    weighted_mac_overhead: float
    recompute_instructions: int
    excess_instructions: int
    excess_by_layer: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def patch_overhead(patch: list[LayerFigures], layer: list[LayerFigures]) -> PatchOverhead:
    """Compare one run per mode of the same export (rows as :func:`layer_figures` gives them)."""
    per_layer = {f.name: f for f in layer}
    if set(per_layer) != {f.name for f in patch}:
        raise TinydetError("patch overhead: the two runs do not have the same layers")
    recompute = 0.0
    excess: dict[str, int] = {}
    for p in patch:
        q = per_layer[p.name]
        cost = q.instructions / q.macs if q.macs else 0.0
        extra = cost * (p.macs - q.macs)
        recompute += extra
        excess[p.name] = int(round(p.instructions - q.instructions - extra))
    macs_l, macs_p = sum(f.macs for f in layer), sum(f.macs for f in patch)
    ins_l, ins_p = sum(f.instructions for f in layer), sum(f.instructions for f in patch)
    return PatchOverhead(mac_overhead=round(macs_p / macs_l - 1, 4), instruction_overhead=round(ins_p / ins_l - 1, 4),
                         weighted_mac_overhead=round(recompute / ins_l, 4),
                         recompute_instructions=int(round(recompute)),
                         excess_instructions=int(round(ins_p - ins_l - recompute)),
                         excess_by_layer={k: v for k, v in excess.items() if v})
