"""Patch-based schedule (MCUNetV2): split the network after block K-1, run the first K blocks tile
by tile on a grid over the split feature map, the rest layer by layer (pure: no torch).

Each tile's regions are propagated backward from its output tile through every stage-1 op with
exact kernel/stride/padding arithmetic (see :mod:`tinydet.schedule.regions`). Rows and columns
are independent, so each axis is propagated once per grid row/column and tiles combine them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.geometry import Pads, Rect, parse_size_pair
from tinydet.schedule.fusion import fusable_blocks
from tinydet.schedule.memory import MemoryRules, Stage, layer_working_sets, per_layer, plan_stage1, stage1
from tinydet.schedule.regions import input_region

FORMAT_VERSION = 3  # 2: pads as named objects {top, left, bottom, right}; 3: rules.fused_blocks; from_dict reads 1-3


def tile_bounds(size: int, n: int) -> list[int]:
    """Tile boundaries ``round(i * size / n)`` for i = 0..n (docs/CONTRACTS.md)."""
    return [round(i * size / n) for i in range(n + 1)]


def parse_grid(value: "int | str | Sequence[int]") -> tuple[int, int]:
    """``4``, ``"4"``, ``"2x3"`` (rows x cols) or ``(2, 3)`` -> (rows, cols)."""
    return parse_size_pair(value, "grid", "N or RxC (e.g. 4 or 2x3)")


@dataclass(frozen=True)
class OpRegion:
    """What one stage-1 op does for one tile: reads ``in_rect`` of its input (map coordinates),
    zero-pads it by ``pad`` (non-zero only on sides at the map border), writes ``out_rect`` of its output."""

    in_rect: Rect
    pad: Pads
    out_rect: Rect

    def to_dict(self) -> dict:
        return {"in_rect": self.in_rect.to_list(), "pad": self.pad.to_dict(), "out_rect": self.out_rect.to_list()}

    @classmethod
    def from_dict(cls, data: dict) -> "OpRegion":
        return cls(Rect.from_list(data["in_rect"]), Pads.load(data["pad"]), Rect.from_list(data["out_rect"]))


@dataclass(frozen=True)
class Tile:
    """One tile: its part ``out_rect`` of the stage-1 output map, the input image region
    ``in_rect`` it reads with border padding ``pad``, and every stage-1 op's regions."""

    row: int
    col: int
    out_rect: Rect
    in_rect: Rect
    pad: Pads
    regions: dict[str, OpRegion]
    working_sets: tuple[int, ...]  # per stage-1 op, without the stage-1 output buffer
    macs: int

    def to_dict(self) -> dict:
        return {"row": self.row, "col": self.col, "out_rect": self.out_rect.to_list(),
                "in_rect": self.in_rect.to_list(), "pad": self.pad.to_dict(),
                "regions": {k: v.to_dict() for k, v in self.regions.items()},
                "working_sets": list(self.working_sets), "macs": self.macs}

    @classmethod
    def from_dict(cls, data: dict) -> "Tile":
        return cls(int(data["row"]), int(data["col"]), Rect.from_list(data["out_rect"]), Rect.from_list(data["in_rect"]),
                   Pads.load(data["pad"]),
                   {k: OpRegion.from_dict(v) for k, v in data["regions"].items()},
                   tuple(int(v) for v in data["working_sets"]), int(data["macs"]))


