"""rules.evaluate: which patients patient-view speaks about, and which rule ids a service gets."""

from __future__ import annotations

import datetime as dt

import pytest

from service.catalog import build_catalog
from service.knowledge import Knowledge
from service.rules import evaluate
from service.timeline import build_timeline
from tests.builders import at, blin_infusion, height, patient, view_context, weight
from tests.threshold_builders import lab

NOW = at(2026, 6, 1, 9)
ALT_10X = lab("alt", "1742-6", 400, "U/L", NOW - dt.timedelta(hours=3), high=40, high_unit="U/L")


def findings(kb: Knowledge, *resources: dict[str, object]) -> list[str]:
    timeline = build_timeline(hook="patient-view", context=view_context(),
                              data={"all": [patient(), weight("w", 70, NOW), height("h", 175, NOW), *resources]},
                              kb=kb, now=NOW)
    rule_ids = build_catalog(kb)["blinatumomab-patient-view"].rule_ids
    return sorted(f.rule_id for f in evaluate(timeline, kb, rule_ids=rule_ids))


def test_patient_never_on_blinatumomab_gets_no_card_at_patient_view(kb: Knowledge) -> None:
    assert findings(kb, ALT_10X) == []


@pytest.mark.parametrize(("days_ago", "carded"), [(89, True), (91, False)])
def test_patient_view_lookback_is_90_days(kb: Knowledge, days_ago: int, carded: bool) -> None:
    start = NOW - dt.timedelta(days=days_ago + 28)
    infusion = blin_infusion("bag", start, NOW - dt.timedelta(days=days_ago))
    got = findings(kb, ALT_10X, infusion)
    assert ("hepatic-interrupt" in got) is carded
    assert ("therapy-status" in got) is carded


def test_running_infusion_gets_threshold_cards_and_therapy_status(kb: Knowledge) -> None:
    running = blin_infusion("bag", NOW - dt.timedelta(days=3), None)
    got = findings(kb, ALT_10X, running)
    assert "hepatic-interrupt" in got and "therapy-status" in got


def test_order_services_never_get_the_therapy_summary(kb: Knowledge) -> None:
    catalog = build_catalog(kb)
    assert "therapy-status" not in catalog["blinatumomab-order-sign"].rule_ids
    assert "therapy-status" not in catalog["blinatumomab-order-select"].rule_ids
    view = catalog["blinatumomab-patient-view"].rule_ids
    # patient-view checks the running infusion's dose, but not what only an order being placed has
    assert {"dose-limit", "dose-schedule", "dose-weight-band"} <= set(view)
    assert "dose-unverifiable" not in view and "cycle-new-required" not in view


def test_another_patients_record_never_reaches_the_timeline(kb: Knowledge) -> None:
    other_child = patient("someone-else", birth_date="2019-05-01")
    foreign_alt = {**ALT_10X, "id": "alt-other", "subject": {"reference": "Patient/someone-else"}}
    timeline = build_timeline(hook="patient-view", context=view_context(),
                              data={"all": [other_child, foreign_alt, weight("w", 70, NOW)]}, kb=kb, now=NOW)
    assert timeline.body.age_years is None  # not the other patient's age
    assert timeline.labs == ()


def test_blinatumomab_named_through_a_contained_medication_or_reference_display(kb: Knowledge) -> None:
    from service.timeline import has_blinatumomab_draft
    from tests.builders import blin_order, order_context

    coded = blin_order("mr1")
    concept = coded.pop("medicationCodeableConcept")
    contained = {**coded, "contained": [{"resourceType": "Medication", "id": "med", "code": concept}],
                 "medicationReference": {"reference": "#med"}}
    display_only = {**coded, "medicationReference": {"reference": "Medication/unknown", "display": "Blincyto 35 mcg"}}
    stabilizer = {**coded, "medicationReference": {"display": "Blincyto IV Solution Stabilizer"}}
    assert has_blinatumomab_draft(order_context(contained), kb)
    assert has_blinatumomab_draft(order_context(display_only), kb)
    assert not has_blinatumomab_draft(order_context(stabilizer), kb)
    timeline = build_timeline(hook="order-sign", context=order_context(contained),
                              data={"all": [patient(), weight("w", 70, NOW)]}, kb=kb, now=NOW)
    assert [o.ref for o in timeline.focus_orders] == ["MedicationRequest/mr1"]
