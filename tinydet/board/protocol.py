"""The board protocol's frames (docs/board_protocol.md), pure encode / decode functions.

    frame = b"TD" + type (u8) + length (u32 LE) + payload + CRC-32 (u32 LE, zlib.crc32 of
            type + length + payload)

The firmware side is deploy/runtime/src/serial_proto.c (framing) and deploy/demo/serve_main.c
(the messages). Nothing here does I/O: :class:`FrameParser` takes bytes as they arrive and yields
frames, so the same code parses a serial port, a socket or a test's byte string.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from tinydet.errors import TinydetError

MAGIC = b"TD"
HEADER = struct.Struct("<BI")  # type, payload length
CRC = struct.Struct("<I")

HELLO, IMAGE = 0x01, 0x02
INFO, RESULT, ERROR = 0x81, 0x82, 0xEE

# error codes of ERROR frames (tinydet_serial.h)
ERROR_NAMES = {1: "bad-crc", 2: "unknown-type", 3: "bad-length", 4: "too-long", 5: "model-error"}

_INFO_HEAD = struct.Struct("<4H4I")
_RESULT_HEAD = struct.Struct("<7I2H")
_DET = struct.Struct("<5fi")


class ProtocolError(TinydetError):
    """A frame that cannot be decoded (bad CRC, truncated, wrong payload for its type)."""


@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes


@dataclass(frozen=True)
class BoardInfo:
    """INFO: what the device runs."""

    input_h: int
    input_w: int
    input_c: int
    arena_bytes: int
    scratch_bytes: int
    instructions_per_tick: float  # 0: the counter counts cycles of real hardware
    max_payload: int
    counter: str
    mode: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class BoardResult:
    """RESULT: one image's detections (network-input pixels) and the device's measurements."""

    boxes: np.ndarray  # [N, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [N] float32
    labels: np.ndarray  # [N] int64
    ticks: int
    input_ticks: int
    detect_ticks: int
    layer_ticks: tuple[int, ...]
    stack_used_bytes: int
    stack_size_bytes: int
    arena_bytes: int
    image_buffer_bytes: int

    @property
    def sram_high_water_bytes(self) -> int:
        """Arena + the image receive buffer + the stack's high-water mark."""
        return self.arena_bytes + self.image_buffer_bytes + self.stack_used_bytes


@dataclass(frozen=True)
class BoardError:
    """ERROR: the device refused a frame and keeps serving."""

    code: int
    frame_type: int
    message: str

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"code-{self.code}")


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib), the C side's tinydet_crc32(0, data, n)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(ftype: int, payload: bytes = b"") -> bytes:
    """One frame of ``ftype`` carrying ``payload``."""
    if not 0 <= ftype <= 0xFF:
        raise ValueError(f"frame type {ftype}: expected 0..255")
    head = HEADER.pack(ftype, len(payload))
    return MAGIC + head + payload + CRC.pack(crc32(head + payload))


def encode_image(image_int8: np.ndarray) -> bytes:
    """IMAGE frame of an int8 NHWC [H, W, C] image."""
    arr = np.asarray(image_int8)
    if arr.dtype != np.int8 or arr.ndim != 3:
        raise TinydetError(f"image: expected int8 [H, W, C], got {arr.dtype} {list(arr.shape)}")
    return encode_frame(IMAGE, np.ascontiguousarray(arr).tobytes())


class FrameParser:
    """Incremental frame parser: ``feed(bytes)`` returns the frames completed so far.

    Bytes before a magic are skipped (a device printing a boot line first is fine); a frame whose CRC
    does not match raises :class:`ProtocolError` after it is consumed, so parsing can go on.
    ``max_payload`` bounds a length field before the payload is waited for.
    """

    def __init__(self, max_payload: int = 1 << 24):
        self.buf = bytearray()
        self.max_payload = max_payload

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames = []
        while True:
            start = self.buf.find(MAGIC)
            if start < 0:
                del self.buf[:max(0, len(self.buf) - 1)]  # keep a trailing 'T'
                return frames
            del self.buf[:start]
            if len(self.buf) < 2 + HEADER.size:
                return frames
            ftype, size = HEADER.unpack_from(self.buf, 2)
            if size > self.max_payload:
                del self.buf[:2]
                raise ProtocolError(f"frame of type 0x{ftype:02x}: length {size} exceeds {self.max_payload} bytes")
            end = 2 + HEADER.size + size + CRC.size
            if len(self.buf) < end:
                return frames
            body = bytes(self.buf[2:end - CRC.size])
            (crc,) = CRC.unpack_from(self.buf, end - CRC.size)
            del self.buf[:end]
            if crc != crc32(body):
                raise ProtocolError(f"frame of type 0x{ftype:02x}: CRC 0x{crc:08x}, computed 0x{crc32(body):08x}")
            frames.append(Frame(ftype, body[HEADER.size:]))


def decode_frame(data: bytes) -> Frame:
    """Exactly one frame from ``data`` (raises ProtocolError otherwise)."""
    parser = FrameParser()
    frames = parser.feed(data)
    if len(frames) != 1 or parser.buf:
        raise ProtocolError(f"expected one complete frame, got {len(frames)} and {len(parser.buf)} spare bytes")
    return frames[0]


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise ProtocolError(f"{what} frame: {len(payload)} bytes, expected at least {n}")


def decode_info(payload: bytes) -> BoardInfo:
    _need(payload, _INFO_HEAD.size, "INFO")
    h, w, c, nl, arena, scratch, ipt, cap = _INFO_HEAD.unpack_from(payload)
    strings = payload[_INFO_HEAD.size:].split(b"\0")
    if len(strings) != nl + 3 or strings[-1] != b"":
        raise ProtocolError(f"INFO frame: {len(strings) - 1} names, expected counter, mode and {nl} layers")
    names = [s.decode("ascii", "replace") for s in strings[:-1]]
    return BoardInfo(h, w, c, arena, scratch, ipt / 1000.0, cap, names[0], names[1], tuple(names[2:]))


def decode_result(payload: bytes) -> BoardResult:
    _need(payload, _RESULT_HEAD.size, "RESULT")
    ticks, inp, det, stack, stack_size, arena, buf, nl, nd = _RESULT_HEAD.unpack_from(payload)
    expect = _RESULT_HEAD.size + 4 * nl + _DET.size * nd
    if len(payload) != expect:
        raise ProtocolError(f"RESULT frame: {len(payload)} bytes, expected {expect} for {nl} layers, {nd} detections")
    pos = _RESULT_HEAD.size
    layer_ticks = struct.unpack_from(f"<{nl}I", payload, pos)
    pos += 4 * nl
    rows = [_DET.unpack_from(payload, pos + k * _DET.size) for k in range(nd)]
    boxes = np.asarray([r[:4] for r in rows], np.float32).reshape(nd, 4)
    return BoardResult(boxes=boxes, scores=np.asarray([r[4] for r in rows], np.float32),
                       labels=np.asarray([r[5] for r in rows], np.int64), ticks=ticks, input_ticks=inp,
                       detect_ticks=det, layer_ticks=tuple(layer_ticks), stack_used_bytes=stack,
                       stack_size_bytes=stack_size, arena_bytes=arena, image_buffer_bytes=buf)


def decode_error(payload: bytes) -> BoardError:
    _need(payload, 3, "ERROR")
    code, ftype = struct.unpack_from("<HB", payload)
    return BoardError(code, ftype, payload[3:].decode("ascii", "replace"))