@dataclass
class PatchPlan:
    """A schedule. ``split == 0`` is plain per-layer execution (no tiles); otherwise the first
    ``split`` blocks run tile by tile into the stage-1 output buffer and the rest per layer.
    Peaks in bytes (int8 activations), MACs per inference.

    Memory accounting: per layer, the input image is an activation like any other. Patched
    (``input_streamed``), each tile's input region is copied from the image source into SRAM and
    counts in that tile's working set; the whole image never sits in SRAM. Stage-1 peak = the
    stage-1 output buffer + the largest working set over tiles and stage-1 ops; stage-2 peak =
    the per-layer working sets after the split; ``peak_sram_patch`` = the larger of the two."""

    arch: str
    resolution: tuple[int, int]
    grid: tuple[int, int]
    split: int
    stage1_ops: list[str]
    stage1_output: str | None
    split_shape: tuple[int, int, int] | None
    tiles: list[Tile]
    peak_sram_patch: int
    peak_sram_stage1: int
    peak_sram_stage2: int
    peak_sram_per_layer: int
    macs_per_layer: int
    macs_patch: int
    mac_overhead: float
    input_streamed: bool
    rules: MemoryRules = field(default_factory=MemoryRules)
    mode: str = "backbone"

    @property
    def patched(self) -> bool:
        return self.split > 0

    @property
    def peak(self) -> int:
        """The schedule's peak SRAM: patch peak when patched, else the per-layer peak."""
        return self.peak_sram_patch if self.patched else self.peak_sram_per_layer

    @property
    def stage1_buffer_bytes(self) -> int:
        if self.split_shape is None:
            return 0
        c, h, w = self.split_shape
        return c * h * w

    def stage1_working_sets(self) -> list[int]:
        """Per stage-1 op, what stage 1 holds while it runs on its largest tile: the stage-1
        output buffer + that op's largest tile working set (empty without patches)."""
        return [self.stage1_buffer_bytes + max(t.working_sets[i] for t in self.tiles)
                for i in range(len(self.stage1_ops))] if self.patched else []

    @property
    def max_tile_input(self) -> tuple[int, int]:
        """Largest tile input (rows, cols) in image pixels."""
        return (max(t.in_rect.h for t in self.tiles), max(t.in_rect.w for t in self.tiles)) if self.tiles else (0, 0)

    def summary(self) -> dict:
        """The figures without the per-tile detail."""
        return {"grid": list(self.grid), "split": self.split, "patched": self.patched,
                "peak_sram": self.peak, "peak_sram_patch": self.peak_sram_patch,
                "peak_sram_stage1": self.peak_sram_stage1, "peak_sram_stage2": self.peak_sram_stage2,
                "peak_sram_per_layer": self.peak_sram_per_layer, "macs_per_layer": self.macs_per_layer,
                "macs_patch": self.macs_patch, "mac_overhead": self.mac_overhead,
                "input_streamed": self.input_streamed, "max_tile_input": list(self.max_tile_input),
                "split_shape": list(self.split_shape) if self.split_shape else None,
                "fused_blocks": list(self.rules.fused_blocks)}

    def to_dict(self) -> dict:
        """JSON-able; :meth:`from_dict` reads it back (the export's schedule.json carries it)."""
        return {"format_version": FORMAT_VERSION, "arch": self.arch, "resolution": list(self.resolution),
                "mode": self.mode, "rules": self.rules.to_dict(), "grid": list(self.grid), "split": self.split,
                "stage1_ops": list(self.stage1_ops), "stage1_output": self.stage1_output,
                "split_shape": list(self.split_shape) if self.split_shape else None,
                "tiles": [t.to_dict() for t in self.tiles],
                "peak_sram_patch": self.peak_sram_patch, "peak_sram_stage1": self.peak_sram_stage1,
                "peak_sram_stage2": self.peak_sram_stage2, "peak_sram_per_layer": self.peak_sram_per_layer,
                "macs_per_layer": self.macs_per_layer, "macs_patch": self.macs_patch,
                "mac_overhead": self.mac_overhead, "input_streamed": self.input_streamed}

    @classmethod
    def from_dict(cls, data: dict) -> "PatchPlan":
        try:
            return cls(
                arch=str(data["arch"]), resolution=tuple(int(v) for v in data["resolution"]),
                grid=tuple(int(v) for v in data["grid"]), split=int(data["split"]),
                stage1_ops=[str(s) for s in data["stage1_ops"]], stage1_output=data.get("stage1_output"),
                split_shape=tuple(int(v) for v in data["split_shape"]) if data.get("split_shape") else None,
                tiles=[Tile.from_dict(t) for t in data["tiles"]],
                peak_sram_patch=int(data["peak_sram_patch"]), peak_sram_stage1=int(data["peak_sram_stage1"]),
                peak_sram_stage2=int(data["peak_sram_stage2"]), peak_sram_per_layer=int(data["peak_sram_per_layer"]),
                macs_per_layer=int(data["macs_per_layer"]), macs_patch=int(data["macs_patch"]),
                mac_overhead=float(data["mac_overhead"]), input_streamed=bool(data["input_streamed"]),
                rules=MemoryRules.from_dict(data.get("rules", {})), mode=str(data.get("mode", "backbone")))
        except (KeyError, TypeError, ValueError) as exc:
            raise TinydetError(f"schedule: malformed plan ({type(exc).__name__}: {exc}); expected PatchPlan.to_dict() output") from None


