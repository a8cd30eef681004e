"""Classification: metrics on hand-worked cases, a short training that clearly beats chance, eval
through the CLI, knowledge distillation, resume, and a detector started from a classifier
checkpoint (exactly its backbone)."""
import json

import numpy as np
import pytest
import torch
import yaml

from tinydet.cli import main
from tinydet.config import load_config
from tinydet.eval.classify import classify_metrics, confusion_matrix, per_class_accuracy, topk_accuracy
from tinydet.errors import TinydetError


def test_topk_and_per_class_on_hand_worked_cases():
    scores = np.array([[0.1, 0.7, 0.2],    # label 1: top-1 right
                       [0.5, 0.3, 0.2],    # label 2: ranks 3rd
                       [0.2, 0.2, 0.6],    # label 0: tie 0.2/0.2 -> class 0 ranks before 1, so top-2 right
                       [0.9, 0.05, 0.05]])  # label 0: right
    labels = np.array([1, 2, 0, 0])
    assert topk_accuracy(scores, labels, 1) == 0.5
    assert topk_accuracy(scores, labels, 2) == 0.75
    assert topk_accuracy(scores, labels, 3) == 1.0
    conf = confusion_matrix(scores.argmax(1), labels, 3)
    assert conf.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert per_class_accuracy(conf) == [0.5, 1.0, 0.0]
    m = classify_metrics(scores, labels, ["a", "b", "c"])
    assert m.top1 == 0.5 and m.top5 is None and m.n_images == 4
    assert m.mean_class_accuracy == pytest.approx(0.5)
    assert m.per_class["a"] == {"accuracy": 0.5, "images": 2, "correct": 1}
    # VWW-like skew: always 'background' is 80% top-1 but 50% mean class accuracy
    skew = classify_metrics(np.tile([[1.0, 0.0]], (10, 1)), np.array([0] * 8 + [1] * 2), ["background", "person"])
    assert skew.top1 == 0.8 and skew.mean_class_accuracy == 0.5 and skew.per_class["person"]["accuracy"] == 0.0
    # top-5 with 6 classes: the label at rank 6 is the only miss
    six = np.tile(np.arange(6, 0, -1, dtype=float), (2, 1))
    assert classify_metrics(six, np.array([4, 5]), list("abcdef")).top5 == 0.5
    with pytest.raises(ValueError):
        topk_accuracy(scores, np.array([0, 1, 3, 0]), 1)


