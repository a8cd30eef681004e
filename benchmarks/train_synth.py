"""Train ``configs/synth_voc.yaml`` on the CPU and report val map50 and training images/s.

1. Generates the synthetic VOC set the config names (``tinydet data synth``) when it is missing.
2. Trains with ``tinydet.train.run.train`` on the CPU (1 torch thread + 1 loader worker = 2 cores).
3. Scores the best checkpoint on the val split through the prediction API + VOC07 map50
   (the same path as ``tinydet eval``).

Target: map50 >= 0.6 within 15 minutes on 2 cores. The machine's load average is printed beside
the figures because on a shared machine wall time says little on its own. Ends with one JSON line.

    python benchmarks/train_synth.py [--epochs N] [--threads 1] [--out bench_out/train_synth]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synth_voc.yaml"))
    p.add_argument("--out", default=str(ROOT / "bench_out" / "train_synth"))
    p.add_argument("--images", type=int, default=1000, help="synthetic images to generate when the data is missing")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    # 2 cores = 1 compute thread + the config's 1 data-loading worker; 2 OpenMP threads next to a
    # busy loader (or other jobs) spin-wait and run several times slower, not faster
    p.add_argument("--threads", type=int, default=1, help="torch compute threads")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="more config overrides")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from tinydet.data.synth import synth_voc
    from tinydet.eval.voc import eval_voc
    from tinydet.config import load_config
    from tinydet.pipeline.predict import predict, torch_runner
    from tinydet.train.run import train

    overrides = [f"train.out_dir={args.out}", "train.accelerator=cpu", "train.devices=1", "train.progress_bar=false",
                 *args.overrides]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.config, overrides)
    root = Path(cfg.data.root)
    if not root.is_absolute():
        root = ROOT / root
        cfg.data.root = str(root)
    if not (root / "VOC2007").is_dir():
        print(f"generating {args.images} synthetic VOC images in {root}", file=sys.stderr)
        synth_voc(str(root), images=args.images, seed=args.seed, size=args.image_size,
                  classes=list(cfg.data.classes))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    dets, records = predict(cfg, torch_runner(cfg, result["best_ckpt"]), split="val")
    scores = eval_voc(dets, records, list(cfg.data.classes))
    summary = {
        "benchmark": "train_synth",
        "config": str(Path(args.config).name),
        "val_map50": scores["map50"],
        "val_map50_area": scores.get("map50_area"),
        "best_ckpt": result["best_ckpt"],
        "epochs": result["epochs"],
        "global_step": result["global_step"],
        "train_images_per_s": round(result["train_images_per_s"], 2),
        "train_wall_s": round(wall, 1),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    print(f"val map50 {summary['val_map50']:.4f} after {summary['epochs']} epochs in {wall / 60:.1f} min, "
          f"{summary['train_images_per_s']} train images/s", file=sys.stderr)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
