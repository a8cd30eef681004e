"""Reading JSON files with one-line errors: the one reader every package uses for its JSON inputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinydet.errors import TinydetError


def read_json(path: "str | Path", what: str = "JSON file", hint: str = "") -> Any:
    """Parse ``path``; a missing, unreadable, non-UTF-8 or malformed file raises a one-line
    :class:`TinydetError` ``PATH:LINE: not valid JSON (...)`` naming ``what`` (and ``hint``)."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise TinydetError(f"{path}: {what} does not exist{suffix}") from None
    except json.JSONDecodeError as exc:
        raise TinydetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}) in {what}{suffix}") from None
    except UnicodeDecodeError as exc:
        raise TinydetError(f"{path}: {what} is not UTF-8 text (byte {exc.start}){suffix}") from None
    except OSError as exc:
        raise TinydetError(f"{path}: cannot read {what} ({exc.strerror}){suffix}") from None
