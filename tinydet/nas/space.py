"""The joint search space: network (depth, kernel, expand, width, resolution) + schedule (grid, split).

Pure: no torch. A :class:`SearchSpace` is a MobileNetV2-like macro structure (stem conv, then
stages of inverted-residual blocks with a fixed stride pattern and output channels); a
:class:`Candidate` picks, per stage, how many blocks run and each running block's kernel and
expand ratio, plus a width multiplier, an input resolution, a patch grid and a split point.
``Candidate.to_spec(space)`` gives an ordinary :class:`~tinydet.arch.ArchSpec`, so a search result
is trained, exported and deployed like any preset.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from tinydet.arch.spec import ArchSpec, BlockSpec
from tinydet.errors import TinydetError


@dataclass(frozen=True)
class StageSpace:
    """One stage: ``out`` channels at width 1.0, stride of its first block, depth choices.
    ``kernels``/``expands`` override the space-wide choices for this stage (e.g. MobileNetV2's
    first stage is fixed at expand 1, kernel 3)."""

    out: int
    stride: int
    depths: tuple[int, ...]
    kernels: tuple[int, ...] | None = None
    expands: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ClassifierHead:
    """The end of a classification network in the search (``task: classify``): global average
    pool + fully connected to ``num_classes`` (where a detector has its :class:`HeadSpec`)."""

    num_classes: int


@dataclass(frozen=True)
class SearchSpace:
    """Macro structure and the choices of every searchable dimension.

    ``head_stages`` are the stages whose last block feeds the detection head (one head scale
    each). ``max_split_stage`` is the last stage the per-patch stage may end in: the split point
    is a block count K (stem = block 1, as in docs/CONTRACTS.md) up to the end of that stage.
    Grid 1 means per-layer execution (no patches); its split is 0.
    """

    stages: tuple[StageSpace, ...]
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    widths: tuple[float, ...] = (0.35, 0.5, 0.75)
    resolutions: tuple[int, ...] = (128, 160, 192, 224)
    grids: tuple[int, ...] = (1, 2, 3, 4)
    stem_out: int = 32
    stem_kernel: int = 3
    head_stages: tuple[int, ...] = (4, 6)
    max_split_stage: int = 3
    min_split: int = 2

    def __post_init__(self) -> None:
        if not self.stages:
            raise TinydetError("search: the space has no stages")
        for name in ("kernels", "expands", "widths", "resolutions", "grids"):
            if not getattr(self, name):
                raise TinydetError(f"search.{name}: expected a non-empty list of choices")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise TinydetError(f"search.kernels: expected odd positive kernel sizes, got {list(self.kernels)}")
        if any(g < 1 for g in self.grids):
            raise TinydetError(f"search.grids: expected positive grid sizes, got {list(self.grids)}")
        for i, stage in enumerate(self.stages):
            if not stage.depths or min(stage.depths) < 1:
                raise TinydetError(f"search.stages[{i}].depths: expected positive depths, got {list(stage.depths)}")
        if not self.head_stages or any(not 0 <= s < len(self.stages) for s in self.head_stages):
            raise TinydetError(f"search.head_stages: expected stage indices in 0..{len(self.stages) - 1}, "
                               f"got {list(self.head_stages)}")
        if not 0 <= self.max_split_stage < len(self.stages):
            raise TinydetError(f"search.max_split_stage: expected a stage index in 0..{len(self.stages) - 1}, "
                               f"got {self.max_split_stage}")

    # --- per-stage choices -------------------------------------------------------------------
    def stage_kernels(self, s: int) -> tuple[int, ...]:
        return self.stages[s].kernels or self.kernels

    def stage_expands(self, s: int) -> tuple[int, ...]:
        return self.stages[s].expands or self.expands

    def split_choices(self, depths: Sequence[int]) -> tuple[int, ...]:
        """Valid split block counts K for a network with these stage depths."""
        last = 1 + sum(depths[: self.max_split_stage + 1])
        return tuple(range(min(self.min_split, last), last + 1))

    # --- the largest network (the supernet's shape) --------------------------------------------
    def largest(self) -> "Candidate":
        """Every dimension at its maximum (the supernet's full network)."""
        depths = [max(st.depths) for st in self.stages]
        grid = max(self.grids)
        return Candidate(
            resolution=max(self.resolutions), width=max(self.widths),
            kernels=tuple(tuple([max(self.stage_kernels(s))] * d) for s, d in enumerate(depths)),
            expands=tuple(tuple([max(self.stage_expands(s))] * d) for s, d in enumerate(depths)),
            grid=grid, split=max(self.split_choices(depths)) if grid > 1 else 0)

    def smallest(self) -> "Candidate":
        """Every network dimension at its minimum (schedule: per-layer)."""
        depths = [min(st.depths) for st in self.stages]
        grid = min(self.grids)
        return Candidate(
            resolution=min(self.resolutions), width=min(self.widths),
            kernels=tuple(tuple([min(self.stage_kernels(s))] * d) for s, d in enumerate(depths)),
            expands=tuple(tuple([min(self.stage_expands(s))] * d) for s, d in enumerate(depths)),
            grid=grid, split=min(self.split_choices(depths)) if grid > 1 else 0)

    # --- sampling and validation -------------------------------------------------------------
    def sample(self, rng: random.Random) -> "Candidate":
        """A uniformly random candidate (each dimension independently)."""
        depths = [rng.choice(st.depths) for st in self.stages]
        kernels = tuple(tuple(rng.choice(self.stage_kernels(s)) for _ in range(d)) for s, d in enumerate(depths))
        expands = tuple(tuple(rng.choice(self.stage_expands(s)) for _ in range(d)) for s, d in enumerate(depths))
        grid = rng.choice(self.grids)
        split = rng.choice(self.split_choices(depths)) if grid > 1 else 0
        return Candidate(rng.choice(self.resolutions), rng.choice(self.widths), kernels, expands, grid, split)

    def validate(self, cand: "Candidate", where: str = "candidate") -> "Candidate":
        """Raise a TinydetError naming the first field of ``cand`` outside this space."""
        if cand.resolution not in self.resolutions:
            raise TinydetError(f"{where}.resolution: expected one of {list(self.resolutions)}, got {cand.resolution}")
        if cand.width not in self.widths:
            raise TinydetError(f"{where}.width: expected one of {list(self.widths)}, got {cand.width}")
        if len(cand.kernels) != len(self.stages) or len(cand.expands) != len(self.stages):
            raise TinydetError(f"{where}: expected {len(self.stages)} stages, got {len(cand.kernels)}")
        for s, stage in enumerate(self.stages):
            if len(cand.kernels[s]) not in stage.depths or len(cand.expands[s]) != len(cand.kernels[s]):
                raise TinydetError(f"{where}.kernels[{s}]: expected a depth in {list(stage.depths)}, "
                                   f"got {len(cand.kernels[s])} kernels and {len(cand.expands[s])} expands")
            for k in cand.kernels[s]:
                if k not in self.stage_kernels(s):
                    raise TinydetError(f"{where}.kernels[{s}]: expected kernels in {list(self.stage_kernels(s))}, got {k}")
            for e in cand.expands[s]:
                if e not in self.stage_expands(s):
                    raise TinydetError(f"{where}.expands[{s}]: expected expands in {list(self.stage_expands(s))}, got {e}")
        if cand.grid not in self.grids:
            raise TinydetError(f"{where}.grid: expected one of {list(self.grids)}, got {cand.grid}")
        splits = self.split_choices(cand.depths) if cand.grid > 1 else (0,)
        if cand.split not in splits:
            raise TinydetError(f"{where}.split: expected one of {list(splits)} for grid {cand.grid}, got {cand.split}")
        return cand

    # --- candidate -> spec -------------------------------------------------------------------
    def to_spec(self, cand: "Candidate", name: str = "searched") -> ArchSpec:
        """The candidate's network as an ordinary detector backbone spec."""
        blocks = [BlockSpec("conv", self.stem_out, kernel=self.stem_kernel, stride=2)]
        head_from = []
        for s, stage in enumerate(self.stages):
            for j, (k, e) in enumerate(zip(cand.kernels[s], cand.expands[s])):
                blocks.append(BlockSpec("mbconv", stage.out, kernel=k, stride=stage.stride if j == 0 else 1, expand=e))
            if s in self.head_stages:
                head_from.append(len(blocks) - 1)
        return ArchSpec(name=name, blocks=tuple(blocks), width_mult=cand.width, head_from=tuple(head_from),
                        description=f"searched by tinydet search: {cand.describe()}")

    def slot_of(self, depths: Sequence[int]) -> list[int]:
        """For a network with these depths, the largest network's block index of each block."""
        slots, start = [0], 1
        for stage, d in zip(self.stages, depths):
            slots.extend(range(start, start + d))
            start += max(stage.depths)
        return slots

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        data = dict(data)
        data["stages"] = tuple(StageSpace(
            out=int(st["out"]), stride=int(st["stride"]), depths=tuple(st["depths"]),
            kernels=tuple(st["kernels"]) if st.get("kernels") else None,
            expands=tuple(st["expands"]) if st.get("expands") else None) for st in data["stages"])
        for key in ("kernels", "expands", "resolutions", "grids", "head_stages"):
            if key in data:
                data[key] = tuple(int(v) for v in data[key])
        if "widths" in data:
            data["widths"] = tuple(float(v) for v in data["widths"])
        return cls(**data)


# MobileNetV2's macro structure (t, c, n, s rows) with MCUNet/OFA-style depth choices; the first
# stage keeps torchvision's expand 1, kernel 3. Heads read stride 16 (96 ch) and stride 32 (320 ch).
MBV2_STAGES = (
    StageSpace(16, 1, (1,), kernels=(3,), expands=(1,)),
    StageSpace(24, 2, (1, 2, 3)),
    StageSpace(32, 2, (2, 3, 4)),
    StageSpace(64, 2, (2, 3, 4)),
    StageSpace(96, 1, (2, 3)),
    StageSpace(160, 2, (2, 3)),
    StageSpace(320, 1, (1,)),
)

def space_from_config(search: dict[str, Any], where: str = "search") -> SearchSpace:
    """The space described by a config's ``search`` section (keys it does not set keep MobileNetV2's
    defaults). ``depths`` (optional) is one list of depth choices per stage; ``head_stages`` the
    stages whose last block feeds a head scale (default [4, 6]: strides 16 and 32; [2, 4] gives
    strides 8 and 16 for small objects)."""
    kwargs: dict[str, Any] = {}
    for key in ("kernels", "expands", "resolutions", "grids"):
        if search.get(key) is not None:
            kwargs[key] = tuple(_ints(search[key], f"{where}.{key}"))
    if search.get("widths") is not None:
        widths = search["widths"]
        if not isinstance(widths, (list, tuple)) or not all(isinstance(w, (int, float)) and w > 0 for w in widths):
            raise TinydetError(f"{where}.widths: expected a list of positive numbers, got {widths!r}")
        kwargs["widths"] = tuple(float(w) for w in widths)
    if search.get("head_stages") is not None:
        kwargs["head_stages"] = tuple(_ints_ge0(search["head_stages"], f"{where}.head_stages"))
    for key in ("stem_out", "max_split_stage", "min_split"):
        if search.get(key) is not None:
            kwargs[key] = _ints([search[key]], f"{where}.{key}")[0]
    stages = MBV2_STAGES
    if search.get("depths") is not None:
        depths = search["depths"]
        if not isinstance(depths, (list, tuple)) or len(depths) != len(stages):
            raise TinydetError(f"{where}.depths: expected {len(stages)} lists of depth choices (one per stage), got {depths!r}")
        stages = tuple(StageSpace(st.out, st.stride, tuple(_ints(d if isinstance(d, (list, tuple)) else [d],
                                                                   f"{where}.depths[{i}]")), st.kernels, st.expands)
                       for i, (st, d) in enumerate(zip(stages, depths)))
    if kwargs.get("head_stages") and max(kwargs["head_stages"]) >= len(stages):
        raise TinydetError(f"{where}.head_stages: expected stage indices in 0..{len(stages) - 1}, "
                           f"got {list(kwargs['head_stages'])}")
    # stages after the last head feed nothing: they are not part of the detector, nor of the space
    last = max(kwargs.get("head_stages", SearchSpace.head_stages))
    return SearchSpace(stages=stages[: last + 1], **kwargs)


def _ints_ge0(values: Any, where: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise TinydetError(f"{where}: expected a non-empty list of stage indices (0-based), got {values!r}")
    return sorted(set(values))


def _ints(values: Any, where: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise TinydetError(f"{where}: expected a non-empty list of positive integers, got {values!r}")
    return list(values)


@dataclass(frozen=True)
class Candidate:
    """One point of the space. ``kernels[s]``/``expands[s]`` list the running blocks of stage s
    (so the depth is their length and equal networks have equal candidates)."""

    resolution: int
    width: float
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]
    grid: int = 1
    split: int = 0

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.kernels)

    def to_spec(self, space: SearchSpace, name: str = "searched") -> ArchSpec:
        """The network of this candidate in ``space`` as an :class:`ArchSpec`."""
        return space.to_spec(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "width": self.width, "kernels": [list(k) for k in self.kernels],
                "expands": [list(e) for e in self.expands], "grid": self.grid, "split": self.split}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidate":
        try:
            return cls(resolution=int(data["resolution"]), width=float(data["width"]),
                       kernels=tuple(tuple(int(k) for k in ks) for ks in data["kernels"]),
                       expands=tuple(tuple(int(e) for e in es) for es in data["expands"]),
                       grid=int(data.get("grid", 1)), split=int(data.get("split", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise TinydetError(f"candidate: expected resolution, width, kernels, expands, grid, split; "
                               f"got {data!r} ({exc})") from None

    def key(self) -> str:
        """A canonical string: the cache key in the search state."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        return (f"res {self.resolution}, width {self.width}, depths {list(self.depths)}, "
                f"grid {self.grid}x{self.grid}, split {self.split}")
