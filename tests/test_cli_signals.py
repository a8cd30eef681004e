"""What every verb does on Ctrl-C and on a full disk (issue 17, points 5 and 12): one line, exit 130
for an interrupt (also when Lightning catches it and exits 1 itself), and
``tinydet: error: no space left on device writing PATH`` for ENOSPC."""
from __future__ import annotations

import errno
import os
import signal

import pytest

from fixtures import run_cli
from train_helpers import make_voc, tiny_config


def test_ctrl_c_during_lightning_training_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    from tinydet.train.module import DetectorModule

    original = DetectorModule.training_step

    def interrupted(self, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C in the first step
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectorModule, "training_step", interrupted)
    cfg = tiny_config(tmp_path, make_voc(tmp_path / "voc"), tmp_path / "runs")
    before = signal.getsignal(signal.SIGINT)
    rc, _, err = run_cli(capsys, ["train", "-c", str(cfg)])
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "tinydet: interrupted"
    assert "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) == before  # the CLI restores the previous handler


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, code):
    import tinydet.commands.profile as profile

    def full(args):
        raise OSError(code, os.strerror(code), str(tmp_path / "out" / "schedule.json"))

    monkeypatch.setattr(profile, "run", full)
    rc, out, err = run_cli(capsys, ["profile", "--arch", "mbv2-w0.35"])
    assert rc == 2 and out == ""
    assert err == f"tinydet: error: no space left on device writing {tmp_path / 'out' / 'schedule.json'}\n"
