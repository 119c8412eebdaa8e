"""preservative-bag-weight (issue 7 item 5; clinical-rules.md E32): a 72-h, 96-h or 7-day bag (bacteriostatic saline
with benzyl alcohol) for a patient under 5.4 kg, at order entry and while it runs; nothing for a 7-day bag above
the weight or a 24-h / 48-h bag in a small infant."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules import RULE_IDS, evaluate
from service.rules.base import Finding
from tests.builders import (
    UCUM,
    at,
    blin_infusion,
    dose_quantity,
    height,
    iso,
    medication_request,
    patient,
    quantity,
    rate_quantity,
    weight,
)
from tests.charting_builders import INFUSE_OVER
from tests.med_helpers import detail_of, make_timeline, renderer

C1 = at(2026, 3, 1, 10)
NOW = at(2026, 3, 3, 8)
RULE = "preservative-bag-weight"


def infant(kg: float = 4.8) -> list[dict[str, Any]]:
    """A 3-month-old (≥ 1 month: within the label's age range), 55 cm."""
    return [patient(birth_date="2025-12-01"), weight("w", kg, at(2026, 3, 1, 7)), height("h", 55, at(2026, 3, 1, 7))]


def bag_order(id: str, hours: int, *, ug_per_day: float = 4.1, **kw: Any) -> dict[str, Any]:
    """A BSA-dosed order written per bag: µg per bag with the bag duration in ``timing.repeat.duration``."""
    kw.setdefault("text", f"BLINCYTO {ug_per_day} mcg/day continuous IV infusion. Do not flush the line.")
    return medication_request(id, dose_and_rate=[dose_quantity(round(ug_per_day * hours / 24, 2), "ug")],
                              timing={"repeat": {"duration": hours, "durationUnit": "h"}}, start=NOW, **kw)


def bag_findings(kb: Knowledge, *, hook: str = "order-sign", drafts: Any = (), resources: Any = (),
                 selections: list[str] | None = None) -> list[Finding]:
    timeline = make_timeline(kb, now=NOW, hook=hook, drafts=drafts, resources=resources,  # type: ignore[arg-type]
                             selections=selections)
    found = [f for f in evaluate(timeline, kb, rule_ids=RULE_IDS) if f.rule_id == RULE]
    for f in found:
        renderer().render(f)
    return found


def test_a_7_day_bag_ordered_for_a_4_8_kg_infant_warns(kb: Knowledge) -> None:
    (f,) = bag_findings(kb, drafts=[bag_order("o7", 168)], resources=infant())
    assert (f.indicator, f.facts["order_ref"], f.facts["bag_phrase"], f.facts["evidence"]) == (
        "warning", "MedicationRequest/o7", "7-day", "timing")
    assert (f.facts["weight_kg"], f.facts["min_weight_kg"], f.facts["legacy_min_weight_kg"]) == (4.8, 5.4, 22)
    assert f.actions == ()
    detail = detail_of(f)
    assert "Prepare 24-hour or 48-hour bags without preservative" in detail
    assert "Bacteriostatic 0.9% Sodium Chloride" in detail and "4.8 kg (2026-03-01)" in detail
    assert renderer().render(f).summary.startswith("Blinatumomab 7-day bag with preservative")


@pytest.mark.parametrize("order", [
    # Order text only (no coded duration): the diluent named
    medication_request("t1", dose_and_rate=[rate_quantity(4.1, "ug/d")], start=NOW,
                       text="BLINCYTO 4.1 mcg/day in Bacteriostatic 0.9% Sodium Chloride (benzyl alcohol), "
                            "0.6 mL/hr"),
    # Oracle Health style: a contained Medication whose diluent ingredient is bacteriostatic saline
    medication_request(
        "t2", medication_reference="#m1", start=NOW,
        dose_and_rate=[rate_quantity(4.1, "ug/d")],
        contained=[{"resourceType": "Medication", "id": "m1",
                    "code": {"text": "blinatumomab 28.6 mcg + sodium chloride 0.9% 110 mL"},
                    "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"}},
                                   {"itemCodeableConcept": {"text": "Bacteriostatic 0.9% Sodium Chloride"}}]}]),
    # a duration written in the text
    medication_request("t3", dose_and_rate=[rate_quantity(4.1, "ug/d")], start=NOW,
                       text="4.1 mcg/day, IV, Continuous, over 96 hr. Do not flush line."),
])
def test_a_preservative_bag_named_in_text_or_ingredients_warns(kb: Knowledge, order: dict[str, Any]) -> None:
    (f,) = bag_findings(kb, hook="order-select", drafts=[order], resources=infant(), selections=[
        f"MedicationRequest/{order['id']}"])
    assert f.facts["order_ref"] == f"MedicationRequest/{order['id']}"
    said = {"t1": 'preservative: "BLINCYTO 4.1 mcg/day in Bacteriostatic 0.9% Sodium Chloride',
            "t2": 'preservative: "Bacteriostatic 0.9% Sodium Chloride"', "t3": 'a 96-hour bag ("over 96 hr")'}
    assert said[order["id"]] in detail_of(f)


