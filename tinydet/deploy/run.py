"""Run built firmware on images (QEMU semihosting or the host build) and read back what it wrote.

The host quantizes each image exactly as the int8 graph's input QuantizeLinear does
(:func:`tinydet.quant.arith.quantize`) and writes it as int8 NHWC ``img_<i>.bin``; the firmware
(``deploy/demo/main.c``) writes ``out_<i>.bin`` (output tensors) and ``det_<i>.txt``, and prints
its counters on stdout.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinydet.deploy import toolchain
from tinydet.errors import TinydetError


#: Configurable Fault Status Register bits (ARMv7-M ARM B3.2.15): MMFSR (0-7), BFSR (8-15), UFSR (16-31).
CFSR_BITS = {
    0: ("MemManage", "IACCVIOL: instruction fetch from a no-execute region"),
    1: ("MemManage", "DACCVIOL: data access violation"),
    3: ("MemManage", "MUNSTKERR: fault unstacking on exception return"),
    4: ("MemManage", "MSTKERR: fault stacking on exception entry (stack overflow?)"),
    5: ("MemManage", "MLSPERR: fault during lazy FP state preservation"),
    8: ("BusFault", "IBUSERR: instruction bus error"),
    9: ("BusFault", "PRECISERR: precise data bus error"),
    10: ("BusFault", "IMPRECISERR: imprecise data bus error"),
    11: ("BusFault", "UNSTKERR: bus fault unstacking on exception return"),
    12: ("BusFault", "STKERR: bus fault stacking on exception entry (stack overflow?)"),
    13: ("BusFault", "LSPERR: bus fault during lazy FP state preservation"),
    16: ("UsageFault", "UNDEFINSTR: undefined instruction"),
    17: ("UsageFault", "INVSTATE: invalid EPSR state (a call to an even address?)"),
    18: ("UsageFault", "INVPC: invalid exception return"),
    19: ("UsageFault", "NOCP: coprocessor (FPU) disabled or absent"),
    24: ("UsageFault", "UNALIGNED: unaligned access"),
    25: ("UsageFault", "DIVBYZERO: integer division by zero"),
}
MMARVALID, BFARVALID = 1 << 7, 1 << 15
HFSR_FORCED, HFSR_VECTTBL = 1 << 30, 1 << 1


def describe_fault(text: str) -> str | None:
    """One line naming the fault the board's fault handler reported in ``text`` (its console
    output: ``fault NAME`` and the ``pc lr cfsr hfsr mmfar bfar`` registers, see
    deploy/targets/common/startup_cm7.c), the CFSR bits decoded; None when ``text`` holds none."""
    name = re.search(r"^\s*fault (\w+)", text, re.M)
    regs = {k: int(v, 16) for k, v in re.findall(r"^\s*(pc|lr|cfsr|hfsr|mmfar|bfar)\s+0x([0-9a-fA-F]+)", text, re.M)}
    if name is None and "cfsr" not in regs:
        return None
    fault = name.group(1) if name else "HardFault"
    cfsr, hfsr = regs.get("cfsr", 0), regs.get("hfsr", 0)
    causes = [why for bit, (_, why) in sorted(CFSR_BITS.items()) if cfsr >> bit & 1]
    if fault == "HardFault" and hfsr & HFSR_FORCED and causes:
        kinds = sorted({kind for bit, (kind, _) in CFSR_BITS.items() if cfsr >> bit & 1})
        fault = f"HardFault (escalated {'/'.join(kinds)})"
    elif fault == "HardFault" and hfsr & HFSR_VECTTBL:
        causes.append("VECTTBL: bus fault reading the vector table")
    if cfsr & MMARVALID and "mmfar" in regs:
        causes.append(f"address 0x{regs['mmfar']:08x}")
    if cfsr & BFARVALID and "bfar" in regs:
        causes.append(f"address 0x{regs['bfar']:08x}")
    at = f" at pc 0x{regs['pc']:08x} (lr 0x{regs.get('lr', 0):08x})" if "pc" in regs else ""
    status = ", ".join(f"{k} 0x{regs[k]:08x}" for k in ("cfsr", "hfsr") if k in regs)
    return f"{fault}{at}: {'; '.join(causes) or 'no fault status bits set'} [{status}]"


@dataclass
class RunResult:
    """Per image: int8 NHWC outputs, detections (boxes [N,4], scores [N], labels [N]) and ticks."""

    outputs: list[list[np.ndarray]]
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    ticks: list[int]
    input_ticks: list[int]
    detect_ticks: list[int]  # tinydet_model_detect (decode + NMS) per image
    layer_ticks: dict[str, int]
    counter: str
    instructions_per_tick: float  # 0 where the counter is not an instruction count (host)
    stack_bytes: int | None
    log: Path
    stdout: str = ""
    extra: dict = field(default_factory=dict)


def quantize_images(images: np.ndarray, inp: dict) -> list[np.ndarray]:
    """Float NCHW [K, 3, H, W] in [0, 1] -> int8 NHWC per image, as the int8 model's input."""
    from tinydet.quant.arith import quantize

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (inp["c"], inp["h"], inp["w"]):
        raise TinydetError(f"images: expected [K, {inp['c']}, {inp['h']}, {inp['w']}], got {list(images.shape)}")
    q = quantize(images, inp["scale"], inp["zp"])
    return [np.ascontiguousarray(x.transpose(1, 2, 0)) for x in q]


