"""Searched network vs MobileNetV2-w0.35 under the same SRAM budget, on synthetic VOC (CPU only).

1. Generate the synthetic VOC set (``tinydet.data.synth``) and k-means anchors at the base size.
2. Baseline: ``mbv2-w0.35`` run per layer. The largest input resolution (multiple of 16) whose
   per-layer peak SRAM of the detector graph fits the budget is used; train it with the normal
   training config at that resolution.
3. Search: ``tinydet search`` (supernet + evolution) under the same budget with patch-based
   execution allowed; retrain the chosen spec with the same training config at its resolution.
4. Both final models are scored on the *test* split (the search looked at val only) with the
   project's predict + VOC map50. Prints one JSON line: both figures and their ratio.

    python benchmarks/search_synth.py [--quick] [--out bench_out/search_synth]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench_out" / "search_synth"))
    p.add_argument("--sram", default="256kB")
    p.add_argument("--flash", default="1MB")
    p.add_argument("--max-overhead", type=float, default=0.3)
    p.add_argument("--images", type=int, default=250, help="synthetic images (60/20/20 train/val/test)")
    p.add_argument("--image-size", type=int, default=128, help="long side of the generated images")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the final trainings")
    p.add_argument("--supernet-epochs", type=int, default=6)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run of the pipeline)")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.supernet_epochs, args.population, args.generations = 60, 2, 1, 4, 1
    return args


def log(msg: str) -> None:
    print(f"[search_synth] {msg}", file=sys.stderr, flush=True)


def baseline_resolution(sram: int, head, classes: int) -> tuple[int, int]:
    """Largest multiple-of-16 resolution at which mbv2-w0.35's detector fits ``sram`` per layer."""
    from tinydet.arch import get_spec, lower
    from tinydet.schedule import peak_sram_per_layer

    spec = get_spec("mbv2-w0.35")
    for res in range(320, 31, -16):
        peak = peak_sram_per_layer(lower(spec, res, head=head))
        if peak <= sram:
            return res, peak
    raise SystemExit(f"mbv2-w0.35 does not fit {sram} B at any resolution >= 32")


def scale_anchors(anchors, factor: float):
    return [[[round(v * factor, 2) for v in a] for a in scale] for scale in anchors]


