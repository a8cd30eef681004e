"""The search with a classification supernet (task: classify): its extracted classifier equals the
supernet, its budgets count pool + fc, and the supernet trains through Lightning's DDP strategy on
two CPU processes (gloo), launched as users do: the tinydet command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinydet.arch.graph import lower
from tinydet.nas.constraints import candidate_graph
from tinydet.nas.space import ClassifierHead, SearchSpace, StageSpace
from tinydet.nas.supernet import Supernet, extract, sandwich

TINY = SearchSpace(
    stages=(StageSpace(8, 1, (1,), kernels=(3,), expands=(1,)), StageSpace(16, 2, (1, 2)),
            StageSpace(24, 2, (1, 2)), StageSpace(32, 2, (1, 2))),
    kernels=(3, 5), expands=(3, 6), widths=(0.5, 1.0), resolutions=(32, 48), grids=(1, 2),
    stem_out=16, head_stages=(2, 3), max_split_stage=2)


def test_classifier_supernet_extracts_the_same_classifier():
    import random

    torch.manual_seed(0)
    supernet = Supernet(TINY, ClassifierHead(3))
    rng = random.Random(1)
    for cand in sandwich(TINY, rng, 2):
        supernet.recalibrate(cand, [torch.rand(4, 3, cand.resolution, cand.resolution) for _ in range(2)])
        net = extract(supernet, cand).eval()
        supernet.eval()
        x = torch.rand(2, 3, cand.resolution, cand.resolution)
        with torch.no_grad():
            ours, theirs = supernet(x, cand)[-1], net(x)[-1]
        assert ours.shape == (2, 3) and torch.allclose(ours, theirs, atol=1e-5)
        graph = candidate_graph(cand, TINY, ClassifierHead(3))
        assert [op.kind for op in graph.ops[-2:]] == ["gap", "fc"]
        assert graph.macs == lower(net.spec, cand.resolution, classifier=True).macs


@pytest.fixture(scope="module")
def cls_search_config(tmp_path_factory):
    from tinydet.data.synth import synth_imagefolder

    root = tmp_path_factory.mktemp("nascls")
    synth_imagefolder(str(root / "data"), 20, seed=0, size=48, classes=["circle", "cross"])
    cfg = root / "search.yaml"
    cfg.write_text(f"""
name: tiny-cls-search
task: classify
model: {{resolution: 48}}
data: {{format: imagefolder, root: {root / 'data'}}}
train: {{batch_size: 4, num_workers: 0, accelerator: cpu, devices: 1, progress_bar: false}}
search:
  population: 3
  generations: 1
  supernet_epochs: 1
  kernels: [3, 5]
  expands: [3, 6]
  widths: [0.35, 0.5]
  resolutions: [32, 48]
  grids: [1, 2]
  depths: [[1], [1, 2], [1], [1], [1], [1], [1]]
  recal_batches: 1
""")
    return cfg


def test_classify_search_trains_the_supernet_with_ddp_on_two_processes(cls_search_config, tmp_path):
    out = tmp_path / "search"
    tinydet = Path(sys.executable).with_name("tinydet")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(tinydet), "search", "-c", str(cls_search_config), "--sram", "64kB", "--flash", "1MB",
                           "--max-overhead", "0.5", "--out", str(out), "--set", "train.devices=2",
                           "train.strategy=ddp", "--json"], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON object: rank 0 searched and reported, rank 1 only trained
    result = json.loads(lines[0])
    assert result["task"] == "classify" and 0.0 <= result["val_top1"] <= 1.0
    # 16 training images, batch 4, sharded over 2 processes: 2 steps each (4 on one process)
    training = torch.load(out / "supernet.ckpt", weights_only=False)["training"]
    assert training["world_size"] == 2 and training["steps"] == 2
    assert result["peak_sram_patch"] <= 64 * 1024
    for name in ("best_arch.yaml", "schedule.json", "pareto.json", "supernet.ckpt", "best_subnet.pt"):
        assert (out / name).stat().st_size > 0
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and all("val_top1" in p for p in front)
