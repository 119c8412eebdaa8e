"""Blinatumomab orders: recognition, focus, daily-dose normalisation, explicit cycle/day."""

from __future__ import annotations

import pytest

from service.knowledge import Knowledge
from tests.builders import (
    BLIN_SBD,
    BLIN_SCD,
    at,
    blin_order,
    bsa,
    dose_quantity,
    medication_request,
    quantity,
    rate_quantity,
    rate_ratio,
    weight,
)
from tests.med_helpers import make_timeline

NOW = at(2026, 3, 10, 8)


def only_order(kb: Knowledge, order: dict, *resources: dict):  # type: ignore[no-untyped-def]
    timeline = make_timeline(kb, now=NOW, drafts=[order], resources=resources)
    assert len(timeline.orders) == 1
    return timeline.orders[0]


@pytest.mark.parametrize(
    ("value", "unit", "expected", "slip"),
    [
        (28, "ug/d", 28, None),
        (28, "mcg/d", 28, None),
        (9, "mcg/day", 9, None),
        (0.028, "mg/d", 28, None),
        (28, "mg/d", 28000, "mg-for-ug"),
        (28, "ug/h", 672, "per-hour-for-per-day"),
        (1.167, "ug/h", 28.008, None),
        (28, "ug/24.h", 28, None),
    ],
)
def test_rate_quantity_is_normalised_to_ug_per_day(kb: Knowledge, value: float, unit: str, expected: float,
                                                   slip: str | None) -> None:
    order = only_order(kb, blin_order("mr1", value, unit=unit))
    assert order.dose.ug_per_day == pytest.approx(expected)
    assert order.dose.basis == "rateQuantity"
    assert order.dose.unit_slip == slip


def test_mcg_as_unit_text_without_ucum_code(kb: Knowledge) -> None:
    order = only_order(kb, medication_request("mr1", dose_and_rate=[
        {"rateQuantity": quantity(28, "mcg/day", system=None)}]))
    assert order.dose.ug_per_day == 28


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(rate_ratio(28, "ug", 1, "d"), 28), (rate_ratio(56, "ug", 48, "h"), 28), (rate_ratio(9, "mcg", 24, "h"), 9)],
)
def test_rate_ratio(kb: Knowledge, ratio: dict, expected: float) -> None:
    order = only_order(kb, medication_request("mr1", dose_and_rate=[ratio]))
    assert order.dose.ug_per_day == pytest.approx(expected)
    assert order.dose.basis == "rateRatio"


@pytest.mark.parametrize(
    ("dose", "timing", "expected", "hours"),
    [
        (56, {"repeat": {"duration": 48, "durationUnit": "h"}}, 28, 48),
        (27, {"repeat": {"duration": 72, "durationUnit": "h"}}, 9, 72),
        (112, {"repeat": {"duration": 96, "durationUnit": "h"}}, 28, 96),
        (196, {"repeat": {"boundsDuration": {"value": 7, "unit": "d", "code": "d"}}}, 28, 168),
        (9, {"repeat": {"duration": 24, "durationUnit": "h"}}, 9, 24),
    ],
)
def test_dose_per_bag_divided_by_bag_duration(kb: Knowledge, dose: float, timing: dict, expected: float,
                                              hours: float) -> None:
    order = only_order(kb, medication_request("mr1", dose_and_rate=[dose_quantity(dose, "ug")], timing=timing))
    assert order.dose.ug_per_day == pytest.approx(expected)
    assert order.dose.basis == "doseQuantity/duration"
    assert order.bag_hours == hours


def test_dose_with_once_a_day_timing_is_per_day(kb: Knowledge) -> None:
    order = only_order(kb, medication_request(
        "mr1", dose_and_rate=[dose_quantity(9, "mcg")], timing={"repeat": {"frequency": 1, "period": 1,
                                                                          "periodUnit": "d"}}))
    assert (order.dose.ug_per_day, order.dose.basis) == (9, "doseQuantity/day")


def test_rate_per_m2_is_multiplied_by_bsa_when_known(kb: Knowledge) -> None:
    order = only_order(kb, blin_order("mr1", 15, unit="ug/m2/d"), bsa("b1", 1.2, at(2026, 3, 9)),
                       weight("w1", 30, at(2026, 3, 9)))
    assert order.dose.ug_per_m2_per_day == 15
    assert order.dose.ug_per_day == pytest.approx(18)


def test_rate_per_m2_without_bsa_has_no_ug_per_day(kb: Knowledge) -> None:
    order = only_order(kb, blin_order("mr1", 15, unit="ug/(m2.d)"))
    assert (order.dose.ug_per_m2_per_day, order.dose.ug_per_day) == (15, None)


def test_rate_per_kg_is_flagged(kb: Knowledge) -> None:
    order = only_order(kb, blin_order("mr1", 0.5, unit="ug/kg/d"), weight("w1", 60, at(2026, 3, 9)))
    assert order.dose.per_kg
    assert order.dose.ug_per_day == pytest.approx(30)


def test_ml_per_hour_without_concentration_is_unverifiable_never_guessed(kb: Knowledge) -> None:
    order = only_order(kb, blin_order("mr1", 10, unit="mL/h"))
    assert order.dose.ug_per_day is None
    assert order.dose.problem == "rate-without-concentration"


