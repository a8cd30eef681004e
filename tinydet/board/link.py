"""Byte links to a device speaking the board protocol, and the request / answer client over them.

    link = open_link("/dev/ttyACM0")          # a serial port (pyserial), 115200 8N1
    link = open_link("unix:/tmp/qemu.sock")   # a local socket: QEMU's -serial unix:... (server side)
    link = open_link("tcp:127.0.0.1:4444")    # QEMU's -serial tcp:... (server side)
    link = open_link("qemu:build/serve/firmware.elf")  # start the serve firmware under QEMU
    client = BoardClient(link); info = client.hello(); result = client.infer(image_int8)

Every read has a deadline: a silent device raises TinydetError after ``timeout_s``, never hangs.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from tinydet.board import protocol as proto
from tinydet.errors import TinydetError

SERIAL_PACKAGE = "pyserial"
BAUD = 115200  # deploy/targets/common/stm32_board.c


class Link(Protocol):
    name: str

    def write(self, data: bytes) -> None: ...

    def read(self, timeout_s: float) -> bytes:
        """Bytes received within ``timeout_s`` (b"" when none came)."""

    def close(self) -> None: ...


class SocketLink:
    """A connected stream socket (unix or TCP)."""

    def __init__(self, sock: socket.socket, name: str, owner=None):
        self.sock, self.name, self.owner = sock, name, owner

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout_s: float) -> bytes:
        self.sock.settimeout(max(timeout_s, 1e-3))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return b""
        if not data:
            raise TinydetError(f"{self.name}: the device closed the link")
        return data

    def close(self) -> None:
        self.sock.close()
        if self.owner is not None:
            self.owner.close()


class SerialLink:
    """A serial port through pyserial."""

    def __init__(self, port: str, baud: int = BAUD):
        try:
            import serial
        except ImportError:
            raise TinydetError(f"--port {port}: serial ports need the Python package '{SERIAL_PACKAGE}' "
                               f"(pip install {SERIAL_PACKAGE})") from None
        try:
            self.port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError) as exc:
            raise TinydetError(f"--port {port}: cannot open the serial port ({exc})") from None
        self.name = port

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, timeout_s: float) -> bytes:
        self.port.timeout = max(timeout_s, 1e-3)
        return self.port.read(max(1, self.port.in_waiting))

    def close(self) -> None:
        self.port.close()


def open_link(port: str, connect_timeout_s: float = 30.0) -> Link:
    """``unix:PATH``, ``tcp:HOST:PORT``, ``qemu:ELF`` or a serial device (see the module doc)."""
    if port.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(port[5:])
        except OSError as exc:
            sock.close()
            raise TinydetError(f"--port {port}: cannot connect ({exc.strerror or exc})") from None
        return SocketLink(sock, port)
    if port.startswith("tcp:"):
        host, _, num = port[4:].rpartition(":")
        if not host or not num.isdigit():
            raise TinydetError(f"--port {port}: expected tcp:HOST:PORT")
        try:
            sock = socket.create_connection((host, int(num)), timeout=connect_timeout_s)
        except OSError as exc:
            raise TinydetError(f"--port {port}: cannot connect ({exc.strerror or exc})") from None
        return SocketLink(sock, port)
    if port.startswith("qemu:"):
        from tinydet.board.qemu import start_serve

        return start_serve(port[5:], connect_timeout_s=connect_timeout_s)
    return SerialLink(port)


class DeviceError(TinydetError):
    """The device answered with an ERROR frame (it keeps serving)."""

    def __init__(self, error: proto.BoardError, link: str):
        super().__init__(f"{link}: device refused the frame of type 0x{error.frame_type:02x}: "
                         f"{error.name} ({error.message})")
        self.error = error


class BoardClient:
    """Request / answer over a link: one frame out, the next frame in (within a deadline)."""

    def __init__(self, link: Link, timeout_s: float = 60.0):
        self.link, self.timeout_s = link, timeout_s
        self.parser = proto.FrameParser()
        self.pending: list[proto.Frame] = []

    def read_frame(self, timeout_s: float | None = None) -> proto.Frame:
        """The next complete frame; TinydetError when none arrives before the deadline."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TinydetError(f"{self.link.name}: no answer from the device within "
                                   f"{self.timeout_s if timeout_s is None else timeout_s:g} s")
            self.pending += self.parser.feed(self.link.read(left))
        return self.pending.pop(0)

    def exchange(self, frame: bytes, timeout_s: float | None = None) -> proto.Frame:
        """Send raw frame bytes (any, even malformed) and return the device's answer."""
        self.link.write(frame)
        return self.read_frame(timeout_s)

    def _expect(self, answer: proto.Frame, ftype: int):
        if answer.type == proto.ERROR:
            raise DeviceError(proto.decode_error(answer.payload), self.link.name)
        if answer.type != ftype:
            raise proto.ProtocolError(f"{self.link.name}: answer of type 0x{answer.type:02x}, expected 0x{ftype:02x}")
        return answer.payload

    def hello(self) -> proto.BoardInfo:
        return proto.decode_info(self._expect(self.exchange(proto.encode_frame(proto.HELLO)), proto.INFO))

    def infer(self, image_int8: np.ndarray) -> proto.BoardResult:
        """One int8 NHWC image in, its RESULT out (DeviceError on an ERROR answer)."""
        return proto.decode_result(self._expect(self.exchange(proto.encode_image(image_int8)), proto.RESULT))

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> "BoardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
