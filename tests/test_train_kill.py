"""A training run SIGKILLed mid-epoch leaves a readable checkpoint and --resume auto continues."""
import os
import signal
import subprocess
import sys
from pathlib import Path

from tinydet.io.checkpoint import read_checkpoint
from tinydet.config import load_config
from tinydet.train.run import train

from train_helpers import make_voc, tiny_config

HERE = Path(__file__).parent


def test_sigkill_mid_epoch_then_resume_auto(tmp_path):
    data = make_voc(tmp_path / "voc")
    out = tmp_path / "run"
    # 3 steps per epoch, last.ckpt every 2 steps: step 2 is mid-epoch 0, step 4 mid-epoch 1
    cfg_path = tiny_config(tmp_path, data, out, epochs=2, ckpt_every_n_steps=2, loggers=["csv"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run([sys.executable, str(HERE / "train_kill_helper.py"), str(cfg_path), "4"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = read_checkpoint(out / "last.ckpt")  # complete and loadable despite the kill
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1
    assert not list(out.glob(".last.ckpt.*.tmp"))
    result = train(load_config(cfg_path), resume="auto")
    assert result["resumed_step"] == 4
    assert result["global_step"] > 4 and result["epochs"] == 2
    final = read_checkpoint(out / "last.ckpt")
    assert final["global_step"] == result["global_step"] and final["epoch"] == 1
    assert (out / "best.ckpt").is_file()
