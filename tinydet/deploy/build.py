"""``tinydet deploy`` build step: generate model.c/.h, check the budget, compile, measure.

    info = build_firmware("out/face", "qemu-mps2-an500", "build/face", mode="patch")
    info["sram_arena_bytes"] == info["planned_peak_bytes"]

The firmware is ``deploy/demo/main.c`` (file I/O through stdio: semihosting on QEMU, the file
system on the host) unless ``main`` names another application source (the STM32 demo). The
build folder is built aside and swapped in whole (old build or new build, never a mix).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping

from tinydet.deploy import emit_c, lower, targets, toolchain
from tinydet.errors import TinydetError
from tinydet.resources import resource_path

DEMO_DIR = resource_path("demo")  # deploy/demo (package data)
ARENA_SYMBOL = "tinydet_arena"


def symbol_size(elf: "str | Path", symbol: str) -> int:
    """Size in bytes of ``symbol`` in ``elf`` (``nm -S``): the arena as linked."""
    elf = Path(elf)
    tool = shutil.which("arm-none-eabi-nm") if toolchain._is_arm_elf(elf) else shutil.which("nm")
    if tool is None:
        tool = toolchain.find_tool("arm-none-eabi-nm")
    proc = subprocess.run([tool, "-S", str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinydetError(f"nm of {elf} failed: {proc.stderr.strip()}")
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == symbol:
            return int(parts[1], 16)
    raise TinydetError(f"{elf}: symbol {symbol} not found; expected the generated model's arena")


BUILD_MARKERS = ("build.json", "model.json")  # a folder with one of these is a (previous) build folder


def build_firmware(export_dir: "str | Path", target: str, out: "str | Path", mode: str = "patch",
                   conf: float = lower.DEFAULT_CONF, sram=None, flash=None, main: "str | Path | None" = None,
                   defines: Iterable[str] = (), extra_sources: Iterable["str | Path"] = (),
                   include_dirs: Iterable["str | Path"] = (), export=None,
                   files: "Mapping[str, bytes] | None" = None) -> dict:
    """Generate, check the budget, compile; returns the build figures (one JSON object's worth).

    The build happens in a hidden sibling of ``out`` (``files``, e.g. an embedded image header,
    are written there first) which replaces ``out`` in one atomic exchange only once everything
    succeeded (:func:`tinydet.io.atomic.staged_dir`): a refused or killed build leaves the previous
    build folder exactly as it was (a failed compile adds only its log, ``OUT/*.build.log``). An
    existing ``out`` that is not a build folder is refused.

    Refuses (TinydetError, before compiling) a missing toolchain, an export folder failing its
    checksums, an unsupported int8 op, or a model that does not fit the target.
    """
    from tinydet.export.schedule_file import load_export
    from tinydet.io.atomic import staged_dir, write_file

    budget = targets.budget(target, sram, flash)
    t = toolchain.get_target(target)
    toolchain.find_tool(t.compiler)  # install hint before any work
    if t.kind == "qemu":
        toolchain.find_tool(t.qemu[0])
    export = export or load_export(export_dir)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not any((out / m).is_file() for m in BUILD_MARKERS):
        raise TinydetError(f"--out {out}: a folder with other files (no {' / '.join(BUILD_MARKERS)}); expected a "
                           f"new folder or a previous build folder, which the build replaces")
    with staged_dir(out) as stage:
        for name, data in (files or {}).items():
            write_file(stage / name, data)
        gen = emit_c.generate(export.root, stage, mode=mode, conf=conf, export=export)
        low = gen.lowered
        write_file(stage / "model.json", (emit_c.summary_json(gen) + "\n").encode())
        fit = targets.check_fits(budget, low.arena_bytes, low.scratch_bytes, low.decode_bytes, low.const_bytes,
                                 f"{export.root.name} ({mode} mode)")
        sources = [Path(main) if main else DEMO_DIR / "main.c", gen.model_c, *map(Path, extra_sources)]
        defs = list(defines)
        if t.kind == "host":
            sources.append(DEMO_DIR / "host_board.c")
            defs.append("TINYDET_HOST")
        elf_name = "firmware" if t.kind == "host" else "firmware.elf"
        # CMSIS_NN_ROOT: compile ARM's CMSIS-NN kernels instead of the bundled ones (same API, same outputs)
        cmsis_nn_root = os.environ.get("CMSIS_NN_ROOT") or None
        try:
            toolchain.compile(sources, target, stage / elf_name, defines=defs, include_dirs=[stage, *include_dirs],
                              cmsis_nn_root=cmsis_nn_root)
        except TinydetError as exc:
            raise TinydetError(str(exc).replace(str(stage), str(out))) from _keep_logs(stage, out)
        sizes = toolchain.size(stage / elf_name)
        arena = symbol_size(stage / elf_name, ARENA_SYMBOL)
        elf = out / elf_name  # where it will be once the build folder is swapped in
        if arena != low.planned_peak_bytes:
            raise TinydetError(f"{elf}: linked arena is {arena} B, the planner's {mode} peak is "
                               f"{low.planned_peak_bytes} B; the generated code does not follow the plan")
        mem = export.schedule.get("memory", {})
        info = {
            "export": str(export.root), "target": target, "mode": mode, "elf": str(elf),
            "bin": str(elf.with_suffix(".bin")) if t.make_bin else None,
            "kernels": f"cmsis-nn ({cmsis_nn_root})" if cmsis_nn_root else "bundled",
            "flash_bytes": int(sizes["flash"]), "sram_arena_bytes": int(arena),
            "sram_static_bytes": int(sizes["sram_static"]), "stack_bytes": None,
            "stack_reserved_bytes": int(sizes["stack"]), "planned_peak_bytes": low.planned_peak_bytes,
            "scratch_bytes": low.scratch_bytes, "weights_bytes": low.const_bytes, "tiles": len(low.tiles),
            "peak_sram_patch": mem.get("peak_sram_patch"), "peak_sram_per_layer": mem.get("peak_sram_per_layer"),
            "budget": fit, "layers": low.layer_names, "outputs": [asdict(o) for o in low.outputs],
            "input": asdict(low.input), "detector": low.detector_config, "conf": conf,
            "classifier": asdict(low.classifier) if low.classifier else None,
        }
        write_file(stage / "build.json", (json.dumps(info, indent=1) + "\n").encode())
    return info


def _keep_logs(stage: Path, out: Path) -> None:
    """A failed compile's logs (``*.log``) are copied (atomically) from the discarded staged build
    into ``out``, where the error message points; the previous build stays as it was."""
    from tinydet.io.atomic import atomic_write_bytes

    for log in stage.glob("*.log"):
        atomic_write_bytes(out / log.name, log.read_bytes())


def image_header(image_int8) -> bytes:
    """``demo_image.h``: one int8 NHWC image as ``const`` data (Flash) for the board demo."""
    import numpy as np

    arr = np.asarray(image_int8, np.int8).reshape(-1)
    rows = [", ".join(str(int(v)) for v in arr[i:i + 32]) for i in range(0, arr.size, 32)]
    text = ("/* Generated by tinydet.deploy.build.image_header: the demo's embedded test image,\n"
            " * int8 NHWC, quantized like the model input (scale 1/255, zero point -128). */\n"
            "#ifndef TINYDET_DEMO_IMAGE_H\n#define TINYDET_DEMO_IMAGE_H\n#include <stdint.h>\n"
            f"static const int8_t tinydet_demo_image[{arr.size}] = {{\n    " + ",\n    ".join(rows) + "\n};\n#endif\n")
    return text.encode()


def build_board_demo(export_dir: "str | Path", image, out: "str | Path", target: str = "stm32f746",
                     mode: str = "patch", conf: float = lower.DEFAULT_CONF, **kw) -> dict:
    """The board demo (``deploy/demo/board_main.c``) with ``image`` embedded: a float [3, H, W] image
    in [0, 1] or an image file (letterboxed). Writes ``firmware.elf`` (and ``firmware.bin`` for the
    STM32 targets) under ``out``; see deploy/demo/README.md for flashing."""
    import numpy as np

    from tinydet.deploy.run import quantize_images
    from tinydet.export.schedule_file import load_export

    export = load_export(export_dir)
    c, h, w = export.input_shape
    if isinstance(image, (str, Path)):
        from tinydet.deploy import load_images

        image = load_images([image], (h, w))[0][0]
    zp_scale = input_params(export)
    q = quantize_images(np.asarray(image, np.float32)[None], {"c": c, "h": h, "w": w, **zp_scale})[0]
    return build_firmware(export.root, target, out, mode=mode, conf=conf, main=DEMO_DIR / "board_main.c",
                          export=export, files={"demo_image.h": image_header(q)}, **kw)


def input_params(export) -> dict:
    """Scale and zero point of the int8 model input (its QuantizeLinear)."""
    from tinydet.quant.qgraph import load_qgraph

    q = next(op for op in load_qgraph(export.path("stage1_patch.int8.onnx")).ops if op.kind == "quantize")
    return {"scale": float(q.out_scale), "zp": int(q.out_zp)}


def build_serve_firmware(export_dir: "str | Path", target: str, out: "str | Path", mode: str = "patch",
                         conf: float = lower.DEFAULT_CONF, **kw) -> dict:
    """The serve firmware (``deploy/demo/serve_main.c``): the model behind the board protocol on the
    target's serial link (docs/board_protocol.md; host side: ``tinydet board run``). QEMU and board
    targets only: the host build has no UART."""
    if toolchain.get_target(target).kind == "host":
        raise TinydetError(f"target {target}: the serve firmware needs a serial link; expected "
                           f"qemu-mps2-an500 or a board ({', '.join(toolchain.list_targets()[1:])})")
    return build_firmware(export_dir, target, out, mode=mode, conf=conf, main=DEMO_DIR / "serve_main.c", **kw)
