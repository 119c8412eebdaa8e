"""Text from the chart, made safe for the card fields a clinician reads.

Card templates interpolate facts, and many facts are words someone typed into the chart (an adverse
event's text, an order's protocol reference, a lab's name). A value interpolated into a card must read as
the words it is and build nothing: no HTML, no Markdown structure (heading, rule, list, block quote, link,
image, autolink), no line of its own. Both functions collapse every run of whitespace (newlines included)
to one space first, so a value never starts a line the template did not start.

* :func:`markdown` — for ``detail`` (CDS Hooks: GitHub-flavored Markdown). ``<``, ``>`` and ``&`` become
  entities (they render as themselves, never as a tag or an autolink); every character that builds inline
  structure is backslash-escaped; a value that would open a block (``#``, ``-``, ``+``, ``=``, ``1.``) has
  that marker escaped; ``scheme://`` and ``www.`` are escaped so GFM does not turn them into links.
* :func:`plain` — for ``summary``, suggestion labels and action descriptions (plain text: a backslash would
  show). ``<``/``>`` become the full-width ``＜``/``＞`` (read the same, never a tag), ``[``/``]`` become
  ``(``/``)`` (no link or image can be formed), and block markers at the start are dropped.

Numbers and ``None`` pass through untouched; any other value is rendered with ``str`` and then made safe.
Both are Jinja ``finalize`` hooks (``service.render``): every ``{{ … }}`` goes through one of them.
"""

from __future__ import annotations

import re
from typing import Any

_WHITESPACE = re.compile(r"\s+")
_MD_INLINE = re.compile(r"[\\`*_\[\]()#|!~<>&]")
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_BLOCK_START = re.compile(r"^(?:[-+=]+|\d{1,9}(?=[.)](?:\s|$)))")
_MD_AUTOLINK = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(www)\.")
_PLAIN_SWAP = str.maketrans({"<": "＜", ">": "＞", "[": "(", "]": ")"})
# A heading's #s, a bullet, a rule / fence / setext underline (a run of one marker character), an ordered item.
_PLAIN_BLOCK_START = re.compile(
    r"^(?:#{1,6}(?=\s|$)|[-*+](?=\s|$)|([`~])\1{2,}|([-*_=])(?:[ \t]*\2)*(?=\s|$)|(\d{1,9})[.)](?=\s|$))"
)


# What could make either function change a value: anything its steps act on. A value with none of it (most
# facts: numbers with units, dates, drug names) is returned as it is, without running the steps.
_MD_NEEDS_WORK = re.compile(r"[\\`*_\[\]()#|!~<>&]|[^\S ]|  |^ | $|://|(?i:www\.)|^[-+=]|^\d{1,9}[.)](?:\s|$)")
_PLAIN_NEEDS_WORK = re.compile(r"[<>\[\]]|[^\S ]|  |^ | $|^[#*+`~_=-]|^\d{1,9}[.)](?:\s|$)")


def _collapsed(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def markdown(value: str) -> str:
    """A chart value for a Markdown field: it renders as the words it is, never as structure."""
    return _markdown(value) if _MD_NEEDS_WORK.search(value) else value


def _markdown(value: str) -> str:
    text = _MD_INLINE.sub(lambda m: _MD_ENTITIES.get(m[0], "\\" + m[0]), _collapsed(value))
    text = _MD_AUTOLINK.sub(lambda m: f"{m[1]}\\:" if m[1] else f"{m[2]}\\.", text)
    block = _MD_BLOCK_START.match(text)
    if block:  # "- x", "+ x", "---", "===" (rules, list items, setext underlines) and "1. x", "1) x"
        marker = block[0]
        escaped = marker + "\\" if marker[0].isdigit() else "".join("\\" + c for c in marker)
        text = escaped + text[len(marker):]
    return text


def plain(value: str) -> str:
    """A chart value for a plain-text field: one line, no tag, nothing a Markdown renderer would build on."""
    return _plain(value) if _PLAIN_NEEDS_WORK.search(value) else value


def _plain(value: str) -> str:
    text = _collapsed(value).translate(_PLAIN_SWAP)
    while (stripped := _PLAIN_BLOCK_START.sub(lambda m: m[3] or "", text, count=1).lstrip()) != text:
        text = stripped  # "- # x", "1. - x": one marker hides another
    return text


def _finalize(safe: Any) -> Any:
    def finalize(value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        return safe(value if isinstance(value, str) else str(value))

    return finalize


finalize_markdown = _finalize(markdown)
"""Jinja ``finalize`` for Markdown fields."""
finalize_plain = _finalize(plain)
"""Jinja ``finalize`` for plain-text fields."""
