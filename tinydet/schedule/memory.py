"""The int8 SRAM model of DESIGN.md (pure): tensor liveness and per-op working sets.

A tensor is alive from the op that produces it (the network input from the start) to its last
consumer (an op reading it as input or as the fused shortcut ``add``); network outputs stay alive
to the end once produced. An op's working set is the bytes of every tensor alive while it runs,
with two rules (both on by default, each switchable; the C runtime implements exactly these):

- in-place depthwise: a depthwise conv whose input dies with it overwrites the input channel by
  channel, so its output costs one output channel (``H_out * W_out`` bytes) instead of all of it;
- fused residual: a projection conv whose shortcut dies with it adds the shortcut as it writes and
  writes into the shortcut's buffer, so its output costs nothing beyond the shortcut.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from tinydet.arch.graph import Graph, Op

NORMAL, INPLACE_DW, FUSED_RESIDUAL, SINK = "normal", "inplace_dw", "fused_residual", "sink"


@dataclass(frozen=True)
class MemoryRules:
    """Which memory-saving rules the schedule (and the C runtime) uses."""

    inplace_dw: bool = True
    fused_residual: bool = True

    def to_dict(self) -> dict:
        return {"inplace_dw": self.inplace_dw, "fused_residual": self.fused_residual}

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryRules":
        return cls(bool(data.get("inplace_dw", True)), bool(data.get("fused_residual", True)))


@dataclass(frozen=True)
class Liveness:
    """``produced[t]``: index of the op writing tensor t (-1 for the network input);
    ``last_use[t]``: index of its last reader (the last op for pinned tensors)."""

    produced: dict[str, int]
    last_use: dict[str, int]
    pinned: frozenset[str]

    def alive_at(self, index: int) -> list[str]:
        return [t for t, p in self.produced.items() if p <= index <= self.last_use[t]]

    def dies_at(self, index: int) -> list[str]:
        return [t for t, last in self.last_use.items() if last == index and t not in self.pinned]


def liveness(ops: Sequence[Op], input_name: str, pinned: Iterable[str] = ()) -> Liveness:
    """Liveness over ``ops`` (in execution order); ``pinned`` tensors live until the last op."""
    produced = {input_name: -1}
    last_use = {input_name: -1}
    for i, op in enumerate(ops):
        for name in op.inputs + ((op.add,) if op.add else ()):
            last_use[name] = i
        produced[op.output] = i
        last_use.setdefault(op.output, i)
    pins = frozenset(p for p in pinned if p in produced)
    for name in pins:
        last_use[name] = len(ops) - 1
    return Liveness(produced, last_use, pins)


def op_modes(ops: Sequence[Op], live: Liveness, rules: MemoryRules, sink: str | None = None) -> list[str]:
    """How each op stores its output: ``inplace_dw``, ``fused_residual``, ``sink`` (written into
    an outside buffer such as the stage-1 output map) or ``normal``."""
    modes = []
    for i, op in enumerate(ops):
        src = op.inputs[0]
        if sink is not None and op.output == sink:
            modes.append(SINK)
        elif (rules.inplace_dw and op.kind == "dwconv" and op.in_shape[0] == op.out_shape[0] == op.groups
              and live.last_use[src] == i and src not in live.pinned and live.produced[src] >= 0):
            # the network input is never overwritten: it may live outside the arena's control
            modes.append(INPLACE_DW)
        elif rules.fused_residual and op.add and live.last_use[op.add] == i and op.add not in live.pinned:
            modes.append(FUSED_RESIDUAL)
        else:
            modes.append(NORMAL)
    return modes


def working_sets(ops: Sequence[Op], live: Liveness, modes: Sequence[str], nbytes: Callable[[str], int],
                 channel_bytes: Callable[[int], int], alive: Sequence[Sequence[str]] | None = None) -> list[int]:
    """Working set of every op: alive tensors' bytes, the op's output counted per its mode.

    ``nbytes(t)`` is a tensor's size (the whole map, or a tile's region of it); ``channel_bytes(i)``
    one output channel of op i (the in-place depthwise temporary); ``alive`` optionally the
    precomputed ``live.alive_at(i)`` lists (the planner reuses them for every tile)."""
    alive = alive if alive is not None else [live.alive_at(i) for i in range(len(ops))]
    result = []
    for i, op in enumerate(ops):
        total = sum(nbytes(t) for t in alive[i] if t != op.output)
        if modes[i] == NORMAL:
            total += nbytes(op.output)
        elif modes[i] == INPLACE_DW:
            total += channel_bytes(i)
        result.append(total)
    return result


def graph_liveness(graph: Graph) -> Liveness:
    return liveness(graph.ops, graph.input, graph.outputs)


def layer_working_sets(graph: Graph, rules: MemoryRules = MemoryRules()) -> list[int]:
    """Per-layer execution: the working set (bytes) of every op of ``graph``; the input image is
    an activation like any other."""
    live = graph_liveness(graph)
    modes = op_modes(graph.ops, live, rules)
    return working_sets(graph.ops, live, modes, lambda t: graph.tensors[t].nbytes,
                        lambda i: graph.ops[i].out_shape[1] * graph.ops[i].out_shape[2])


def peak_sram_per_layer(graph: Graph, rules: MemoryRules = MemoryRules()) -> int:
    """Peak SRAM (bytes) of per-layer execution."""
    return max(layer_working_sets(graph, rules))
