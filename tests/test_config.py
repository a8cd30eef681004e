"""Config loading: defaults, overrides, unknown keys with suggestions, type errors."""
import pickle

import pytest
import yaml

from tinydet.errors import TinydetError
from tinydet.config import load_config, parse_override


def _write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_overrides_and_attribute_access(tmp_path):
    path = _write(tmp_path, {"name": "toy", "model": {"resolution": [96, 128]}, "train": {"lr": 0.02}})
    cfg = load_config(path, ["train.epochs=3", "train.ema.enabled=false", "eval.nms_iou=0.5",
                             "model.head.channels=32", "train.devices=2"])
    assert cfg.name == "toy" and cfg.train.lr == 0.02 and cfg.train.epochs == 3
    assert cfg.train.ema.enabled is False and cfg.train.ema.decay == 0.9999
    assert cfg.model.resolution == [96, 128] and cfg.model.head.channels == 32
    assert cfg.train.out_dir == "runs/toy" and cfg.train.devices == 2
    assert cfg["eval"]["nms_iou"] == 0.5
    assert cfg.source == str(path)
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.train.lr == 0.02 and again.source == str(path)


def test_int_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = load_config(_write(tmp_path, {"train": {"lr": 1}}))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_unknown_key_in_file_names_path_and_closest(tmp_path):
    path = _write(tmp_path, {"train": {"ema": {"decayy": 0.9}}})
    with pytest.raises(TinydetError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "train.ema.decayy" in msg and "did you mean 'decay'" in msg
    assert "\n" not in msg


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(TinydetError, match="unknown key 'trian'.*did you mean 'train'"):
        load_config(_write(tmp_path, {"trian": {"lr": 0.1}}))


def test_unknown_key_in_set_override(tmp_path):
    path = _write(tmp_path, {})
    with pytest.raises(TinydetError, match=r"--set train\.batchsize=4: unknown key 'train\.batchsize'.*'batch_size'"):
        load_config(path, ["train.batchsize=4"])


def test_wrong_type_names_key_and_expected_type(tmp_path):
    with pytest.raises(TinydetError, match=r"train\.epochs: expected an integer, got 'ten'"):
        load_config(_write(tmp_path, {"train": {"epochs": "ten"}}))
    with pytest.raises(TinydetError, match=r"train\.ema\.enabled: expected true or false"):
        load_config(_write(tmp_path, {}), ["train.ema.enabled=3"])
    with pytest.raises(TinydetError, match=r"train: expected a mapping"):
        load_config(_write(tmp_path, {"train": 5}))


def test_bad_set_syntax():
    with pytest.raises(TinydetError, match="expected KEY=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(TinydetError, match="dotted key"):
        parse_override("train..epochs=3")
    with pytest.raises(TinydetError, match="not valid YAML"):
        parse_override("train.lr=[1, 2")
    assert parse_override("model.anchors=[[[1, 2]]]") == (["model", "anchors"], [[[1, 2]]])


def test_semantic_checks(tmp_path):
    with pytest.raises(TinydetError, match="train.optimizer: expected sgd or adamw"):
        load_config(_write(tmp_path, {"train": {"optimizer": "lion"}}))
    with pytest.raises(TinydetError, match="model.anchors: every scale needs model.head.num_anchors=3"):
        load_config(_write(tmp_path, {"model": {"anchors": [[[10, 10], [20, 20]]]}}))
    with pytest.raises(TinydetError, match="model.anchors: expected"):
        load_config(_write(tmp_path, {"model": {"anchors": [[[10, -1]]], "head": {"num_anchors": 1}}}))


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(TinydetError, match=r"bad\.yaml: line \d+: malformed YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(TinydetError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_data_section_uses_the_data_packages_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, {"data": {"format": "wider", "augment": {"hflip": 0.0}}}))
    assert cfg.data.format == "wider" and cfg.data.skip_bad is False and cfg.data.augment == {"hflip": 0.0}
    with pytest.raises(TinydetError, match="unknown key 'data.skip_badd'.*'skip_bad'"):
        load_config(_write(tmp_path, {"data": {"skip_badd": True}}))


@pytest.mark.parametrize("name", ["synth_voc", "synth_face", "voc_mcunetv2_m4", "voc_mcunetv2_h7", "wider_mcunetv2_face"])
def test_shipped_configs_validate_and_build(name):
    from pathlib import Path

    from tinydet.arch import lower
    from tinydet.models.detector import detector_from_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert cfg.name == name and cfg.train.out_dir == f"runs/{name}"
    classes = cfg.data.classes or (["face"] if cfg.data.format == "wider" else None)
    n = len(classes) if classes else 20  # the VOC configs use the data package's default 20 classes
    model = detector_from_config(cfg, n)
    graph = lower(model.spec, cfg.model.resolution, head=model.head_spec)
    assert len(graph.outputs) == len(cfg.model.anchors)


def test_every_range_names_a_numeric_key_of_the_schema():
    """RANGES is the one table of value ranges: each entry must name an existing numeric key (a
    typo would silently check nothing), and the defaults themselves must be in range."""
    from tinydet.config import DEFAULTS, NULLABLE, RANGES, check_ranges

    for path in RANGES:
        node = DEFAULTS
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, path
            node = node[part]
        kinds = NULLABLE.get(path, ())
        assert isinstance(node, (int, float, list, type(None))) and not isinstance(node, bool), path
        assert node is not None or {int, float, list} & set(kinds), path
    check_ranges(DEFAULTS, "defaults")


def test_override_errors_name_the_override_and_file_errors_the_file(tmp_path):
    from tinydet.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 0.01}\n")
    with pytest.raises(TinydetError, match=r"^--set train\.lr=0: train\.lr: expected a number > 0, got 0\.0$"):
        load_config(path, ["train.lr=0"])
    path.write_text("train: {lr: -1}\n")
    with pytest.raises(TinydetError, match=r"c\.yaml: train\.lr: expected a number > 0, got -1"):
        load_config(path)
    with pytest.raises(TinydetError, match=r"^--set train\.ema\.decay=1: train\.ema\.decay: expected a number in \(0, 1\)"):
        load_config(path, ["train.lr=0.1", "train.ema.decay=1"])
