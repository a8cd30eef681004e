"""`tinydet deploy`: generated C on the host and on QEMU (Cortex-M7) against the int8 reference.

The export folder is the random-weight tiny detector of test_quant (48x64 input, 3x3 tiles, split
after block 4 inside a residual stage, 5x5 depthwise in stage 2), quantized with minmax PTQ.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

import needs
from tinydet.cli import main
from tinydet.deploy import deploy
from tinydet.deploy.build import build_firmware
from tinydet.deploy.emit_c import generate
from tinydet.errors import TinydetError
from tinydet.export import add_files, load_export

from fixtures import calib_images, make_export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    from tinydet.quant.calibrate import calibrate
    from tinydet.pipeline.quantize import quantize_export

    out = tmp_path_factory.mktemp("deploy") / "tiny"
    make_export(out)
    ranges = calibrate(str(out / "full.onnx"), calib_images(), "minmax")
    quantize_export(out, ranges, {"kind": "ptq", "method": "minmax", "images": 6})
    return out


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_host_firmware_is_bit_exact_and_uses_the_planned_arena(folder, tmp_path, mode):
    images = np.random.default_rng(3).random((2, 3, 48, 64), dtype=np.float32)
    r = deploy(folder, "host", tmp_path / mode, mode=mode, validate=True, images=images, conf=0.1)
    sched = load_export(folder).schedule
    planned = sched["memory"]["peak_sram_patch" if mode == "patch" else "peak_sram_per_layer"]
    assert r["sram_arena_bytes"] == r["planned_peak_bytes"] == planned
    assert r["outputs_bit_exact_vs_reference"] is True and r["output_mismatches_vs_reference"] == 0
    # the C decode + NMS returns what tinydet.models.decode returns on the same int8 outputs
    assert r["detections_match_fraction_vs_python_decode"] == 1.0
    assert 0.0 <= r["detections_match_fraction_vs_onnxruntime"] <= 1.0
    assert r["flash_bytes"] > r["weights_bytes"] > 0
    src = (tmp_path / mode / "model.c").read_text()
    assert "malloc" not in src and f"int8_t tinydet_arena[TINYDET_ARENA_BYTES]" in src
    assert f"#define TINYDET_ARENA_BYTES {planned}" in (tmp_path / mode / "model.h").read_text()


def test_patch_arena_is_smaller_and_tiles_follow_the_schedule(folder, tmp_path):
    patch = generate(folder, tmp_path / "p", mode="patch").lowered
    layer = generate(folder, tmp_path / "l", mode="layer").lowered
    sched = load_export(folder).schedule
    assert len(patch.tiles) == len(sched["tiles"]) == 9 and layer.tiles == []
    assert patch.arena_bytes < layer.arena_bytes
    src = (tmp_path / "p" / "model.c").read_text()
    # every tile's input rectangle is in the tile table, as a designated initializer
    for tile, row in zip(sched["tiles"], patch.tiles):
        y0, y1, x0, x1 = tile["in_rect"]
        assert row.rect.to_list() == [y0, y1, x0, x1]
        assert f".rect = {{.y = {y0}, .x = {x0}, .h = {y1 - y0}, .w = {x1 - x0}}}" in src


def test_qemu_end_to_end_cli_both_modes(folder, tmp_path, capsys):
    rc = main(["deploy", str(folder), "--target", "qemu-mps2-an500", "--out", str(tmp_path / "q"), "--mode", "both",
               "--validate", "--images", "2", "--conf", "0.1", "--json", "--profile", str(tmp_path / "prof.png")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.count("\n") == 1
    result = json.loads(out)
    sched = load_export(folder).schedule
    for mode, key in (("patch", "peak_sram_patch"), ("layer", "peak_sram_per_layer")):
        r = result[mode]
        assert r["outputs_bit_exact_vs_reference"] is True
        assert r["sram_arena_bytes"] == r["planned_peak_bytes"] == sched["memory"][key]
        assert r["instructions_per_inference"] > 100_000
        assert list(r["per_layer_instructions"]) == [op["name"] for op in sched["ops"]]
        assert sum(r["per_layer_instructions"].values()) <= r["instructions_per_inference"]
        assert 0 < r["stack_bytes"] < r["stack_reserved_bytes"]
        assert r["flash_bytes"] > 0 and r["sram_static_bytes"] >= r["sram_arena_bytes"]
        assert r["detections_match_fraction_vs_python_decode"] == 1.0
        # per layer: the firmware's counts, the MACs the mode executes (patch: over every tile) and the ratio
        layers = r["per_layer"]
        assert [f["name"] for f in layers] == list(r["per_layer_instructions"])
        assert [f["instructions"] for f in layers] == list(r["per_layer_instructions"].values())
        assert r["macs_per_inference"] == sum(f["macs"] for f in layers) == sched["macs"][
            "patch" if mode == "patch" else "per_layer"]
        assert all(f["instructions_per_mac"] == round(f["instructions"] / f["macs"], 3) for f in layers)
        assert max(f["working_set_bytes"] for f in layers) == r["planned_peak_bytes"]
        assert r["instructions_per_mac"] == round(r["instructions_per_inference"] / r["macs_per_inference"], 3)
        assert 0 < r["instructions_decode"] < r["instructions_per_inference"]
        png = tmp_path / f"prof_{mode}.png"
        assert r["profile_png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["arena_saved_bytes"] == sched["memory"]["peak_sram_per_layer"] - sched["memory"]["peak_sram_patch"] > 0


def test_instruction_counts_are_deterministic(folder, tmp_path):
    images = np.random.default_rng(5).random((1, 3, 48, 64), dtype=np.float32)
    a = deploy(folder, "qemu-mps2-an500", tmp_path / "a", mode="layer", run=True, images=images)
    b = deploy(folder, "qemu-mps2-an500", tmp_path / "b", mode="layer", run=True, images=images)
    assert a["instructions_per_inference"] == b["instructions_per_inference"]


def test_model_over_budget_is_refused_before_compiling(folder, tmp_path, capsys):
    rc = main(["deploy", str(folder), "--target", "stm32f746", "--out", str(tmp_path / "f"), "--sram", "20k", "--json"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "does not fit stm32f746" in err and "arena 15552" in err and "20480 B" in err
    assert "Traceback" not in err
    assert not (tmp_path / "f" / "firmware.elf").exists()
    with pytest.raises(TinydetError, match="B Flash"):
        build_firmware(folder, "stm32f746", tmp_path / "g", flash="32k")


def test_stm32_targets_build(folder, tmp_path):
    for target in ("stm32f746", "stm32h743"):
        info = build_firmware(folder, target, tmp_path / target, mode="patch")
        assert info["sram_arena_bytes"] == info["planned_peak_bytes"]
        assert info["flash_bytes"] > info["weights_bytes"]
        assert os.path.getsize(info["bin"]) > info["weights_bytes"]


def test_checksum_failure_is_reported(folder, tmp_path):
    bad = _copy(folder, tmp_path)
    with open(bad / "stage2.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(TinydetError, match="checksum mismatch: stage2.int8.onnx"):
        build_firmware(bad, "host", tmp_path / "b")


def test_unsupported_op_names_the_node(folder, tmp_path):
    bad = _copy(folder, tmp_path)
    model = onnx.load(str(bad / "full.int8.onnx"))
    node = next(n for n in model.graph.node if n.name == "heads.0.pw")
    node.op_type = "ConvTranspose"  # recorded with its checksum, so only the generator can object
    add_files(bad, {"full.int8.onnx": model.SerializeToString()})
    with pytest.raises(TinydetError, match="heads.0.pw"):
        build_firmware(bad, "host", tmp_path / "b", mode="layer")


def test_hung_firmware_times_out_with_the_log_kept(folder, tmp_path):
    with pytest.raises(TinydetError, match="hung") as exc:
        deploy(folder, "qemu-mps2-an500", tmp_path / "h", mode="patch", run=True, images=1, timeout_s=2,
               defines=["TINYDET_HANG"])
    log = tmp_path / "h" / "run" / "qemu.log"
    assert str(log) in str(exc.value) and "killed after" in log.read_text()


def test_missing_toolchain_gives_the_install_hint(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TinydetError, match="apt-get install gcc-arm-none-eabi"):
        build_firmware(folder, "qemu-mps2-an500", tmp_path / "m")


def test_deploy_imports_no_torch(folder, tmp_path):
    code = ("import sys; from tinydet.deploy.emit_c import generate; import tinydet.deploy.build, "
            "tinydet.deploy.run, tinydet.deploy.validate, tinydet.commands.deploy; "
            f"generate({str(folder)!r}, {str(tmp_path / 'g')!r}, mode='layer'); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_board_demo_with_embedded_image_prints_the_same_detections(folder, tmp_path):
    from tinydet.deploy import toolchain
    from tinydet.deploy.build import build_board_demo

    image = np.random.default_rng(3).random((3, 48, 64), dtype=np.float32)
    f746 = build_board_demo(folder, image, tmp_path / "f746", target="stm32f746", conf=0.1)
    assert f746["sram_arena_bytes"] == f746["planned_peak_bytes"] and os.path.isfile(f746["bin"])
    assert "tinydet_demo_image[9216]" in (tmp_path / "f746" / "demo_image.h").read_text()
    assert os.path.isfile(build_board_demo(folder, image, tmp_path / "h743", target="stm32h743", conf=0.1)["bin"])
    # the same board firmware on the emulated M7: console lines vs the file-based firmware's detections
    q = build_board_demo(folder, image, tmp_path / "q", target="qemu-mps2-an500", conf=0.1)
    code, _, log = toolchain.run_qemu(q["elf"], tmp_path / "run", timeout_s=60)
    assert code == 0
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("det ")]
    ref = deploy(folder, "host", tmp_path / "h", run=True, images=image[None], conf=0.1)["_detections"][0]
    assert len(lines) == len(ref[0]) > 0
    first = lines[0].split()  # det 0 label=L score=S box=x1,y1,x2,y2
    assert first[2] == "label=%d" % ref[2][0]
    assert first[4] == "box=" + ",".join(str(int(v + 0.5)) for v in ref[0][0])
    # per-layer counters (DWT cycles on the STM32 targets; instructions here), as cycles.parse_board_log reads them
    from tinydet.deploy import cycles
    board = cycles.parse_board_log(log.read_text(), str(log))
    assert len(board.layer_ticks) == sum(1 for ln in log.read_text().splitlines() if ln.startswith("layer ")) > 3
    assert all(t > 0 for t in board.layer_ticks.values())
    assert sum(board.layer_ticks.values()) + board.input_ticks <= board.total_ticks and board.detect_ticks > 0


@pytest.mark.parametrize("grid,split", [((2, 2), 1), ((4, 4), 5)])
def test_other_plans_are_bit_exact(tmp_path, grid, split):
    """Split 1: the stage-1 sink is the stride-2 stem (rows written into the stage-1 buffer);
    split 5 on a 4x4 grid: the sink is a fused residual projection with cropped shortcuts."""
    from tinydet.quant.calibrate import calibrate
    from tinydet.pipeline.quantize import quantize_export

    out = tmp_path / "e"
    make_export(out, grid=grid, split=split)
    quantize_export(out, calibrate(str(out / "full.onnx"), calib_images(), "minmax"), {"kind": "ptq"})
    images = np.random.default_rng(4).random((2, 3, 48, 64), dtype=np.float32)
    r = deploy(out, "host", tmp_path / "b", mode="patch", validate=True, images=images, conf=0.1)
    assert r["outputs_bit_exact_vs_reference"] is True
    assert r["sram_arena_bytes"] == load_export(out).schedule["memory"]["peak_sram_patch"]
    assert r["tiles"] == grid[0] * grid[1]


def test_crashing_firmware_is_reported(folder, tmp_path):
    with pytest.raises(TinydetError, match="crashed") as exc:
        deploy(folder, "qemu-mps2-an500", tmp_path / "c", run=True, images=1, defines=["TINYDET_CRASH"])
    assert "qemu.log" in str(exc.value)


def test_run_demo_returns_detections_in_original_pixels(folder, tmp_path):
    from PIL import Image

    from tinydet.data.transforms import letterbox_meta, unletterbox
    from tinydet.deploy import run_demo

    rng = np.random.default_rng(8)
    paths = []
    for i, (h, w) in enumerate([(96, 128), (120, 100)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    result = run_demo(folder, paths, tmp_path / "demo", conf=0.1)
    sched = load_export(folder).schedule
    assert result["patch"]["sram_arena_bytes"] == sched["memory"]["peak_sram_patch"]
    assert result["layer"]["sram_arena_bytes"] == sched["memory"]["peak_sram_per_layer"]
    assert result["arena_saved_bytes"] > 0 and result["patch"]["instructions_per_inference"] > 0
    assert result["patch"]["outputs_bit_exact_vs_reference"] and result["layer"]["outputs_bit_exact_vs_reference"]
    # boxes: the firmware's network-input boxes mapped back through the letterbox
    raw = (tmp_path / "demo" / "patch" / "run" / "det_1.txt").read_text().split("\n")[0].split()
    meta = letterbox_meta((120, 100), (48, 64))
    want = unletterbox(np.asarray([[float(v) for v in raw[:4]]], np.float32), meta)[0]
    got = result["detections"][str(paths[1])]["boxes"][0]
    assert np.allclose(got, want, atol=1e-3)
    assert max(b[2] for b in result["detections"][str(paths[1])]["boxes"]) <= 100
    assert json.loads((tmp_path / "demo" / "detections.json").read_text())["class_names"] == ["a", "b"]


def test_cli_images_dir_on_host(folder, tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    rc = main(["deploy", str(folder), "--target", "host", "--out", str(tmp_path / "h"), "--mode", "layer",
               "--validate", "--images", "2", "--images-dir", str(d), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    r = json.loads(out)
    assert r["images"] == 2 and r["image_source"] == str(d) and r["outputs_bit_exact_vs_reference"] is True
    assert r["instructions_per_inference"] is None and r["counter"] == "host-cpu-clock-us"


def test_cli_data_config_images_on_host(folder, tmp_path, capsys):
    from train_helpers import make_voc, tiny_config

    cfg = tiny_config(tmp_path, make_voc(tmp_path / "voc", images=8), tmp_path / "runs")
    rc = main(["deploy", str(folder), "--target", "host", "--out", str(tmp_path / "h"), "--mode", "patch",
               "--validate", "--images", "2", "--data-config", str(cfg), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    r = json.loads(out)
    assert r["image_source"] == f"{cfg}: val" and r["images"] == 2
    assert r["outputs_bit_exact_vs_reference"] is True


@needs.cmsis_nn
@pytest.mark.parametrize("mode", ["patch", "layer"])
def test_deploy_with_cmsis_nn_root_builds_arm_kernels_and_stays_bit_exact(folder, tmp_path, mode):
    images = np.random.default_rng(4).random((2, 3, 48, 64), dtype=np.float32)
    r = deploy(folder, "host", tmp_path / mode, mode=mode, validate=True, images=images, conf=0.1)
    assert r["kernels"].startswith("cmsis-nn")
    assert r["outputs_bit_exact_vs_reference"] is True
