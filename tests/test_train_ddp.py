"""Lightning DDP on two CPU processes, launched the way users do: the tinydet command."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tinydet.io.checkpoint import load_detector, read_checkpoint

from train_helpers import make_voc, tiny_config


def test_train_ddp_two_cpu_processes(tmp_path):
    data = make_voc(tmp_path / "voc")
    out = tmp_path / "run"
    cfg_path = tiny_config(tmp_path, data, out, epochs=1, batch_size=2)
    tinydet = Path(sys.executable).with_name("tinydet")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(tinydet), "train", "-c", str(cfg_path), "--set", "train.accelerator=cpu",
                           "train.devices=2", "train.strategy=ddp", "--json"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON object, from rank 0 only
    result = json.loads(lines[0])
    # 12 training images, 2 ranks x batch 2 -> 3 steps; the val map50 covers all 4 val images
    assert result["global_step"] == 3
    assert result["val_map50"] is not None and 0.0 <= result["val_map50"] <= 1.0
    ckpt = read_checkpoint(out / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert (out / "best.ckpt").is_file()
    load_detector(None, out / "best.ckpt")
