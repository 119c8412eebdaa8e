"""/preview in a real browser (Debian's Chromium, Playwright) against the real service under uvicorn.

What an analyst and a tester do: change a card file's sentence and see it after a refresh; send an order
from the form and see the card it produces; click a suggestion or dismiss a card with a reason and find the
feedback stored by the service's real feedback endpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.settings import DEFAULT_CARDS_DIR
from tests.preview.conftest import LiveService, screenshot

pytestmark = pytest.mark.browser

TIMEOUT_MS = 20_000
_SUMMARY = re.compile(r"^summary\s*=\s*", re.MULTILINE)


def set_summary(path: Path, sentence: str) -> None:
    """Replace the ``summary`` of a card file with ``sentence``, whatever string form the file used."""
    text = path.read_text(encoding="utf-8")
    m = _SUMMARY.search(text)
    assert m, f"{path.name} has no summary"
    start = m.end()
    for quote in ('"""', "'''", '"', "'"):
        if text.startswith(quote, start):
            end = text.index(quote, start + len(quote)) + len(quote)
            break
    else:
        raise AssertionError(f"{path.name}: summary is not a string")
    path.write_text(text[:start] + json.dumps(sentence, ensure_ascii=False) + text[end:], encoding="utf-8")
    assert tomllib.loads(path.read_text(encoding="utf-8"))["summary"] == sentence


def feedback_rows(database: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]


def send_order(page: Any, service: LiveService, *, patient: str, hook: str, dose: str, unit: str, cycle_day: str,
               steroid: bool) -> None:
    page.goto(service.base_url + "/preview/order")
    page.select_option("select[name=patient]", patient)
    page.select_option("select[name=hook]", hook)
    page.fill("input[name=dose_value]", dose)
    page.select_option("select[name=dose_unit]", unit)
    page.fill("input[name=cycle_day]", cycle_day)
    page.set_checked("input[name=steroid]", steroid)
    page.click("#send")
    page.wait_for_selector("section.result", timeout=TIMEOUT_MS)


def test_an_edited_card_file_shows_on_the_next_page_load(page: Any, live_service: LiveService) -> None:
    url = live_service.base_url + "/preview/examples/dose-schedule"
    page.goto(url)
    cards = page.locator("article[data-rule-id=dose-schedule]")
    assert cards.count() == 2  # both calls of the example give a dose-schedule card
    before = cards.first.locator(".summary").inner_text()
    assert before.startswith("Blinatumomab 9 µg/day is")
    assert cards.first.locator(".card-file").inner_text() == str(DEFAULT_CARDS_DIR / "dose-schedule.toml")

    # The site's folder holds only the file it rewords; every other card still comes from the shipped folder.
    card_file = live_service.cards_dir / "dose-schedule.toml"
    shutil.copy(DEFAULT_CARDS_DIR / "dose-schedule.toml", card_file)
    sentence = "Analyst wording: this dose is not the one the schedule gives for this cycle day."
    set_summary(card_file, sentence)
    page.reload()

    summaries = page.locator("article[data-rule-id=dose-schedule] .summary").all_inner_texts()
    assert summaries == [sentence, sentence]
    assert page.locator("article[data-rule-id=dose-schedule]").first.get_attribute("data-indicator") == "warning"
    assert page.locator("article[data-rule-id=dose-schedule] .card-file").first.inner_text() == str(card_file)
    shot = screenshot(page, "preview-edited-card")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_card_file_is_named_on_the_page(page: Any, live_service: LiveService) -> None:
    (live_service.cards_dir / "premed-missing.toml").write_text("summary = '''{% if %}'''\n", encoding="utf-8")
    page.goto(live_service.base_url + "/preview/examples/premed-missing")
    problem = page.locator(".card-problem").inner_text()
    assert "premed-missing.toml" in problem
    assert page.locator("article.card").count() == 0


def test_an_order_from_the_form_gives_its_card_and_an_accepted_suggestion_is_stored(
    page: Any, live_service: LiveService
) -> None:
    # Cycle 1 day 1 is 9 µg/day; 28 µg/day is above the schedule (critical). Dexamethasone 20 mg 45 min
    # before the start (the form's default) is the right premedication, so no premedication card.
    send_order(page, live_service, patient="rr-adult-course/c1d1-sign", hook="order-sign", dose="28", unit="ug/d",
               cycle_day="Cycle 1 Day 1", steroid=True)
    assert page.locator("section.result").get_attribute("data-status") == "200"
    rule_ids = [c.get_attribute("data-rule-id") for c in page.locator("section.result article.card").all()]
    assert rule_ids == ["dose-schedule"]
    card = page.locator("section.result article[data-rule-id=dose-schedule]")
    assert card.get_attribute("data-indicator") == "critical"
    assert "28 µg/day" in card.locator(".summary").inner_text()
    assert card.locator(".card-file").inner_text() == str(DEFAULT_CARDS_DIR / "dose-schedule.toml")

    button = card.locator("button[data-feedback=accept]")
    assert button.inner_text() == "Change the order to 9 µg/day"
    card_uuid = card.get_attribute("data-card-uuid")
    suggestion_uuid = button.get_attribute("data-suggestion")
    button.click()
    card.locator("output.feedback-status").filter(has_text="Feedback stored: accepted").wait_for(timeout=TIMEOUT_MS)
    screenshot(page, "preview-order-accepted")

    rows = feedback_rows(live_service.database)
    assert [(r["card_uuid"], r["service_id"], r["rule_id"], r["outcome"]) for r in rows] == [
        (card_uuid, "blinatumomab-order-sign", "dose-schedule", "accepted")
    ]
    assert json.loads(rows[0]["accepted_suggestions"]) == [suggestion_uuid]


def test_an_order_without_steroid_gives_premed_missing_and_a_dismissal_is_stored_with_its_reason(
    page: Any, live_service: LiveService
) -> None:
    send_order(page, live_service, patient="rr-adult-course/c1d1-sign", hook="order-select", dose="9", unit="ug/d",
               cycle_day="Cycle 1 Day 1", steroid=False)
    request = json.loads(page.locator("section.result details pre").first.text_content() or "")
    assert request["hook"] == "order-select"
    assert [e["resource"]["resourceType"] for e in request["context"]["draftOrders"]["entry"]] == ["MedicationRequest"]
    rule_ids = [c.get_attribute("data-rule-id") for c in page.locator("section.result article.card").all()]
    assert rule_ids == ["premed-missing"]
    card = page.locator("section.result article[data-rule-id=premed-missing]")

    reason = card.locator("select.override-reason option").nth(1)
    code, display = reason.get_attribute("data-code"), reason.get_attribute("data-display")
    card.locator("select.override-reason").select_option(index=1)
    card.locator("input.override-comment").fill("Given on the ward, charting late")
    card.locator("button[data-feedback=dismiss]").click()
    card.locator("output.feedback-status").filter(has_text="Feedback stored: overridden").wait_for(timeout=TIMEOUT_MS)

    rows = feedback_rows(live_service.database)
    assert len(rows) == 1
    row = rows[0]
    assert (row["card_uuid"], row["service_id"], row["rule_id"], row["outcome"]) == (
        card.get_attribute("data-card-uuid"), "blinatumomab-order-select", "premed-missing", "overridden")
    assert (row["override_reason_code"], row["override_reason_display"]) == (code, display)
    assert row["user_comment"] == "Given on the ward, charting late"
    assert json.loads(row["accepted_suggestions"]) == []