TINY_SPEC = """
name: tiny-cls
absolute_channels: true
head_from: [stride16, stride32]
blocks:
- {type: conv, out: 16, stride: 2}
- {type: mbconv, out: 16, expand: 1}
- {type: mbconv, out: 24, stride: 2, expand: 4}
- {type: mbconv, out: 32, stride: 2, expand: 4}
- {type: mbconv, out: 48, stride: 2, expand: 4}
- {type: mbconv, out: 64, stride: 2, expand: 4}
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from tinydet.data.synth import synth_imagefolder

    root = tmp_path_factory.mktemp("cls")
    synth_imagefolder(str(root / "shapes"), 96, seed=0, size=40, classes=["circle", "cross"])
    (root / "tiny.yaml").write_text(TINY_SPEC)
    return root / "shapes"


def cls_config(tmp_path, data_root, out, **train):
    cfg = {"name": "cls", "task": "classify",
           "model": {"arch": str(data_root.parent / "tiny.yaml"), "resolution": 32},
           "data": {"format": "imagefolder", "root": str(data_root), "augment": {"scale": [0.6, 1.0]}},
           "train": {"epochs": 8, "batch_size": 16, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                     "out_dir": str(out), "warmup_epochs": 0.5, "progress_bar": False, "optimizer": "sgd",
                     "lr": 0.05, "weight_decay": 0.0001, "momentum": 0.9, "loggers": ["csv"],
                     "ema": {"enabled": True, "decay": 0.9, "tau": 5.0}, **train}}
    path = tmp_path / "cls.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    from tinydet.train.run import train

    tmp = tmp_path_factory.mktemp("run")
    path = cls_config(tmp, shapes, tmp / "run")
    return path, train(load_config(path))


def test_short_training_clearly_beats_chance(trained, capsys):
    path, result = trained
    assert result["task"] == "classify" and result["best_ckpt"].endswith("best.ckpt")
    assert result["best_top1"] > 0.8, result          # two balanced classes: chance is 0.5
    main(["eval", "-c", str(path), "--ckpt", result["best_ckpt"], "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["top1"] == pytest.approx(result["best_top1"]) and out["n_images"] == 24
    assert set(out["per_class"]) == {"circle", "cross"} and out["top5"] is None
    assert sum(out["per_class"][c]["images"] for c in out["per_class"]) == 24


def test_resume_continues_and_distillation_runs(trained, shapes, tmp_path):
    from tinydet.train.run import train

    path, result = trained
    cfg = load_config(cls_config(tmp_path, shapes, tmp_path / "kd", epochs=1),
                      [f"train.distill.teacher={result['best_ckpt']}", "train.distill.alpha=0.7"])
    kd = train(cfg)
    assert kd["global_step"] == 5 and kd["best_top1"] is not None
    again = train(load_config(cls_config(tmp_path, shapes, tmp_path / "kd", epochs=2),
                              [f"train.distill.teacher={result['best_ckpt']}"]), resume="auto")
    assert again["resumed_step"] == 5 and again["global_step"] == 10


def test_distillation_loss_is_the_weighted_kl():
    from tinydet.train.module import ClassifierModule

    from tinydet.config import from_dict, to_dict
    cfg = to_dict(from_dict({"task": "classify", "data": {"format": "imagefolder", "classes": ["a", "b", "c"]},
                             "train": {"label_smoothing": 0.0, "distill": {"alpha": 0.25, "temperature": 2.0}}}))

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return [self.logits]

    teacher_logits = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 0.2, 0.1]])
    module = ClassifierModule(cfg, torch.nn.Linear(1, 1), ["a", "b", "c"], {}, teacher=Fixed(teacher_logits))
    loss, parts = module.loss(student, torch.tensor([0]), torch.zeros(1))
    p = torch.softmax(teacher_logits / 2, 1)
    kl = (p * (p.log() - torch.log_softmax(student / 2, 1))).sum() * 4
    ce = torch.nn.functional.cross_entropy(student, torch.tensor([0]))
    assert torch.allclose(parts["kd"], kl) and torch.allclose(loss, 0.75 * ce + 0.25 * kl)


def test_detector_from_a_classifier_checkpoint_loads_exactly_its_backbone(trained, shapes, capsys):
    from tinydet.config import from_dict
    from tinydet.io.checkpoint import model_state, read_checkpoint
    from tinydet.models.detector import detector_from_config, load_pretrained

    _, result = trained
    ckpt = result["best_ckpt"]
    anchors = [[[8, 8], [14, 14], [22, 22]], [[30, 30], [44, 44], [60, 60]]]
    tiny = str(shapes.parent / "tiny.yaml")
    cfg = from_dict({"model": {"arch": tiny, "pretrained": ckpt, "resolution": 64,
                               "head": {"channels": 16, "num_anchors": 3, "kernel": 3}, "anchors": anchors}})
    torch.manual_seed(0)
    det = detector_from_config(cfg, 3)
    before = {k: v.clone() for k, v in det.state_dict().items()}
    loaded = load_pretrained(det, cfg)
    source = model_state(read_checkpoint(ckpt)["state_dict"])
    after = det.state_dict()
    backbone = [k for k in after if k.startswith("blocks.")]
    assert loaded == len(backbone)
    for k in backbone:                       # every backbone tensor is the classifier's (EMA) one
        assert torch.equal(after[k], source[k]), k
    for k in after:                          # the head is untouched: as initialised
        if k.startswith("heads."):
            assert torch.equal(after[k], before[k]), k
    err = capsys.readouterr().err
    assert f"loaded {loaded} backbone tensors" in err and "classifier.fc" in err and "heads.0" in err
    # a classifier checkpoint of another architecture is refused, naming the block
    bad = from_dict({"model": {"arch": "mcunet-vww0", "pretrained": ckpt, "resolution": 64,
                               "head": {"channels": 16, "num_anchors": 3, "kernel": 3}, "anchors": anchors}})
    with pytest.raises(TinydetError, match=r"model\.pretrained .*block \d+ .* in the source"):
        load_pretrained(detector_from_config(bad, 3), bad)


def test_classifier_checkpoint_errors(trained, tmp_path):
    from tinydet.models.classifier import load_classifier

    path, result = trained
    cfg = load_config(path, ["model.arch=mcunet-vww0"])
    with pytest.raises(TinydetError, match="does not match"):
        load_classifier(cfg, result["best_ckpt"])
