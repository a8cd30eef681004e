"""Tile and padding geometry (pure): the one place for rectangles, named pads and output sizes.

Every other module (memory model, planner, patch executor, ONNX export, int8 reference, code
generation) uses these types, so padding has one order everywhere: named fields ``top, left,
bottom, right``. Conversions to the orders other libraries want (``torch.nn.functional.pad``,
ONNX ``Pad``/``Conv`` ``pads``, CMSIS-NN's symmetric ``padding.h/.w``) are methods here, never
rebuilt at call sites.

Rectangles are half-open ``[y0, y1) x [x0, x1)`` in map coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tinydet.errors import TinydetError


def parse_size_pair(value: Any, field: str, expected: str) -> tuple[int, int]:
    """``N``, ``"N"``, ``"AxB"`` (or ``"A,B"``) or ``(A, B)`` -> (A, B), both >= 1 (a grid as rows x
    cols, a resolution as H x W); else a one-line TinydetError ``"<field>: expected <expected>"``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            a = b = value
        elif isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            if len(parts) > 2:
                raise ValueError
            a, b = int(parts[0]), int(parts[-1])
        else:
            a, b = (int(v) for v in value)
    except (ValueError, TypeError):
        raise TinydetError(f"{field}: expected {expected}, got {value!r}") from None
    if a < 1 or b < 1:
        raise TinydetError(f"{field}: expected positive sizes, got {a}x{b}")
    return a, b


def conv_out_size(size: int, kernel: int, stride: int = 1, pad_before: int = 0, pad_after: int = 0,
                  dilation: int = 1) -> int:
    """Output length along one axis of a conv/pool window (floor division, as ONNX and CMSIS-NN)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Pads:
    """Zero padding around a 2-D map, by side. Non-zero only where a region meets the map border."""

    top: int = 0
    left: int = 0
    bottom: int = 0
    right: int = 0

    @classmethod
    def symmetric(cls, pad: int) -> "Pads":
        return cls(pad, pad, pad, pad)

    @property
    def is_zero(self) -> bool:
        return self.top == 0 and self.left == 0 and self.bottom == 0 and self.right == 0

    def to_dict(self) -> dict[str, int]:
        """The schedule.json form (format version >= 2)."""
        return {"top": self.top, "left": self.left, "bottom": self.bottom, "right": self.right}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Pads":
        return cls(int(data["top"]), int(data["left"]), int(data["bottom"]), int(data["right"]))

    def to_torch(self) -> tuple[int, int, int, int]:
        """``torch.nn.functional.pad`` order for the last two dims: (left, right, top, bottom)."""
        return (self.left, self.right, self.top, self.bottom)

    @classmethod
    def from_torch(cls, values: Sequence[int]) -> "Pads":
        """From (left, right, top, bottom): the ``F.pad`` order, and schedule.json format version 1."""
        left, right, top, bottom = (int(v) for v in values)
        return cls(top, left, bottom, right)

    def to_onnx(self, rank: int = 4) -> list[int]:
        """ONNX ``pads`` for an N-D tensor whose last two axes are H, W: all begins, then all ends.
        ``rank=2`` gives a Conv attribute ``[top, left, bottom, right]``."""
        lead = [0] * (rank - 2)
        return lead + [self.top, self.left] + lead + [self.bottom, self.right]

    @classmethod
    def from_onnx(cls, values: Sequence[int]) -> "Pads":
        """From ONNX ``pads`` (all begins, then all ends; H, W the last two axes): inverse of :meth:`to_onnx`."""
        v = [int(a) for a in values]
        n = len(v) // 2
        if len(v) != 2 * n or n < 2 or any(v[:n - 2]) or any(v[n:2 * n - 2]):
            raise ValueError(f"ONNX pads: expected [0.., top, left, 0.., bottom, right] (H, W last), got {v}")
        return cls(v[n - 2], v[n - 1], v[2 * n - 2], v[2 * n - 1])

    @classmethod
    def between(cls, have: "Rect", need: "Rect") -> "Pads":
        """Signed pads that turn rectangle ``have`` into ``need``: positive adds zero rows/columns on
        that side, negative drops them (``have.padded(Pads.between(have, need)) == need``)."""
        return cls(have.y0 - need.y0, have.x0 - need.x0, need.y1 - have.y1, need.x1 - have.x1)

    @classmethod
    def load(cls, value: Any) -> "Pads":
        """From schedule.json: a named mapping (version >= 2) or a v1 list (left, right, top, bottom)."""
        if isinstance(value, Pads):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return cls.from_torch(value)


@dataclass(frozen=True)
class Rect:
    """Half-open rectangle ``[y0, y1) x [x0, x1)`` on a feature map."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.h * self.w

    def union(self, other: "Rect") -> "Rect":
        """Bounding box of both (regions of one tensor are always nested or overlapping)."""
        return Rect(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def contains(self, other: "Rect") -> bool:
        return self.y0 <= other.y0 and other.y1 <= self.y1 and self.x0 <= other.x0 and other.x1 <= self.x1

    def relative_to(self, outer: "Rect") -> "Rect":
        """This rectangle in the coordinates of a buffer that holds ``outer``."""
        return Rect(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)

    def padded(self, pads: Pads) -> "Rect":
        """This rectangle grown by ``pads`` (negative amounts shrink it); may leave the map."""
        return Rect(self.y0 - pads.top, self.y1 + pads.bottom, self.x0 - pads.left, self.x1 + pads.right)

    def to_list(self) -> list[int]:
        return [self.y0, self.y1, self.x0, self.x1]

    @classmethod
    def from_list(cls, values: Any) -> "Rect":
        if isinstance(values, Rect):
            return values
        y0, y1, x0, x1 = (int(v) for v in values)
        return cls(y0, y1, x0, x1)

    @classmethod
    def full(cls, h: int, w: int) -> "Rect":
        return cls(0, h, 0, w)


def window_interval(lo: int, hi: int, kernel: int, stride: int, padding: int, size: int) -> tuple[int, int, int, int]:
    """Input interval a window op reads for output interval ``[lo, hi)`` on one axis, clipped to
    ``[0, size)``: (start, end, pad_before, pad_after), the pads standing in for the clipped part."""
    start = lo * stride - padding
    end = (hi - 1) * stride - padding + kernel
    return max(start, 0), min(end, size), max(0, -start), max(0, end - size)


def input_rect(out: Rect, kernel: int, stride: int, padding: int, in_h: int, in_w: int) -> tuple[Rect, Pads]:
    """The input rectangle a square-window op reads for ``out`` and the border pads it needs:
    convolving the padded rectangle with padding 0 gives exactly ``out``."""
    y0, y1, top, bottom = window_interval(out.y0, out.y1, kernel, stride, padding, in_h)
    x0, x1, left, right = window_interval(out.x0, out.x1, kernel, stride, padding, in_w)
    return Rect(y0, y1, x0, x1), Pads(top, left, bottom, right)
