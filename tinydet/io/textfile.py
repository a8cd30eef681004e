"""Reading text lists (image sets, ground-truth and detection text files) with one-line errors:
the one reader every package uses for line-oriented inputs, as ``jsonfile`` is for JSON."""
from __future__ import annotations

from pathlib import Path

from tinydet.errors import TinydetError


def read_text_lines(path: "str | Path", what: str = "text file") -> list[str]:
    """The lines of a UTF-8 text file, a leading byte-order mark removed (Windows editors write
    one; it must not become part of the first image id). Raises OSError when the file cannot be
    read (callers word "missing" themselves); bytes that are not UTF-8 are a one-line
    :class:`TinydetError` naming the file, ``what`` it is and the first bad byte's offset."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise TinydetError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: "
                           f"{exc.object[exc.start:exc.start + 1]!r})") from None
