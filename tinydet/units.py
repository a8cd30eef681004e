"""Byte sizes written by people (pure): the one parser for ``--sram 256k``, ``sram: 256 KiB``, ...

Used by the planner / profile / search budgets and by ``tinydet deploy`` alike.
"""
from __future__ import annotations

import re

from tinydet.errors import TinydetError

# binary multiples: k = kB = KiB = 1024 bytes (MCU datasheets' "320 kB SRAM" is 320 * 1024)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}


def parse_bytes(value: "int | str", field: str = "size") -> int:
    """``262144``, ``"256kB"``, ``"0.5MB"``, ``"256 KiB"``, ``"320k"`` -> bytes (k = 1024 B, M = 1024 k).

    Anything else, or a size that is not positive, raises TinydetError naming ``field``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise TinydetError(f"{field}: expected a size such as 262144, 256kB or 0.5MB (kB = 1024 bytes), got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
    result = int(round(number * _UNITS[unit]))
    if result <= 0:
        raise TinydetError(f"{field}: expected a positive size, got {value!r}")
    return result
