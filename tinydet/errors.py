"""User-facing errors.

Every error a user can cause (bad config, bad data, bad export folder, ...) is raised as a
:class:`TinydetError` whose message is one line naming the file, the field and what was expected.
``tinydet.cli`` prints it as ``tinydet: error: <message>`` and exits with status 2 — no traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class TinydetError(Exception):
    """An error caused by the user's input; its message is shown as is, on one line."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
