"""Config keys of the classification task: ``task``, label smoothing, distillation."""
import pytest
import yaml

from tinydet.config import load_config
from tinydet.errors import TinydetError


def _write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_task_defaults_to_detect_and_accepts_classify(tmp_path):
    cfg = load_config(_write(tmp_path, {}))
    assert cfg.task == "detect"
    assert cfg.train.label_smoothing == 0.1 and cfg.train.distill.teacher is None
    cfg = load_config(_write(tmp_path, {}), ["task=classify", "train.distill.teacher=t.ckpt",
                                             "data.format=imagefolder", "data.classes=[a, b]"])
    assert cfg.task == "classify" and cfg.train.distill.teacher == "t.ckpt"


def test_bad_task_and_ranges_are_one_line_errors(tmp_path):
    path = _write(tmp_path, {"task": "segment"})
    with pytest.raises(TinydetError, match=r"exp\.yaml: task: expected one of detect, classify, got 'segment'"):
        load_config(path)
    with pytest.raises(TinydetError, match=r"unknown key 'tsk'.*did you mean 'task'"):
        load_config(_write(tmp_path, {"tsk": "classify"}))
    with pytest.raises(TinydetError, match=r"train\.label_smoothing: expected a number in \[0, 1\)"):
        load_config(_write(tmp_path, {}), ["train.label_smoothing=1.0"])
    with pytest.raises(TinydetError, match=r"train\.distill\.alpha: expected a number in \[0, 1\]"):
        load_config(_write(tmp_path, {}), ["train.distill.alpha=1.5"])
    with pytest.raises(TinydetError, match=r"train\.distill\.temperature: expected a number > 0"):
        load_config(_write(tmp_path, {}), ["train.distill.temperature=0"])
