"""Instructions per kernel call on the emulated Cortex-M7: bundled kernels vs the plain reference
loops (ref_*) (and ARM's CMSIS-NN with --cmsis-nn-root), on typical MobileNetV2-detector layers,
through the wrappers (arm_convolve_wrapper_s8 / arm_depthwise_conv_wrapper_s8) as firmware calls
them. benchmarks/kernels.py adds the demo model's layers, ARM's dispatch path and instructions/MAC.

    .venv/bin/python tests/c/bench_kernels.py [--cmsis-nn-root DIR] [--out build/bench_kernels]

Prints one JSON object: {"counter": ..., "layers": [{"layer", "macs", "bundled", "ref", "cmsis_nn"?}]}.
Instructions = CMSDK timer ticks x 40 under -icount shift=0 (deploy/targets/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import driver as drv  # noqa: E402

from tinydet.deploy import toolchain  # noqa: E402
from tinydet.quant import arith  # noqa: E402

INSTRUCTIONS_PER_TICK = 40


def _conv(rng, h, c, cout, k, s, variant):
    p = k // 2
    x = rng.integers(-128, 128, (1, h, h, c), dtype=np.int8)
    w = rng.integers(-128, 128, (cout, k, k, c), dtype=np.int8)
    m, sh = arith.quantize_multiplier(np.full(cout, 2**-10))
    o = (h + 2 * p - k) // s + 1
    rec = drv.conv_record(x, w, np.zeros(cout, np.int32), m, sh, input_offset=128, output_offset=-128,
                          stride=(s, s), padding=(p, p), dilation=(1, 1), out_hw=(o, o), act_min=-128, act_max=127,
                          variant=variant)
    return rec, o * o * cout * k * k * c


def _dw(rng, h, c, k, s, variant):
    p = k // 2
    x = rng.integers(-128, 128, (1, h, h, c), dtype=np.int8)
    w = rng.integers(-128, 128, (1, k, k, c), dtype=np.int8)
    m, sh = arith.quantize_multiplier(np.full(c, 2**-10))
    o = (h + 2 * p - k) // s + 1
    rec = drv.dw_record(x, w, np.zeros(c, np.int32), m, sh, input_offset=128, output_offset=-128, stride=(s, s),
                        padding=(p, p), dilation=(1, 1), out_hw=(o, o), act_min=-128, act_max=127, variant=variant)
    return rec, o * o * c * k * k


def _geo(h, c, k, s):
    """(kernel, stride, top/left padding, input h/w/c) of a square layer with 'same' padding."""
    return (k, k), (s, s), (k // 2, k // 2), (h, h, c)


# (name, record maker, kind, geometry)
LAYERS = [
    ("conv 3x3 s2 48x48 3->16 (stem)", lambda rng, v: _conv(rng, 48, 3, 16, 3, 2, v), "conv", _geo(48, 3, 3, 2)),
    ("conv 1x1 28x28 32->64 (expand)", lambda rng, v: _conv(rng, 28, 32, 64, 1, 1, v), "conv", _geo(28, 32, 1, 1)),
    ("conv 1x1 14x14 96->24 (project)", lambda rng, v: _conv(rng, 14, 96, 24, 1, 1, v), "conv", _geo(14, 96, 1, 1)),
    ("dw 3x3 s1 28x28x96", lambda rng, v: _dw(rng, 28, 96, 3, 1, v), "dw", _geo(28, 96, 3, 1)),
    ("dw 3x3 s2 28x28x96", lambda rng, v: _dw(rng, 28, 96, 3, 2, v), "dw", _geo(28, 96, 3, 2)),
    ("dw 5x5 s1 14x14x64", lambda rng, v: _dw(rng, 14, 64, 5, 1, v), "dw", _geo(14, 64, 5, 1)),
    ("dw 3x3 s1 28x28x96 in place", lambda rng, v: _dw(rng, 28, 96, 3, 1, v), "dw_inplace", _geo(28, 96, 3, 1)),
    ("dw 3x3 s2 28x28x96 in place", lambda rng, v: _dw(rng, 28, 96, 3, 2, v), "dw_inplace", _geo(28, 96, 3, 2)),
]


def _run(elf: Path, workdir: Path, recs: list[bytes]) -> list[int]:
    try:
        outs = drv.run_records(elf, workdir, recs, toolchain.run_qemu, timeout_s=600)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    bad = [i for i, o in enumerate(outs) if o[0] != 0]
    if bad:
        raise SystemExit(f"kernel call {bad[0]} returned status {outs[bad[0]][0]}")
    return [t * INSTRUCTIONS_PER_TICK for _, t, _ in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmsis-nn-root", help="also measure ARM's CMSIS-NN built from this source tree")
    ap.add_argument("--out", default="build/bench_kernels", help="build/work folder")
    a = ap.parse_args()
    out = Path(a.out)
    recs, rows = [], []
    for name, make, kind, _ in LAYERS:
        # the wrappers: the calls generated firmware makes (ARM's dispatch to its DSP paths)
        opt = {"conv": drv.CONV_WRAPPER, "dw": drv.DW_WRAPPER, "dw_inplace": drv.DW_INPLACE}[kind]
        ref = {"conv": drv.CONV_REF, "dw": drv.DW_REF, "dw_inplace": drv.DW_REF}[kind]
        rec, macs = make(np.random.default_rng(0), opt)
        recs += [rec, make(np.random.default_rng(0), ref)[0]]
        rows.append({"layer": name, "macs": macs})
    builds = {"bundled": None}
    if a.cmsis_nn_root:
        builds["cmsis_nn"] = a.cmsis_nn_root
    for label, root in builds.items():
        elf = toolchain.compile([drv.DRIVER_SOURCE], "qemu-mps2-an500", out / f"kd_{label}.elf", ref_kernels=True,
                                defines={"TINYDET_BOARD": 1}, cmsis_nn_root=root)
        counts = _run(elf, out / label, recs)
        for i, row in enumerate(rows):
            row[label] = counts[2 * i]
            row["ref"] = counts[2 * i + 1]
    for row in rows:
        row["speedup_vs_ref"] = round(row["ref"] / row["bundled"], 2)
    print(json.dumps({"counter": "cmsdk-timer0 x40 (qemu -icount shift=0)", "layers": rows}, indent=1))


if __name__ == "__main__":
    main()
