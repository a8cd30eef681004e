"""The serve firmware under QEMU with its UART0 on a local unix socket: the board loop without a board.

    link = start_serve("build/serve/firmware.elf")   # a SocketLink; link.close() stops QEMU
    BoardClient(link).hello()
    qemu, pty = start_serve_pty("build/serve/firmware.elf")   # UART0 on a pseudo-terminal
    BoardClient(open_link(pty))   # the serial-port path (pyserial), as for a board; qemu.close() stops it

QEMU is started from the target's own command line (deploy/targets/<name>/target.json, as
:func:`tinydet.deploy.toolchain.run_qemu` does) plus ``-serial unix:SOCKET``: this side listens,
QEMU connects, so there is no waiting for a server to appear. Its console (semihosting: fault
reports) goes to ``qemu-serve.log`` next to the ELF.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tinydet.board.link import SocketLink
from tinydet.deploy import toolchain
from tinydet.errors import TinydetError


class QemuProcess:
    """A running QEMU and its temporary socket folder (or None); ``close`` kills it and removes the folder."""

    def __init__(self, proc: subprocess.Popen, tmpdir: "str | None", log: Path, elf: Path):
        self.proc, self.tmpdir, self.log, self.elf = proc, tmpdir, log, elf

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _qemu_command(elf: "str | Path", target: str, serial: str) -> tuple[list[str], Path]:
    t = toolchain.get_target(target)
    if t.kind != "qemu":
        raise TinydetError(f"qemu:{elf}: target '{target}' is not a QEMU target (use qemu-mps2-an500)")
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise TinydetError(f"--port qemu:{elf}: firmware does not exist; build it with "
                           "`tinydet deploy EXPORT --target qemu-mps2-an500 --app serve --out DIR`")
    qemu = [toolchain.find_tool(t.qemu[0]), *t.qemu[1:]]
    return [*qemu, "-monitor", "none", "-serial", serial, "-kernel", str(elf)], elf


def start_serve_pty(elf: "str | Path", target: str = "qemu-mps2-an500",
                    timeout_s: float = 30.0) -> tuple[QemuProcess, str]:
    """Start ``elf`` under QEMU with UART0 on a pseudo-terminal; returns QEMU and the pty's path."""
    cmd, elf = _qemu_command(elf, target, "pty")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    owner = QemuProcess(proc, None, elf.with_name("qemu-serve.log"), elf)
    seen = b""
    deadline = time.monotonic() + timeout_s
    try:
        # QEMU names the pty on its stdout before the guest starts ("char device redirected to /dev/pts/N")
        while (m := re.search(rb"redirected to (/dev/\S+)", seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise TinydetError(f"QEMU did not open a pty for UART0 within {timeout_s:g} s "
                                   f"(exit {proc.poll()}): {seen.decode(errors='replace').strip()[-300:]}")
            if select.select([proc.stdout], [], [], left)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
    except BaseException:
        owner.close()
        raise
    return owner, m.group(1).decode()


def start_serve(elf: "str | Path", target: str = "qemu-mps2-an500", connect_timeout_s: float = 30.0) -> SocketLink:
    """Start ``elf`` (built by :func:`tinydet.deploy.build.build_serve_firmware`) under QEMU."""
    tmpdir = tempfile.mkdtemp(prefix="tinydet-serve-")  # short path: unix socket names are limited to ~100 bytes
    path = os.path.join(tmpdir, "uart0.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    cmd, elf = _qemu_command(elf, target, f"unix:{path}")
    log = elf.with_name("qemu-serve.log")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    owner = QemuProcess(proc, tmpdir, log, elf)
    deadline = time.monotonic() + connect_timeout_s
    server.settimeout(0.2)
    try:
        while True:
            try:
                conn, _ = server.accept()
                break
            except socket.timeout:
                pass
            if proc.poll() is not None:
                raise TinydetError(f"QEMU exited ({proc.returncode}) before connecting its UART; log: {log}")
            if time.monotonic() > deadline:
                raise TinydetError(f"QEMU did not connect its UART within {connect_timeout_s:g} s; log: {log}")
    except BaseException:
        owner.close()
        raise
    finally:
        server.close()
    return SocketLink(conn, f"qemu:{elf.name}", owner=owner)