def train_and_test(base: dict, name: str, arch: str, resolution: int, anchors, out: Path) -> dict:
    """Train with the normal training config at ``resolution``; map50 on the test split."""
    from tinydet.eval.voc import eval_voc
    from tinydet.config import from_dict
    from tinydet.pipeline.predict import predict, torch_runner
    from tinydet.train.run import train

    data = json.loads(json.dumps(base))
    data["name"] = name
    data["model"].update({"arch": arch, "resolution": resolution, "anchors": anchors})
    from tinydet.io.rundir import new_run_dir

    data["train"]["out_dir"] = str(new_run_dir(out / "runs" / name))  # a rerun trains beside, never over
    cfg = from_dict(data, f"{name} (benchmarks/search_synth.py)")
    t0 = time.perf_counter()
    summary = train(cfg)
    ckpt = summary["last_ckpt"]
    dets, records = predict(cfg, torch_runner(cfg, ckpt), split="test", batch_size=16)
    test = eval_voc(dets, records, cfg["data"]["classes"])
    return {"arch": arch, "resolution": resolution, "val_map50": summary["val_map50"],
            "test_map50": float(test["map50"] or 0.0), "train_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from tinydet.arch import HeadSpec, get_spec, lower
    from tinydet.pipeline.search import run_search
    from tinydet.data.anchors import kmeans_anchors, network_box_sizes, split_by_scale
    from tinydet.data.records import load_records
    from tinydet.data.synth import synth_voc
    from tinydet.nas.constraints import parse_bytes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sram, flash = parse_bytes(args.sram, "--sram"), parse_bytes(args.flash, "--flash")
    classes = ["circle", "square", "triangle"]
    data_root = out / f"data-{args.images}-{args.image_size}-{args.seed}"
    if not data_root.exists():
        log(f"generating {args.images} synthetic VOC images in {data_root}")
        synth_voc(str(data_root), args.images, seed=args.seed, size=args.image_size, classes=classes)
    # milder zoom than the default: a short CPU training budget (the same for both networks)
    data_cfg = {"format": "voc", "root": str(data_root), "train": [[2007, "train"]], "val": [[2007, "val"]],
                "test": [[2007, "test"]], "classes": classes, "augment": {"scale": [0.8, 1.25], "affine_p": 0.5}}
    base_res = 128
    records, _, _ = load_records(data_cfg, "train")
    anchors = split_by_scale(kmeans_anchors(network_box_sizes(records, base_res), 6, seed=args.seed), 2)
    head = HeadSpec(num_classes=len(classes), num_anchors=3, channels=32, kernel=3)
    base = {
        "name": "bench",
        "model": {"resolution": base_res, "head": {"channels": 32, "num_anchors": 3, "kernel": 3},
                  "anchors": anchors},
        "data": data_cfg,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "num_workers": 0, "seed": args.seed,
                  "optimizer": "adamw", "lr": 0.003, "warmup_epochs": 1.0, "loggers": ["csv"], "progress_bar": False,
                  "loss": {"obj": 4.0},
                  "check_val_every_n_epoch": args.epochs, "accelerator": "cpu", "devices": 1,
                  "ema": {"enabled": True, "decay": 0.999, "tau": 100.0}},
        "search": {"population": args.population, "generations": args.generations,
                   "supernet_epochs": args.supernet_epochs, "seed": args.seed,
                   "kernels": [3, 5, 7], "expands": [3, 4, 6], "widths": [0.35, 0.5],
                   "resolutions": [96, 128, 160], "grids": [1, 2, 3, 4], "recal_batches": 3, "n_random": 1},
    }
    config_path = out / f"search_config-{args.images}.yaml"
    config_path.write_text(json.dumps(base, indent=1))  # JSON is YAML

    # baseline: mbv2-w0.35 per layer, at the largest resolution that fits
    res_b, peak_b = baseline_resolution(sram, head, len(classes))
    log(f"baseline mbv2-w0.35 per-layer fits {sram} B at {res_b}x{res_b} (peak {peak_b} B); training")
    with redirect_stdout(sys.stderr):
        baseline = train_and_test(base, "mbv2-w0.35", "mbv2-w0.35", res_b,
                                  scale_anchors(anchors, res_b / base_res), out)
    baseline.update(peak_sram_per_layer=peak_b,
                    macs=lower(get_spec("mbv2-w0.35"), res_b, head=head).macs)
    log(f"baseline: {baseline}")

    # search under the same budget, then retrain the found spec with the same training config
    t0 = time.perf_counter()
    with redirect_stdout(sys.stderr):
        tag = f"{args.images}-{args.population}x{args.generations}-{args.supernet_epochs}ep-{args.seed}"
        found = run_search(str(config_path), sram, flash, args.max_overhead, out / f"search-{tag}", resume=True,
                           progress=False)
    search_s = round(time.perf_counter() - t0, 1)
    log(f"search: {found}")
    with redirect_stdout(sys.stderr):
        searched = train_and_test(base, "searched", found["arch"], found["resolution"], found["anchors"], out)
    searched.update({k: found[k] for k in ("grid", "split", "peak_sram_patch", "peak_sram_per_layer", "flash_bytes",
                                           "macs", "mac_overhead")})
    searched.update(supernet_val_map50=found["val_map50"], search_s=search_s)
    result = {"benchmark": "search_synth", "sram_budget": sram, "flash_budget": flash,
              "images": args.images, "epochs": args.epochs, "metric": "test map50 (VOC07 11-point)",
              "baseline": baseline, "searched": searched,
              "ratio": searched["test_map50"] / baseline["test_map50"] if baseline["test_map50"] else None}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
