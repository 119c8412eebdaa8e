"""Chart text in cards: it reads as the words it is, and builds no HTML or Markdown structure, in every field."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import chart_text, examples
from service.chart_text import markdown, plain
from service.routes import now_utc
from tests.conftest import PATIENT_VIEW, AppFactory

HOSTILE = [
    "<script>alert(1)</script>",
    "Tumor lysis\n\n# Heading\n---\n* item",
    "# Heading",
    "---",
    "* item",
    "- item",
    "1. item",
    "[x](javascript:alert(1))",
    "![img](https://evil.example/x.png)",
    "<https://evil.example>",
    "see https://evil.example and www.evil.example",
    "> quoted",
    "```fence",
]

# Markdown that builds structure: a heading, rule, list item, quote or fence opening a line; a link or image;
# an autolink or raw HTML. In a Markdown field also a bare URL (GFM autolinks it); a plain field is not rendered.
_STRUCTURE_PLAIN = re.compile(
    r"(?m)^\s*(?:#{1,6}\s|[-*_]{3,}\s*$|[-*+]\s|\d+[.)]\s|>|```|~~~)|(?<!\\)\]\(|(?<!\\)!\[|<[a-zA-Z/!]"
)
_STRUCTURE = re.compile(_STRUCTURE_PLAIN.pattern + r"|(?<!\\):(?=//)|(?<!\\)\bwww\.(?=\w)")


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_builds_no_structure(text: str) -> None:
    for template in ("{}", "- {}", "Event: **{}**, grade 3."):
        rendered = template.format(markdown(text))
        assert not _STRUCTURE.search(rendered.removeprefix("- ")), rendered
        assert "\n" not in rendered


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_text_builds_no_structure_and_keeps_the_words(text: str) -> None:
    safe = plain(text)
    assert "<" not in safe and ">" not in safe and "\n" not in safe
    assert not _STRUCTURE_PLAIN.search(safe), safe
    assert "[" not in safe and "]" not in safe


def test_ordinary_chart_text_is_unchanged_or_reads_the_same() -> None:
    assert plain("Tumor lysis syndrome") == markdown("Tumor lysis syndrome") == "Tumor lysis syndrome"
    assert plain("ANC <500, ALT >5x ULN") == "ANC ＜500, ALT ＞5x ULN"
    assert markdown("ANC <500 & ALT >5x ULN") == "ANC &lt;500 &amp; ALT &gt;5x ULN"
    assert plain("1.5 mg  at\n08:00") == markdown("1.5 mg at 08:00") == "1.5 mg at 08:00"
    assert plain("-5") == "-5"


# ---------------------------------------------------------------- through the real API


def _hostile_request(text: str, now: dt.datetime) -> dict[str, Any]:
    request = examples.request_for("adverse-events", "tls-g3-view", now=now)
    for entry in request["prefetch"]["adverseEvents"]["entry"]:
        event = entry["resource"]
        if event["resourceType"] == "AdverseEvent":
            event["event"]["text"] = text
            for coding in event["event"]["coding"]:
                coding["display"] = text
    return request


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_chart_text_reaches_no_card_field_as_structure(make_app: AppFactory, text: str) -> None:
    app, client = await make_app()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    app.dependency_overrides[now_utc] = lambda: now
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=_hostile_request(text, now))
    assert response.status_code == 200
    cards = {c["source"]["topic"]["code"]: c for c in response.json()["cards"]}
    card = cards["adverse-event-interrupt"]  # the rule still fires on the coded event
    plain_fields = [card["summary"]] + [s["label"] for s in card.get("suggestions", ())] + [
        a["description"] for s in card.get("suggestions", ()) for a in s.get("actions", ())]
    for field in plain_fields:
        assert "<" not in field and ">" not in field and "\n" not in field and "[" not in field, field
        assert not _STRUCTURE_PLAIN.search(field), field
    detail = card["detail"]
    assert "<script" not in detail and "<https" not in detail
    for line in detail.splitlines():
        assert "](" not in line.replace("\\](", "") and "![" not in line.replace("\\![", "")
    # The template's own structure is still there, and the hostile text sits inside it on one line.
    event_line = next(line for line in detail.splitlines() if "grade 3" in line)
    assert event_line.startswith("**") and not _STRUCTURE.search(event_line)
    assert not re.search(r"(?m)^(#|---|\* item|- item|1\. item)", detail)


# The shortcut for values that need no escaping must give exactly what the full treatment gives: drawn from the
# characters the steps act on, mixed with ordinary words, digits and every kind of whitespace.
_PIECES = st.sampled_from([*"\\`*_[]()#|!~<>&:/.-+=)\t\n\r\x0b\x0c\xa0 ", "www.", "WWW.", "http://", "a", "Z", "7",
                           "12", "µg", "m²", " — ", "  "])


@given(st.lists(_PIECES, max_size=12).map("".join))
@settings(max_examples=400, deadline=None)
def test_values_that_need_no_escaping_are_returned_as_the_full_treatment_would(text: str) -> None:
    assert markdown(text) == chart_text._markdown(text)
    assert plain(text) == chart_text._plain(text)


@pytest.mark.parametrize("text", ["9 µg/day", "2026-03-10 09:00", "1.97 m²", "cycle 3, day 1", "28 mcg/24 hr"])
def test_ordinary_facts_pass_through_unchanged(text: str) -> None:
    assert markdown(text) == text
    assert plain(text) == text
