"""Issue 17 point 6: schedule.json is covered by the manifest's checksums, and its values are
checked on load (tinydet.export.schedule_check), so a tampered folder is refused by every reader
(deploy, validate, eval) with one line naming the file and the field, even when the tamperer
re-hashed the manifest."""
import copy
import json
import shutil

import numpy as np
import pytest

from tinydet.errors import TinydetError
from tinydet.export import load_export, onnx_runner
from tinydet.io.manifest import MANIFEST, build_manifest

from fixtures import make_export, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("sched") / "exp"
    make_export(out)
    return out


def _raw(folder):
    return json.loads((folder / "schedule.json").read_text())


def _tampered(folder, tmp_path, edit, rehash=True):
    """A copy of ``folder`` with ``edit(schedule)`` applied to schedule.json (and, with ``rehash``,
    the manifest recomputed, so only the value checks can catch it)."""
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    sched = _raw(bad)
    edit(sched)
    (bad / "schedule.json").write_text(json.dumps(sched))
    if rehash:
        (bad / MANIFEST).write_text(json.dumps(build_manifest(bad).to_dict()))
    return bad


def _set(path, value):
    def edit(s):
        *keys, last = path
        node = s
        for k in keys:
            node = node[k]
        node[last] = value(node[last]) if callable(value) else value
    return edit


def _both(*edits):
    def edit(s):
        for e in edits:
            e(s)
    return edit


ARENA = ("arena", "arena_bytes")
CASES = {
    "negative offset": (_set(("arena", "steps", 0, "output"), -8), r"arena\.steps\[0\]\.output: expected an integer in \[0,"),
    "offset past the arena": (_set(("arena", "tiles", 0, 1, "input"), lambda v: 10 ** 6),
                              r"arena\.tiles\[0\]\[1\]\.input: expected an integer in \[0,"),
    "layer arena offset": (_set(("arena_layer", "steps", -1, "output"), lambda v: 10 ** 7),
                           r"arena_layer\.steps\[\d+\]\.output"),
    "1 kB arena": (_set(ARENA, 1024), r"arena\.arena_bytes: expected at least the planned peak \d+ B, got 1024"),
    "1 kB arena and peak": (_both(_set(ARENA, 1024), _set(("memory", "peak_sram_patch"), 1024)),
                            r"arena\.(steps|tiles|stage1_buffer|input|outputs)"),
    "per-layer peak below a working set": (_both(_set(("memory", "peak_sram_per_layer"), 100),
                                                 _set(("arena_layer", "arena_bytes"), 100)),
                                           r"memory\.peak_sram_per_layer: expected at least the largest layer"),
    "num_classes": (_set(("detector", "num_classes"), 3), r"detector\.class_names: expected 3 class names"),
    "num_classes and names": (_both(_set(("detector", "num_classes"), 3),
                                    _set(("detector", "class_names"), ["a", "b", "c"])),
                              r"detector \(output heads\.0\.out\): expected a map \[14, 6, 8\]"),
    "anchors": (_set(("detector", "anchors", 0), lambda a: a[:1]), r"detector \(output heads\.0\.out\)"),
    "anchor value": (_set(("detector", "anchors", 0, 0), [-8, 8]), r"detector\.anchors\[0\]\[0\]"),
    "strides": (_set(("detector", "strides"), [16]), r"detector \(output heads\.0\.out\)"),
    "conf_thresh": (_set(("detector", "conf_thresh"), 2.0), r"detector\.conf_thresh: expected a number in \[0.0, 1.0\]"),
    "input shape": (_set(("input", "shape"), [3, 64, 64]), r"(tensors\.input|input\.shape)"),
    "output shape": (_set(("tensors", "heads.0.out"), [14, 3, 4]), r"tensors\.heads\.0\.out"),
    "tiles": (_set(("tiles",), lambda t: t[:-1]), r"tiles: expected 9 tiles \(3x3 grid\), got 8"),
    "tile rectangle": (_set(("tiles", 0, "in_rect"), [0, 99, 0, 10]), r"tiles\[0\]\.in_rect"),
    "staged conv": (_set(("arena", "tiles", 0, 0, "staged"), True),
                    r"arena\.tiles\[0\]\[0\]\.staged: expected only on an inplace_dw step"),
    "staged flag": (_set(("arena", "tiles", 0, 0, "staged"), "yes"), r"arena\.tiles\[0\]\[0\]\.staged: expected true or false"),
}


def test_the_untampered_folder_loads(folder):
    load_export(folder)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_tampered_field_is_refused_naming_it(folder, tmp_path, case):
    edit, field = CASES[case]
    bad = _tampered(folder, tmp_path, edit)
    with pytest.raises(TinydetError, match=field) as info:
        load_export(bad)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(bad / "schedule.json"))


def test_an_edit_without_rehashing_is_a_checksum_mismatch(folder, tmp_path):
    bad = _tampered(folder, tmp_path, _set(ARENA, 1024), rehash=False)
    with pytest.raises(TinydetError, match="checksum mismatch: schedule.json was modified after export"):
        load_export(bad)
    (bad / MANIFEST).write_text((bad / MANIFEST).read_text().replace('"bytes": ', '"bytes": 1', 1))
    with pytest.raises(TinydetError, match=r"manifest.json: sha256: the manifest was modified"):
        load_export(bad)


def test_an_old_folder_without_manifest_is_value_checked_too(folder, tmp_path):
    def legacy(s):
        s["files"] = {k: v for k, v in load_export(folder).schedule["files"].items() if k.endswith(".onnx")}
        s["arena"]["steps"][0]["output"] = -8
    bad = _tampered(folder, tmp_path, legacy, rehash=False)
    (bad / MANIFEST).unlink()
    with pytest.raises(TinydetError, match=r"arena\.steps\[0\]\.output"):
        load_export(bad)


@pytest.fixture(scope="module")
def int8_folder(folder, tmp_path_factory):
    from fixtures import calib_images
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate

    out = tmp_path_factory.mktemp("sched8") / "exp"
    shutil.copytree(folder, out)
    quantize_export(out, calibrate(str(out / "full.onnx"), calib_images(3), "minmax"), {"kind": "ptq"})
    return out


@pytest.mark.parametrize("verb", ["deploy", "validate", "eval"])
def test_deploy_validate_and_eval_refuse_a_tampered_folder(int8_folder, tmp_path, capsys, verb):
    bad = _tampered(int8_folder, tmp_path, _set(("arena", "steps", 0, "output"), -8))
    if verb == "eval":  # eval runs the folder through onnx_runner (float or int8)
        with pytest.raises(TinydetError, match=r"schedule.json: arena\.steps\[0\]\.output"):
            onnx_runner(bad)(np.zeros((1, 3, 48, 64), np.float32))
        return
    argv = ["deploy", str(bad), "--target", "host", "--out", str(tmp_path / "b")] if verb == "deploy" else \
        ["validate", str(bad), "--images", "1"]
    rc, stdout, err = run_cli(capsys, argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("tinydet: error:")]
    assert rc == 2 and stdout == "" and len(lines) == 1
    assert "schedule.json: arena.steps[0].output: expected an integer in [0," in lines[0]
    assert not (tmp_path / "b").exists()
