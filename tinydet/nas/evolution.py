"""Evolutionary search over a :class:`~tinydet.nas.space.SearchSpace` under hard constraints.

Only feasible candidates ever enter the population: every new candidate (random, mutated or
crossed over) is drawn again until ``check(cand)`` says it fits, with a bounded number of tries.
The search is deterministic for a seed: one ``random.Random`` drives every choice, and its state
is saved with the population and every evaluation in a JSON state file after each generation
(written to a temporary file, then renamed), so a killed search resumes from its last finished
generation and ends with exactly the result of an uninterrupted run.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_write_json
from tinydet.nas.space import Candidate, SearchSpace

STATE_VERSION = 1

# check(cand) -> metrics dict with at least "feasible" (bool) and "peak_sram" (bytes)
CheckFn = Callable[[Candidate], dict]
# score(cand) -> accuracy estimate (higher is better), e.g. val map50 of the sub-network
ScoreFn = Callable[[Candidate], float]


@dataclass(frozen=True)
class EvolutionConfig:
    """Population size, generations, per-gene mutation probability, probability that a child is
    a crossover (else a mutation), fraction of the population kept as parents, tries per child."""

    population: int = 16
    generations: int = 4
    mutation_prob: float = 0.1
    crossover_prob: float = 0.5
    parent_ratio: float = 0.25
    seed: int = 0
    max_tries: int = 2000

    def __post_init__(self) -> None:
        if self.population < 2:
            raise TinydetError(f"search.population: expected an integer >= 2, got {self.population}")
        if self.generations < 0:
            raise TinydetError(f"search.generations: expected an integer >= 0, got {self.generations}")
        for name in ("mutation_prob", "crossover_prob", "parent_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise TinydetError(f"search.{name}: expected a number in [0, 1], got {getattr(self, name)}")


# --- genetic operators (pure given the rng) ------------------------------------------------------
def mutate(space: SearchSpace, cand: Candidate, rng: random.Random, prob: float) -> Candidate:
    """Resample each gene with probability ``prob`` (a deeper stage gets random new blocks)."""
    res = rng.choice(space.resolutions) if rng.random() < prob else cand.resolution
    width = rng.choice(space.widths) if rng.random() < prob else cand.width
    kernels, expands = [], []
    for s, stage in enumerate(space.stages):
        ks, es = list(cand.kernels[s]), list(cand.expands[s])
        if rng.random() < prob:
            d = rng.choice(stage.depths)
            while len(ks) < d:
                ks.append(rng.choice(space.stage_kernels(s)))
                es.append(rng.choice(space.stage_expands(s)))
            ks, es = ks[:d], es[:d]
        ks = [rng.choice(space.stage_kernels(s)) if rng.random() < prob else k for k in ks]
        es = [rng.choice(space.stage_expands(s)) if rng.random() < prob else e for e in es]
        kernels.append(tuple(ks))
        expands.append(tuple(es))
    depths = [len(k) for k in kernels]
    grid = rng.choice(space.grids) if rng.random() < prob else cand.grid
    split = rng.choice(space.split_choices(depths)) if rng.random() < prob else cand.split
    return Candidate(res, width, tuple(kernels), tuple(expands), grid, _fix_split(space, depths, grid, split, rng))


def crossover(space: SearchSpace, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
    """Each gene from either parent; a stage (its depth, kernels, expands) and the schedule (grid,
    split) are inherited as a whole so that they stay consistent."""
    pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
    stages = [pick((a.kernels[s], a.expands[s]), (b.kernels[s], b.expands[s])) for s in range(len(space.stages))]
    grid, split = pick((a.grid, a.split), (b.grid, b.split))
    depths = [len(k) for k, _ in stages]
    return Candidate(pick(a.resolution, b.resolution), pick(a.width, b.width), tuple(k for k, _ in stages),
                     tuple(e for _, e in stages), grid, _fix_split(space, depths, grid, split, rng))


def _fix_split(space: SearchSpace, depths: list[int], grid: int, split: int, rng: random.Random) -> int:
    if grid == 1:
        return 0
    choices = space.split_choices(depths)
    return split if split in choices else rng.choice(choices)


def pareto_front(points: list[dict]) -> list[dict]:
    """Entries with keys ``score`` and ``peak_sram`` that no other entry beats on both (higher
    score, lower SRAM), sorted by SRAM."""
    front = []
    for p in points:
        dominated = any(q["score"] >= p["score"] and q["peak_sram"] <= p["peak_sram"]
                        and (q["score"] > p["score"] or q["peak_sram"] < p["peak_sram"]) for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p["peak_sram"], -p["score"], p["key"]))


# --- state file ----------------------------------------------------------------------------------
def _rng_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data: list) -> random.Random:
    rng = random.Random()
    rng.setstate((data[0], tuple(data[1]), data[2]))
    return rng


class Evolution:
    """Evolutionary search; ``run()`` returns the result dict (best, pareto, history)."""

    def __init__(self, space: SearchSpace, check: CheckFn, score: ScoreFn | None, config: EvolutionConfig,
                 state_path: str | Path | None = None, fingerprint: dict | None = None,
                 progress: bool = True, constraint_text: str = ""):
        self.space, self.check, self.score, self.config = space, check, score, config
        self.state_path = Path(state_path) if state_path is not None else None
        # what must match for a resume to be valid (space, budgets, evolution settings, ...)
        self.fingerprint = {"space": space.to_dict(), "evolution": asdict(config), **(fingerprint or {})}
        self.progress = progress
        self.constraint_text = constraint_text
        self.rng = random.Random(config.seed)
        self.cache: dict[str, dict] = {}  # key -> {"candidate", "metrics", "score"}
        self.checked: dict[str, dict] = {}  # key -> metrics of every candidate checked (feasible or not)
        self.population: list[str] = []
        self.generation = -1  # last finished generation
        self.history: list[dict] = []

    # --- feasibility and evaluation -----------------------------------------------------------
    def _metrics(self, cand: Candidate) -> dict:
        key = cand.key()
        if key not in self.checked:
            self.checked[key] = self.check(cand)
        return self.checked[key]

    def _draw(self, make: Callable[[], Candidate], what: str, exclude: set[str] = frozenset()) -> Candidate:
        """Rejection sampling: the first candidate from ``make`` that satisfies the constraints and
        is not in ``exclude`` (a feasible duplicate is the fallback when the space is that small)."""
        fallback = None
        for _ in range(self.config.max_tries):
            cand = make()
            if self._metrics(cand)["feasible"]:
                if cand.key() not in exclude:
                    return cand
                fallback = fallback or cand
        if fallback is not None:
            return fallback
        smallest = self._metrics(self.space.smallest())
        raise TinydetError(
            f"search: no {what} candidate satisfies the constraints ({self.constraint_text or 'see budgets'}) "
            f"in {self.config.max_tries} tries; the smallest network of the space needs "
            f"{_describe_metrics(smallest)} — raise the budgets or shrink search.widths/resolutions")

    def check_space(self) -> Candidate:
        """One feasible candidate, or the clear error that the space has none (call it before
        expensive work; it uses its own random stream, so the search itself is unchanged)."""
        rng = random.Random(self.config.seed + 7919)
        return self._draw(lambda: self.space.sample(rng), "random")

    def _evaluate(self, cand: Candidate) -> dict:
        key = cand.key()
        if key not in self.cache:
            metrics = self._metrics(cand)
            if not metrics["feasible"] or self.score is None:
                raise RuntimeError("only feasible candidates are evaluated, and only with a score function")
            self.cache[key] = {"candidate": cand.to_dict(), "metrics": metrics, "score": float(self.score(cand))}
        return self.cache[key]

    def _ranked(self, keys: list[str]) -> list[str]:
        # higher score first; ties: less SRAM, then the key (a total order keeps it deterministic)
        return sorted(set(keys), key=lambda k: (-self.cache[k]["score"], self.cache[k]["metrics"]["peak_sram"], k))

    # --- state -------------------------------------------------------------------------------
    def save(self) -> None:
        if self.state_path is None:
            return
        atomic_write_json(self.state_path, {
            "version": STATE_VERSION, "fingerprint": self.fingerprint, "generation": self.generation,
            "population": self.population, "rng": _rng_to_json(self.rng), "cache": self.cache,
            "checked": self.checked, "history": self.history})

    def load(self) -> bool:
        """Restore a saved state (True) or leave a fresh one (False: no state file yet)."""
        if self.state_path is None or not self.state_path.exists():
            return False
        try:
            data = json.loads(self.state_path.read_text())
            if data.get("version") != STATE_VERSION:
                raise TinydetError(f"{self.state_path}: version: expected {STATE_VERSION}, got {data.get('version')!r}")
            if data["fingerprint"] != json.loads(json.dumps(self.fingerprint)):
                changed = sorted(k for k in set(data["fingerprint"]) | set(self.fingerprint)
                                 if data["fingerprint"].get(k) != json.loads(json.dumps(self.fingerprint.get(k))))
                raise TinydetError(f"{self.state_path}: fingerprint: the saved search used other settings "
                                   f"({', '.join(changed)}); start a new --out folder or drop --resume")
            self.generation, self.population = int(data["generation"]), list(data["population"])
            self.rng, self.cache, self.checked = _rng_from_json(data["rng"]), data["cache"], data["checked"]
            self.history = data["history"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TinydetError(f"{self.state_path}: not a valid search state ({exc.__class__.__name__}: {exc})") from None
        return True

    # --- the search --------------------------------------------------------------------------
    def step(self) -> None:
        """Run the next generation (generation 0 = random initial population) and save the state."""
        cfg, rng, space = self.config, self.rng, self.space
        if self.generation < 0:
            cands: list[Candidate] = []
            for _ in range(cfg.population):
                cands.append(self._draw(lambda: space.sample(rng), "random", {c.key() for c in cands}))
            for c in cands:
                self._evaluate(c)
            self.population = self._ranked([c.key() for c in cands])
        else:
            n_parents = max(2, int(round(cfg.parent_ratio * cfg.population)))
            parents = [Candidate.from_dict(self.cache[k]["candidate"]) for k in self.population[:n_parents]]
            children = []
            while len(children) < cfg.population - n_parents:
                if rng.random() < cfg.crossover_prob:
                    make = lambda: mutate(space, crossover(space, *rng.sample(parents, 2), rng), rng,  # noqa: E731
                                          cfg.mutation_prob)
                else:
                    make = lambda: mutate(space, rng.choice(parents), rng, cfg.mutation_prob)  # noqa: E731
                taken = {c.key() for c in parents + children}
                children.append(self._draw(make, "child", taken))
            for c in children:
                self._evaluate(c)
            self.population = self._ranked([p.key() for p in parents] + [c.key() for c in children])
        self.generation += 1
        top = self.cache[self.population[0]]
        self.history.append({"generation": self.generation, "best_score": top["score"],
                             "best": top["candidate"], "evaluated": len(self.cache)})
        self.save()

    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Run (or, with ``resume``, continue) up to ``config.generations`` generations after the
        initial one; ``stop_after=k`` stops once generation k is done (as a kill would)."""
        if resume:
            self.load()
        elif self.state_path is not None and self.state_path.exists():
            self.state_path.unlink()
        total = self.config.generations + 1
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.generation + 1, desc="search", unit="gen", file=sys.stderr,
                       dynamic_ncols=True)
        try:
            while self.generation + 1 < total:
                if stop_after is not None and self.generation >= stop_after:
                    break
                self.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=f"{self.history[-1]['best_score']:.4f}", evaluated=len(self.cache))
        finally:
            if bar is not None:
                bar.close()
        return self.result()

    def result(self) -> dict:
        """Best candidate (highest score over everything evaluated), Pareto front, history."""
        if not self.cache:
            raise TinydetError("search: nothing evaluated yet")
        ranked = self._ranked(list(self.cache))
        points = [{"key": k, "score": self.cache[k]["score"], "peak_sram": self.cache[k]["metrics"]["peak_sram"],
                   "candidate": self.cache[k]["candidate"], "metrics": self.cache[k]["metrics"]} for k in ranked]
        best = self.cache[ranked[0]]
        return {"best": Candidate.from_dict(best["candidate"]), "best_score": best["score"],
                "best_metrics": best["metrics"], "pareto": pareto_front(points), "evaluated": points,
                "history": self.history, "generation": self.generation}


def _describe_metrics(m: dict) -> str:
    parts = []
    for key, unit in (("peak_sram", "B SRAM"), ("flash_bytes", "B Flash"), ("mac_overhead", " MAC overhead")):
        if key in m:
            parts.append(f"{m[key]:.3f}{unit}" if key == "mac_overhead" else f"{m[key]:,}{unit}")
    return ", ".join(parts) or "unknown resources"
