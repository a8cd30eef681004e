"""Compilers, QEMU and board targets: find them, build C programs for a target, run them.

Used by the kernel tests and by the code generator (``tinydet deploy``). No torch here: everything
under ``tinydet.deploy`` reads only files.

Targets live in ``deploy/targets/<name>/target.json`` (flags, board glue sources, linker script,
memory sizes); ``host`` is the machine's own C compiler.

    exe = compile([main_c], "host", "build/t/test")                 # runtime sources are added
    elf = compile([main_c], "qemu-mps2-an500", "build/t/test.elf")
    code, out, log = run_qemu(elf, workdir="build/t", timeout_s=60)
    size(elf)  # {"flash": ..., "sram_static": ..., "heap": ..., "stack": ...}
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tinydet.errors import TinydetError, closest
from tinydet.io.atomic import atomic_path
from tinydet.io.jsonfile import read_json
from tinydet.resources import resource_path

# package data (tinydet.resources): deploy/runtime and deploy/targets in a checkout, the same files in a wheel
RUNTIME_DIR = resource_path("runtime")
TARGETS_DIR = resource_path("targets")
INSTALL_HINT = ("install it with: sudo apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                "qemu-system-arm (or run `make toolchain`)")
HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"]
EMBEDDED_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter", "-ffunction-sections",
                   "-fdata-sections"]
# CMSIS-NN source folders holding the s8 kernels tinydet's generated code calls
_CMSIS_NN_DIRS = ("ConvolutionFunctions", "NNSupportFunctions", "BasicMathFunctions", "PoolingFunctions",
                  "FullyConnectedFunctions")


@dataclass(frozen=True)
class Target:
    """A build target: ``host`` or one of ``deploy/targets/*/target.json``."""

    name: str
    kind: str  # "host" | "qemu" | "board"
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    sources: tuple[Path, ...]
    linker_script: Path | None
    flash_bytes: int | None
    sram_bytes: int | None
    qemu: tuple[str, ...]
    make_bin: bool
    description: str = ""

    @property
    def compiler(self) -> str:
        return "cc" if self.kind == "host" else "arm-none-eabi-gcc"


def list_targets() -> list[str]:
    """Names accepted by :func:`get_target`."""
    return ["host"] + sorted(p.parent.name for p in TARGETS_DIR.glob("*/target.json"))


def get_target(name: str) -> Target:
    """Load a target description; unknown names raise TinydetError naming the closest one."""
    if name == "host":
        return Target("host", "host", (), ("-lm",), (), None, None, None, (), False, "this machine's C compiler")
    path = TARGETS_DIR / name / "target.json"
    if not path.is_file():
        raise TinydetError(f"target '{name}': no {path}; expected one of "
                           f"{', '.join(list_targets())}{closest(name, list_targets())}")
    d = read_json(path, "target description")
    base = path.parent
    return Target(
        name=name, kind=d["kind"], cflags=tuple(d["cflags"]), ldflags=tuple(d.get("ldflags", ())),
        sources=tuple((base / s).resolve() for s in d.get("sources", ())),
        linker_script=(base / d["linker_script"]).resolve() if d.get("linker_script") else None,
        flash_bytes=d.get("flash_bytes"), sram_bytes=d.get("sram_bytes"), qemu=tuple(d.get("qemu", ())),
        make_bin=bool(d.get("bin", False)), description=d.get("description", ""),
    )


def find_tool(name: str) -> str:
    """Absolute path of an executable on PATH, or a TinydetError with the install hint."""
    path = shutil.which(name)
    if path is None:
        if name in ("cc", "gcc"):
            raise TinydetError(f"host C compiler '{name}' not found on PATH: install it with: "
                               "sudo apt-get install gcc")
        raise TinydetError(f"'{name}' not found on PATH: {INSTALL_HINT}")
    return path


def runtime_sources(ref_kernels: bool = False) -> list[Path]:
    """The bundled C runtime (kernels + tinydet helpers); ``ref_kernels`` adds the plain reference loops."""
    srcs = sorted((RUNTIME_DIR / "src").glob("*.c"))
    return [s for s in srcs if ref_kernels or s.name != "ref_kernels.c"]


