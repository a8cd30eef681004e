"""Arena allocation (pure): byte offsets of every buffer in the one static activation arena of the
C runtime, such that ``arena_bytes`` equals the planned peak.

Scheme: a two-ended stack. Each op writes its output on the end of the arena opposite its
input, so the input can be dropped from the top of its stack afterwards; tensors that stay
alive (the stage-1 output buffer, head outputs, a feature that feeds a head while the backbone
goes on, a shortcut) stay where they were written and later tensors stack above them. Memory
in use at any op is then exactly its working set, so the arena is the peak.

Buffer placement rules the runtime must follow (``ArenaStep``):
- in-place depthwise (``mode == "inplace_dw"``): the output occupies the end of the input's slot
  that faces the arena end the slot is stacked on (offset ``output``; a multiple of C bytes from
  the input's start). Computing channel c into the one-channel ``temp`` and then scattering it
  to ``output + p*C + c`` only overwrites input bytes of channel c, which are consumed.
- fused residual (``"fused_residual"``): the output goes into the shortcut's slot at ``output``;
  ``reverse`` True means the output sits at the slot's end and pixels must be processed last to
  first (else first to last) so that no shortcut pixel is overwritten before it is read. In a
  tile the shortcut buffer holds a larger region than the output (the block input region the
  conv chain needed); the output's part of it is ``regions[op].out_rect`` inside the producer's
  ``out_rect``.
- staged in-place depthwise (``staged`` True, mode ``"inplace_dw"``): where the arena has
  ``output_bytes`` free at that step (bytes no live tensor holds; :func:`stage_free_depthwise`),
  the whole output is computed into ``temp`` by the ordinary depthwise kernel (faster than the
  in-place one) and then copied into its in-place slot at ``output``. The memory model, the
  buffers' places and the peak are unchanged: only bytes that are free anyway are used.
- ``move_from``: kernels that always leave their result at the start of the slot (the runtime's
  ``tinydet_depthwise_conv_inplace_s8`` and ``tinydet_conv_add_s8``) are followed by
  ``memmove(arena + output, arena + move_from, output_bytes)`` when ``move_from`` is set (the slot
  is stacked on the high end, so the tensor must end up at the slot's end); an overlapping copy
  within the slot the op owns, so the peak is unchanged.
- unfused residual (``"normal"`` with ``shortcut``): the conv writes ``output``; then the sum
  shortcut + output is written to ``result`` (the shortcut's slot, same ``reverse`` rule).
- ``"sink"``: the last stage-1 op writes its tile into the stage-1 output buffer at ``output``
  (a full C x H x W map; the tile goes to its ``out_rect``).
- fused inverted residual (``"fused_ir"``, :mod:`tinydet.schedule.fusion`): one step for the whole
  block, named by its projection, ``fused_ops`` its two or three ops. The ring of k expanded rows
  and the one depthwise pixel lie at ``temp`` (ring first, ``temp_bytes`` both). The block reads X
  at ``input`` and streams Y row by row from ``move_from`` if set (then memmoves it to
  ``output``), else at ``output``. In place (fused residual, or any block whose output goes to the
  stage-1 buffer) Y row y lands in X's slot after X row y was read; with the streaming overlap Y
  starts ``input - (move_from or output)`` >= the model's offset d before X, and when X sits on
  the low end it is first memmoved from ``input_from`` to ``input`` (its slot grows by the
  footprint, so the peak is unchanged).
- ``inputs``: every input's offset in order (``input`` is the first): the neck's add and concat
  read several tensors.
Activations are stored HWC (NHWC), so a region's buffer is rows x cols x channels bytes.

Graphs with a neck keep tensors alive across other ops (taps until the neck reads them,
top-down results until the bottom-up path adds them, head outputs), which can leave holes under
live tensors of the two stacks. When the stacks exceed the planned peak, the per-layer steps are
placed offline instead (:func:`_place_offline`): every buffer's lifetime is known from the
liveness, buffers that share memory by the rules (in-place depthwise, fused or unfused residual)
form one group at one base offset, and groups are placed largest first at the lowest offset free
over their lifetime (TFLite Micro's greedy planner, with the in-place groups added).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from tinydet.arch.graph import Graph
from tinydet.errors import TinydetError
from tinydet.schedule.fusion import FusedBlock, FusedCost
from tinydet.schedule.memory import (FUSED_IR, FUSED_RESIDUAL, INPLACE_DW, SINK, MemoryRules, Stage,
                                     layer_working_sets, per_layer, plan_stage1)
from tinydet.schedule.planner import PatchPlan

LOW, HIGH = 0, 1


@dataclass
class ArenaStep:
    """Offsets (bytes from the arena start) for one op execution."""

    op: str
    mode: str
    input: int
    input_bytes: int
    output: int
    output_bytes: int
    result: int  # where the op's output tensor lives after the step (differs for unfused residuals)
    shortcut: int | None = None
    shortcut_bytes: int = 0
    temp: int | None = None
    temp_bytes: int = 0
    reverse: bool = False
    move_from: int | None = None  # the slot start where start-of-slot kernels leave the output
    fused_ops: list[str] | None = None  # a fused inverted residual: its ops (expand, dw, project)
    input_from: int | None = None  # where X was before a fused step memmoved it to ``input``
    inputs: list[int] = field(default_factory=list)  # every input's offset (add/concat read several)
    staged: bool = False  # an in-place depthwise computed whole into the free bytes at ``temp``

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ArenaStep":
        return cls(**data)


@dataclass
class ArenaPlan:
    """Where everything lives. ``steps``: per-layer ops (all ops without patches, else the
    stage-2 ops); ``tiles[t]``: the stage-1 steps of ``plan.tiles[t]``; ``input``: offset of the
    input image (per layer) or of each tile's input region (``tile_inputs``, patch mode)."""

    arena_bytes: int
    patched: bool
    input: int | None
    input_bytes: int
    stage1_buffer: int | None
    stage1_buffer_bytes: int
    tiles: list[list[ArenaStep]] = field(default_factory=list)
    tile_inputs: list[int] = field(default_factory=list)
    steps: list[ArenaStep] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)
    rules: MemoryRules = field(default_factory=MemoryRules)

    def to_dict(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "patched": self.patched, "input": self.input,
                "input_bytes": self.input_bytes, "stage1_buffer": self.stage1_buffer,
                "stage1_buffer_bytes": self.stage1_buffer_bytes,
                "tiles": [[s.to_dict() for s in t] for t in self.tiles], "tile_inputs": list(self.tile_inputs),
                "steps": [s.to_dict() for s in self.steps], "outputs": dict(self.outputs),
                "rules": self.rules.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "ArenaPlan":
        return cls(int(data["arena_bytes"]), bool(data["patched"]), data["input"], int(data["input_bytes"]),
                   data["stage1_buffer"], int(data["stage1_buffer_bytes"]),
                   [[ArenaStep.from_dict(s) for s in t] for t in data["tiles"]], list(data["tile_inputs"]),
                   [ArenaStep.from_dict(s) for s in data["steps"]], dict(data["outputs"]),
                   MemoryRules.from_dict(data.get("rules", {})))


class _Slot:
    __slots__ = ("name", "side", "below", "size", "reserved")

    def __init__(self, name: str | None, side: int, below: int, size: int):
        self.name, self.side, self.below, self.size, self.reserved = name, side, below, size, size


class _Stacks:
    """Two stacks growing towards each other; high-end offsets are resolved once the arena size
    is known (``from_top`` = distance of a slot's start from the arena end)."""

    def __init__(self):
        self.stacks: tuple[list[_Slot], list[_Slot]] = ([], [])
        self.where: dict[str, _Slot] = {}
        self.peak = 0

    def top(self, side: int) -> int:
        s = self.stacks[side]
        return s[-1].below + s[-1].reserved if s else 0

    def used(self) -> int:
        return self.top(LOW) + self.top(HIGH)

    def push(self, name: str, side: int, size: int) -> _Slot:
        slot = _Slot(name, side, self.top(side), size)
        self.stacks[side].append(slot)
        self.where[name] = slot
        return slot

    def rename(self, old: str, new: str, size: int) -> _Slot:
        """``new`` takes the base-adjacent ``size`` bytes of ``old``'s slot (in place)."""
        slot = self.where.pop(old)
        slot.name, slot.size = new, size
        self.where[new] = slot
        return slot

    def note(self, extra: int = 0) -> None:
        self.peak = max(self.peak, self.used() + extra)

    def free(self, name: str) -> None:
        slot = self.where.pop(name, None)
        if slot is not None:
            slot.name = None
        self.compact()

    def compact(self) -> None:
        for s in self.stacks:
            while s and s[-1].name is None:
                s.pop()
            if s:
                s[-1].reserved = s[-1].size  # a shrunk top slot gives its tail back


class _Ref:
    """A deferred offset: low-end slots are final, high-end ones need the arena size."""

    __slots__ = ("side", "below", "size")

    def __init__(self, side: int, below: int, size: int):
        self.side, self.below, self.size = side, below, size

    @classmethod
    def of(cls, slot: _Slot) -> "_Ref":
        return cls(slot.side, slot.below, slot.size)

    def resolve(self, arena: int) -> int:
        return self.below if self.side == LOW else arena - self.below - self.size


def _run_fused(st: _Stacks, stage: Stage, fb: FusedBlock, cost: FusedCost, nbytes, sink_ref: _Ref | None) -> dict:
    """Allocate one fused inverted residual (module docstring); returns its ArenaStep dict."""
    ops = stage.ops
    x, proj = ops[fb.first].inputs[0], ops[fb.project]
    src = st.where[x]
    bx, by = src.size, nbytes(proj.output)
    rec = {"op": proj.name, "mode": FUSED_IR, "input": _Ref.of(src), "input_bytes": bx, "output_bytes": by,
           "shortcut": None, "shortcut_bytes": 0, "reverse": False, "fused_ops": [ops[i].name for i in fb.indices],
           "temp_bytes": cost.ring + cost.pixel}
    if proj.add:
        rec["shortcut"], rec["shortcut_bytes"] = _Ref.of(src), bx
    other = 1 - src.side
    sink = stage.modes[fb.project] == SINK
    on_top = bool(st.stacks[src.side]) and st.stacks[src.side][-1] is src
    if sink or cost.output == 0:
        rec["temp"] = _Ref(other, st.top(other), rec["temp_bytes"])
        st.note(rec["temp_bytes"])
        if sink:
            rec["output"] = rec["result"] = sink_ref
        else:  # in place over the shortcut, compact from the slot start
            start = _Ref.of(src)  # Y is written compactly from the slot's first byte
            slot = st.rename(x, proj.output, by)
            rec["output"] = rec["result"] = _Ref.of(slot)
            rec["move_from"] = start
    elif cost.overlap and on_top:
        footprint = bx + by - cost.overlap
        below = src.below
        src.reserved = footprint
        rec["temp"] = _Ref(other, st.top(other), rec["temp_bytes"])
        st.note(rec["temp_bytes"])
        if src.side == HIGH:  # X already ends the buffer; Y streams from the buffer's low end
            rec["move_from"] = _Ref(HIGH, below, footprint)
        else:  # X moves up to end the buffer; Y streams from its start
            rec["input_from"] = _Ref.of(src)
            rec["input"] = _Ref(LOW, below + footprint - bx, bx)
        slot = st.rename(x, proj.output, by)
        rec["output"] = rec["result"] = _Ref.of(slot)
    else:
        slot = st.push(proj.output, other, by)
        rec["output"] = rec["result"] = _Ref.of(slot)
        rec["temp"] = _Ref(other, st.top(other), rec["temp_bytes"])
        st.note(rec["temp_bytes"])
    for i in fb.indices:
        for name in stage.dies[i]:
            if name != proj.output:
                st.free(name)
    st.compact()
    return rec


def _run_ops(st: _Stacks, stage: Stage, start: int, nbytes, channel_bytes, sink_ref: _Ref | None,
             costs: dict[int, FusedCost] | None = None, stop: int | None = None) -> list[dict]:
    """Allocate ``stage.ops[start:stop]`` on the stacks (``nbytes``/``channel_bytes`` as
    :meth:`Stage.sizes`, ``costs`` as :meth:`Stage.fused_costs`); returns per step a dict of
    _Ref / values for ArenaStep (one step per fused block)."""
    modes, dies = stage.modes, stage.dies
    fused_at = {fb.first: fb for fb in stage.fused}
    out = []
    skip_to = start
    for i in range(start, len(stage) if stop is None else stop):
        if i < skip_to:
            continue
        if i in fused_at:
            fb = fused_at[i]
            out.append(_run_fused(st, stage, fb, costs[fb.block], nbytes, sink_ref))
            skip_to = fb.project + 1
            continue
        op = stage.ops[i]
        src = st.where[op.inputs[0]]
        rec = {"op": op.name, "mode": modes[i], "input": _Ref.of(src), "input_bytes": src.size,
               "output_bytes": nbytes(op.output), "shortcut": None, "shortcut_bytes": 0,
               "temp": None, "temp_bytes": 0, "reverse": False,
               "inputs": [_Ref.of(st.where[t]) for t in op.inputs]}
        if op.add:
            s = st.where[op.add]
            rec["shortcut"], rec["shortcut_bytes"] = _Ref.of(s), s.size
        size = nbytes(op.output)
        mode = modes[i]
        if mode == SINK:
            rec["output"] = rec["result"] = sink_ref
            st.note()
        elif mode == INPLACE_DW:
            temp = channel_bytes(i)
            other = 1 - src.side
            rec["temp"], rec["temp_bytes"] = _Ref(other, st.top(other), temp), temp
            st.note(temp)  # the input's whole slot is in use while the op runs
            slot = st.rename(op.inputs[0], op.output, size)
            rec["output"] = rec["result"] = _Ref.of(slot)
        elif mode == FUSED_RESIDUAL:
            st.note()
            held = st.where[op.add].size
            slot = st.rename(op.add, op.output, size)
            rec["output"] = rec["result"] = _Ref.of(slot)
            rec["reverse"] = slot.side == HIGH and size < held  # the output sits at the slot's end
        else:
            slot = st.push(op.output, 1 - src.side, size)
            rec["output"] = rec["result"] = _Ref.of(slot)
            st.note()
            if op.add and op.add in dies[i]:  # (a pinned tensor never dies)
                # unfused residual: the sum goes into the dying shortcut's slot, the conv output
                # buffer is dropped, so no hole is left under a live tensor
                st.where.pop(op.output)
                slot.name = None
                held = st.where[op.add].size
                res = st.rename(op.add, op.output, size)
                rec["result"] = _Ref.of(res)
                rec["reverse"] = res.side == HIGH and size < held
        for name in dies[i]:
            if name != op.output:
                st.free(name)
        st.compact()
        out.append(rec)
    return out


def _finish(rec: dict, arena: int) -> ArenaStep:
    data = dict(rec)
    for key in ("input", "output", "result", "shortcut", "temp", "move_from", "input_from"):
        if isinstance(data.get(key), _Ref):
            data[key] = data[key].resolve(arena)
    data["inputs"] = [r.resolve(arena) if isinstance(r, _Ref) else r for r in data.get("inputs", [])]
    if data["mode"] == FUSED_IR:
        if data.get("move_from") == data["output"]:
            data["move_from"] = None
        return ArenaStep(**data)
    slot_start = {INPLACE_DW: data["input"], FUSED_RESIDUAL: data["shortcut"]}.get(data["mode"])
    if slot_start is not None and slot_start != data["output"]:
        data["move_from"] = slot_start
    return ArenaStep(**data)


@dataclass
class _Group:
    """Buffers that share one base offset by the memory rules: (size, first op, last op) each."""

    rects: list[tuple[int, int, int]] = field(default_factory=list)
    offset: int | None = None

    @property
    def size(self) -> int:
        return max(r[0] for r in self.rects)


def _fits(group: _Group, at: int, placed: list[tuple[int, int, int, int]]) -> bool:
    """Whether ``group`` at offset ``at`` overlaps no placed (offset, size, first, last) buffer alive with it."""
    for size, t0, t1 in group.rects:
        for off, qsize, q0, q1 in placed:
            if t0 <= q1 and q0 <= t1 and at < off + qsize and off < at + size:
                return False
    return True


def _greedy(order: list[_Group], fixed: list[tuple[int, int, int, int]], limit: int,
            budget: int = 0) -> list[int] | None:
    """Offsets for ``order``'s groups one by one around the ``fixed`` buffers, each at the lowest
    offset free over its lifetime; when a group would pass ``limit`` the search backtracks to
    the next free offsets of earlier groups (at most ``budget`` placements). None if nothing fits."""
    placed = list(fixed)
    offsets: list[int] = []
    tries = 0

    def place(k: int) -> bool:
        nonlocal tries
        if k == len(order):
            return True
        group = order[k]
        for at in sorted({0} | {off + size for off, size, _, _ in placed}):
            if at + group.size > limit:
                return False
            if not _fits(group, at, placed):
                continue
            if tries > budget + len(order):
                return False
            tries += 1
            mark = len(placed)
            placed.extend((at, size, t0, t1) for size, t0, t1 in group.rects)
            offsets.append(at)
            if place(k + 1):
                return True
            del placed[mark:]
            offsets.pop()
        return False

    return offsets if place(0) else None


def _place_offline(stage: Stage, start: int, nbytes, channel_bytes, fixed: dict[str, int],
                   limit: int) -> tuple[list[dict], dict[str, int]] | None:
    """Offsets for ``stage.ops[start:]`` by lifetime (see the module docstring), tensors in
    ``fixed`` pinned at their offsets; None when the placement would exceed ``limit`` bytes.
    Every shared buffer keeps its output at the slot start (so no ``reverse`` and no ``move_from``)."""
    ops, modes, dies, live = stage.ops, stage.modes, stage.dies, stage.live
    n = len(ops)
    if FUSED_IR in modes[start:]:  # fused blocks keep the two stacks' placement (their streaming overlap)
        return None
    fixed = {t: off for t, off in fixed.items() if live.last_use[t] >= start}  # held across ``start``
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    def join(child: str, base: str) -> None:
        parent[find(child)] = find(base)

    # tensors alive in these steps: made by them, or made before and read by them (the stage-1 map)
    first = {t: max(p, start - 1) for t, p in live.produced.items() if p >= start or live.last_use[t] >= start}
    own: dict[str, tuple[int, int, int]] = {}  # per-op scratch buffers: the in-place temp, an unfused conv output
    for i in range(start, n):
        op = ops[i]
        if modes[i] == INPLACE_DW:
            join(op.output, op.inputs[0])
            own[f"{op.name}#temp"] = (channel_bytes(i), i, i)
        elif modes[i] == FUSED_RESIDUAL:
            join(op.output, op.add)
        elif op.add and op.add in dies[i]:
            join(op.output, op.add)  # the sum goes into the dying shortcut's slot
            own[f"{op.name}#conv"] = (nbytes(op.output), i, i)
    groups: dict[str, _Group] = {}
    for t, t0 in first.items():
        groups.setdefault(find(t), _Group()).rects.append((nbytes(t), t0, max(live.last_use[t], t0)))
    for name, rect in own.items():
        groups[name] = _Group([rect])
    placed: list[tuple[int, int, int, int]] = []
    for name, off in fixed.items():
        groups[find(name)].offset = off
        placed += [(off, size, t0, t1) for size, t0, t1 in groups[find(name)].rects]
    free = [g for g in groups.values() if g.offset is None]
    start_of = lambda g: min(r[1] for r in g.rects)  # noqa: E731
    span = lambda g: max(r[2] for r in g.rects) - start_of(g)  # noqa: E731
    orders = (lambda g: (-g.size, start_of(g)),  # TFLite Micro's greedy order
              lambda g: (-g.size * (span(g) + 1), start_of(g)),  # largest size x lifetime first
              lambda g: (-span(g), -g.size, start_of(g)),  # longest-lived first
              lambda g: (start_of(g), -g.size))  # in execution order (first fit)
    # a few cheap greedy passes (each order, placed from the bottom and, mirrored, from the top
    # where the stage-1 map sits), then one bounded backtracking search
    mirror = [(limit - off - size, size, t0, t1) for off, size, t0, t1 in placed]
    attempts = [(key, flip, 0) for key in orders for flip in (False, True)] + [(orders[0], False, 5000)]
    for key, flip, budget in attempts:
        order = sorted(free, key=key)
        done = _greedy(order, mirror if flip else placed, limit, budget)
        if done is not None:
            for group, at in zip(order, done):
                group.offset = limit - at - group.size if flip else at
            break
    else:
        return None
    off = {t: groups[find(t)].offset for t in first}
    recs = []
    for i in range(start, n):
        op = ops[i]
        rec = {"op": op.name, "mode": modes[i], "input": off[op.inputs[0]], "input_bytes": nbytes(op.inputs[0]),
               "output": off[op.output], "output_bytes": nbytes(op.output), "result": off[op.output],
               "shortcut": off[op.add] if op.add else None, "shortcut_bytes": nbytes(op.add) if op.add else 0,
               "temp": None, "temp_bytes": 0, "reverse": False, "inputs": [off[t] for t in op.inputs]}
        if modes[i] == INPLACE_DW:
            rec["temp"], rec["temp_bytes"] = groups[f"{op.name}#temp"].offset, channel_bytes(i)
        elif f"{op.name}#conv" in groups:
            rec["output"] = groups[f"{op.name}#conv"].offset
        recs.append(rec)
    return recs, off


def allocate(graph: Graph, plan: PatchPlan | None = None, rules: MemoryRules | None = None,
             stage_dw: bool = True) -> ArenaPlan:
    """Offsets for ``graph`` run per layer (``plan`` None or unpatched) or following ``plan``.
    ``rules`` defaults to the plan's. ``arena_bytes`` is the memory the offsets use; for chains
    with heads, shortcuts and pinned outputs (every preset, per layer and patched, all rule
    combinations: tests/test_schedule_arena.py) it equals the planned peak. ``stage_dw``: stage
    the in-place depthwise steps where the arena has room (:func:`stage_free_depthwise`)."""
    arena = _allocate(graph, plan, rules)
    return stage_free_depthwise(graph, plan, arena) if stage_dw else arena


def stage_free_depthwise(graph: Graph, plan: PatchPlan | None, arena: ArenaPlan) -> ArenaPlan:
    """``arena`` with every in-place depthwise step that has ``output_bytes`` free at its step
    (the lowest 4-aligned run of bytes outside every live tensor's buffer, found by replaying
    the steps as :func:`check_arena` does, without its byte checks) staged there: ``staged`` True, ``temp`` that run, ``temp_bytes`` the output's
    size, no ``move_from``. Nothing else moves, so the arena size is unchanged."""
    gaps: dict[tuple[int | None, int], int] = {}
    _simulate(graph, plan, arena, gaps)

    def staged(steps: list[ArenaStep], where: int | None) -> list[ArenaStep]:
        return [replace(s, staged=True, temp=gaps[(where, j)], temp_bytes=s.output_bytes, move_from=None)
                if (where, j) in gaps else s for j, s in enumerate(steps)]

    return replace(arena, tiles=[staged(t, i) for i, t in enumerate(arena.tiles)], steps=staged(arena.steps, None))


def _first_free_run(taken: list[tuple[int, int]], size: int, n: int, align: int = 4) -> int | None:
    """The lowest ``align``-aligned offset of ``n`` bytes in ``[0, size)`` outside every
    ``(offset, bytes)`` of ``taken`` (sorted by offset; they may overlap)."""
    at = 0
    for off, nbytes in taken + [(size, 0)]:
        if off - at >= n:
            return at
        at = max(at, -(-(off + nbytes) // align) * align)
    return None


def _allocate(graph: Graph, plan: PatchPlan | None, rules: MemoryRules | None) -> ArenaPlan:
    if plan is not None and rules is not None and rules != plan.rules:
        raise TinydetError(f"arena: rules {rules.to_dict()} differ from the plan's {plan.rules.to_dict()}; "
                           "expected the rules the plan was made with")
    rules = rules if rules is not None else (plan.rules if plan is not None else MemoryRules())
    patched = plan is not None and plan.patched
    st = _Stacks()
    layer = per_layer(graph, rules)
    tiles_recs, tile_inputs, stage1_ref = [], [], None
    start = 0
    if patched:
        s1 = plan_stage1(graph, plan)
        buf = st.push(s1.sink, HIGH, plan.stage1_buffer_bytes)
        stage1_ref = _Ref.of(buf)
        for tile in plan.tiles:
            sizes = s1.sizes(tile)
            inp = st.push(graph.input, LOW, sizes[0](graph.input))
            tile_inputs.append(_Ref.of(inp))
            st.note()
            tiles_recs.append(_run_ops(st, s1, 0, *sizes, stage1_ref, s1.fused_costs(tile)))
        start = len(s1)
        input_ref = None
    else:
        inp = st.push(graph.input, LOW, graph.tensors[graph.input].nbytes)
        input_ref = _Ref.of(inp)
        st.note()
    # fused blocks keep the two stacks' placement (their streaming overlap); after the last of them
    # the steps may be placed by lifetime instead (below), from the stacks' state at that point
    boundary = max((i + 1 for i in range(start, len(layer)) if layer.modes[i] == FUSED_IR), default=start)
    prefix = _run_ops(st, layer, start, *layer.sizes(), None, layer.fused_costs(), stop=boundary)
    prefix_peak = st.peak
    held = {name: _Ref.of(slot) for name, slot in st.where.items()}
    steps = prefix + _run_ops(st, layer, boundary, *layer.sizes(), None, layer.fused_costs())
    arena = st.peak
    outputs = {name: _Ref.of(st.where[name]).resolve(arena) for name in graph.outputs}  # pinned: never freed
    target = plan.peak_sram_patch if patched else max(layer_working_sets(graph, rules))
    if arena > target >= prefix_peak:  # holes under long-lived tensors (a neck): place the rest by lifetime
        fixed = {name: ref.resolve(target) for name, ref in held.items()}
        offline = _place_offline(layer, boundary, *layer.sizes(), fixed, target)
        if offline is not None:
            recs, offsets = offline
            steps = prefix + recs
            arena = target
            outputs = {name: offsets[name] for name in graph.outputs}
            if not patched and graph.input in offsets:
                input_ref = offsets[graph.input]
    return ArenaPlan(
        arena_bytes=arena, patched=patched,
        input=(input_ref.resolve(arena) if isinstance(input_ref, _Ref) else input_ref) if input_ref is not None else None,
        input_bytes=graph.tensors[graph.input].nbytes if not patched else max(t.in_rect.area for t in plan.tiles) * graph.tensors[graph.input].shape[0],
        stage1_buffer=stage1_ref.resolve(arena) if stage1_ref else None,
        stage1_buffer_bytes=plan.stage1_buffer_bytes if patched else 0,
        tiles=[[_finish(r, arena) for r in recs] for recs in tiles_recs],
        tile_inputs=[r.resolve(arena) for r in tile_inputs],
        steps=[_finish(r, arena) for r in steps], outputs=outputs, rules=rules)


def check_arena(graph: Graph, plan: PatchPlan | None, arena: ArenaPlan) -> None:
    """Simulate the schedule byte by byte and raise AssertionError on any violation: a buffer
    outside the arena, a write over a tensor that is still alive (other than the in-place and
    fused-residual overwrites the rules allow; a staged depthwise's ``temp`` may cover only free
    bytes), a read of bytes that no longer hold the tensor, or a buffer size that differs from the
    model's. Independent of how offsets were chosen."""
    _simulate(graph, plan, arena)


def _simulate(graph: Graph, plan: PatchPlan | None, arena: ArenaPlan,
              gaps: dict[tuple[int | None, int], int] | None = None) -> None:
    """:func:`check_arena`'s simulation; with ``gaps``, instead of checking bytes, record for every
    in-place depthwise step not yet staged the first free run of its output's size outside the live
    buffers (key: tile index or None for the per-layer / stage-2 steps, and the step's index)."""
    import numpy as np

    size = arena.arena_bytes
    check = gaps is None  # finding gaps trusts the plan: the byte checks are check_arena's
    owner = np.full(size if check else 0, -1, dtype=np.int64)
    alive: set[int] = set()
    counter = iter(range(1 << 40))
    ids: dict[str, int] = {}
    spans: dict[int, tuple[int, int]] = {}  # id -> (offset, size) of every buffer written

    def write(name: str, off: int, n: int, may_overwrite: tuple[str, ...] = ()) -> None:
        assert 0 <= off and off + n <= size, f"{name}: [{off}, {off + n}) is outside the arena of {size} bytes"
        if check:
            allowed = {ids[m] for m in may_overwrite if m in ids}
            seg = owner[off:off + n]
            clobbered = {int(v) for v in np.unique(seg)} & (alive - allowed)
            assert not clobbered, f"{name}: writing [{off}, {off + n}) overwrites a live tensor"
        if name in ids:  # a tensor moved (unfused residual sum): its old buffer is free now
            alive.discard(ids[name])
        ids[name] = next(counter)
        alive.add(ids[name])
        spans[ids[name]] = (off, n)
        if check:
            owner[off:off + n] = ids[name]

    def holds(name: str, off: int, n: int) -> None:
        assert 0 <= off and off + n <= size, f"{name}: [{off}, {off + n}) is outside the arena"
        if check:
            assert bool((owner[off:off + n] == ids[name]).all()), f"{name} is no longer intact at [{off}, {off + n})"

    def run_fused(stage: Stage, fb: FusedBlock, s: ArenaStep, nbytes, tile) -> None:
        from tinydet.schedule.fusion import overlap_offset

        ops = stage.ops
        x, proj, dw = ops[fb.first].inputs[0], ops[fb.project], ops[fb.dw]
        cost = stage.fused_costs(tile)[fb.block]
        assert s.fused_ops == [ops[i].name for i in fb.indices], f"{proj.name}: fused ops differ from the model's"
        assert s.input_bytes == nbytes(x) and s.output_bytes == nbytes(proj.output), f"{proj.name}: buffer sizes"
        assert s.temp_bytes == cost.ring + cost.pixel, f"{proj.name}: ring + pixel size differs from the model"
        if s.input_from is not None:  # X moves up inside its grown slot first
            holds(x, s.input_from, s.input_bytes)
            write(x, s.input, s.input_bytes, (x,))
        holds(x, s.input, s.input_bytes)
        write(f"{proj.name}#ring", s.temp, s.temp_bytes)
        alive.discard(ids[f"{proj.name}#ring"])
        stream = s.move_from if s.move_from is not None else s.output
        if stage.modes[fb.project] == SINK:
            holds("stage1", s.output, arena.stage1_buffer_bytes)
        elif cost.output == 0:  # in place: compact from the first byte of X's slot
            # (only behind a ring: without one the next row's window still reads X's overwritten row)
            assert fb.expand is not None, f"{proj.name}: in place without an expansion"
            assert stream == s.input, f"{proj.name}: in-place output does not start at its input"
            write(proj.output, stream, s.output_bytes, (x,))
        elif cost.overlap:
            rects = stage.rects(tile)
            xr, yr = rects[x], rects[proj.output]
            d = overlap_offset(dw, fb.expand is not None, xr, xr.w * stage.shapes[x][0], yr,
                               yr.w * stage.shapes[proj.output][0])
            assert s.input - stream >= d, f"{proj.name}: output streams {s.input - stream} bytes before its input, needs {d}"
            assert s.input + s.input_bytes - stream <= s.input_bytes + s.output_bytes - cost.overlap, \
                f"{proj.name}: the shared buffer is larger than the model's footprint"
            write(proj.output, stream, s.output_bytes, (x,))
        else:
            write(proj.output, stream, s.output_bytes)
        for i in fb.indices:
            for name in stage.dies[i]:
                if name != proj.output and name in ids:
                    alive.discard(ids[name])
        if s.move_from is not None and stage.modes[fb.project] != SINK:
            holds(proj.output, stream, s.output_bytes)
            write(proj.output, s.output, s.output_bytes, (proj.output,))

    def run(stage: Stage, start: int, steps: list[ArenaStep], nbytes, chan, tile=None, where=None) -> None:
        modes, dies = stage.modes, stage.dies
        fused_at = {fb.first: fb for fb in stage.fused}
        order, i = [], start
        while i < len(stage):
            fb = fused_at.get(i)
            order.append((i, fb))
            i = fb.project + 1 if fb else i + 1
        assert [s.op for s in steps] == [stage.ops[fb.project if fb else i].name for i, fb in order], \
            "steps do not follow the op order"
        for j, ((i, fb), s) in enumerate(zip(order, steps)):
            if fb is not None:
                assert s.mode == FUSED_IR, f"{s.op}: mode {s.mode}, the memory model fuses block {fb.block}"
                run_fused(stage, fb, s, nbytes, tile)
                continue
            op = stage.ops[i]
            assert s.mode == modes[i], f"{op.name}: mode {s.mode}, the memory model says {modes[i]}"
            assert s.input_bytes == nbytes(op.inputs[0]) and s.output_bytes == nbytes(op.output), \
                f"{op.name}: buffer sizes differ from the memory model"
            holds(op.inputs[0], s.input, s.input_bytes)
            if op.add:
                holds(op.add, s.shortcut, s.shortcut_bytes)
            if s.mode == INPLACE_DW:
                if gaps is not None and not s.staged:
                    at = _first_free_run(sorted(spans[k] for k in alive), size, s.output_bytes)
                    if at is not None:
                        gaps[(where, j)] = at
                write(f"{op.name}#temp", s.temp, s.temp_bytes)
                if s.staged:  # the whole output in free bytes, then copied into the slot: temp lives on
                    assert s.temp_bytes == s.output_bytes and s.move_from is None, f"{op.name}: staged temp"
                else:
                    assert s.temp_bytes == chan(i)
                    assert s.move_from == (s.input if s.output != s.input else None), f"{op.name}: move_from"
                    alive.discard(ids[f"{op.name}#temp"])
                inside = s.input <= s.output and s.output + s.output_bytes <= s.input + s.input_bytes
                assert inside and (s.output - s.input) % op.in_shape[0] == 0, f"{op.name}: in-place output misplaced"
                write(op.output, s.output, s.output_bytes, (op.inputs[0],))
                alive.discard(ids[f"{op.name}#temp"])
            elif s.mode == FUSED_RESIDUAL:
                fwd, rev = s.output == s.shortcut, s.output + s.output_bytes == s.shortcut + s.shortcut_bytes
                assert (fwd and not s.reverse) or (rev and s.reverse), f"{op.name}: fused output misplaced"
                assert s.move_from == (s.shortcut if not fwd else None), f"{op.name}: move_from"
                write(op.output, s.output, s.output_bytes, (op.add,))
            elif s.mode == SINK:
                holds("stage1", s.output, arena.stage1_buffer_bytes)
            else:
                write(op.output, s.output, s.output_bytes)
                if s.result != s.output:
                    write(op.output, s.result, s.output_bytes, (op.add,))
            for name in dies[i]:
                if name != op.output and name in ids:
                    alive.discard(ids[name])

    layer = per_layer(graph, arena.rules)
    start = 0
    if arena.patched:
        s1 = plan_stage1(graph, plan)
        write("stage1", arena.stage1_buffer, arena.stage1_buffer_bytes)
        assert len(arena.tiles) == len(plan.tiles)
        for t, (tile, steps, inp) in enumerate(zip(plan.tiles, arena.tiles, arena.tile_inputs)):
            sizes = s1.sizes(tile)
            write(graph.input, inp, sizes[0](graph.input))
            run(s1, 0, steps, *sizes, tile, t)
        ids[s1.sink] = ids["stage1"]
        start = len(s1)
    else:
        write(graph.input, arena.input, graph.tensors[graph.input].nbytes)
    run(layer, start, arena.steps, *layer.sizes())
    for name, off in arena.outputs.items():
        holds(name, off, graph.tensors[name].nbytes)
