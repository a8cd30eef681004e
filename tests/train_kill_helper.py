"""Run training and SIGKILL this very process right after step N's mid-epoch checkpoint.

    python tests/train_kill_helper.py CONFIG N

Used by tests/test_train_kill.py. The kill callback runs after LastCheckpoint on the same hook
(callback order), so the kill lands exactly after the step-N ``last.ckpt`` has been written: no
sleeps, no timing dependence.
"""
import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

from tinydet.config import load_config
from tinydet.train.run import train


class KillAfterStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    config, step = sys.argv[1], int(sys.argv[2])
    train(load_config(config), callbacks=[KillAfterStep(step)])
    sys.exit(3)  # reaching here means the kill never happened