def output_maps(outputs: list[list[np.ndarray]], rows: list[dict]) -> list[np.ndarray]:
    """Per-image int8 NHWC output tensors (:attr:`RunResult.outputs`, or the reference's in the same
    order) -> per output, the float NCHW batch [K, C, H, W], dequantized as the int8 graph's
    DequantizeLinear does: what the onnxruntime and numpy reference runners return."""
    from tinydet.quant.arith import dequantize

    return [dequantize(np.concatenate([img[k] for img in outputs]), r["scale"], r["zp"]).transpose(0, 3, 1, 2).copy()
            for k, r in enumerate(rows)]


def _read_dets(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    arr = np.asarray([[float(v) for v in r[:5]] for r in rows], np.float64)
    return arr[:, :4].astype(np.float32), arr[:, 4].astype(np.float32), np.asarray([int(r[5]) for r in rows], np.int64)


def run_firmware(info: dict, images_int8: list[np.ndarray], workdir: "str | Path", timeout_s: float = 120.0) -> RunResult:
    """Run the firmware of ``info`` (from :func:`tinydet.deploy.build.build_firmware`) on the images.

    A hang (timeout), a crash or a non-zero exit raises TinydetError with the kept log's path.
    """
    target = toolchain.get_target(info["target"])
    if target.kind == "board":
        raise TinydetError(f"--run: target {info['target']} is a board; run it on the board (deploy/demo/README.md) "
                           f"or deploy to qemu-mps2-an500 / host")
    work = Path(workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for i, img in enumerate(images_int8):
        (work / f"img_{i}.bin").write_bytes(np.asarray(img, np.int8).tobytes())
    if target.kind == "qemu":
        code, out, log = toolchain.run_qemu(info["elf"], work, timeout_s=timeout_s, target=info["target"])
    else:
        code, out, log = toolchain.run_host(info["elf"], work, timeout_s=timeout_s)
    if code != 0:
        fault = describe_fault(out + (log.read_text(errors="replace") if log.is_file() else ""))
        if fault:
            raise TinydetError(f"firmware {Path(info['elf']).name} faulted: {fault}; log kept: {log}")
        last = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "no output")
        raise TinydetError(f"firmware {Path(info['elf']).name} exited with status {code} ({last.strip()}); "
                           f"log kept: {log}")
    head = re.search(r"counter=(\S+) instructions_per_tick_x1000=(\d+)", out)
    if head is None:
        raise TinydetError(f"firmware {Path(info['elf']).name}: no banner in its output; log kept: {log}")
    ticks, input_ticks, detect_ticks = [], [], []
    for m in re.finditer(r"^image (\d+) rc=0 ticks=(\d+) input_ticks=(\d+) detections=\d+ detect_ticks=(\d+)", out,
                         re.M):
        ticks.append(int(m.group(2)))
        input_ticks.append(int(m.group(3)))
        detect_ticks.append(int(m.group(4)))
    if len(ticks) != len(images_int8):
        raise TinydetError(f"firmware ran {len(ticks)} of {len(images_int8)} images; log kept: {log}")
    layer_ticks = {m.group(2): int(m.group(3)) for m in re.finditer(r"^layer (\d+) (\S+) (\d+)", out, re.M)}
    stack = re.search(r"^stack_used (\d+) of (\d+)", out, re.M)
    outputs, dets = [], []
    for i in range(len(images_int8)):
        raw = np.frombuffer((work / f"out_{i}.bin").read_bytes(), np.int8)
        tensors, pos = [], 0
        for o in info["outputs"]:
            n = o["h"] * o["w"] * o["c"]
            if pos + n > raw.size:
                raise TinydetError(f"{work / f'out_{i}.bin'}: {raw.size} bytes, expected the outputs' "
                                   f"{sum(x['h'] * x['w'] * x['c'] for x in info['outputs'])}")
            tensors.append(raw[pos:pos + n].reshape(1, o["h"], o["w"], o["c"]).copy())
            pos += n
        outputs.append(tensors)
        dets.append(_read_dets(work / f"det_{i}.txt"))
    return RunResult(outputs=outputs, detections=dets, ticks=ticks, input_ticks=input_ticks, detect_ticks=detect_ticks,
                     layer_ticks=layer_ticks,
                     counter=head.group(1), instructions_per_tick=int(head.group(2)) / 1000.0,
                     stack_bytes=int(stack.group(1)) if stack else None, log=log, stdout=out)
