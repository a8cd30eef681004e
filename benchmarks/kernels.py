"""Per-kernel instructions on the emulated Cortex-M7: bundled kernels vs ARM's CMSIS-NN wrappers.

    CMSIS_NN_ROOT=/path/to/CMSIS-NN .venv/bin/python benchmarks/kernels.py [--export DIR] [--json]

Shapes: every conv / depthwise layer of an exported model (``--export``, e.g. the demo's
``demo_out/export``; layer-mode shapes, the model's own weights and quantization, random int8
inputs) plus the typical MobileNetV2-detector shapes of tests/c/bench_kernels.py. Each layer runs
through the call generated firmware makes: ``arm_convolve_wrapper_s8`` / ``arm_depthwise_conv_wrapper_s8``
(and ``tinydet_depthwise_conv_inplace_s8`` for the in-place rows). With ``CMSIS_NN_ROOT`` (or
``--cmsis-nn-root``) the same records run, in the same command, through a second driver built
against ARM's sources with ``-mcpu=cortex-m7`` (ARM_MATH_DSP: ARM's DSP paths); the ``arm path``
column names the function ARM's wrapper dispatches to for that shape (its rules, v. 99f736a), and
outputs of both builds must be identical. Instructions = CMSDK timer ticks x 40 under
``-icount shift=0`` (deterministic; tests/test_c_kernels.py calibrates the counter). ``cycles``
columns are tinydet.deploy.cycles estimates (see its docstring).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "c"))
import bench_kernels  # noqa: E402
import driver as drv  # noqa: E402

from tinydet.deploy import cycles, toolchain  # noqa: E402


@dataclass
class KernelRow:
    """One kernel call measured in both builds."""
    layer: str
    kind: str            # "conv" | "dwconv" | "dwconv_inplace"
    shape: str
    macs: int
    bundled: int         # instructions
    arm: int | None      # instructions, ARM's CMSIS-NN wrapper
    arm_path: str
    bundled_per_mac: float
    arm_per_mac: float | None
    arm_over_bundled: float | None
    bundled_cycles_216mhz_us: float


def arm_path(kind: str, k: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int], in_hwc) -> str:
    """The function ARM's wrapper dispatches to (arm_convolve_wrapper_s8 / arm_depthwise_conv_wrapper_s8,
    non-MVE core) for this shape."""
    if kind == "conv":
        if k == (1, 1) and pad == (0, 0):
            return "arm_convolve_1x1_s8_fast" if stride == (1, 1) else "arm_convolve_1x1_s8"
        if in_hwc[0] == 1 and k[0] == 1 and (stride[1] * in_hwc[2]) % 4 == 0:
            return "arm_convolve_1_x_n_s8"
        return "arm_convolve_s8"
    if kind == "dwconv_inplace":
        return "- (tinydet kernel in both builds)"
    if k == (3, 3) and pad[0] <= 1 and pad[1] <= 1:
        return "arm_depthwise_conv_3x3_s8"
    return "arm_depthwise_conv_s8_opt"


def _export_layers(export_dir: Path, rng) -> list[tuple[str, str, bytes, int, str, tuple]]:
    rows = []
    for lay in drv.export_layers(export_dir, rng):
        rec = lay.record(drv.CONV_WRAPPER if lay.kind == "conv" else drv.DW_WRAPPER)
        _, h, w, c = lay.x.shape
        k = tuple(lay.op.kernel)
        cout = lay.op.weight.shape[0] if lay.kind == "conv" else c
        shape = f"{k[0]}x{k[1]} s{lay.geo['stride'][0]} {h}x{w} {c}->{cout}"
        rows.append((lay.name, lay.kind, rec, lay.macs, shape, (k, lay.geo["stride"], lay.geo["padding"], (h, w, c))))
    return rows


def _typical_layers() -> list[tuple[str, str, bytes, int, str, tuple]]:
    rows = []
    for name, make, kind, geo in bench_kernels.LAYERS:
        variant = {"conv": drv.CONV_WRAPPER, "dw": drv.DW_WRAPPER, "dw_inplace": drv.DW_INPLACE}[kind]
        rec, macs = make(np.random.default_rng(0), variant)
        k = {"conv": "conv", "dw": "dwconv", "dw_inplace": "dwconv_inplace"}[kind]
        rows.append((name, k, rec, macs, name.split(" (")[0], geo))
    return rows


def _run(elf: Path, work: Path, recs: list[bytes]) -> list[tuple[int, int, bytes]]:
    outs = drv.run_records(elf, work, recs, toolchain.run_qemu, timeout_s=590)
    bad = [i for i, o in enumerate(outs) if o[0] != 0]
    if bad:
        raise SystemExit(f"benchmarks/kernels.py: kernel call {bad[0]} returned status {outs[bad[0]][0]}")
    return outs


def measure(export: Path | None, cmsis_nn_root: str | None, work: Path) -> list[KernelRow]:
    """Run every layer through the bundled build (and ARM's when ``cmsis_nn_root``); rows in order."""
    layers = (_export_layers(export, np.random.default_rng(0)) if export else []) + _typical_layers()
    recs = [r[2] for r in layers]
    ipt = bench_kernels.INSTRUCTIONS_PER_TICK
    builds = {"bundled": None, **({"arm": cmsis_nn_root} if cmsis_nn_root else {})}
    results = {}
    for label, root in builds.items():
        elf = toolchain.compile([drv.DRIVER_SOURCE], "qemu-mps2-an500", work / f"kd_{label}.elf", ref_kernels=True,
                                defines={"TINYDET_BOARD": 1, "ARENA_BYTES": 3 * 1024 * 1024}, cmsis_nn_root=root)
        results[label] = _run(elf, work / label, recs)
    if "arm" in results:
        for (name, *_), a, b in zip(layers, results["bundled"], results["arm"]):
            if a[2] != b[2]:
                raise SystemExit(f"benchmarks/kernels.py: {name}: bundled and ARM outputs differ")
    rows = []
    for i, (name, kind, _, macs, shape, geo) in enumerate(layers):
        ins = results["bundled"][i][1] * ipt
        arm = results["arm"][i][1] * ipt if "arm" in results else None
        k, stride, pad, in_hwc = geo
        est = cycles.kernel_cycles(cycles.KernelCount(kind=kind, instructions=ins, macs=macs))
        rows.append(KernelRow(layer=name, kind=kind, shape=shape, macs=macs, bundled=ins, arm=arm,
                              arm_path=arm_path(kind, k, stride, pad, in_hwc) if arm is not None else "-",
                              bundled_per_mac=round(ins / macs, 2),
                              arm_per_mac=round(arm / macs, 2) if arm is not None else None,
                              arm_over_bundled=round(arm / ins, 3) if arm is not None else None,
                              bundled_cycles_216mhz_us=round(est / 216.0, 1)))
    return rows


def _table(rows: list[KernelRow]) -> str:
    head = ("| layer | kind | shape | MACs | bundled | instr/MAC | ARM wrapper | instr/MAC | ARM path | ARM / bundled "
            "| est. us @216 MHz |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r.layer} | {r.kind} | {r.shape} | {r.macs:,} | {r.bundled:,} | {r.bundled_per_mac} | "
                     f"{'-' if r.arm is None else f'{r.arm:,}'} | {'-' if r.arm_per_mac is None else r.arm_per_mac} | "
                     f"{r.arm_path} | {'-' if r.arm_over_bundled is None else r.arm_over_bundled} | "
                     f"{r.bundled_cycles_216mhz_us} |")
    tot_b = sum(r.bundled for r in rows)
    if rows and rows[0].arm is not None:
        tot_a = sum(r.arm for r in rows)
        lines.append(f"| **all** | | | {sum(r.macs for r in rows):,} | {tot_b:,} | | {tot_a:,} | | | "
                     f"{tot_a / tot_b:.3f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", help="an export folder whose conv/depthwise layers to measure (e.g. demo_out/export)")
    ap.add_argument("--cmsis-nn-root", default=os.environ.get("CMSIS_NN_ROOT"),
                    help="ARM CMSIS-NN source tree (default $CMSIS_NN_ROOT)")
    ap.add_argument("--work", default=str(REPO / "build" / "bench_kernels_cmp"))
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a Markdown table")
    a = ap.parse_args()
    rows = measure(Path(a.export) if a.export else None, a.cmsis_nn_root, Path(a.work))
    print(json.dumps([asdict(r) for r in rows], indent=1) if a.json else _table(rows))


if __name__ == "__main__":
    main()
