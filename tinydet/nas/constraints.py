"""Hard constraints of the search, computed with the project's own memory model (pure: no torch).

For a candidate: lower its detector graph (backbone + head, ``tinydet.arch.lower``), then
- peak SRAM: per-layer execution (grid 1) or the patch plan of its grid and split, both from
  ``tinydet.schedule`` (the same numbers ``tinydet plan`` / export / the C runtime use);
- Flash: int8 weights + int32 bias + per-channel requant parameters (:func:`flash_bytes`);
- MAC overhead of the patch schedule (0 per layer);
- latency: MACs, or cycles from a per-layer instruction table measured by deploy (``--latency-table``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydet.arch.graph import Graph, Op, lower
from tinydet.arch.spec import HeadSpec
from tinydet.errors import TinydetError
from tinydet.io.jsonfile import read_json
from tinydet.nas.space import Candidate, ClassifierHead, SearchSpace
from tinydet.schedule.profile import op_flash_bytes, parse_bytes

__all__ = ["Budget", "LatencyTable", "candidate_graph", "evaluate_constraints", "flash_bytes", "parse_bytes"]


@dataclass(frozen=True)
class Budget:
    """Limits a candidate must meet; ``max_overhead`` is the patch schedule's MAC overhead."""

    sram: int
    flash: int
    max_overhead: float = 0.1

    def describe(self) -> str:
        return f"SRAM <= {self.sram:,} B, Flash <= {self.flash:,} B, MAC overhead <= {self.max_overhead:g}"


class LatencyTable:
    """Cycles per MAC fitted from a deploy-measured per-layer table, applied to new graphs.

    The file is JSON: a list of layers (or ``{"layers": [...]}``), each with ``kind`` (conv |
    dwconv | ...), ``kernel``, ``stride`` (or ``op_stride``), ``macs`` and ``cycles`` (or
    ``instructions``). ``{"per_layer_instructions": {name: n}, "layers": [...]}`` also works: the
    counts of ``tinydet deploy --run --json`` joined by op name with the layers of
    ``tinydet profile --json`` (which carry kind, kernel, op_stride and macs). A layer of a new
    network costs its MACs times the cycles/MAC of its (kind, kernel, stride) in the table, else of
    its kind, else the table's average — a linear model per kernel type, as MCUNet's latency LUT.
    """

    def __init__(self, layers: list[dict], source: str = "<table>"):
        totals: dict[tuple, list[float]] = {}
        for i, layer in enumerate(layers):
            try:
                kind, macs = str(layer["kind"]), float(layer["macs"])
                cycles = float(layer["cycles"] if "cycles" in layer else layer["instructions"])
                kernel = int(layer.get("kernel", 1))
                stride = int(layer.get("op_stride", layer.get("stride", 1)))
            except (KeyError, TypeError, ValueError):
                raise TinydetError(f"{source}: layers[{i}]: expected kind, kernel, macs and cycles (or instructions), "
                                   f"got {layer!r}") from None
            if macs <= 0:
                continue
            for key in ((kind, kernel, stride), (kind,), ()):
                acc = totals.setdefault(key, [0.0, 0.0])
                acc[0] += cycles
                acc[1] += macs
        if () not in totals:
            raise TinydetError(f"{source}: layers: expected at least one layer with macs > 0")
        self.per_mac = {k: c / m for k, (c, m) in totals.items()}

    @classmethod
    def load(cls, path: "str | Path") -> "LatencyTable":
        path = Path(path)
        data = read_json(path, "latency table")
        layers = data.get("layers") if isinstance(data, dict) else data
        if isinstance(data, dict) and isinstance(data.get("per_layer_instructions"), dict) and isinstance(layers, list):
            counts = data["per_layer_instructions"]
            layers = [{**layer, "instructions": counts[layer["name"]]} for layer in layers
                      if isinstance(layer, dict) and layer.get("name") in counts]
        if not isinstance(layers, list):
            raise TinydetError(f"{path}: layers: expected a list of per-layer entries")
        return cls(layers, str(path))

    def op_cycles(self, op: Op) -> float:
        for key in ((op.kind, op.kernel, op.stride), (op.kind,), ()):
            if key in self.per_mac:
                return op.macs * self.per_mac[key]
        return 0.0

    def cycles(self, graph: Graph) -> float:
        return sum(self.op_cycles(op) for op in graph.ops)


def candidate_graph(cand: Candidate, space: SearchSpace, head: "HeadSpec | ClassifierHead") -> Graph:
    """The detector graph (backbone up to the last head map, plus the head) of ``cand``, or with a
    :class:`~tinydet.nas.space.ClassifierHead` the classifier's (all blocks, pool, fc)."""
    from dataclasses import replace

    if isinstance(head, ClassifierHead):
        spec = replace(cand.to_spec(space), num_classes=head.num_classes)
        return lower(spec, cand.resolution, classifier=True)
    return lower(cand.to_spec(space), cand.resolution, head=head)


def flash_bytes(graph: Graph) -> int:
    """Flash of the int8 deployment, the figure ``tinydet profile`` reports (int8 weights + an
    int32 bias, multiplier and shift per output channel)."""
    return sum(op_flash_bytes(op) for op in graph.ops)


def evaluate_constraints(cand: Candidate, space: SearchSpace, head: HeadSpec, budget: Budget,
                         rules: Any = None, latency: LatencyTable | None = None, fusion: bool = False) -> dict[str, Any]:
    """Resources of ``cand`` and whether they fit ``budget`` (``feasible``); JSON-ready.

    With ``fusion`` the candidate's schedule fuses the inverted residuals its peak needs
    (:func:`tinydet.schedule.plan_fused`: the fused memory model; no extra MACs), listed in
    ``fused_blocks``.

    A schedule the planner rejects (a grid finer than the split feature map) is infeasible, with
    the planner's message in ``reason``."""
    from tinydet import schedule

    rules = schedule.MemoryRules() if rules is None else rules
    graph = candidate_graph(cand, space, head)
    reason = ""
    try:
        if fusion:
            plan = schedule.plan_fused(graph, (cand.grid, cand.grid), cand.split if cand.grid > 1 else 0, rules)
        else:
            plan = (schedule.plan_patches(graph, (cand.grid, cand.grid), cand.split, rules) if cand.grid > 1
                    else schedule.per_layer_plan(graph, rules))
    except TinydetError as exc:
        plan, reason = None, str(exc)
    per_layer = int(schedule.peak_sram_per_layer(graph, rules))  # unfused: the baseline figure
    peak = int(plan.peak) if plan else per_layer
    overhead = float(plan.mac_overhead) if plan else 0.0
    flash = flash_bytes(graph)
    macs = int(graph.macs)
    out = {
        "peak_sram": peak, "peak_sram_per_layer": per_layer, "flash_bytes": flash, "macs": macs,
        "mac_overhead": overhead,
        # tiles recompute their halo: the schedule runs (1 + overhead) times the per-layer work
        "latency": (latency.cycles(graph) if latency is not None else float(macs)) * (1.0 + overhead),
        "latency_unit": "cycles" if latency is not None else "macs",
        "fused_blocks": list(plan.rules.fused_blocks) if plan else [],
    }
    if plan is not None:
        reasons = [f"peak SRAM {peak:,} > {budget.sram:,}" if peak > budget.sram else "",
                   f"Flash {flash:,} > {budget.flash:,}" if flash > budget.flash else "",
                   f"MAC overhead {overhead:.3f} > {budget.max_overhead:g}" if overhead > budget.max_overhead else ""]
        reason = "; ".join(r for r in reasons if r)
    out["feasible"] = not reason
    out["reason"] = reason
    return out
