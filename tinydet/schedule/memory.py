"""The int8 SRAM model of DESIGN.md (pure): tensor liveness and per-op working sets.

A tensor is alive from the op that produces it (the network input from the start) to its last
consumer (an op reading it as input or as the fused shortcut ``add``); network outputs stay alive
to the end once produced. An op's working set is the bytes of every tensor alive while it runs,
with two rules (both on by default, each switchable; the C runtime implements exactly these):

- in-place depthwise: a depthwise conv whose input dies with it overwrites the input channel by
  channel, so its output costs one output channel (``H_out * W_out`` bytes) instead of all of it;
- fused residual: a projection conv whose shortcut dies with it adds the shortcut as it writes and
  writes into the shortcut's buffer, so its output costs nothing beyond the shortcut.

A third, per-block choice (off by default, so the defaults give MCUNetV2's figures): the blocks in
``MemoryRules.fused_blocks`` run as fused, row-streamed inverted residuals whose one working set
:mod:`tinydet.schedule.fusion` derives; their ops get mode ``fused_ir`` (the projection keeps
``sink`` when it writes the stage-1 output map).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.geometry import Rect
from tinydet.schedule.fusion import FusedBlock, FusedCost, fused_cost, resolve

if TYPE_CHECKING:  # the planner imports this module
    from tinydet.schedule.planner import PatchPlan, Tile

NORMAL, INPLACE_DW, FUSED_RESIDUAL, SINK = "normal", "inplace_dw", "fused_residual", "sink"
FUSED_IR = "fused_ir"  # an op of a fused, row-streamed inverted residual (tinydet.schedule.fusion)


@dataclass(frozen=True)
class MemoryRules:
    """Which memory-saving rules the schedule (and the C runtime) uses."""

    inplace_dw: bool = True
    fused_residual: bool = True
    fused_blocks: tuple[int, ...] = ()  # backbone blocks run as fused inverted residuals

    def __post_init__(self):
        object.__setattr__(self, "fused_blocks", tuple(sorted({int(b) for b in self.fused_blocks})))

    def to_dict(self) -> dict:
        return {"inplace_dw": self.inplace_dw, "fused_residual": self.fused_residual,
                "fused_blocks": list(self.fused_blocks)}

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryRules":
        return cls(bool(data.get("inplace_dw", True)), bool(data.get("fused_residual", True)),
                   tuple(data.get("fused_blocks", ())))


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


# The op sequences a schedule runs: stage 1 tile by tile, or a whole graph per layer. The planner,
# the arena allocator, the arena checker and the patch executor all need the same facts about them
# (which ops, liveness, storage modes, buffer sizes); they are built here once so the four agree.

@dataclass(frozen=True)
class Stage:
    """``ops`` run in order from tensor ``input``; ``modes[i]`` is how op i stores its output,
    ``alive[i]`` / ``dies[i]`` the tensors alive while op i runs / freed after it. ``sink`` is the
    tensor written into an outside buffer (the stage-1 output map), None per layer."""

    input: str
    ops: tuple[Op, ...]
    shapes: Mapping[str, tuple[int, int, int]]
    live: Liveness
    modes: tuple[str, ...]
    alive: tuple[tuple[str, ...], ...]
    dies: tuple[tuple[str, ...], ...]
    sink: str | None
    fused: tuple[FusedBlock, ...] = ()  # the fused blocks of this sequence (op indices into ``ops``)
    fused_residual: bool = True

    def __len__(self) -> int:
        return len(self.ops)

    def map_nbytes(self, name: str) -> int:
        """Bytes of a whole-map buffer of tensor ``name`` (int8)."""
        c, h, w = self.shapes[name]
        return c * h * w

    def map_channel_bytes(self, index: int) -> int:
        """One whole-map output channel of op ``index`` (the in-place depthwise temporary)."""
        _, h, w = self.ops[index].out_shape
        return h * w

    def sizes(self, tile: "Tile | None" = None) -> tuple[Callable[[str], int], Callable[[int], int]]:
        """(bytes of a tensor's buffer, bytes of one output channel of op i): whole maps, or the
        regions ``tile`` holds."""
        if tile is None:
            return self.map_nbytes, self.map_channel_bytes
        return self.tile_nbytes(tile), self.tile_channel_bytes(tile)

    def tile_rects(self, tile: "Tile") -> dict[str, Rect]:
        """The region of every tensor of this (stage-1) sequence that ``tile`` holds."""
        rects = {self.input: tile.in_rect}
        rects.update({op.output: tile.regions[op.name].out_rect for op in self.ops})
        return rects

    def tile_nbytes(self, tile: "Tile") -> Callable[[str], int]:
        """Bytes of a tensor's buffer in ``tile`` (int8, HWC: channels x region area)."""
        rects = self.tile_rects(tile)
        return lambda name: self.shapes[name][0] * rects[name].area

    def tile_channel_bytes(self, tile: "Tile") -> Callable[[int], int]:
        """One output channel of op i in ``tile`` (the in-place depthwise temporary)."""
        return lambda i: tile.regions[self.ops[i].name].out_rect.area

    def rects(self, tile: "Tile | None" = None) -> dict[str, Rect]:
        """The region every tensor's buffer holds: whole maps, or ``tile``'s regions."""
        if tile is not None:
            return self.tile_rects(tile)
        return {name: Rect.full(h, w) for name, (_, h, w) in self.shapes.items()}

    def fused_costs(self, tile: "Tile | None" = None) -> dict[int, FusedCost]:
        """Per fused block (by block index): its working set and the parts of it."""
        if not self.fused:
            return {}
        rects = self.rects(tile)
        channels = {name: shape[0] for name, shape in self.shapes.items()}
        out = {}
        for fb in self.fused:
            x = self.ops[fb.first].inputs[0]
            out[fb.block] = fused_cost(
                self.ops, fb, rects, channels, self.alive[fb.first],
                sink=self.modes[fb.project] == SINK, x_dies=self.live.last_use[x] <= fb.project,
                x_overwritable=self.live.produced[x] >= 0 and x not in self.live.pinned,
                fused_residual=self.fused_residual)
        return out

    def holdings(self, index: int, tile: "Tile | None" = None) -> dict[str, int]:
        """The buffers op ``index`` holds while it runs, by name, summing to its working set
        (:class:`tinydet.schedule.planner.PeakBreakdown` names them)."""
        nbytes, channel_bytes = self.sizes(tile)
        for fb in self.fused:
            if index in fb.indices:
                cost = self.fused_costs(tile)[fb.block]
                x, y = self.ops[fb.first].inputs[0], self.ops[fb.project].output
                inner = {self.ops[i].output for i in fb.indices}
                parts = {t: nbytes(t) for t in self.alive[fb.first] if t != x and t not in inner}
                named = {x: cost.input, y: cost.output - cost.overlap, f"blocks.{fb.block}#ring": cost.ring,
                         f"blocks.{fb.block}#pixel": cost.pixel}
                parts.update({k: v for k, v in named.items() if v})
                return parts
        op = self.ops[index]
        parts = {t: nbytes(t) for t in self.alive[index] if t != op.output}
        if self.modes[index] == NORMAL:
            parts[op.output] = nbytes(op.output)
        elif self.modes[index] == INPLACE_DW:
            parts[f"{op.name}#channel"] = channel_bytes(index)
        return parts

    def working_sets(self, tile: "Tile | None" = None) -> list[int]:
        """Working set (bytes) of every op on whole maps or in ``tile``; the ops of a fused block
        all carry the block's one fused working set."""
        ws = working_sets(self.ops, self.live, self.modes, *self.sizes(tile), self.alive)
        for fb, cost in zip(self.fused, self.fused_costs(tile).values()):
            for i in fb.indices:
                ws[i] = cost.total
        return ws


def _stage(graph: Graph, ops: list[Op], rules: MemoryRules, pinned: tuple[str, ...], sink: str | None) -> Stage:
    live = liveness(ops, graph.input, pinned)
    shapes = {graph.input: tuple(graph.tensors[graph.input].shape)}
    shapes.update({op.output: tuple(op.out_shape) for op in ops})
    n = len(ops)
    modes = op_modes(ops, live, rules, sink=sink)
    fused = ()
    if rules.fused_blocks:
        def read_outside(name: str) -> bool:
            return name in live.pinned or sum(name in op.inputs or name == op.add for op in ops) > 1
        fused = resolve(graph, ops, rules.fused_blocks, read_outside)
        for fb in fused:
            for i in fb.indices:
                if modes[i] != SINK:
                    modes[i] = FUSED_IR
    return Stage(graph.input, tuple(ops), shapes, live, tuple(modes),
                 tuple(tuple(live.alive_at(i)) for i in range(n)), tuple(tuple(live.dies_at(i)) for i in range(n)),
                 sink, fused, rules.fused_residual)


def stage1_ops(graph: Graph, split: int) -> list[Op]:
    """The per-patch ops: backbone blocks ``0..split-1``, a prefix of ``graph.ops`` (a valid
    split, :func:`tinydet.schedule.check_split`, has no head op among them)."""
    return list(graph.ops[:graph.block_end(split - 1)])


def stage1(graph: Graph, split: int, rules: MemoryRules) -> Stage:
    """Backbone blocks ``0..split-1`` run tile by tile; the last op writes the stage-1 output map
    (mode ``sink``). ``split`` must have passed :func:`tinydet.schedule.check_split`."""
    ops = stage1_ops(graph, split)
    return _stage(graph, ops, rules, (), ops[-1].output)


def plan_stage1(graph: Graph, plan: "PatchPlan") -> Stage:
    """:func:`stage1` of a patched ``plan``, checked against ``graph`` (a plan made from another
    arch, head or resolution is a one-line TinydetError)."""
    names = [op.name for op in graph.ops[:len(plan.stage1_ops)]]
    if not (plan.arch == graph.arch and tuple(plan.resolution) == tuple(graph.resolution)
            and 1 <= plan.split <= graph.num_blocks and names == list(plan.stage1_ops)
            and graph.block_end(plan.split - 1) == len(names)):
        raise TinydetError(f"plan: its stage-1 ops do not match graph {graph.arch} ({graph.mode}) at "
                           f"{graph.resolution[0]}x{graph.resolution[1]} (the plan is for {plan.arch} at "
                           f"{plan.resolution[0]}x{plan.resolution[1]}); expected a plan made from the same "
                           "arch, head and resolution")
    return stage1(graph, plan.split, plan.rules)


def per_layer(graph: Graph, rules: MemoryRules) -> Stage:
    """Every op of ``graph`` on whole maps; the network outputs stay alive to the end."""
    return _stage(graph, list(graph.ops), rules, tuple(graph.outputs), None)


def layer_working_sets(graph: Graph, rules: MemoryRules = MemoryRules()) -> list[int]:
    """Per-layer execution: the working set (bytes) of every op of ``graph``; the input image is
    an activation like any other."""
    return per_layer(graph, rules).working_sets()


def peak_sram_per_layer(graph: Graph, rules: MemoryRules = MemoryRules()) -> int:
    """Peak SRAM (bytes) of per-layer execution."""
    return max(layer_working_sets(graph, rules))
