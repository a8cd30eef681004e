"""Fused, row-streamed inverted residuals (pure): which blocks can be fused and their exact SRAM.

An inverted residual ``expand (1x1) -> depthwise (k x k, stride s) -> project (1x1) [+ shortcut]``
run op by op needs the whole expanded tensor E (and the whole depthwise output D). Fused, it runs
row by row of its output Y and neither E nor D ever exists whole:

    for each output row y (top to bottom):
        expand the input rows the depthwise window of row y needs that are not expanded yet
            (input row j -> E row j, written into a ring of k rows; each row is expanded once)
        for each output pixel x of row y:
            depthwise over the k x k window of the ring -> one D pixel (C_e bytes)
            project that pixel (1x1) [+ the shortcut pixel] -> Y[y, x]

No MAC is recomputed: every E row is computed once (rows already expanded stay in the ring while
a later output row still needs them), so a fused block costs exactly the MACs of its three ops.
With no expansion (``expand == 1``, e.g. MobileNetV2's block 1) the depthwise reads the input
rows directly and there is no ring.

Working set (bytes, int8, rows and columns of the regions the schedule gives the block: whole
maps per layer, a tile's regions in stage 1) while the block runs:

    others + footprint(X, Y) + ring + pixel

- ``others``: every tensor alive across the block (the stage-1 output buffer is added by the
  planner, like for unfused ops);
- ``ring = min(k, rows(E)) * cols(E) * C_e``: row ``y`` reads E rows ``y*s - p .. y*s - p + k - 1``;
  the next row reuses ``k - s`` of them and needs ``s`` new ones, which overwrite the ``s`` oldest
  (``s <= k`` always holds for a depthwise with no skipped rows), so k rows are necessary (the
  window of one output row) and sufficient; 0 without expansion;
- ``pixel = C_e``: the one depthwise output pixel the projection consumes;
- ``footprint(X, Y)`` of the block input X and output Y:
  - Y is the stage-1 sink (written into the stage-1 output buffer): ``|X|``;
  - fused residual (shortcut X dies with the block, rule on): Y row y is written over X row y
    after that row was read as the shortcut; X row y was already expanded (E rows up to
    ``y + p`` are made before row y), and rows below it are untouched: ``|X|``. Only with an
    expansion: without one the depthwise window of row y + 1 still reads X row y from X itself,
    so such a block keeps X and Y apart (``|X| + |Y|``);
  - streaming overlap (X dies with the block, is no network input, no shortcut): X and Y share
    one buffer, Y at its start and X ``d`` bytes in. When Y row y is written, X rows below
    ``f(y)`` are dead: ``f(y) = min(y*s - p + k, X_end)`` with an expansion (those rows are in
    the ring), ``max(y*s - p, X_start)`` without one (the depthwise still reads rows from
    ``y*s - p`` on). Y row y ends at ``(y + 1) * R_y`` bytes and X row f(y) starts at
    ``d + f(y) * R_x`` (rows relative to each region's start, R = row bytes), so
    ``d = max(0, max_y((y + 1) * R_y - f(y) * R_x))`` over the rows y that still have a live input
    row (``f(y) < X_end``) is the least offset that never overwrites a live input row, and the
    footprint is ``max(d + |X|, |Y|)``;
  - otherwise (X lives on, is pinned, or is the network input, which is never overwritten):
    ``|X| + |Y|``.

A fused block replaces the working sets of its two or three ops by this one figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from tinydet.arch.graph import Graph, Op
from tinydet.errors import TinydetError
from tinydet.geometry import Rect


@dataclass(frozen=True)
class FusedBlock:
    """An inverted residual that can run fused: op indices (in its op sequence) of the expansion
    (None when the block has none), the depthwise and the projection."""

    block: int
    expand: int | None
    dw: int
    project: int

    @property
    def first(self) -> int:
        return self.dw if self.expand is None else self.expand

    @property
    def indices(self) -> range:
        return range(self.first, self.project + 1)


@dataclass(frozen=True)
class FusedCost:
    """The working set of one fused block and its parts (bytes)."""

    others: int  # tensors alive across the block
    input: int  # |X|
    output: int  # |Y| where it adds to the footprint (0 when written in place or to the sink)
    ring: int
    pixel: int
    overlap: int  # bytes the streaming overlap saves (|X| + |Y| - footprint), 0 when not used

    @property
    def total(self) -> int:
        return self.others + self.input + self.output + self.ring + self.pixel - self.overlap

    def parts(self) -> dict[str, int]:
        """Named parts for reports: what the block holds besides the tensors alive across it."""
        return {"input": self.input, "output": self.output - self.overlap, "ring": self.ring, "pixel": self.pixel}


def block_ops(ops: Sequence[Op], block: int) -> FusedBlock | None:
    """The fusable inverted residual ``block`` in ``ops`` (None if it is not one): consecutive ops
    ``[expand] -> dw -> project`` chained through their only inputs, a 1x1 projection, a
    depthwise whose stride is at most its kernel."""
    idx = [i for i, op in enumerate(ops) if op.block == block and op.role in ("expand", "dw", "project")]
    roles = [ops[i].role for i in idx]
    if roles not in (["expand", "dw", "project"], ["dw", "project"]) or idx != list(range(idx[0], idx[0] + len(idx))):
        return None
    chain = [ops[i] for i in idx]
    for prev, nxt in zip(chain, chain[1:]):
        if nxt.inputs[0] != prev.output:
            return None
    dw, proj = chain[-2], chain[-1]
    if dw.kind != "dwconv" or dw.groups != dw.in_shape[0] or dw.stride > dw.kernel or proj.kernel != 1 or proj.stride != 1:
        return None
    if len(chain) == 3 and (chain[0].kernel != 1 or chain[0].stride != 1):
        return None
    return FusedBlock(block, idx[0] if len(chain) == 3 else None, idx[-2], idx[-1])


def fusable_blocks(graph: Graph) -> list[int]:
    """Backbone blocks of ``graph`` that can run fused."""
    return [b for b in range(graph.num_blocks) if block_ops(graph.ops, b) is not None]


def resolve(graph: Graph, ops: Sequence[Op], blocks: Sequence[int], readers_outside: Callable[[str], bool]) -> tuple[FusedBlock, ...]:
    """The :class:`FusedBlock` of every block of ``blocks`` that lies in ``ops`` (blocks outside
    this op sequence are skipped); a block that is no fusable inverted residual of ``graph``, or
    whose expanded / depthwise tensor is read outside the block (``readers_outside``), is a
    one-line error."""
    valid = set(fusable_blocks(graph))
    out = []
    for b in sorted(set(blocks)):
        if b not in valid:
            raise TinydetError(f"rules.fused_blocks: block {b} of arch {graph.arch} is not a fusable inverted residual; "
                               f"expected blocks among {sorted(valid)}")
        fb = block_ops(ops, b)
        if fb is None:
            continue
        for i in list(fb.indices)[:-1]:
            if readers_outside(ops[i].output):
                raise TinydetError(f"rules.fused_blocks: block {b}: tensor {ops[i].output} is read outside the block, "
                                   "so it cannot be streamed; expected a block whose inner tensors only the block reads")
        out.append(fb)
    return tuple(out)


def ring_rows(dw: Op, e_rows: int, shortfall: int = 0) -> int:
    """Rows of the expanded tensor the ring holds: the depthwise kernel height (at most the rows the
    block's region has). ``shortfall`` shortens it (the negative control of the tests)."""
    return max(1, min(dw.kernel, e_rows) - shortfall)


def first_live_row(dw: Op, y: int, expanded: bool, x_rect: Rect) -> int:
    """First input row (map coordinates) still needed when output row ``y`` is written."""
    top = y * dw.stride - dw.padding
    row = top + dw.kernel if expanded else top
    return min(max(row, x_rect.y0), x_rect.y1)


def overlap_offset(dw: Op, expanded: bool, x_rect: Rect, x_row: int, y_rect: Rect, y_row: int) -> int:
    """Least byte offset ``d`` of X behind Y in a shared buffer such that writing Y row by row never
    overwrites a live input row (module docstring); ``x_row``/``y_row`` are bytes per row."""
    d = 0
    for y in range(y_rect.y0, y_rect.y1):
        live = first_live_row(dw, y, expanded, x_rect)
        if live < x_rect.y1:  # once every input row is dead, Y may run past X's start freely
            d = max(d, (y - y_rect.y0 + 1) * y_row - (live - x_rect.y0) * x_row)
    return d


def fused_cost(ops: Sequence[Op], fb: FusedBlock, rects: Mapping[str, Rect], channels: Mapping[str, int],
               alive_first: Sequence[str], *, sink: bool, x_dies: bool, x_overwritable: bool,
               fused_residual: bool) -> FusedCost:
    """Working set of fused block ``fb`` (module docstring). ``rects[t]`` is the region tensor t's
    buffer holds, ``channels[t]`` its channels; ``alive_first`` the tensors alive at the block's
    first op; ``x_dies`` whether the input dies with the block; ``x_overwritable`` whether its
    bytes may be reused (not the network input, not pinned)."""
    dw, proj = ops[fb.dw], ops[fb.project]
    x = ops[fb.first].inputs[0]
    inner = {ops[i].output for i in fb.indices}
    nbytes = lambda t: channels[t] * rects[t].area  # noqa: E731
    others = sum(nbytes(t) for t in alive_first if t != x and t not in inner)
    x_rect, y_rect = rects[x], rects[proj.output]
    expanded = fb.expand is not None
    e_rect = rects[dw.inputs[0]]
    ring = ring_rows(dw, e_rect.h) * e_rect.w * dw.in_shape[0] if expanded else 0
    pixel = dw.out_shape[0]
    bx, by = nbytes(x), nbytes(proj.output)
    if sink:
        return FusedCost(others, bx, 0, ring, pixel, 0)
    if proj.add is not None and fused_residual and x_dies and x_overwritable and expanded:
        return FusedCost(others, bx, 0, ring, pixel, 0)
    if proj.add is None and x_dies and x_overwritable:
        d = overlap_offset(dw, expanded, x_rect, x_rect.w * channels[x], y_rect, y_rect.w * channels[proj.output])
        footprint = max(d + bx, by)
        return FusedCost(others, bx, by, ring, pixel, bx + by - footprint)
    return FusedCost(others, bx, by, ring, pixel, 0)
