"""``tinydet eval --export DIR --int8 --engine qemu``: the firmware itself on QEMU scores exactly
what the numpy int8 reference scores (its outputs are bit exact), on a tiny random-weight export."""
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tinydet.cli import main
from tinydet.export import load_export
from tinydet.pipeline import eval as pipeline_eval

from fixtures import make_eval_export

needs_qemu = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                reason="arm-none-eabi-gcc / qemu-system-arm are not installed")


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    return make_eval_export(tmp_path_factory.mktemp("qemu_engine"))


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch):
    """tempfile's folder, to see what the qemu engine leaves behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _main(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@needs_qemu
def test_qemu_engine_scores_what_the_reference_scores(eval_setup, capsys, monkeypatch, own_tmpdir):
    cfg, out = eval_setup
    monkeypatch.setattr(pipeline_eval, "QEMU_BATCH", 3)  # 4 test images: two QEMU runs (3 + 1)
    capsys.readouterr()
    common = ["eval", "-c", str(cfg), "--export", str(out), "--int8", "--split", "test", "--json",
              "--set", "eval.conf_thresh=0.3"]
    results = {}
    for engine in ("reference", "qemu"):
        for patched in ([], ["--patched"]):
            rc, stdout, err = _main(capsys, common + ["--engine", engine] + patched)
            assert rc == 0, err
            results[engine, bool(patched)] = json.loads(stdout)
    ref, qemu = results["reference", False], results["qemu", False]
    assert qemu["engine"] == "qemu" and ref["engine"] == "reference"
    assert sum(c["n_det"] for c in ref["per_class"].values()) > 0
    keys = ("map50", "map50_area", "map_coco", "map_coco_75", "per_class", "n_images")
    for patched in (False, True):
        assert {k: results["qemu", patched][k] for k in keys} == {k: ref[k] for k in keys}
    assert qemu["device"]["target"] == "qemu-mps2-an500" and qemu["device"]["images"] == 4
    assert qemu["device"]["mode"] == "layer" and results["qemu", True]["device"]["mode"] == "patch"
    assert qemu["device"]["instructions_per_inference"] > 0
    assert list(own_tmpdir.glob("tinydet-eval-qemu-*")) == []  # the firmware build folder is removed after a good run


@needs_qemu
@pytest.mark.parametrize("patched", [False, True])
def test_firmware_runner_outputs_equal_the_reference(eval_setup, own_tmpdir, patched):
    from tinydet.quant.reference import Int8Reference

    _, out = eval_setup
    images = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    ref = Int8Reference(out, load_export(out).schedule)
    expected = ref.run_stitched(images) if patched else ref.run_full(images)
    runner = pipeline_eval.int8_runner(str(out), "qemu", patched=patched)
    try:
        got = runner(images)
    finally:
        runner.close()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@needs_qemu
def test_failed_firmware_run_keeps_its_log(eval_setup, own_tmpdir, monkeypatch):
    from tinydet.deploy import toolchain
    from tinydet.errors import TinydetError

    _, out = eval_setup
    runner = pipeline_eval.int8_runner(str(out), "qemu")

    def crash(elf, workdir, timeout_s=60.0, target=None):
        log = Path(workdir) / "qemu.log"
        log.write_text("boom\n")
        return 1, "boom\n", log

    monkeypatch.setattr(toolchain, "run_qemu", crash)
    with pytest.raises(TinydetError, match="log kept: .*qemu.log"):
        runner(np.zeros((1, 3, 64, 64), np.float32))
    runner.close()
    assert (runner.folder / "run" / "qemu.log").is_file()


def test_missing_toolchain_gives_the_install_hint(eval_setup, capsys, tmp_path, monkeypatch, own_tmpdir):
    cfg, out = eval_setup
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    capsys.readouterr()
    rc, _, err = _main(capsys, ["eval", "-c", str(cfg), "--export", str(out), "--int8", "--engine", "qemu",
                                "--split", "test"])
    assert rc == 2 and "not found on PATH" in err and "apt-get install gcc-arm-none-eabi" in err
    assert "qemu-system-arm" in err
    assert list(own_tmpdir.glob("tinydet-eval-qemu-*")) == []  # refused before anything was written
