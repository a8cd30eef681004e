"""The architecture + patch-schedule search (``tinydet search``): supernet training, evolution
under SRAM / Flash / MAC-overhead budgets, and the result folder.

Writes ``OUT/best_arch.yaml`` (a spec for ``model.arch``), ``schedule.json`` (grid, split, peaks),
``pareto.json``, ``pareto.png``, ``state.json`` (resumable), ``supernet.ckpt`` and
``best_subnet.pt``. The state files are written atomically as the search goes; the result files
appear together in one atomic swap of the whole folder, so a kill never leaves new results beside
old ones.

``task: detect`` scores candidates by val map50 (detection supernet); ``task: classify`` by val
top-1 (a classifier supernet on an ImageFolder / VWW set; the budgets count the pool + fc).
The supernet trains with the config's ``train.accelerator / devices / strategy / num_nodes``
(Lightning DDP); under DDP every process trains, and only rank 0 searches and writes.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinydet.errors import TinydetError
from tinydet.io.atomic import atomic_open, atomic_torch_save, atomic_write_json, update_dir

#: the files of a finished search, written together (the rest of OUT is the resumable state)
RESULT_FILES = ("best_arch.yaml", "best_subnet.pt", "schedule.json", "pareto.json", "pareto.png")


def run_search(config: str, sram: int, flash: int, max_overhead: float | None, out: Path, resume: bool = False,
               latency_table: str | None = None, overrides: list[str] | tuple = (), progress: bool = True,
               stop_after: int | None = None) -> dict:
    """The whole search (see the module docstring); ``stop_after=k`` stops after generation k as
    a killed run would (for tests). Returns the result dict the CLI prints."""
    import torch

    from tinydet.arch.spec import HeadSpec, save_spec
    from tinydet.data.datamodule import DetectionDataModule
    from tinydet.nas.constraints import Budget, LatencyTable, evaluate_constraints
    from tinydet.nas.estimator import SubnetEvaluator, load_supernet, save_supernet, scaled_anchors, train_supernet
    from tinydet.nas.evolution import Evolution, EvolutionConfig
    from tinydet.nas.space import ClassifierHead, space_from_config
    from tinydet.nas.supernet import Supernet, extract
    from tinydet.schedule import MemoryRules
    from tinydet.config import load_config, to_dict

    cfg = load_config(config, overrides)
    source = cfg.source
    s = cfg["search"]
    space = space_from_config(s, f"{source}: search")
    budget = Budget(sram=sram, flash=flash,
                    max_overhead=float(cfg["export"]["max_overhead"] if max_overhead is None else max_overhead))
    if budget.max_overhead < 0:
        raise TinydetError(f"--max-overhead: expected a number >= 0, got {budget.max_overhead}")
    latency = LatencyTable.load(latency_table) if latency_table else None
    classify = cfg["task"] == "classify"
    figure = "val_top1" if classify else "val_map50"
    anchors = None if classify else cfg["model"]["anchors"]
    if not classify and len(anchors) != len(space.head_stages):
        raise TinydetError(f"{source}: model.anchors: the search space has {len(space.head_stages)} head scales "
                           f"(search.head_stages), got anchors for {len(anchors)}")
    from tinydet.arch.graph import parse_resolution

    base_res = parse_resolution(cfg["model"]["resolution"])
    if base_res[0] != base_res[1]:
        raise TinydetError(f"{source}: model.resolution: the search uses square inputs, got {base_res[0]}x{base_res[1]}")
    base_res = base_res[0]
    train_cfg = cfg["train"]
    seed = int(s["seed"])
    if classify:
        from tinydet.data.datamodule import ClassificationDataModule

        dm = ClassificationDataModule(cfg["data"], max(space.resolutions), batch_size=int(train_cfg["batch_size"]),
                                      num_workers=int(train_cfg["num_workers"]), seed=seed, source=source)
        head = ClassifierHead(num_classes=len(dm.class_names))
    else:
        dm = DetectionDataModule(cfg["data"], max(space.resolutions), batch_size=int(train_cfg["batch_size"]),
                                 num_workers=int(train_cfg["num_workers"]), seed=seed, source=source)
        head_cfg = cfg["model"]["head"]
        head = HeadSpec(num_classes=len(dm.class_names), num_anchors=int(head_cfg["num_anchors"]),
                        channels=int(head_cfg["channels"]), kernel=int(head_cfg["kernel"]))
    class_names = dm.class_names
    rules = MemoryRules()
    evo_cfg = EvolutionConfig(population=int(s["population"]), generations=int(s["generations"]),
                              mutation_prob=float(s["mutation_prob"]), crossover_prob=float(s["crossover_prob"]),
                              parent_ratio=float(s.get("parent_ratio", 0.25)), seed=seed,
                              max_tries=int(s.get("max_tries", 2000)))

    def check(cand):
        return evaluate_constraints(cand, space, head, budget, rules, latency, fusion=bool(s["fusion"]))

    if out.exists() and not out.is_dir():
        raise TinydetError(f"--out {out}: expected a folder, but it is a file")
    out.mkdir(parents=True, exist_ok=True)
    supernet_meta = {"task": cfg["task"], "space": space.to_dict(), "head": asdict(head),
                     "data": to_dict(cfg["data"]), "train": to_dict(train_cfg), "anchors": to_dict(anchors),
                     "base_resolution": base_res, "epochs": int(s["supernet_epochs"]), "seed": seed,
                     "n_random": int(s.get("n_random", 2)), "max_steps": int(s.get("supernet_max_steps", -1))}
    evaluator_cfg = {"recal_batches": int(s.get("recal_batches", 4)), "eval": to_dict(cfg["eval"]),
                     "max_val_images": int(s.get("max_val_images", 0))}
    # the score (supernet accuracy) is attached once the supernet is trained
    evo = Evolution(space, check, None, evo_cfg, out / "state.json", progress=progress,
                    fingerprint={"budget": vars(budget), "supernet": supernet_meta, "evaluator": evaluator_cfg,
                                 "latency_table": str(latency_table) if latency_table else None},
                    constraint_text=budget.describe())
    # fail fast, before any training: a state from other settings, or no network fits the budgets
    if resume:
        evo.load()
    evo.check_space()

    torch.manual_seed(seed)
    supernet = Supernet(space, head)
    ckpt = out / "supernet.ckpt"
    if not (resume and load_supernet(supernet, ckpt, supernet_meta)):
        dm.setup("fit")
        trained = train_supernet(supernet, dm, anchors, base_res, len(class_names), to_dict(train_cfg),
                                 epochs=supernet_meta["epochs"], seed=seed, n_random=supernet_meta["n_random"],
                                 max_steps=supernet_meta["max_steps"], progress=progress)
        if trained["global_rank"] != 0:
            return None  # DDP: the other processes only trained; rank 0 searches and writes
        save_supernet(supernet, ckpt, supernet_meta, trained)
    if classify:
        from tinydet.nas.estimator import SubnetClassifyEvaluator

        evaluator = SubnetClassifyEvaluator(supernet, cfg["data"], recal_batches=evaluator_cfg["recal_batches"],
                                            batch_size=int(train_cfg["batch_size"]), seed=seed, source=source,
                                            max_val_images=evaluator_cfg["max_val_images"])
    else:
        evaluator = SubnetEvaluator(supernet, cfg["data"], anchors, base_res, evaluator_cfg["eval"],
                                    recal_batches=evaluator_cfg["recal_batches"],
                                    batch_size=int(train_cfg["batch_size"]), seed=seed, source=source,
                                    max_val_images=evaluator_cfg["max_val_images"])
    evo.score = evaluator
    result = evo.run(resume=resume, stop_after=stop_after)

    best, metrics = result["best"], result["best_metrics"]
    name = out.name or "searched"
    spec = best.to_spec(space, name)
    arch_path = out / "best_arch.yaml"
    # the chosen network as a standalone detector with its recalibrated supernet weights
    supernet.recalibrate(best, evaluator.recal_images(best.resolution))
    extracted = extract(supernet, best, name)
    anchors_at_res = None if classify else [[[round(v, 2) for v in a] for a in scale]
                                            for scale in scaled_anchors(anchors, best.resolution, base_res).tolist()]
    schedule = {
        "version": 1, "arch": str(arch_path), "resolution": [best.resolution, best.resolution],
        "grid": [best.grid, best.grid], "split": best.split, "mode": "patch" if best.grid > 1 else "layer",
        "peak_sram_patch": metrics["peak_sram"], "peak_sram_per_layer": metrics["peak_sram_per_layer"],
        "mac_overhead": metrics["mac_overhead"], "macs": metrics["macs"], "flash_bytes": metrics["flash_bytes"],
        "latency": metrics["latency"], "latency_unit": metrics["latency_unit"],
        "memory_rules": {**rules.to_dict(), "fused_blocks": metrics["fused_blocks"]}, "sram_budget": budget.sram, "flash_budget": budget.flash,
        "max_overhead": budget.max_overhead, "anchors": anchors_at_res,
        "candidate": best.to_dict(),
    }
    pareto = [{figure: p["score"], "peak_sram": p["peak_sram"], "candidate": p["candidate"],
               **{k: p["metrics"][k] for k in ("flash_bytes", "macs", "mac_overhead", "latency")}}
              for p in result["pareto"]]
    # the result files appear together: the folder (with the search state) is swapped in whole
    with update_dir(out, drop=RESULT_FILES) as stage:
        save_spec(spec, stage / "best_arch.yaml")
        atomic_torch_save({"spec": spec.to_dict(), "head": asdict(head), "state_dict": extracted.state_dict()},
                          stage / "best_subnet.pt")
        atomic_write_json(stage / "schedule.json", schedule)
        atomic_write_json(stage / "pareto.json", {"budget": vars(budget), "front": pareto,
                                                  "evaluated": len(result["evaluated"]), "history": result["history"]})
        plot_pareto(result["evaluated"], result["pareto"], budget.sram, best, stage / "pareto.png",
                    "val top-1 (supernet)" if classify else "val mAP@0.5 (supernet)")
    return {
        "arch": str(arch_path), "out": str(out), "resolution": best.resolution, "grid": [best.grid, best.grid],
        "split": best.split, "peak_sram_patch": metrics["peak_sram"],
        "peak_sram_per_layer": metrics["peak_sram_per_layer"], "flash_bytes": metrics["flash_bytes"],
        "macs": metrics["macs"], "mac_overhead": metrics["mac_overhead"], "latency": metrics["latency"],
        "latency_unit": metrics["latency_unit"], "task": cfg["task"], figure: result["best_score"],
        "sram_budget": budget.sram, "flash_budget": budget.flash, "anchors": anchors_at_res,
        "evaluated": len(result["evaluated"]), "generations": result["generation"],
        "pareto_size": len(pareto), "candidate": best.to_dict(),
    }


def plot_pareto(evaluated: list[dict], front: list[dict], sram_budget: int, best: Any, path: Path,
                ylabel: str = "val mAP@0.5 (supernet)") -> None:
    """Accuracy vs peak SRAM of every evaluated candidate, the Pareto front and the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([p["peak_sram"] / 1024 for p in evaluated], [p["score"] for p in evaluated], s=12, c="0.6",
               label="evaluated")
    ax.plot([p["peak_sram"] / 1024 for p in front], [p["score"] for p in front], "o-", c="tab:blue",
            label="Pareto front")
    key = best.key()
    chosen = [p for p in evaluated if p["key"] == key]
    if chosen:
        ax.scatter([chosen[0]["peak_sram"] / 1024], [chosen[0]["score"]], marker="*", s=160, c="tab:red",
                   zorder=5, label="chosen")
    ax.axvline(sram_budget / 1024, ls="--", c="tab:red", label=f"SRAM budget {sram_budget / 1024:g} kB")
    ax.set_xlabel("peak SRAM (kB, patch-based)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