def oracle_infuse_event(id: str, start: dt.datetime, minutes: int) -> dict[str, Any]:
    """An Oracle Health "Infuse" result: an instant, volume in mL, mL/h and the infuse-over-time extension."""
    return {"resourceType": "MedicationAdministration", "id": id, "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"text": "blinatumomab (BLINCYTO)"},
            "extension": [{"url": INFUSE_OVER, "valueQuantity": {"value": minutes, "unit": "minutes",
                                                                 "system": UCUM, "code": "min"}}],
            "effectiveDateTime": iso(start),
            "dosage": {"dose": quantity(101, "mL"), "rateQuantity": quantity(0.6, "mL/h")}}


def test_the_running_7_day_bag_warns_at_patient_view(kb: Knowledge) -> None:
    (f,) = bag_findings(kb, hook="patient-view", resources=[*infant(), oracle_infuse_event("ma7", C1, 10080)])
    assert (f.facts["checked"], f.facts["administration_ref"], f.facts["evidence"], f.facts["bag_phrase"]) == (
        "administration", "MedicationAdministration/ma7", "infuse-over-time", "7-day")
    assert "The running infusion (MedicationAdministration/ma7" in detail_of(f)


def test_a_running_bag_takes_its_duration_from_its_order(kb: Knowledge) -> None:
    """Epic style: an open effectivePeriod naming the active 96-h order in ``request``."""
    order = bag_order("o96", 96, status="active")
    bag = {**blin_infusion("ma96", C1, None, ug_per_day=4.1), "request": {"reference": "MedicationRequest/o96"}}
    (f,) = bag_findings(kb, hook="patient-view", resources=[*infant(), order, bag])
    assert (f.facts["administration_ref"], f.facts["bag_phrase"], f.facts["from_order"]) == (
        "MedicationAdministration/ma96", "96-hour", "MedicationRequest/o96")
    assert "its order (MedicationRequest/o96) does" in detail_of(f)


def test_a_draft_and_the_running_bag_give_one_card_naming_both(kb: Knowledge) -> None:
    (f,) = bag_findings(kb, drafts=[bag_order("o7", 168)],
                        resources=[*infant(), oracle_infuse_event("ma7", C1, 10080)])
    assert (f.facts["order_ref"], f.facts["also_administration_ref"]) == (
        "MedicationRequest/o7", "MedicationAdministration/ma7")


@pytest.mark.parametrize(("kg", "hours"), [
    (5.4, 168),   # exactly the threshold: not below it
    (12.0, 168),  # a 7-day bag above the weight
    (4.8, 24),    # a 24-h bag in a small infant
    (4.8, 48),
])
def test_no_card_at_or_above_the_weight_or_for_preservative_free_bags(kb: Knowledge, kg: float, hours: int) -> None:
    running = oracle_infuse_event("ma", C1, hours * 60)
    assert bag_findings(kb, drafts=[bag_order("o", hours)], resources=[*infant(kg), running]) == []
    assert bag_findings(kb, hook="patient-view", resources=[*infant(kg), running]) == []


def test_preservative_free_text_and_an_unknown_weight_give_no_card(kb: Knowledge) -> None:
    free = medication_request("pf", dose_and_rate=[rate_quantity(4.1, "ug/d")], start=NOW,
                              text="BLINCYTO 4.1 mcg/day in preservative-free 0.9% Sodium Chloride, over 24 hr")
    assert bag_findings(kb, drafts=[free], resources=infant()) == []
    # no weight on record: dose-unverifiable asks for it; this rule does not guess
    assert bag_findings(kb, drafts=[bag_order("o7", 168)], resources=[patient(birth_date="2025-12-01")]) == []


def test_a_completed_7_day_bag_is_history(kb: Knowledge) -> None:
    done = oracle_infuse_event("old", C1 - dt.timedelta(days=10), 10080)
    assert bag_findings(kb, hook="patient-view", resources=[*infant(), done,
                                                            blin_infusion("now", C1, None, ug_per_day=4.1)]) == []
