"""Administrations: blinatumomab infusion periods (status, stop reason, dose) and steroid events."""

from __future__ import annotations

import pytest

from service.knowledge import Knowledge
from tests.builders import (
    DEXAMETHASONE,
    METHYLPREDNISOLONE,
    PREDNISOLONE,
    at,
    blin_infusion,
    bsa,
    medication_administration,
    quantity,
    steroid_given,
    steroid_order,
)
from tests.med_helpers import make_timeline

NOW = at(2026, 3, 10, 8)


def infusions(kb: Knowledge, *resources: dict):  # type: ignore[no-untyped-def]
    return make_timeline(kb, now=NOW, hook="patient-view", resources=resources).infusions


def test_periods_sorted_running_has_no_end_and_ignored_statuses_dropped(kb: Knowledge) -> None:
    result = infusions(
        kb,
        blin_infusion("b", at(2026, 3, 3, 10), None, ug_per_day=9),
        blin_infusion("a", at(2026, 3, 1, 10), at(2026, 3, 3, 9, 50), ug_per_day=9),
        blin_infusion("x", at(2026, 3, 2), at(2026, 3, 2, 1), status="not-done"),
        blin_infusion("y", at(2026, 3, 2), at(2026, 3, 2, 1), status="entered-in-error"),
    )
    assert [(p.ref, p.end) for p in result] == [("MedicationAdministration/a", at(2026, 3, 3, 9, 50)),
                                                ("MedicationAdministration/b", None)]
    assert result[1].status == "in-progress" and result[1].ug_per_day == 9


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("Line flushed at bag change", "flush"), ("Overdose: pump programmed 10x", "overdose"),
     ("CRS grade 3", "adverse-event"), ("Neurotoxicity", "adverse-event"), ("Patient transferred", None),
     ("Flushing and fever, CRS suspected", "adverse-event"), ("Flushed the line after bag change", "flush")],
)
def test_stop_reason_from_status_reason(kb: Knowledge, reason: str, expected: str | None) -> None:
    (p,) = infusions(kb, blin_infusion("a", at(2026, 3, 1), at(2026, 3, 2), status="stopped", status_reason=reason))
    assert p.stop_reason == expected
    assert p.status == "stopped"


def test_dose_over_the_effective_period(kb: Knowledge) -> None:
    (p,) = infusions(kb, medication_administration("a", start=at(2026, 3, 1, 8), end=at(2026, 3, 3, 8),
                                                   dose=quantity(56, "ug")))
    assert p.ug_per_day == pytest.approx(28)


def test_date_only_effective_time_is_kept_as_date_only(kb: Knowledge) -> None:
    (p,) = infusions(kb, medication_administration("a", effective="2026-03-01", rate=quantity(9, "ug/d")))
    assert p.date_only
    assert p.start == at(2026, 3, 1)


def test_steroids_by_code_by_product_text_and_orders(kb: Knowledge) -> None:
    timeline = make_timeline(
        kb, now=NOW, drafts=[steroid_order("draft-dex", dose=20)],
        resources=[
            steroid_given("dex", at(2026, 3, 1, 9)),
            steroid_given("text", at(2026, 3, 1, 9), {"display": "Dexamethasone sodium phosphate 4 mg/mL inj"},
                          dose=8),
            steroid_given("mp", at(2026, 3, 1, 9), METHYLPREDNISOLONE, dose=80),
            steroid_given("pl", at(2026, 3, 1, 9), PREDNISOLONE, dose=0.1, unit="g"),
            steroid_given("bad", at(2026, 3, 1, 9), status="entered-in-error"),
        ])
    got = {(s.ref, s.agent, s.kind, s.dose_mg, s.draft) for s in timeline.steroids}
    assert got == {
        ("MedicationAdministration/dex", "dexamethasone", "administration", 20, False),
        ("MedicationAdministration/text", "dexamethasone", "administration", 8, False),
        ("MedicationAdministration/mp", "methylprednisolone", "administration", 80, False),
        ("MedicationAdministration/pl", "prednisolone", "administration", 100, False),
        ("MedicationRequest/draft-dex", "dexamethasone", "order", 20, True),
    }


def test_steroid_dose_per_m2_converted_with_bsa(kb: Knowledge) -> None:
    timeline = make_timeline(kb, now=NOW, hook="patient-view", resources=[
        steroid_given("dex", at(2026, 3, 1, 9), DEXAMETHASONE, dose=5, unit="mg/m2"), bsa("b", 1.2, at(2026, 3, 9))])
    (s,) = timeline.steroids
    assert s.dose_mg_per_m2 == 5 and s.dose_mg == pytest.approx(6)


def test_a_stopped_bags_dose_is_not_spread_over_its_short_period(kb: Knowledge) -> None:
    (p,) = infusions(kb, medication_administration("a", status="stopped", start=at(2026, 3, 1, 9),
                                                   end=at(2026, 3, 1, 13, 30), dose=quantity(196, "ug")))
    assert p.ug_per_day is None


def test_rate_verify_each_shift_does_not_end_the_running_bag(kb: Knowledge) -> None:
    """Epic "Rate Verify": a point record at the running rate inside the bag is no bag of its own."""
    bag = blin_infusion("bag", at(2026, 3, 8, 10), None, ug_per_day=28)
    verify = medication_administration("rv", effective=at(2026, 3, 9, 7), rate=quantity(28, "ug/d"))
    changed = medication_administration("rc", effective=at(2026, 3, 9, 19), rate=quantity(9, "ug/d"))
    got = infusions(kb, bag, verify)
    assert [p.ref for p in got] == ["MedicationAdministration/bag"] and got[0].end is None
    assert [p.ref for p in infusions(kb, bag, verify, changed)] == [
        "MedicationAdministration/bag", "MedicationAdministration/rc"]


def test_pump_rate_in_ml_per_hour_reads_the_dose_the_mar_line_states(kb: Knowledge) -> None:
    ma = medication_administration("b", start=at(2026, 3, 8, 10), status="in-progress",
                                   rate=quantity(10, "mL/hr", code="mL/h"))
    ma["dosage"]["text"] = "blinatumomab (BLINCYTO) 28 mcg/24 hr at 10 mL/hr"
    (period,) = infusions(kb, ma)
    assert period.ug_per_day == pytest.approx(28) and period.dose is not None and period.dose.basis == "text"
    del ma["dosage"]["text"]
    (period,) = infusions(kb, ma)
    assert period.ug_per_day is None and period.dose is not None
    assert period.dose.problem == "rate-without-concentration"


def test_rate_verify_charted_in_ml_per_hour_does_not_end_the_running_bag(kb: Knowledge) -> None:
    """As a MAR sends it: the bag's line states the dose beside the pump rate; the shift's "Rate Verify" is an
    instant record with the pump rate in mL/hr only (no dose can be read from it)."""
    bag = medication_administration("bag", start=at(2026, 3, 8, 10), status="in-progress",
                                    rate=quantity(10, "mL/hr", code="mL/h"))
    bag["dosage"]["text"] = "blinatumomab (BLINCYTO) 28 mcg/24 hr at 10 mL/hr"
    verify = medication_administration("rv", effective=at(2026, 3, 9, 7), rate=quantity(10, "mL/hr", code="mL/h"))
    (period,) = infusions(kb, bag, verify)
    assert (period.ref, period.end, period.ug_per_day) == ("MedicationAdministration/bag", None, pytest.approx(28))