def cmsis_nn_sources(root: str | os.PathLike) -> tuple[list[Path], Path]:
    """ARM CMSIS-NN s8 sources and include dir of a CMSIS-NN source tree (``CMSIS_NN_ROOT``)."""
    root = Path(root)
    include = root / "Include"
    if not (include / "arm_nnfunctions.h").is_file():
        raise TinydetError(f"CMSIS_NN_ROOT={root}: no Include/arm_nnfunctions.h there; expected the root of a "
                           "CMSIS-NN source tree (github.com/ARM-software/CMSIS-NN)")
    srcs: list[Path] = []
    for d in _CMSIS_NN_DIRS:
        for s in sorted((root / "Source" / d).glob("*.c")):
            # integer kernels only; float and LSTM sources need other folders and are never called
            if not any(t in s.name for t in ("lstm", "_f32", "_f16")):
                srcs.append(s)
    return srcs, include


def _run(cmd: Sequence[str], log: Path, what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True)
    log.write_text("$ " + " ".join(map(str, cmd)) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        first = next((ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln), "")
        raise TinydetError(f"{what} failed (log: {log}): {first.strip()[:300]}")


def compile(sources: Iterable[str | os.PathLike], target: str, out_elf: str | os.PathLike,
            defines: dict | Iterable[str] = (), include_dirs: Iterable[str | os.PathLike] = (),
            opt: str = "-O2", runtime: bool = True, ref_kernels: bool = False,
            cmsis_nn_root: str | os.PathLike | None = None, extra_cflags: Iterable[str] = ()) -> Path:
    """Compile and link ``sources`` (+ the runtime and the target's board glue) into ``out_elf``.

    ``defines``: ``{"NAME": value}`` or ``["NAME=value", ...]``. ``cmsis_nn_root`` builds against ARM's
    CMSIS-NN (``-DTINYDET_USE_CMSIS_NN``, ARM's s8 sources instead of the bundled kernels).
    For board targets with ``bin`` a raw ``.bin`` is written next to the ELF. The ELF appears
    atomically (built under a temporary name, then renamed); the compiler log is kept as
    ``<out_elf>.build.log``.
    """
    t = get_target(target)
    cc = find_tool(t.compiler)
    out_elf = Path(out_elf)
    out_elf.parent.mkdir(parents=True, exist_ok=True)
    srcs = [Path(s) for s in sources]
    for s in srcs:
        if not s.is_file():
            raise TinydetError(f"compile: source file {s} does not exist")
    incs = [RUNTIME_DIR / "include", TARGETS_DIR / "common", *map(Path, include_dirs)]
    if isinstance(defines, dict):
        defs = [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines.items()]
    else:
        defs = [f"-D{d}" for d in defines]
    all_srcs = list(srcs)
    if runtime:
        all_srcs += runtime_sources(ref_kernels)
    if cmsis_nn_root is not None:
        arm_srcs, arm_inc = cmsis_nn_sources(cmsis_nn_root)
        all_srcs += arm_srcs
        incs.append(arm_inc)
        defs.append("-DTINYDET_USE_CMSIS_NN")
    cflags = list(HOST_CFLAGS if t.kind == "host" else EMBEDDED_CFLAGS) + list(t.cflags) + [opt] + list(extra_cflags)
    ldflags = list(t.ldflags)
    if t.kind != "host":
        all_srcs += list(t.sources)
        ldflags += [f"-L{TARGETS_DIR / 'common'}", f"-T{t.linker_script}", "-Wl,--gc-sections"]
    log = out_elf.with_name(out_elf.name + ".build.log")
    with atomic_path(out_elf) as tmp:
        cmd = [cc, *cflags, *defs, *(f"-I{i}" for i in incs), *map(str, all_srcs), "-o", str(tmp), *ldflags]
        _run(cmd, log, f"compiling {out_elf.name} for {target}")
        if t.make_bin:
            with atomic_path(out_elf.with_suffix(".bin")) as bin_tmp:
                _run([find_tool("arm-none-eabi-objcopy"), "-O", "binary", str(tmp), str(bin_tmp)],
                     log.with_suffix(".objcopy.log"), f"objcopy of {out_elf.name}")
    return out_elf


def _run_with_timeout(cmd: list[str], workdir: Path, timeout_s: float, log_path: Path, what: str):
    """Run ``cmd`` in its own process group; on timeout kill that group and keep the log."""
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        log_path.write_bytes(b"$ " + " ".join(cmd).encode() + b"\n" + out + b"\n--- stderr ---\n" + err +
                             f"\n--- killed after {timeout_s}s without exiting ---\n".encode())
        raise TinydetError(f"{what} hung: no exit after {timeout_s:g} s, killed (log kept: {log_path})") from None
    log_path.write_bytes(b"$ " + " ".join(cmd).encode() + b"\n" + out + b"\n--- stderr ---\n" + err +
                         f"\n--- exit status {proc.returncode} ---\n".encode())
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def run_qemu(elf: str | os.PathLike, workdir: str | os.PathLike, timeout_s: float = 60.0,
             args: Sequence[str] = (), target: str = "qemu-mps2-an500") -> tuple[int, str, Path]:
    """Run firmware under QEMU (semihosting, ``-icount shift=0``) with ``workdir`` as its file root.

    Returns ``(exit_code, stdout, log_path)`` (stdout: what the firmware printed through newlib's stdout;
    board console lines written with SYS_WRITE0 land in the log); the firmware's semihosting file paths are relative to
    ``workdir``. A hang (no exit within ``timeout_s``) or a crash (the HardFault handler's report)
    raises TinydetError naming the ELF and the kept log ``<workdir>/qemu.log``.
    """
    t = get_target(target)
    if t.kind != "qemu":
        raise TinydetError(f"run_qemu: target '{target}' is not a QEMU target (use qemu-mps2-an500)")
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise TinydetError(f"run_qemu: firmware {elf} does not exist")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    qemu = [find_tool(t.qemu[0]), *t.qemu[1:]]
    bad = [a for a in args if not a or any(ch in str(a) for ch in ", \t\n")]
    if bad:
        raise TinydetError(f"run_qemu: firmware argument {bad[0]!r} is empty or contains a comma or whitespace "
                           "(the semihosting command line cannot carry it)")
    if args:
        # semihosting command line: argv[0] then the arguments
        i = qemu.index("-semihosting-config") + 1
        qemu[i] = qemu[i] + "".join(f",arg={a}" for a in (elf.name, *args))
    cmd = qemu + ["-kernel", str(elf)]
    log = workdir / "qemu.log"
    code, out, err = _run_with_timeout(cmd, workdir, timeout_s, log, f"firmware {elf.name} under QEMU")
    # the fault handler writes with SYS_WRITE0, which QEMU sends to its own stderr
    both = out + err
    if "tinydet: HARDFAULT" in both or "tinydet: unexpected exception" in both:
        from tinydet.deploy.run import describe_fault  # the board fault handler's report, decoded

        detail = describe_fault(both) or " ".join(ln.strip() for ln in both.splitlines() if ln.strip().startswith("ipsr"))
        raise TinydetError(f"firmware {elf.name} crashed under QEMU (exit {code}; {detail}); log kept: {log}")
    if code != 0 and not out and err:
        raise TinydetError(f"QEMU failed to run {elf.name} (exit {code}): {err.strip().splitlines()[-1]}; log: {log}")
    return code, out, log


def run_host(exe: str | os.PathLike, workdir: str | os.PathLike, timeout_s: float = 60.0,
             args: Sequence[str] = ()) -> tuple[int, str, Path]:
    """Run a host-compiled program; same contract as :func:`run_qemu` (crash = killed by a signal)."""
    exe = Path(exe).resolve()
    if not exe.is_file():
        raise TinydetError(f"run_host: program {exe} does not exist")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / (exe.name + ".log")
    code, out, _ = _run_with_timeout([str(exe), *map(str, args)], workdir, timeout_s, log, f"program {exe.name}")
    if code < 0:
        raise TinydetError(f"program {exe.name} crashed ({signal.Signals(-code).name}); log kept: {log}")
    return code, out, log


def size(elf: str | os.PathLike) -> dict:
    """Flash and static SRAM of an ELF from its section table (``size -A``).

    ``flash`` = code + read-only data + initialised data's load image; ``sram_static`` = .data +
    .bss; ``heap``/``stack`` are the reserved regions of the target linker scripts (0 on host).
    """
    elf = Path(elf)
    tool = shutil.which("arm-none-eabi-size") if _is_arm_elf(elf) else shutil.which("size")
    if tool is None:
        tool = find_tool("arm-none-eabi-size")
    proc = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinydetError(f"size of {elf} failed: {proc.stderr.strip()}")
    sec: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = sec.get(parts[0], 0) + int(parts[1])
    flash_secs = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".fini_array",
                  ".preinit_array", ".data", ".init", ".fini", ".plt", ".eh_frame", ".eh_frame_hdr")
    return {
        "flash": sum(v for k, v in sec.items() if k in flash_secs),
        "sram_static": sec.get(".data", 0) + sec.get(".bss", 0),
        "heap": sec.get(".heap", 0),
        "stack": sec.get(".stack", 0),
    }


def _is_arm_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(20)
    # e_machine at offset 18 (little-endian): 40 = ARM
    return len(head) == 20 and head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 40