def per_layer_plan(graph: Graph, rules: MemoryRules = MemoryRules()) -> PatchPlan:
    """The no-patch schedule: every op on the whole map, the input image in SRAM."""
    peak = max(layer_working_sets(graph, rules))
    return PatchPlan(graph.arch, tuple(graph.resolution), (1, 1), 0, [], None, None, [], peak, 0, peak, peak,
                     graph.macs, graph.macs, 0.0, False, rules, graph.mode)


def max_split(graph: Graph) -> int:
    """Largest valid split: the stage-1 output may be the only stage-1 tensor read outside stage 1.
    (A head op inside stage 1 always leaks: its chain ends in a graph output, which is not the
    stage-1 output, so this one rule also keeps heads in stage 2.)"""
    for k in range(2, graph.num_blocks + 1):
        if _outside_readers(graph, k):
            return k - 1
    return graph.num_blocks


def _outside_readers(graph: Graph, split: int) -> list[str]:
    """Tensors made inside stage 1 (other than its output) that later ops read or that are graph outputs."""
    end = graph.block_end(split - 1)
    made = {op.output for op in graph.ops[:end]} | {graph.input}
    last = graph.ops[end - 1].output
    leaks = {graph.ops[i].output for i in range(end) if graph.ops[i].output in graph.outputs} - {last}
    for op in graph.ops[end:]:
        leaks |= {t for t in op.inputs + ((op.add,) if op.add else ()) if t in made and t != last}
    return sorted(leaks)


def check_split(graph: Graph, split: int) -> None:
    """Raise a one-line :class:`TinydetError` unless ``split`` is valid for ``graph``."""
    if not isinstance(split, int) or isinstance(split, bool) or not 1 <= split <= graph.num_blocks:
        raise TinydetError(f"split: expected a block count in 1..{graph.num_blocks} for arch {graph.arch} "
                           f"(the first K blocks, stem = 1, run patch by patch), got {split!r}")
    leaks = _outside_readers(graph, split)
    if leaks:
        top = max_split(graph)
        raise TinydetError(f"split: {split} puts {leaks[0]} inside the per-patch stage although a head or output "
                           f"reads it; expected a split of at most {top} for arch {graph.arch} ({graph.mode})")


def _axis_regions(ops: Sequence[Op], axis: int, lo: int, hi: int) -> tuple[dict[str, tuple[int, int]], list]:
    """Backward propagation on one axis (0 rows, 1 cols) for output interval [lo, hi) of the last
    op: per tensor the interval it must hold; per op (in_lo, in_hi, pad_before, pad_after, out_lo, out_hi)."""
    need: dict[str, tuple[int, int]] = {ops[-1].output: (lo, hi)}
    per_op: list = [None] * len(ops)
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        o_lo, o_hi = need[op.output]
        if axis == 0:
            rect, pad = input_region(op, Rect(o_lo, o_hi, 0, 1))
            i_lo, i_hi, p_lo, p_hi = rect.y0, rect.y1, pad.top, pad.bottom
        else:
            rect, pad = input_region(op, Rect(0, 1, o_lo, o_hi))
            i_lo, i_hi, p_lo, p_hi = rect.x0, rect.x1, pad.left, pad.right
        per_op[i] = (i_lo, i_hi, p_lo, p_hi, o_lo, o_hi)
        # a tensor read by several stage-1 ops holds the union of what they need (the shortcut of a
        # residual block is a crop of what its conv chain needs)
        for name, (a, b) in ((op.inputs[0], (i_lo, i_hi)),) + (((op.add, (o_lo, o_hi)),) if op.add else ()):
            old = need.get(name)
            need[name] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
    return need, per_op


