"""The phrases the rules hand the card files: one time format, the shared context, the medication wording."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.rules import medication_phrases as mp
from service.rules.phrases import bag_phrase, clock, context_phrases, date, either, event_phrase, plural, steroid_dose


@pytest.mark.parametrize(("offset", "text"), [
    (dt.timedelta(0), "2026-03-05 14:20 UTC"),
    (dt.timedelta(hours=1), "2026-03-05 14:20 UTC+01:00"),
    (dt.timedelta(hours=-5, minutes=-30), "2026-03-05 14:20 UTC-05:30"),
])
def test_every_time_is_printed_in_the_zone_the_chart_recorded(offset: dt.timedelta, text: str) -> None:
    at = dt.datetime(2026, 3, 5, 14, 20, 59, tzinfo=dt.timezone(offset))
    assert clock(at) == text
    assert date(at) == "2026-03-05"


def test_a_time_without_a_zone_and_no_time_at_all() -> None:
    assert clock(dt.datetime(2026, 3, 5, 14, 20)) == "2026-03-05 14:20"
    assert clock(None) is None and date(None) is None


def test_plurals_and_event_names() -> None:
    assert (plural(1, "hour"), plural(4, "hour"), plural(1.5, "hour")) == ("1 hour", "4 hours", "1.5 hours")
    assert event_phrase("restart", 4) == "restart after an interruption of 4 hours or more"
    assert event_phrase("step", 4) == "step dose" and event_phrase("cycle-start", 4) == "cycle start"
    assert event_phrase(None, 4) is None
    assert steroid_dose("dexamethasone", None, 5, 20) == "dexamethasone 5 mg/m² (maximum 20 mg)"
    assert steroid_dose("dexamethasone", 20, None) == "dexamethasone 20 mg"


def context(**over: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "regimen_why": "order-canonical", "regimen_evidence": "urn:x", "regimen_confidence": "confirmed",
        "cycle": 1, "day": 8, "position_source": "order-text", "derived_cycle": 1, "derived_day": 8,
        "event": "step", "weight_kg": 70, "weight_date": "2026-03-01", "weight_stale": False, "weight_band": "fixed",
        "weight_threshold_kg": 45, "bsa_m2": 1.85, "bsa_method": "mosteller", "height_cm": 175, "age_years": 34,
        "age_group": "adult",
    }
    return {**facts, **over}


def test_the_context_block_phrases() -> None:
    p = context_phrases(context())
    assert p["regimen_source"] == "from the order's protocol reference" and p["regimen_code"] == "urn:x"
    assert p["position_phrase"] == "cycle 1, day 8 — as written in the order"
    assert p["weight_phrase"] == "70 kg on 2026-03-01"
    assert p["weight_band_phrase"] == "≥ 45 kg, fixed dosing; BSA 1.85 m² (Mosteller, from height 175 cm and weight)"
    assert p["age_phrase"] == "34 years, adult" and p["event_name"] == "step dose"
    assert p["regimen_unconfirmed"] is False


def test_the_context_block_says_what_was_assumed_or_unknown() -> None:
    p = context_phrases(context(regimen_why="default", regimen_confidence="unconfirmed", derived_day=9,
                                weight_kg=None, weight_band=None, bsa_m2=None, age_years=None))
    assert p["regimen_source"].startswith("assumed (the service default)") and p["regimen_code"] is None
    assert p["regimen_unconfirmed"] is True
    assert p["position_phrase"].endswith("(the administration history suggests cycle 1, day 9)")
    assert (p["weight_phrase"], p["weight_band_phrase"]) == ("no usable weight", "band not verifiable")
    assert p["age_phrase"] == "age unknown, adult rules applied"
    assert context_phrases(context(cycle=None))["position_phrase"] == "unknown"
    assert "derived from the blinatumomab administration history" in context_phrases(
        context(position_source="history"))["position_phrase"]
    assert context_phrases(context(weight_stale=True, weight_band="bsa"))["weight_phrase"].endswith("(stale)")


def test_the_requirement_names_the_labels_own_equivalent() -> None:
    facts = {"required_agent": "prednisone", "required_dose_mg": 100, "required_dose_mg_per_m2": None,
             "required_max_mg": None, "required_mg_for_patient": 100, "required_route": "IV",
             "accept_equivalents": True, "standard_equivalent_mg": {},
             "label_equivalents": [{"agent": "prednisone", "mg": 100}, {"agent": "dexamethasone", "mg": 16}]}
    assert mp.requirement_phrase(facts) == (
        "prednisone 100 mg IV or equivalent (the label gives dexamethasone 16 mg as an example)")
    assert mp.equivalence_phrase(facts) == (
        "the label's own ratio (prednisone 100 mg ≈ dexamethasone 16 mg) and the standard table for other agents")
    child = {**facts, "required_agent": "dexamethasone", "required_dose_mg": None, "required_dose_mg_per_m2": 5,
             "required_max_mg": 20, "required_mg_for_patient": 4.5, "accept_equivalents": False}
    assert mp.requirement_phrase(child) == "dexamethasone 5 mg/m² (maximum 20 mg; 4.5 mg for this patient) IV"
    assert mp.equivalence_phrase(child) is None


def test_each_skipped_check_says_what_to_record() -> None:
    facts = {"problems": ["weight-stale", "rate-without-concentration"], "freshness_days": 30,
             "straddle_window_hours": 24, "weight_threshold_kg": 45, "restart_threshold_hours": 4,
             "same_cycle_max_days": 7, "dose_display": "10 mL/h",
             "running_display": None, "steroid_units": [], "steroid_dates": [], "weight_date": "2026-01-05"}
    stale, rate = mp.problem_items(facts)
    assert stale == {"code": "weight-stale", "what": "weight older than 30 days", "note": "last weight 2026-01-05",
                     "skipped": "the weight band, schedule and BSA dose checks",
                     "record": "a weight from the last 30 days"}
    assert rate["note"] == "10 mL/h" and rate["skipped"] == "every dose check of this order"
    assert set(mp.UNVERIFIABLE) >= {"weight-missing", "steroid-date-only", "infusion-no-dose", "history-date-only"}


def test_skipped_interruption_checks_name_the_knowledge_limits() -> None:
    """The interruption limits a bare-date history skips are the knowledge's (dosing.toml, regimens.toml)."""
    facts = {"problems": ["history-date-only"], "freshness_days": 30, "straddle_window_hours": 24,
             "weight_threshold_kg": 45, "restart_threshold_hours": 6, "same_cycle_max_days": 10,
             "running_display": None}
    (item,) = mp.problem_items(facts)
    assert item["skipped"] == ("the cycle day, interruption (6 hours, 10 days), premedication window and "
                               "treatment-free interval checks")


def test_bags_are_named_by_length_and_listed_with_or() -> None:
    assert [bag_phrase(h) for h in (24, 48, 72, 96, 168, None)] == [
        "24-hour", "48-hour", "72-hour", "96-hour", "7-day", None]
    assert either([bag_phrase(h) for h in (72, 96, 168)]) == "72-hour, 96-hour or 7-day"
    assert either(["24-hour", None]) == "24-hour"
