"""Dose rules: dose-limit, dose-schedule, dose-weight-band, dose-unverifiable (order hooks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules.base import Finding
from tests.builders import (
    at,
    blin_infusion,
    blin_order,
    height,
    iso,
    medication_administration,
    medication_request,
    patient,
    steroid_given,
    steroid_order,
    weight,
)
from tests.med_helpers import alarms, detail_of, make_timeline, one, renderer, run

C1 = at(2026, 3, 1, 10)
NOW = at(2026, 3, 3, 8)  # cycle 1 day 3 when the course started on C1


def adult(kg: float = 70, cm: float = 175, when: dt.datetime | None = None) -> list[dict[str, Any]]:
    when = when or at(2026, 3, 1)
    return [patient(birth_date="1980-01-01"), weight("w", kg, when), height("h", cm, when)]


def dosing(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.indicator) for f in findings if f.rule_id.startswith("dose-")]


def order_on_day3(kb: Knowledge, order: dict[str, Any], *resources: dict[str, Any]) -> list[Finding]:
    """An order placed on cycle 1 day 3 of a running R/R course at 9 µg/day."""
    history = [blin_infusion("a", C1, None, ug_per_day=9), steroid_given("d", C1 - dt.timedelta(minutes=30))]
    return run(kb, now=NOW, drafts=[order, steroid_order("dx")], resources=[*history, *resources])


def test_28_on_cycle_1_day_3_is_critical_with_an_update_to_9(kb: Knowledge) -> None:
    findings = order_on_day3(kb, blin_order("o", 28), *adult())
    assert dosing(findings) == [("dose-schedule", "critical")]
    f = one(findings, "dose-schedule")
    facts = f.facts
    assert (facts["cycle"], facts["day"], facts["expected_ug_per_day"], facts["direction"]) == (1, 3, 9, "above")
    assert f.facts["weight_band"] == "fixed" and f.facts["regimen"] == "relapsed-refractory"
    assert f.facts["regimen_why"] == "default"
    (action,) = f.actions
    assert (action.type, action.key) == ("update", "update-dose")
    assert action.resource is not None
    dosage = action.resource["dosageInstruction"][0]
    assert dosage["doseAndRate"] == [{"rateQuantity": {"value": 9, "unit": "ug/d",
                                                       "system": "http://unitsofmeasure.org", "code": "ug/d"}}]
    assert action.resource["id"] == "o"


def test_correct_9_on_day_3_and_step_to_28_on_day_8_are_quiet(kb: Knowledge) -> None:
    assert dosing(order_on_day3(kb, blin_order("o", 9), *adult())) == []
    history = [blin_infusion("a", C1, None, ug_per_day=9)]
    findings = run(kb, now=at(2026, 3, 8, 9), drafts=[blin_order("o", 28), steroid_order("dx")],
                   resources=[*history, *adult()])
    assert alarms(findings) == []


def test_below_schedule_is_a_warning(kb: Knowledge) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", 9, text="Cycle 2 Day 1"), steroid_order("dx")],
                   resources=adult())
    assert dosing(findings) == [("dose-schedule", "warning")]
    assert one(findings, "dose-schedule").facts["direction"] == "below"


@pytest.mark.parametrize(
    ("value", "unit", "slip"), [(28, "mg/d", "mg-for-ug"), (28, "ug/h", "per-hour-for-per-day"), (56, "ug/d", None)]
)
def test_above_the_absolute_maximum_is_dose_limit_only(kb: Knowledge, value: float, unit: str,
                                                       slip: str | None) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", value, unit=unit, text="C2D3"), steroid_order("dx")],
                   resources=adult())
    assert dosing(findings) == [("dose-limit", "critical")]
    f = one(findings, "dose-limit")
    assert f.facts["unit_slip"] == slip and f.facts["limit_ug_per_day"] == 28
    assert f.actions[0].resource is not None
    assert f.actions[0].resource["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]["value"] == 28


@pytest.mark.parametrize(("kg", "expected"), [(44.9, [("dose-weight-band", "critical")]), (45.0, [])])
def test_44_9_kg_is_bsa_band_45_0_is_fixed(kb: Knowledge, kg: float, expected: list[tuple[str, str]]) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", 28, text="Cycle 2 Day 1"), steroid_order("dx")],
                   resources=adult(kg, 150))
    assert dosing(findings) == expected
    if expected:
        f = one(findings, "dose-weight-band")
        assert f.facts["weight_band"] == "bsa" and f.facts["bsa_method"] == "mosteller"
        assert f.facts["expected_bsa_ug_per_day"] == pytest.approx(20.5, abs=0.05)
        assert f.facts["direction"] == "above"
        assert f.actions[0].resource is not None
        rate = f.actions[0].resource["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]
        assert rate["value"] == pytest.approx(20.5, abs=0.05)


@pytest.mark.parametrize(("dose", "expected"), [(20.5, []), (19, []), (22.5, []),
                                                (23, [("dose-weight-band", "critical")]),
                                                (17, [("dose-weight-band", "warning")])])
def test_child_bsa_dose_within_10_percent(kb: Knowledge, dose: float, expected: list[tuple[str, str]]) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", dose, text="C2D1"), steroid_order("dx", dose=7)],
                   resources=[patient(birth_date="2016-01-01"), weight("w", 44.9, at(2026, 3, 1)),
                              height("h", 150, at(2026, 3, 1))])
    assert dosing(findings) == expected


@pytest.mark.parametrize(("kg", "cm"), [(19.5, 175), (22.1, 157), (30, 135), (44.9, 150)])
def test_exactly_10_percent_above_or_below_the_bsa_dose_is_within_tolerance(kb: Knowledge, kg: float,
                                                                             cm: float) -> None:
    """±10 % is inclusive: float noise in dose ÷ BSA dose (1.1000000000000003) must not make it critical."""
    from tests.med_helpers import make_timeline

    child = [patient(birth_date="2016-01-01"), weight("w", kg, at(2026, 3, 1)), height("h", cm, at(2026, 3, 1))]
    bsa = make_timeline(kb, now=NOW, resources=child).body.bsa_m2
    assert bsa is not None
    target = min(15 * bsa, 28)
    for factor in (1.1, 0.9):
        findings = run(kb, now=NOW, drafts=[blin_order("o", target * factor, text="C2D1"),
                                             steroid_order("dx", dose=7)], resources=child)
        assert dosing(findings) == [], (kg, cm, factor)


def test_per_m2_order_for_a_child_is_checked_against_the_per_m2_schedule(kb: Knowledge) -> None:
    child = [patient(birth_date="2016-01-01"), weight("w", 30, at(2026, 3, 1)), height("h", 135, at(2026, 3, 1))]
    ok = run(kb, now=NOW, drafts=[blin_order("o", 15, unit="ug/m2/d", text="C2D1"), steroid_order("dx", dose=6)],
             resources=child)
    assert dosing(ok) == []
    wrong = run(kb, now=NOW, drafts=[blin_order("o", 15, unit="ug/m2/d", text="C1D3"), steroid_order("dx", dose=6)],
                resources=child)
    assert dosing(wrong) == [("dose-schedule", "critical")]
    f = one(wrong, "dose-schedule")
    assert (f.facts["compared"], f.facts["expected_ug_per_m2_per_day"]) == ("ug_per_m2_per_day", 5)


def test_the_update_rewrites_a_per_m2_dose_written_with_a_caret_in_the_order_text(kb: Knowledge) -> None:
    """The dose the timeline read from the text ("15 mcg/m^2/day") is the one the update replaces: the corrected
    order must not carry the old dose and the new one side by side."""
    child = [patient(birth_date="2016-01-01"), weight("w", 30, at(2026, 3, 1)), height("h", 135, at(2026, 3, 1))]
    order = medication_request("o", text="Blincyto 15 mcg/m^2/day C1D3")
    f = one(run(kb, now=NOW, drafts=[order, steroid_order("dx", dose=6)], resources=child), "dose-schedule")
    assert (f.facts["dose_basis"], f.facts["dose_ug_per_m2_per_day"]) == ("text", 15)
    (action,) = f.actions
    assert action.resource is not None
    assert action.resource["dosageInstruction"][0]["text"] == "Blincyto 5.3 mcg/day C1D3"


@pytest.mark.parametrize(("value", "unit", "kind"),
                         [(0.4, "ug/kg/d", "per-kg"), (15, "ug/m2/d", "bsa-unit-fixed-band")])
def test_body_size_units_for_a_fixed_band_patient_warn(kb: Knowledge, value: float, unit: str, kind: str) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", value, unit=unit, text="C2D1"), steroid_order("dx")],
                   resources=adult())
    assert dosing(findings) == [("dose-weight-band", "warning")]
    assert one(findings, "dose-weight-band").facts["kind"] == kind


def test_stale_weight_is_unverifiable_but_the_cap_still_applies(kb: Knowledge) -> None:
    findings = order_on_day3(kb, blin_order("o", 28), *adult(when=at(2026, 1, 1)))
    assert sorted(dosing(findings)) == [("dose-schedule", "critical"), ("dose-unverifiable", "warning")]
    assert one(findings, "dose-unverifiable").facts["problems"] == ["weight-stale"]
    f = one(findings, "dose-schedule")
    assert f.facts["band_unknown"] and f.facts["weight_band"] is None and f.actions == ()


def test_missing_weight_and_missing_height_under_45kg(kb: Knowledge) -> None:
    no_weight = order_on_day3(kb, blin_order("o", 9), patient())
    assert one(no_weight, "dose-unverifiable").facts["problems"] == ["weight-missing"]
    no_height = order_on_day3(kb, blin_order("o", 5), patient(birth_date="2016-01-01"), weight("w", 30, at(2026, 3, 1)))
    assert one(no_height, "dose-unverifiable").facts["problems"] == ["height-missing"]


def test_rate_without_concentration_and_date_only_start(kb: Knowledge) -> None:
    findings = run(kb, now=NOW, drafts=[blin_order("o", 10, unit="mL/h", start="2026-03-03"), steroid_order("dx")],
                   resources=adult())
    assert dosing(findings) == [("dose-unverifiable", "warning")]
    assert one(findings, "dose-unverifiable").facts["problems"] == ["rate-without-concentration", "order-date-only"]


def ae_history() -> list[dict[str, Any]]:
    stop = at(2026, 3, 12, 10)
    return [blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9),
            blin_infusion("b", at(2026, 3, 8, 10), stop, ug_per_day=28, status="stopped",
                          status_reason="CRS grade 3"),
            steroid_given("d", at(2026, 3, 14, 9, 30))]


def test_restart_after_adverse_event_at_28_is_critical_at_9_is_quiet(kb: Knowledge) -> None:
    restart = at(2026, 3, 14, 10)
    bad = run(kb, now=restart, drafts=[blin_order("o", 28, start=restart)], resources=[*ae_history(), *adult()])
    assert dosing(bad) == [("dose-schedule", "critical")]
    f = one(bad, "dose-schedule")
    assert (f.facts["expected_basis"], f.facts["expected_ug_per_day"], f.facts["event"]) == ("ae-restart", 9, "restart")
    good = run(kb, now=restart, drafts=[blin_order("o", 9, start=restart)], resources=[*ae_history(), *adult()])
    assert alarms(good) == []


def test_ae_restart_dose_outside_relapsed_refractory_is_called_unconfirmed(kb: Knowledge) -> None:
    """clinical-rules.md §8 item 8: the 9 µg/day restart was read for R/R; MRD-positive cards must say so."""

    restart = at(2026, 3, 14, 10)
    mrd = "urn:blina-cds:regimen:mrd-positive"
    rr = one(run(kb, now=restart, drafts=[blin_order("o", 28, start=restart)], resources=[*ae_history(), *adult()]),
             "dose-schedule")
    assert rr.facts["ae_restart_confirmed"] is True
    assert "not confirmed" not in detail_of(rr)
    f = one(run(kb, now=restart, drafts=[blin_order("o", 28, start=restart, instantiates=[mrd])],
                resources=[*ae_history(), *adult()]), "dose-schedule")
    assert (f.facts["regimen"], f.facts["expected_basis"], f.facts["ae_restart_confirmed"]) == (
        "mrd-positive", "ae-restart", False)
    assert "for the MRD-positive B-cell precursor ALL regimen it is not confirmed" in detail_of(f)


@pytest.mark.parametrize(("days", "expected"), [(6, [("dose-schedule", "warning")]), (7, [])])
def test_re_escalation_before_7_days_is_a_warning(kb: Knowledge, days: int, expected: list[tuple[str, str]]) -> None:
    restart = at(2026, 3, 14, 10)
    history = [*ae_history(), blin_infusion("c", restart, None, ug_per_day=9)]
    when = restart + dt.timedelta(days=days)
    findings = run(kb, now=when, drafts=[blin_order("o", 28, start=when), steroid_order("dx")],
                   resources=[*history, *adult()])
    assert dosing(findings) == expected
    if expected:
        f = one(findings, "dose-schedule")
        assert f.facts["early_escalation"] and f.facts["event"] == "dose-change"


def test_mrd_positive_has_no_step_28_on_day_3_is_quiet(kb: Knowledge) -> None:
    mrd = ["urn:blina-cds:regimen:mrd-positive"]
    history = [blin_infusion("a", C1, None, ug_per_day=28), steroid_given("d", C1 - dt.timedelta(minutes=30))]
    findings = run(kb, now=NOW, drafts=[blin_order("o", 28, instantiates=mrd), steroid_order("dx")],
                   resources=[*history, *adult()])
    assert dosing(findings) == []


def test_order_select_evaluates_only_the_selection(kb: Knowledge) -> None:
    findings = run(kb, now=NOW, hook="order-select", drafts=[blin_order("a", 28, text="C1D3"),
                                                              blin_order("b", 9, text="C1D3"), steroid_order("dx")],
                   selections=["MedicationRequest/b"], resources=adult())
    assert dosing(findings) == []


def test_restart_at_9_after_an_adverse_event_interruption_over_7_days_is_quiet(kb: Knowledge) -> None:
    restart = at(2026, 3, 22, 10)  # 10 days after the CRS stop: a new cycle, still restarted at 9 µg/day
    findings = run(kb, now=restart, drafts=[blin_order("o", 9, start=restart), steroid_order("dx")],
                   resources=[*ae_history(), *adult(when=at(2026, 3, 21))])
    assert dosing(findings) == []
    too_high = run(kb, now=restart, drafts=[blin_order("o", 28, start=restart), steroid_order("dx")],
                   resources=[*ae_history(), *adult(when=at(2026, 3, 21))])
    f = one(too_high, "dose-schedule")
    assert (f.indicator, f.facts["cycle"], f.facts["expected_basis"]) == ("critical", 2, "ae-restart")


# ---------------------------------------------------------------- running infusions are checked like orders (issue 6)


def running_course(*bags: dict[str, Any]) -> list[dict[str, Any]]:
    return [*adult(), steroid_given("d", C1 - dt.timedelta(minutes=30)), *bags]


def view(kb: Knowledge, now: dt.datetime, *resources: dict[str, Any]) -> list[Finding]:
    return run(kb, now=now, hook="patient-view", resources=list(resources))


def test_pump_at_28_on_cycle_1_day_3_is_a_dose_error_not_a_step(kb: Knowledge) -> None:
    change = at(2026, 3, 3, 10)
    findings = view(kb, change + dt.timedelta(hours=2), *running_course(
        blin_infusion("a", C1, change, ug_per_day=9), blin_infusion("b", change, None, ug_per_day=28)))
    assert alarms(findings) == [("dose-schedule", "critical")]  # and no premedication card for a "step"
    f = one(findings, "dose-schedule")
    assert (f.about, f.facts["checked"], f.facts["administration_running"]) == (
        "MedicationAdministration/b", "administration", True)
    assert (f.facts["cycle"], f.facts["day"], f.facts["expected_ug_per_day"], f.facts["event"]) == (
        1, 3, 9, "dose-change")
    assert f.actions == ()
    card = renderer().render(f)
    assert card.summary.startswith("Running infusion: blinatumomab 28 µg/day is above the 9 µg/day")
    assert "Check the pump programming and the bag preparation now" in " ".join((card.detail or "").split())


def test_pump_at_ten_times_the_maximum_is_dose_limit(kb: Knowledge) -> None:
    findings = view(kb, at(2026, 3, 10, 12), *running_course(
        blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9), steroid_given("d8", at(2026, 3, 8, 9, 15)),
        blin_infusion("b", at(2026, 3, 8, 10), None, ug_per_day=280)))
    assert alarms(findings) == [("dose-limit", "critical")]
    assert one(findings, "dose-limit").about == "MedicationAdministration/b"


@pytest.mark.parametrize(("hours_ago", "expected"), [(20, [("dose-schedule", "critical")]), (30, [])])
def test_a_stopped_administration_is_checked_for_24_hours(
    kb: Knowledge, hours_ago: int, expected: list[tuple[str, str]],
) -> None:
    now = at(2026, 3, 4, 12)
    stop = now - dt.timedelta(hours=hours_ago)
    findings = view(kb, now, *running_course(
        blin_infusion("a", C1, at(2026, 3, 2, 10), ug_per_day=9),
        blin_infusion("b", at(2026, 3, 2, 10), stop, ug_per_day=28),
        blin_infusion("c", stop + dt.timedelta(hours=1), None, ug_per_day=9)))
    assert [x for x in alarms(findings) if x[0].startswith("dose-")] == expected


def test_an_administration_stopped_for_an_overdose_is_left_to_the_restart_rules(kb: Knowledge) -> None:
    now = at(2026, 3, 4, 12)
    findings = view(kb, now, *running_course(
        blin_infusion("a", C1, at(2026, 3, 2, 10), ug_per_day=9),
        blin_infusion("b", at(2026, 3, 2, 10), at(2026, 3, 4, 8), ug_per_day=28, status="stopped",
                      status_reason="Medication error - wrong rate programmed")))
    assert not [x for x in alarms(findings) if x[0].startswith("dose-")]


@pytest.mark.parametrize(("draft_ug", "about"), [
    (28, "MedicationRequest/o"),            # same error on the draft and the pump: one card, the order's
    (9, "MedicationAdministration/b"),      # a correct draft does not hide a wrong pump
])
def test_draft_and_running_infusion_give_one_card_per_error(kb: Knowledge, draft_ug: float, about: str) -> None:
    change = at(2026, 3, 3, 10)
    history = running_course(blin_infusion("a", C1, change, ug_per_day=9),
                              blin_infusion("b", change, None, ug_per_day=28))
    findings = run(kb, now=change + dt.timedelta(hours=1), drafts=[blin_order("o", draft_ug), steroid_order("dx")],
                   resources=history)
    assert dosing(findings) == [("dose-schedule", "critical")]
    f = one(findings, "dose-schedule")
    assert f.about == about
    if about.startswith("MedicationRequest"):
        assert f.facts["also_administration_ref"] == "MedicationAdministration/b"
        assert f.actions and f.actions[0].key == "update-dose"
        assert "carries the same dose: check the pump programming" in detail_of(f)


def test_pump_rate_in_ml_per_hour_with_the_bags_concentration_is_checked(kb: Knowledge) -> None:
    """Oracle Health style: an instant 'Infuse' result, dose in mL, rate mL/h, drug in a contained Medication whose
    strength is per bag volume, and an infuse-over-time extension. 10 mL/h of 28 mcg/240 mL = 28 µg/day."""
    def infuse(id: str, when: dt.datetime, mcg_per_bag: float) -> dict[str, Any]:
        return {
            "resourceType": "MedicationAdministration", "id": id, "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "contained": [{"resourceType": "Medication", "id": "m1",
                           "code": {"text": f"blinatumomab {mcg_per_bag:g} mcg + sodium chloride 0.9% 240 mL"},
                           "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                                           "strength": {"numerator": {"value": mcg_per_bag, "unit": "mcg",
                                                                      "system": "http://unitsofmeasure.org",
                                                                      "code": "ug"},
                                                        "denominator": {"value": 240, "unit": "mL",
                                                                        "system": "http://unitsofmeasure.org",
                                                                        "code": "mL"}}}]}],
            "extension": [{"url": "https://fhir-ehr.cerner.com/r4/StructureDefinition/infuse-over-time",
                           "valueQuantity": {"value": 1440, "unit": "minutes", "system": "http://unitsofmeasure.org",
                                             "code": "min"}}],
            "medicationReference": {"reference": "#m1"}, "effectiveDateTime": iso(when),
            "dosage": {"dose": {"value": 240, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"},
                       "rateQuantity": {"value": 10, "unit": "mL/hr", "system": "http://unitsofmeasure.org",
                                        "code": "mL/h"}}}
    now = at(2026, 3, 12, 12)
    step = [blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9), steroid_given("d8", at(2026, 3, 8, 9, 15)),
            blin_infusion("b", at(2026, 3, 8, 10), at(2026, 3, 11, 10), ug_per_day=28)]
    right = running_course(*step, infuse("i1", at(2026, 3, 11, 10), 28), infuse("i2", at(2026, 3, 12, 10), 28))
    assert alarms(view(kb, now, *right)) == []
    timeline = make_timeline(kb, now=now, hook="patient-view", resources=right)
    assert timeline.infusions[-1].end is None  # the 24 h infuse-over-time runs past now: running
    assert timeline.infusions[-1].ug_per_day == pytest.approx(28)
    wrong = view(kb, now, *running_course(*step, infuse("i1", at(2026, 3, 11, 10), 28),
                                          infuse("i2", at(2026, 3, 12, 10), 280)))
    assert alarms(wrong) == [("dose-limit", "critical")]


def test_pump_rate_without_concentration_is_named_not_guessed(kb: Knowledge) -> None:
    bags = running_course(blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9),
                          steroid_given("d8", at(2026, 3, 8, 9, 15)),
                          medication_administration("b", start=at(2026, 3, 8, 10), status="in-progress",
                                                    rate={"value": 10, "unit": "mL/hr",
                                                          "system": "http://unitsofmeasure.org", "code": "mL/h"}))
    now = at(2026, 3, 9, 10)
    findings = view(kb, now, *bags)
    assert alarms(findings) == []
    status = one(findings, "therapy-status")
    assert (status.facts["unchecked_rate"], status.facts["unchecked_problem"]) == (
        "10 mL/h", "rate-without-concentration")
    signing = run(kb, now=now, drafts=[blin_order("o", 28), steroid_order("dx")], resources=bags)
    unverifiable = one(signing, "dose-unverifiable")
    assert "infusion-rate-without-concentration" in unverifiable.facts["problems"]
    assert "Record the bag's concentration" in detail_of(unverifiable)


def test_bag_change_under_4_hours_at_the_same_rate_is_quiet(kb: Knowledge) -> None:
    findings = view(kb, at(2026, 3, 12, 12), *running_course(
        blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9), steroid_given("d8", at(2026, 3, 8, 9, 20)),
        blin_infusion("b", at(2026, 3, 8, 10), at(2026, 3, 10, 10), ug_per_day=28),
        blin_infusion("c", at(2026, 3, 10, 13, 30), None, ug_per_day=28)))
    assert alarms(findings) == []


# ---------------------------------------------------------------- order text vs history (issue 6 item 2)


def test_cycle_1_day_8_order_starting_on_day_5_is_checked_on_the_derived_day(kb: Knowledge) -> None:
    start = at(2026, 3, 5, 10)
    findings = run(kb, now=start - dt.timedelta(hours=1),
                   drafts=[blin_order("o", 28, start=start, text="BLINCYTO 28 mcg/day, Cycle 1 Day 8"),
                           steroid_order("dx")],
                   resources=running_course(blin_infusion("a", C1, None, ug_per_day=9)))
    assert dosing(findings) == [("dose-schedule", "critical")]
    f = one(findings, "dose-schedule")
    assert f.facts["position_mismatch"] and f.facts["checked_position"] == "derived"
    assert (f.facts["text_cycle"], f.facts["text_day"], f.facts["cycle"], f.facts["day"]) == (1, 8, 1, 5)
    assert f.facts["expected_ug_per_day"] == 9
    detail = detail_of(f)
    assert "The order says cycle 1 day 8, but the administration history puts its start on cycle 1 day 5" in detail


def test_matching_order_text_and_history_give_no_mismatch(kb: Knowledge) -> None:
    start = at(2026, 3, 8, 10)
    findings = run(kb, now=start - dt.timedelta(hours=1),
                   drafts=[blin_order("o", 28, start=start, text="Cycle 1 Day 8"), steroid_order("dx")],
                   resources=running_course(blin_infusion("a", C1, None, ug_per_day=9)))
    assert dosing(findings) == []


def test_sandbox_shaped_blinatumomab_draft_lists_every_skipped_check(kb: Knowledge) -> None:
    """The CDS Hooks Sandbox sends date-only times, ``{pill}`` with no unit, ``category`` as one object and the id
    ``request-123``: nothing is guessed, and the card lists each skipped check with what to record."""
    draft = medication_request("request-123", start="2026-03-03", authored_on="2026-03-03",
                               dose_and_rate=[{"doseQuantity": {"value": 5, "system": "http://unitsofmeasure.org",
                                                                "code": "{pill}"}}])
    draft["category"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                     "code": "community"}]}
    findings = run(kb, now=NOW, drafts=[draft, steroid_order("dx")], resources=adult())
    assert dosing(findings) == [("dose-unverifiable", "warning")]
    f = one(findings, "dose-unverifiable")
    assert f.facts["problems"] == ["unit-not-convertible", "order-date-only"]
    detail = detail_of(f)
    assert "skipped every dose check of this order. Record the dose in µg/day" in detail
    assert "skipped the cycle day, premedication window and treatment-free interval checks of this order" in detail


@pytest.mark.parametrize("pause_hours", [2, 5])
def test_an_epic_pause_record_at_rate_0_is_no_dose_and_resuming_is_no_step(kb: Knowledge, pause_hours: int) -> None:
    """Epic "Paused": an on-hold record with rate 0 mL/hr; "Restarted": a new record at the running rate. Neither
    is a dose error, and resuming on cycle 1 day 10 is not the step (a ≥ 4 h pause is a restart: premedication)."""
    pause = at(2026, 3, 10, 2)
    resume = pause + dt.timedelta(hours=pause_hours)
    paused = medication_administration("p", start=pause, status="on-hold", status_reason="Paused - patient to CT",
                                       rate={"value": 0, "unit": "mL/hr", "system": "http://unitsofmeasure.org",
                                             "code": "mL/h"})
    history = running_course(blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9),
                             steroid_given("d8", at(2026, 3, 8, 9, 15)),
                             blin_infusion("b", at(2026, 3, 8, 10), pause, ug_per_day=28), paused,
                             blin_infusion("c", resume, None, ug_per_day=28))
    if pause_hours >= 4:
        history.append(steroid_given("dr", resume - dt.timedelta(minutes=30)))
    findings = view(kb, resume + dt.timedelta(hours=3), *history)
    assert alarms(findings) == []
    timeline = make_timeline(kb, now=resume + dt.timedelta(hours=3), hook="patient-view", resources=history)
    assert timeline.positions["MedicationAdministration/c"].event == ("restart" if pause_hours >= 4
                                                                      else "continuation")
