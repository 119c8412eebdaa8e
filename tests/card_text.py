"""A card's text as a clinician reads it, for tests that assert the facts a card states.

The Markdown ``detail`` escapes the facts it prints (``(`` is written ``\\(``) and a card file wraps its sentences
at 120 characters (a single newline is a soft break, shown as a space): tests compare the text as read.
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\\([\\`*_\[\]()#|!])")


def as_read(markdown: str | None) -> str:
    """Escapes undone and every run of spaces and newlines one space."""
    return " ".join(_ESCAPED.sub(r"\1", markdown or "").split())