def _make_tile(st: Stage, row: int, col: int, ry, cx) -> Tile:
    (need_y, ops_y), (need_x, ops_x) = ry, cx
    regions = {}
    macs = 0
    for op, (iy0, iy1, pt, pb, oy0, oy1), (ix0, ix1, pl, pr, ox0, ox1) in zip(st.ops, ops_y, ops_x):
        out = Rect(oy0, oy1, ox0, ox1)
        regions[op.name] = OpRegion(Rect(iy0, iy1, ix0, ix1), Pads(pt, pl, pb, pr), out)
        macs += op.macs * out.area // (op.out_shape[1] * op.out_shape[2])
    in_rect = Rect(*need_y[st.input], *need_x[st.input])
    tile = Tile(row, col, regions[st.ops[-1].name].out_rect, in_rect, regions[st.ops[0].name].pad, regions, (), macs)
    return replace(tile, working_sets=tuple(st.working_sets(tile)))


def plan_patches(graph: Graph, grid: "int | tuple[int, int] | str", split: int,
                 rules: MemoryRules = MemoryRules(), layer_ws: Sequence[int] | None = None) -> PatchPlan:
    """Plan patch-based execution: the first ``split`` blocks tile by tile on a ``grid`` (rows,
    cols) over the split feature map, the rest per layer. Errors (one line) on an invalid split
    or a grid larger than the split map. ``layer_ws``: ``layer_working_sets(graph, rules)`` when
    the caller has it already (the search plans many grids with the same rules)."""
    rows, cols = parse_grid(grid)
    check_split(graph, split)
    st = stage1(graph, split, rules)
    last = st.ops[-1]
    c, h, w = last.out_shape
    if rows > h or cols > w:
        raise TinydetError(f"grid: {rows}x{cols} is larger than the split feature map {h}x{w} "
                           f"(after block {split - 1} of arch {graph.arch}); expected at most {h}x{w}")
    yb, xb = tile_bounds(h, rows), tile_bounds(w, cols)
    ys = [_axis_regions(st.ops, 0, yb[r], yb[r + 1]) for r in range(rows)]
    xs = [_axis_regions(st.ops, 1, xb[q], xb[q + 1]) for q in range(cols)]
    tiles = [_make_tile(st, r, q, ys[r], xs[q]) for r in range(rows) for q in range(cols)]

    buffer = c * h * w
    layer_ws = list(layer_ws) if layer_ws is not None else layer_working_sets(graph, rules)
    end = len(st.ops)
    peak1 = buffer + max(max(t.working_sets) for t in tiles)
    peak2 = max(layer_ws[end:], default=0)
    macs_layer = graph.macs
    macs_patch = sum(t.macs for t in tiles) + sum(op.macs for op in graph.ops[end:])
    return PatchPlan(graph.arch, tuple(graph.resolution), (rows, cols), split, [op.name for op in st.ops],
                     last.output, (c, h, w), tiles, max(peak1, peak2), peak1, peak2, max(layer_ws),
                     macs_layer, macs_patch, macs_patch / macs_layer - 1.0, True, rules,
                     graph.mode)


def _with_layer_ws(plan: PatchPlan, layer_ws: Sequence[int], tiles: list[Tile], rules: MemoryRules) -> PatchPlan:
    """``plan`` with other per-layer and tile working sets (same grid, split, regions, MACs)."""
    end = len(plan.stage1_ops)
    peak1 = plan.stage1_buffer_bytes + max(max(t.working_sets) for t in tiles) if plan.patched else 0
    peak2 = max(layer_ws[end:], default=0)
    per_layer_peak = max(layer_ws)
    patch_peak = max(peak1, peak2) if plan.patched else per_layer_peak
    return replace(plan, tiles=tiles, peak_sram_patch=patch_peak, peak_sram_stage1=peak1,
                   peak_sram_stage2=peak2 if plan.patched else per_layer_peak, peak_sram_per_layer=per_layer_peak,
                   rules=rules)