def test_ml_per_hour_with_contained_medication_strength(kb: Knowledge) -> None:
    medication = {
        "resourceType": "Medication", "id": "bag",
        "code": {"coding": [dict(BLIN_SCD)]},
        "ingredient": [{"itemCodeableConcept": {"coding": [dict(BLIN_SCD)]},
                        "strength": {"numerator": quantity(28, "ug"), "denominator": quantity(240, "mL")}}],
    }
    order = only_order(kb, medication_request("mr1", medication_reference="#bag", contained=[medication],
                                              dose_and_rate=[rate_quantity(10, "mL/h")]))
    assert order.dose.ug_per_day == pytest.approx(28)


def test_the_mass_rate_wins_over_a_pump_rate_in_the_same_order(kb: Knowledge) -> None:
    order = only_order(kb, medication_request("mr1", dose_and_rate=[
        {**dose_quantity(56, "ug"), **rate_quantity(5, "mL/h")}, rate_ratio(28, "ug", 1, "d")],
        timing={"repeat": {"duration": 48, "durationUnit": "h"}}))
    assert order.dose.ug_per_day == 28
    assert order.dose.problem is None


def test_text_only_dose_and_cycle_day(kb: Knowledge) -> None:
    order = only_order(kb, medication_request("mr1", text="BLINCYTO 9 mcg/day continuous IV, C1D1"))
    assert (order.dose.ug_per_day, order.dose.basis) == (9, "text")
    assert (order.explicit_cycle, order.explicit_day) == (1, 1)


def test_unparseable_text_and_unknown_unit(kb: Knowledge) -> None:
    assert only_order(kb, medication_request("mr1", text="blinatumomab per protocol")).dose.problem == "no-dose"
    assert only_order(kb, blin_order("mr1", 5, unit="U/d")).dose.problem == "unit-not-convertible"


@pytest.mark.parametrize(
    ("text", "note", "expected"),
    [("Cycle 2 Day 15", None, (2, 15)), (None, "cycle 3, day 1 per protocol", (3, 1)), ("C1D8 step", None, (1, 8)),
     ("28 mcg/day", None, (None, None))],
)
def test_explicit_cycle_day_from_text_or_note(kb: Knowledge, text: str | None, note: str | None,
                                             expected: tuple[int | None, int | None]) -> None:
    order = only_order(kb, blin_order("mr1", 28, text=text, note=note))
    assert (order.explicit_cycle, order.explicit_day) == expected


def test_scd_and_sbd_codings_are_one_order_and_stabilizer_is_not_the_drug(kb: Knowledge) -> None:
    both = medication_request("mr1", codings=(BLIN_SCD, BLIN_SBD), dose_and_rate=[rate_quantity(28, "ug/d")])
    stabilizer = medication_request("mr2", codings=(BLIN_SCD,), medication_text="BLINCYTO IV Solution Stabilizer",
                                    dose_and_rate=[rate_quantity(5.5, "mL")])
    timeline = make_timeline(kb, now=NOW, drafts=[both, stabilizer])
    assert [o.ref for o in timeline.orders] == ["MedicationRequest/mr1"]


def test_focus_order_sign_every_blin_draft_order_select_only_selections(kb: Knowledge) -> None:
    drafts = [blin_order("a", 28), blin_order("b", 28)]
    stored = blin_order("c", 9, status="active")
    sign = make_timeline(kb, now=NOW, drafts=drafts, resources=[stored])
    assert [o.ref for o in sign.focus_orders] == ["MedicationRequest/a", "MedicationRequest/b"]
    assert [o.ref for o in sign.orders if not o.draft] == ["MedicationRequest/c"]
    select = make_timeline(kb, now=NOW, hook="order-select", drafts=drafts, selections=["MedicationRequest/b"])
    assert [o.ref for o in select.focus_orders] == ["MedicationRequest/b"]


def test_a_draft_shadows_the_stored_copy_with_the_same_id(kb: Knowledge) -> None:
    timeline = make_timeline(kb, now=NOW, drafts=[blin_order("a", 28)], resources=[blin_order("a", 9)])
    assert len(timeline.orders) == 1
    assert timeline.orders[0].draft and timeline.orders[0].dose.ug_per_day == 28


def test_start_instantiates_and_date_only_start(kb: Knowledge) -> None:
    order = only_order(kb, blin_order("mr1", 28, start="2026-03-11",
                                      instantiates=["urn:blina-cds:regimen:mrd-positive"]))
    assert order.start == at(2026, 3, 11) and order.start_date_only
    assert order.instantiates == ("urn:blina-cds:regimen:mrd-positive",)


def test_an_absolute_medication_reference_is_resolved_like_a_relative_one(kb: Knowledge) -> None:
    """FHIR references may be absolute URLs: the fetched Medication behind one names the drug and its strength."""
    medication = {
        "resourceType": "Medication", "id": "bag",
        "code": {"coding": [dict(BLIN_SCD)]},
        "ingredient": [{"itemCodeableConcept": {"coding": [dict(BLIN_SCD)]},
                        "strength": {"numerator": quantity(28, "ug"), "denominator": quantity(240, "mL")}}],
    }
    order = only_order(kb, medication_request("mr1", medication_reference="https://ehr.example/fhir/Medication/bag",
                                              dose_and_rate=[rate_quantity(10, "mL/h")]), medication)
    assert order.dose.ug_per_day == pytest.approx(28)
