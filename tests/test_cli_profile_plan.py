"""``tinydet profile`` and ``tinydet plan``: JSON figures against torchvision and the model, the
readable output, the plot, and one-line errors for bad input."""
import json
import subprocess
import sys

import pytest

from tinydet.cli import main


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def _torchvision_macs(model, size: int) -> int:
    import torch

    macs = []

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            macs.append(out.numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups)
        elif isinstance(m, torch.nn.Linear):
            macs.append(m.in_features * m.out_features)

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return sum(macs)


@pytest.mark.parametrize("name,width", [("mbv2-w1.0", 1.0), ("mbv2-w0.35", 0.35)])
def test_profile_matches_torchvision_and_the_built_model(capsys, name, width):
    import torch
    import torchvision

    from tinydet.arch.modules import build

    r = run_json(capsys, "profile", "--arch", name, "--resolution", "224")
    tv = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
    assert r["params"] == sum(p.numel() for p in tv.parameters())
    assert r["params"] == sum(p.numel() for p in build(name).parameters())
    assert r["macs"] == _torchvision_macs(tv, 224)
    if name == "mbv2-w1.0":
        assert r["macs"] == 300_774_272 and r["params"] == 3_504_872
        assert r["peak_sram_per_layer"] == 1_404_928
    assert r["arch"] == name and r["resolution"] == [224, 224]
    assert r["peak_sram_per_layer"] == max(layer["working_set"] for layer in r["layers"])
    first = r["layers"][0]
    assert set(first) >= {"name", "in_shape", "out_shape", "macs", "working_set", "receptive_field", "stride"}
    assert first["in_shape"] == [3, 224, 224] and first["receptive_field"] == 3 and first["stride"] == 2
    # Flash: int8 weights + 12 bytes (int32 bias, multiplier, shift) per output channel
    weights = sum(m.weight.numel() for m in tv.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    channels = sum(m.weight.shape[0] for m in tv.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert r["flash_bytes"] == weights + 12 * channels


def test_profile_detector_params_match_model(capsys):
    from tinydet.arch import HeadSpec
    from tinydet.arch.modules import build

    r = run_json(capsys, "profile", "--arch", "mcunetv2-m4", "--resolution", "160x128", "--head-classes", "3",
                 "--anchors", "2")
    model = build("mcunetv2-m4", head=HeadSpec(num_classes=3, num_anchors=2))
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert r["mode"] == "detector" and r["resolution"] == [160, 128]
    assert r["layers"][-1]["out_shape"][0] == 2 * (5 + 3)


def test_profile_patches_paper_configuration(capsys):
    r = run_json(capsys, "profile", "--arch", "mbv2-w1.0", "--resolution", "224", "--patches", "4", "--split", "5")
    assert r["peak_sram_per_layer"] == 1_404_928
    assert r["peak_sram_patch"] == 176_400 == r["arena_bytes"]
    assert r["grid"] == [4, 4] and r["split"] == 5 and r["split_shape"] == [32, 28, 28]
    assert 0.08 < r["mac_overhead"] < 0.11 and r["input_streamed"] is True
    assert len(r["tiles"]) == 16 and max(t["in_size"][0] for t in r["tiles"]) == 75
    assert r["tiles"][0]["out_rect"] == [0, 7, 0, 7] and r["tiles"][0]["pad"] == {"top": 1, "left": 1, "bottom": 0, "right": 0}
    rules_off = run_json(capsys, "profile", "--arch", "mbv2-w1.0", "--grid", "2x3", "--split", "5",
                         "--no-inplace-dw", "--no-fused-residual")
    assert rules_off["peak_sram_per_layer"] == 96 * 112 * 112 + 96 * 56 * 56
    assert rules_off["grid"] == [2, 3] and len(rules_off["tiles"]) == 6
    assert rules_off["rules"] == {"inplace_dw": False, "fused_residual": False, "fused_blocks": []}


def test_profile_readable_table(capsys):
    assert main(["profile", "--arch", "mbv2-w1.0-rd", "--resolution", "224", "--patches", "4", "--split", "3"]) == 0
    out = capsys.readouterr().out
    assert "blocks.2.expand" in out and "peak SRAM per layer: 1,404,928 B" in out
    assert "largest tile input 63x63" in out


def test_plan_json_and_plot(capsys, tmp_path):
    png = tmp_path / "mem.png"
    r = run_json(capsys, "plan", "--arch", "mbv2-w1.0", "--resolution", "224", "--max-overhead", "0.1",
                 "--plot", str(png), "--no-fusion")  # MCUNetV2's schedule (tests/test_fusion_plan.py: fused)
    best = r["best"]
    assert best["grid"] == [4, 4] and best["split"] == 5 and best["peak_sram"] == 176_400
    assert best["arena_bytes"] == best["peak_sram"] and best["mac_overhead"] <= 0.1
    peaks = [p["peak_sram"] for p in r["pareto"]]
    overheads = [p["mac_overhead"] for p in r["pareto"]]
    assert peaks == sorted(peaks) and overheads == sorted(overheads, reverse=True)
    assert r["pareto"][-1]["patched"] is False  # per-layer is on the front (no overhead)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert r["plot"] == str(png)
    b = run_json(capsys, "plan", "--arch", "mbv2-w1.0", "--sram-budget", "0.5MB")
    assert b["sram_budget"] == 512 * 1024 and b["best"]["peak_sram"] <= 512 * 1024
    assert b["best"]["mac_overhead"] < best["mac_overhead"]
    c = run_json(capsys, "plan", "--arch", "mbv2-w1.0", "--sram-budget", "262144")
    assert c["sram_budget"] == 262144 and c["best"]["peak_sram"] <= 262144
    roomy = run_json(capsys, "plan", "--arch", "mbv2-w0.35", "--resolution", "96", "--sram-budget", "4MB", "--no-fusion")
    assert roomy["best"]["patched"] is False and roomy["best"]["mac_overhead"] == 0


def test_plan_readable(capsys):
    assert main(["plan", "--arch", "mbv2-w0.35", "--resolution", "128", "--max-overhead", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "best: grid" in out and "pareto front" in out


@pytest.mark.parametrize("argv,expect", [
    (["profile", "--arch", "mbv2-w1.9"], "did you mean 'mbv2-w1.0'"),
    (["profile", "--arch", "mbv2-w1.0", "--resolution", "16"], "too small"),
    (["profile", "--arch", "mbv2-w1.0", "--resolution", "abc"], "resolution"),
    (["profile", "--arch", "mbv2-w1.0", "--patches", "30", "--split", "5"], "larger than the split feature map"),
    (["profile", "--arch", "mbv2-w1.0", "--patches", "3", "--split", "42"], "split"),
    (["profile", "--arch", "mbv2-w1.0", "--patches", "3", "--split", "0"], "split"),
    (["profile", "--arch", "mbv2-w1.0", "--head-classes", "2", "--patches", "2", "--split", "16"], "at most 14"),
    (["profile", "--arch", "mbv2-w1.0", "--split", "5"], "--split"),
    (["profile", "--arch", "mbv2-w1.0", "--grid", "2x3x4", "--split", "5"], "grid"),
    (["plan", "--arch", "mbv2-w1.0", "--sram-budget", "lots"], "--sram-budget"),
    (["plan", "--arch", "mbv2-w1.0", "--sram-budget", "10kB"], "no schedule"),
    (["plan", "--arch", "mbv2-w1.0", "--splits", "99"], "split"),
    (["plan", "--arch", "mbv2-w1.0", "--max-overhead", "-1"], "--max-overhead"),
])
def test_bad_input_is_one_line(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err


def test_malformed_spec_file_through_the_installed_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nblocks: [ {type: conv, out: 8\n")
    proc = subprocess.run([sys.executable, "-m", "tinydet", "profile", "--arch", str(bad), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "malformed YAML" in proc.stderr
    assert "Traceback" not in proc.stderr
    good = tmp_path / "tiny.yaml"
    good.write_text("name: tiny\nblocks:\n  - {type: conv, out: 8, stride: 2}\n"
                    "  - {type: mbconv, out: 8, expand: 4}\n  - {type: mbconv, out: 16, stride: 2, expand: 4}\n")
    proc = subprocess.run([sys.executable, "-m", "tinydet", "plan", "--arch", str(good), "--resolution", "40x56",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["arch"] == "tiny" and r["resolution"] == [40, 56]