def with_fusion(graph: Graph, plan: PatchPlan) -> PatchPlan:
    """``plan`` (same grid, split and rules) with the per-block fusion of :func:`plan_fused`."""
    return plan_fused(graph, plan.grid, plan.split if plan.patched else 0, plan.rules)


def plan_fused(graph: Graph, grid: "int | tuple[int, int] | str", split: int, rules: MemoryRules = MemoryRules(),
               fusable: Sequence[int] | None = None,
               layer_ws: tuple[Sequence[int], Sequence[int]] | None = None) -> PatchPlan:
    """The plan of ``grid`` x ``split`` (``split`` 0: per layer) with the blocks fused that its peak
    needs fused (``rules.fused_blocks`` is replaced): every block
    whose unfused working set would exceed the lowest peak that per-block fusion reaches. Fusion
    costs no MACs and a block's choice changes only its own ops' working sets, so this one choice
    per block is the optimum over all subsets of fused blocks; blocks below the peak stay unfused
    (the simplest schedule with that peak). ``fusable`` defaults to every fusable block;
    ``layer_ws``: the per-layer working sets with none / all of them fused, when known."""
    fusable = sorted(fusable_blocks(graph) if fusable is None else fusable)
    plain_rules = replace(rules, fused_blocks=())
    fused_rules = replace(rules, fused_blocks=tuple(fusable))
    layer_u, layer_f = layer_ws if layer_ws is not None else (layer_working_sets(graph, plain_rules),
                                                              layer_working_sets(graph, fused_rules))
    if split:
        plain = plan_patches(graph, grid, split, plain_rules, layer_u)
        if not fusable:
            return plain
        # same regions: only the working sets differ
        st = stage1(graph, split, fused_rules)
        fused = _with_layer_ws(plain, layer_f, [replace(t, working_sets=tuple(st.working_sets(t))) for t in plain.tiles],
                               fused_rules)
    else:
        plain = per_layer_plan(graph, plain_rules)
        if not fusable:
            return plain
        fused = per_layer_plan(graph, fused_rules)
    block_of = [op.block for op in graph.ops]
    n1 = len(plain.stage1_ops)
    peaks_u = plain.stage1_working_sets() + list(layer_u[n1:])
    peaks_f = fused.stage1_working_sets() + list(layer_f[n1:])
    target = max(min(u, f) if block_of[i] in fusable else u for i, (u, f) in enumerate(zip(peaks_u, peaks_f)))
    need = sorted({block_of[i] for i, u in enumerate(peaks_u) if u > target})
    if not need:
        return plain
    if need == fusable:
        return fused
    # a block's choice changes only its own ops' working sets: take each op's from the plan with
    # its block's choice (tests check this equals planning with exactly these blocks fused)
    pick = [block_of[i] in need for i in range(len(graph.ops))]
    layer = [f if p else u for u, f, p in zip(layer_u, layer_f, pick)]
    tiles = [replace(tu, working_sets=tuple(f if p else u for u, f, p in zip(tu.working_sets, tf.working_sets, pick)))
             for tu, tf in zip(plain.tiles, fused.tiles)]
    return _with_layer_ws(plain, layer, tiles, replace(rules, fused_blocks=tuple(need)))


@dataclass(frozen=True)
class PeakBreakdown:
    """What bounds a schedule's peak: the op (and tile) where it occurs and every buffer held
    then, by name (tensor names; ``<block>#ring`` / ``#pixel`` for a fused block's row ring and
    depthwise pixel, ``<op>#channel`` for the in-place depthwise temporary), bytes summing to
    ``peak``. ``bound`` is the largest of them."""

    peak: int
    stage: str  # stage1 | stage2 | per_layer
    op: str
    tile: tuple[int, int] | None
    parts: dict[str, int]

    @property
    def bound(self) -> str:
        return max(self.parts, key=lambda k: (self.parts[k], k))

    def to_dict(self) -> dict:
        return {"peak": self.peak, "stage": self.stage, "op": self.op, "tile": list(self.tile) if self.tile else None,
                "bound": self.bound, "parts": dict(self.parts)}


def peak_breakdown(graph: Graph, plan: PatchPlan) -> PeakBreakdown:
    """Where ``plan``'s peak occurs and which buffers make it up (the first op reaching it)."""
    layer = per_layer(graph, plan.rules)
    layer_ws = layer.working_sets()
    if not plan.patched:
        i = layer_ws.index(max(layer_ws))
        return PeakBreakdown(layer_ws[i], "per_layer", graph.ops[i].name, None, layer.holdings(i))
    if plan.peak_sram_stage1 >= plan.peak_sram_stage2:
        s1 = plan_stage1(graph, plan)
        tile = max(plan.tiles, key=lambda t: max(t.working_sets))
        i = tile.working_sets.index(max(tile.working_sets))
        parts = {s1.sink: plan.stage1_buffer_bytes, **s1.holdings(i, tile)}
        return PeakBreakdown(plan.peak_sram_stage1, "stage1", s1.ops[i].name, (tile.row, tile.col), parts)
    start = len(plan.stage1_ops)
    i = max(range(start, len(layer_ws)), key=lambda j: (layer_ws[j], -j))
    return PeakBreakdown(layer_ws[i], "stage2", graph.ops[i].name, None, layer.holdings(i))


def pareto_front(plans: Iterable[PatchPlan]) -> list[PatchPlan]:
    """Plans not dominated in (peak SRAM, MAC overhead), by increasing peak. Of plans with equal
    figures the simplest stays (fewest blocks per patch, then the smallest grid), whatever the
    input order."""
    ordered = sorted(plans, key=lambda p: (p.peak, round(p.mac_overhead, 12), p.split, p.grid))
    front: list[PatchPlan] = []
    for p in ordered:
        if not front or p.mac_overhead < front[-1].mac_overhead - 1e-12:
            front.append(p)
    return front


def search_plans(graph: Graph, grids: Iterable = (2, 3, 4, 5, 6, 7, 8), splits: Iterable[int] | None = None,
                 sram_budget: int | None = None, max_overhead: float | None = None,
                 rules: MemoryRules = MemoryRules(), fusion: bool = False) -> tuple[PatchPlan | None, list[PatchPlan]]:
    """Search grids x splits (plus plain per-layer execution) and return (best, pareto front).

    With ``fusion`` every candidate also gets the per-block fusion its peak needs
    (:func:`with_fusion`), so grid, split and fusion are searched jointly; without it the plans
    use ``rules`` as given (by default no block fused: MCUNetV2's schedules).

    Best: with ``sram_budget`` the lowest MAC overhead among plans within the budget (and within
    ``max_overhead`` if given); otherwise the lowest peak within ``max_overhead``. Ties go to the
    other figure. ``best`` is None when no plan satisfies the limits. Grids or splits that do not
    fit the graph are skipped."""
    top = max_split(graph)
    split_list = list(range(1, top + 1)) if splits is None else [s for s in splits if 1 <= s <= top]
    grid_list = [parse_grid(g) for g in grids]
    fusable = fusable_blocks(graph) if fusion else []
    layer_ws = layer_working_sets(graph, rules)
    if fusable:
        pair = (layer_working_sets(graph, replace(rules, fused_blocks=())),
                layer_working_sets(graph, replace(rules, fused_blocks=tuple(fusable))))

        def make(grid, split):
            return plan_fused(graph, grid, split, rules, fusable, pair)
    else:
        def make(grid, split):
            return plan_patches(graph, grid, split, rules, layer_ws) if split else per_layer_plan(graph, rules)
    candidates = [make((1, 1), 0)]
    for split in split_list:
        _, h, w = graph.ops[graph.block_end(split - 1) - 1].out_shape
        for rows, cols in grid_list:
            if rows <= h and cols <= w:
                candidates.append(make((rows, cols), split))
    front = pareto_front(candidates)
    ok = [p for p in candidates if (sram_budget is None or p.peak <= sram_budget)
          and (max_overhead is None or p.mac_overhead <= max_overhead + 1e-12)]
    if not ok:
        return None, front
    if sram_budget is not None:
        best = min(ok, key=lambda p: (round(p.mac_overhead, 12), p.peak, p.split, p.grid))
    else:
        best = min(ok, key=lambda p: (p.peak, round(p.mac_overhead, 12), p.split, p.grid))
    return best, front
