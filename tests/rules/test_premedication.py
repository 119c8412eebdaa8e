"""Premedication rules: premed-missing, premed-timing, premed-dose."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest

from service.knowledge import Knowledge
from service.rules.base import Finding
from service.rules.phrases import clock
from tests.builders import (
    DEXAMETHASONE,
    METHYLPREDNISOLONE,
    PREDNISONE,
    at,
    blin_infusion,
    blin_order,
    height,
    iso,
    medication_request,
    patient,
    steroid_given,
    steroid_order,
    weight,
)
from tests.med_helpers import alarms, detail_of, one, renderer, run

C1 = at(2026, 3, 1, 10)
MRD = "urn:blina-cds:regimen:mrd-positive"


def adult(birth: str = "1980-01-01", kg: float = 70, cm: float = 175) -> list[dict[str, Any]]:
    return [patient(birth_date=birth), weight("w", kg, at(2026, 2, 28)), height("h", cm, at(2026, 2, 28))]


def child(kg: float = 30, cm: float = 135) -> list[dict[str, Any]]:
    return adult("2016-01-01", kg, cm)


def premed(findings: list[Finding]) -> list[tuple[str, str]]:
    return sorted((f.rule_id, f.indicator) for f in findings if f.rule_id.startswith("premed-"))


def test_cycle_start_without_steroid_warns_and_suggests_dexamethasone_20mg(kb: Knowledge) -> None:
    findings = run(kb, now=C1, drafts=[blin_order("o", 9, start=C1)], resources=adult())
    assert premed(findings) == [("premed-missing", "warning")]
    f = one(findings, "premed-missing")
    assert (f.facts["event"], f.facts["cycle"], f.facts["day"]) == ("cycle-start", 1, 1)
    assert (f.facts["steroid_agent"], f.facts["steroid_dose_mg"]) == ("dexamethasone", 20)
    (action,) = f.actions
    assert (action.type, action.key) == ("create", "create-steroid")
    assert action.resource is not None
    MedicationRequest.model_validate(action.resource)
    assert action.resource["status"] == "draft" and action.resource["intent"] == "order"
    assert action.resource["subject"] == {"reference": "Patient/p1"}
    assert action.resource["medicationCodeableConcept"]["coding"][0]["code"] == "3264"
    dosage = action.resource["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 20
    assert dosage["route"]["coding"][0]["code"] == "47625008"
    assert dosage["timing"]["event"] == ["2026-03-01T09:00:00Z"]


def test_a_draft_or_active_steroid_order_satisfies_order_time(kb: Knowledge) -> None:
    draft = run(kb, now=C1, drafts=[blin_order("o", 9), steroid_order("dx")], resources=adult())
    assert premed(draft) == []
    active = run(kb, now=C1, drafts=[blin_order("o", 9)],
                 resources=[*adult(), steroid_order("dx", status="active", start=C1 - dt.timedelta(hours=1))])
    assert premed(active) == []


def test_mrd_positive_adult_card_quotes_prednisone_but_suggests_orderable_dexamethasone_16mg(kb: Knowledge) -> None:
    """The label says "prednisone 100 mg IV or equivalent (e.g., dexamethasone 16 mg)"; no IV prednisone is
    marketed, so the suggestion creates the equivalent the label names, and the card says why."""
    findings = run(kb, now=C1, drafts=[blin_order("o", 28, instantiates=[MRD])], resources=adult())
    f = one(findings, "premed-missing")
    assert f.facts["regimen"] == "mrd-positive" and f.facts["regimen_why"] == "order-canonical"
    assert (f.facts["required_agent"], f.facts["required_dose_mg"]) == ("prednisone", 100)
    assert (f.facts["steroid_agent"], f.facts["steroid_dose_mg"], f.facts["suggested_equivalent"]) == (
        "dexamethasone", 16, True)
    assert f.actions[0].resource is not None
    coding = f.actions[0].resource["medicationCodeableConcept"]["coding"][0]
    assert (coding["code"], f.actions[0].resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]) \
        == ("3264", 16)
    card = renderer().render(f)
    assert "prednisone 100 mg IV or equivalent" in " ".join((card.detail or "").split())
    assert "dexamethasone 16 mg IV, the equivalent the label itself names" in " ".join((card.detail or "").split())
    assert card.suggestions and card.suggestions[0].label.startswith("Order dexamethasone 16 mg IV")
    # and the order it creates satisfies the rule
    created = {**f.actions[0].resource, "id": "dx16"}
    assert premed(run(kb, now=C1, drafts=[blin_order("o", 28, instantiates=[MRD]), created],
                      resources=adult())) == []


def test_child_gets_5_mg_per_m2_capped(kb: Knowledge) -> None:
    f = one(run(kb, now=C1, drafts=[blin_order("o", 5.3)], resources=child()), "premed-missing")
    assert f.facts["age_group"] == "pediatric"
    assert f.facts["steroid_dose_mg"] == pytest.approx(5.3, abs=0.05)


def test_pediatric_premedication_is_first_cycle_only(kb: Knowledge) -> None:
    findings = run(kb, now=C1, drafts=[blin_order("o", 15.9, text="Cycle 2 Day 1")], resources=child())
    assert premed(findings) == []


def test_16_year_old_over_45kg_gets_pediatric_premedication(kb: Knowledge) -> None:
    f = one(run(kb, now=C1, drafts=[blin_order("o", 9)], resources=adult("2010-01-01", 60, 170)), "premed-missing")
    assert f.facts["age_group"] == "pediatric" and f.facts["weight_band"] == "fixed"
    assert f.facts["required_dose_mg_per_m2"] == 5 and f.facts["required_max_mg"] == 20


def test_adult_under_45kg_gets_the_adult_dose_and_the_suggestion_satisfies_the_rule(kb: Knowledge) -> None:
    """§0.3 / E26 by symmetry: premedication follows the age group, not the weight band. The suggested
    steroid order must be one premed-dose accepts (it once suggested 5 mg/m² and then flagged it as low)."""
    small_adult = adult(kg=40, cm=160)
    f = one(run(kb, now=C1, drafts=[blin_order("o", 6.7, start=C1)], resources=small_adult), "premed-missing")
    assert (f.facts["age_group"], f.facts["weight_band"]) == ("adult", "bsa")
    assert (f.facts["steroid_agent"], f.facts["steroid_dose_mg"], f.facts["steroid_dose_mg_per_m2"]) == (
        "dexamethasone", 20, None)
    (action,) = f.actions
    assert action.resource is not None
    assert action.resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 20
    given = steroid_given("s", C1 - dt.timedelta(minutes=30), dose=20)
    assert alarms(run(kb, now=C1, drafts=[blin_order("o", 6.7, start=C1)], resources=[*small_adult, given])) == []


def test_suggested_steroid_is_never_flagged_by_premed_dose(kb: Knowledge) -> None:
    """Quiet: whatever the suggestion creates, charting it as given 30 min before the start gives no card."""
    for resources, dose, regimen in ((adult(), 9, []), (child(), 5.3, []), (adult(kg=40, cm=160), 6.7, []),
                                     (adult(), 28, [MRD])):
        f = one(run(kb, now=C1, drafts=[blin_order("o", dose, start=C1, instantiates=regimen)],
                    resources=resources), "premed-missing")
        agent, mg = f.facts["steroid_agent"], f.facts["steroid_dose_mg"]
        coding = {"dexamethasone": DEXAMETHASONE, "prednisone": PREDNISONE}[agent]
        given = steroid_given("s", C1 - dt.timedelta(minutes=30), coding, dose=mg)
        after = run(kb, now=C1, drafts=[blin_order("o", dose, start=C1, instantiates=regimen)],
                    resources=[*resources, given])
        assert premed(after) == [], (agent, mg)


def test_re_escalation_after_an_adverse_event_restart_needs_premedication(kb: Knowledge) -> None:
    """E22: the 9 → 28 µg/day re-escalation is a dose increase and needs premedication as a step dose does."""
    history = [
        blin_infusion("a", C1, at(2026, 3, 10, 10), ug_per_day=28, status="stopped", status_reason="adverse event"),
        blin_infusion("b", at(2026, 3, 12, 10), None, ug_per_day=9),
        steroid_given("d0", C1 - dt.timedelta(minutes=45)),
        steroid_given("d1", at(2026, 3, 12, 9, 15)),
    ]
    escalate = at(2026, 3, 19, 10)
    findings = run(kb, now=escalate, drafts=[blin_order("o", 28, start=escalate)], resources=[*history, *adult()])
    f = one(findings, "premed-missing")
    assert (f.facts["event"], f.indicator) == ("re-escalation", "warning")
    covered = run(kb, now=escalate, drafts=[blin_order("o", 28, start=escalate)],
                  resources=[*history, *adult(), steroid_given("d2", escalate - dt.timedelta(minutes=40))])
    assert alarms(covered) == []


def test_step_dose_needs_premedication_on_rr_but_mrd_positive_has_no_step(kb: Knowledge) -> None:
    history = [blin_infusion("a", C1, None, ug_per_day=9), steroid_given("d", C1 - dt.timedelta(minutes=45))]
    day8 = at(2026, 3, 8, 10)
    rr = run(kb, now=day8, drafts=[blin_order("o", 28)], resources=[*history, *adult()])
    assert premed(rr) == [("premed-missing", "warning")]
    assert one(rr, "premed-missing").facts["event"] == "step"
    mrd_history = [blin_infusion("a", C1, None, ug_per_day=28), steroid_given("d", C1 - dt.timedelta(minutes=45),
                                                                                PREDNISONE, dose=100)]
    mrd = run(kb, now=day8, drafts=[blin_order("o", 28, instantiates=[MRD])], resources=[*mrd_history, *adult()])
    assert premed(mrd) == []


@pytest.mark.parametrize(("minutes", "expected"), [(239, []), (240, [("premed-missing", "warning")])])
def test_restart_after_4_hours_needs_premedication(kb: Knowledge, minutes: int, expected: list[Any]) -> None:
    stop = at(2026, 3, 5, 10)
    restart = stop + dt.timedelta(minutes=minutes)
    history = [blin_infusion("a", C1, stop, ug_per_day=28), steroid_given("d", C1 - dt.timedelta(minutes=45))]
    findings = run(kb, now=restart, drafts=[blin_order("o", 28, start=restart)], resources=[*history, *adult()])
    assert premed(findings) == expected


def view(kb: Knowledge, *resources: dict[str, Any], now: dt.datetime | None = None) -> list[Finding]:
    return run(kb, now=now or at(2026, 3, 1, 14), hook="patient-view",
               resources=[blin_infusion("a", C1, None, ug_per_day=9), *resources])


def test_patient_view_running_infusion_with_dexamethasone_30_min_before_is_quiet(kb: Knowledge) -> None:
    assert alarms(view(kb, *adult(), steroid_given("d", C1 - dt.timedelta(minutes=30)))) == []


def test_exactly_60_min_before_is_on_time_61_is_not(kb: Knowledge) -> None:
    assert premed(view(kb, *adult(), steroid_given("d", C1 - dt.timedelta(minutes=60)))) == []
    late = view(kb, *adult(), steroid_given("d", C1 - dt.timedelta(minutes=61)))
    assert premed(late) == [("premed-timing", "warning")]


def test_dexamethasone_2h_before_or_after_the_start_is_a_timing_warning(kb: Knowledge) -> None:
    early = view(kb, *adult(), steroid_given("d", C1 - dt.timedelta(hours=2)))
    assert premed(early) == [("premed-timing", "warning")]
    f = one(early, "premed-timing")
    assert f.facts["minutes_before"] == 120 and not f.facts["given_after_start"]
    late = view(kb, *adult(), steroid_given("d", C1 + dt.timedelta(minutes=20)))
    assert premed(late) == [("premed-timing", "warning")]
    assert one(late, "premed-timing").facts["given_after_start"]


def test_infusion_started_without_premedication_is_critical(kb: Knowledge) -> None:
    findings = view(kb, *adult())
    assert premed(findings) == [("premed-missing", "critical")]
    f = one(findings, "premed-missing")
    assert f.facts["infusion_started"] and f.actions == ()


def test_steroid_outside_24h_does_not_count(kb: Knowledge) -> None:
    assert premed(view(kb, *adult(), steroid_given("d", C1 - dt.timedelta(hours=25)))) == [("premed-missing",
                                                                                              "critical")]


@pytest.mark.parametrize(
    ("coding", "dose", "expected"),
    [(DEXAMETHASONE, 16, []), (METHYLPREDNISOLONE, 80, []), (PREDNISONE, 100, []),
     (PREDNISONE, 50, [("premed-dose", "warning")]), (DEXAMETHASONE, 12, [("premed-dose", "warning")])],
)
def test_mrd_positive_accepts_label_equivalents(kb: Knowledge, coding: dict[str, str], dose: float,
                                                expected: list[Any]) -> None:
    findings = run(kb, now=C1, drafts=[blin_order("o", 28, instantiates=[MRD])],
                   resources=[*adult(), steroid_given("s", C1 - dt.timedelta(minutes=30), coding, dose=dose)])
    assert premed(findings) == expected


def test_rr_names_dexamethasone_another_agent_or_low_dose_warns(kb: Knowledge) -> None:
    other = run(kb, now=C1, drafts=[blin_order("o", 9)],
                resources=[*adult(), steroid_given("s", C1 - dt.timedelta(minutes=30), METHYLPREDNISOLONE, dose=125)])
    assert premed(other) == [("premed-dose", "warning")]
    f = one(other, "premed-dose")
    assert not f.facts["agent_ok"] and f.facts["equivalent_mg"] == pytest.approx(23.4, abs=0.1)
    low = run(kb, now=C1, drafts=[blin_order("o", 9)],
              resources=[*adult(), steroid_given("s", C1 - dt.timedelta(minutes=30), dose=10)])
    assert premed(low) == [("premed-dose", "warning")]


def test_child_dose_tolerance_and_cap(kb: Knowledge) -> None:
    ok = run(kb, now=C1, drafts=[blin_order("o", 5.3)],
             resources=[*child(), steroid_given("s", C1 - dt.timedelta(minutes=30), dose=4.8)])
    assert premed(ok) == []  # 5 mg/m² × 1.061 m² = 5.3 mg; 4.8 mg is within 10 %
    low = run(kb, now=C1, drafts=[blin_order("o", 5.3)],
              resources=[*child(), steroid_given("s", C1 - dt.timedelta(minutes=30), dose=4.5)])
    assert premed(low) == [("premed-dose", "warning")]


def test_a_steroid_given_for_another_reason_inside_the_window_counts(kb: Knowledge) -> None:
    chemo_dex = steroid_given("s", C1 - dt.timedelta(minutes=40), dose=20, route_text="PO")
    assert premed(run(kb, now=C1, drafts=[blin_order("o", 9)], resources=[*adult(), chemo_dex])) == []


def test_date_only_steroid_cannot_be_placed_in_the_window(kb: Knowledge) -> None:
    findings = view(kb, *adult(), steroid_given("d", "2026-03-01"))
    assert premed(findings) == [("premed-timing", "warning")]
    assert one(findings, "premed-timing").facts["given_date_only"]


def test_continuation_needs_no_premedication(kb: Knowledge) -> None:
    history = [blin_infusion("a", C1, at(2026, 3, 3, 10), ug_per_day=9),
               steroid_given("d", C1 - dt.timedelta(minutes=45))]
    findings = run(kb, now=at(2026, 3, 3, 10), drafts=[blin_order("o", 9, start=at(2026, 3, 3, 10, 10))],
                   resources=[*history, *adult()])
    assert premed(findings) == []


# ---------------------------------------------------------------- premedication orders have a time (issue 6 item 8)


@pytest.mark.parametrize(("timing", "expected"), [
    # Decadron via an order set: timing.event 1 h before the start → on time
    ({"event": [iso(C1 - dt.timedelta(hours=1))]}, []),
    ({"repeat": {"boundsPeriod": {"start": iso(C1 - dt.timedelta(minutes=30))}}}, []),
    # scheduled 3 h before the start: within the 24 h look-back, outside the 1 h window
    ({"event": [iso(C1 - dt.timedelta(hours=3))]}, [("premed-timing", "warning")]),
    # scheduled 3 days after the start: counts as nothing for it
    ({"repeat": {"boundsPeriod": {"start": iso(C1 + dt.timedelta(days=3))}}}, [("premed-missing", "warning")]),
    ({"event": [iso(C1 + dt.timedelta(minutes=10))]}, [("premed-missing", "warning")]),
    # two scheduled doses, one in the window: it counts
    ({"event": [iso(C1 - dt.timedelta(minutes=40)), iso(C1 + dt.timedelta(hours=8))]}, []),
    # scheduled 2 days before: outside the look-back entirely
    ({"event": [iso(C1 - dt.timedelta(days=2))]}, [("premed-missing", "warning")]),
])
def test_a_steroid_draft_counts_only_by_its_scheduled_time(
    kb: Knowledge, timing: dict[str, Any], expected: list[tuple[str, str]],
) -> None:
    draft = steroid_order("dx", timing=timing, authored_on=C1 - dt.timedelta(hours=2))
    findings = run(kb, now=C1 - dt.timedelta(hours=2), drafts=[blin_order("o", 9, start=C1), draft],
                   resources=adult())
    assert premed(findings) == expected


def test_a_steroid_timed_after_the_start_is_named_on_the_missing_card(kb: Knowledge) -> None:
    later = C1 + dt.timedelta(days=3)
    draft = steroid_order("dx", start=later)
    f = one(run(kb, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1), draft],
                resources=adult()), "premed-missing")
    assert f.facts["orders_not_counted"] == [{"ref": "MedicationRequest/dx", "agent": "dexamethasone",
                                              "why": "after-start", "at": clock(later)}]
    assert "is scheduled after the start" in detail_of(f)
    assert (f"Not counted: the dexamethasone order MedicationRequest/dx is scheduled after the start "
            f"({clock(later)}), so it cannot premedicate it.") in detail_of(f)


def test_authored_on_is_never_a_scheduled_time(kb: Knowledge) -> None:
    """An untimed order written 3 h before: its authoredOn says when it was written, not when it is given."""
    draft = steroid_order("dx", authored_on=C1 - dt.timedelta(hours=3))
    findings = run(kb, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1), draft],
                   resources=adult())
    assert premed(findings) == []  # untimed: counted by the [order_timing] policy


def test_untimed_steroid_order_policy_counts_and_the_card_says_so(kb: Knowledge) -> None:
    low = steroid_order("dx", dose=8)  # untimed and below the dose: the dose card states the timing assumption
    f = one(run(kb, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1), low],
                resources=adult()), "premed-dose")
    assert f.facts["given_untimed"] is True
    assert "has no scheduled time: it is counted as given within the window" in detail_of(f)


def test_untimed_steroid_order_does_not_count_when_the_site_says_so(kb: Knowledge) -> None:
    policy = kb.premedication.order_timing.model_copy(update={"untimed_orders_count": False})
    strict = dataclasses.replace(kb, premedication=kb.premedication.model_copy(update={"order_timing": policy}))
    f = one(run(strict, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1), steroid_order("dx")],
                resources=adult()), "premed-missing")
    assert [n["why"] for n in f.facts["orders_not_counted"]] == ["untimed"]
    assert "counts only timed steroid orders" in detail_of(f)
    assert ("Not counted: the dexamethasone order MedicationRequest/dx has no scheduled time, and this service "
            "counts only timed steroid orders (service policy).") in detail_of(f)


def test_sandbox_draft_with_date_only_and_pill_unit_is_not_judged_on_dose(kb: Knowledge) -> None:
    """The CDS Hooks Sandbox sends date-only bounds and ``{pill}`` doses: the dose check is skipped (not "too
    low"), and dose-unverifiable lists both skipped checks with what to record."""
    pill = medication_request(
        "request-123", codings=({"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197582",
                                 "display": "Dexamethasone 4 MG Oral Tablet"},),
        dose_and_rate=[{"doseQuantity": {"value": 5, "system": "http://unitsofmeasure.org", "code": "{pill}"}}],
        start=C1.date().isoformat())
    findings = run(kb, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1), pill],
                   resources=adult())
    assert premed(findings) == []
    f = one(findings, "dose-unverifiable")
    assert f.facts["problems"] == ["steroid-dose-unit", "steroid-date-only"]
    assert f.facts["steroid_units"] == ["dexamethasone {pill}"]
    detail = detail_of(f)
    assert "skipped the premedication dose check. Record the steroid dose in mg" in detail
    assert "skipped the premedication timing check" in detail


@pytest.mark.parametrize(("lookback_hours", "expected"), [(24, [("premed-missing", "warning")]), (72, [])])
def test_a_date_only_steroid_order_counts_only_on_a_day_the_window_reaches(
    kb: Knowledge, lookback_hours: int, expected: list[tuple[str, str]]
) -> None:
    """An order dated two days before the start lies outside a 24 h window, inside a 72 h one."""
    timing = kb.premedication.timing.model_copy(update={"lookback_hours": lookback_hours})
    site = dataclasses.replace(kb, premedication=kb.premedication.model_copy(update={"timing": timing}))
    order = steroid_order("dx", status="active", start=(C1 - dt.timedelta(days=2)).date().isoformat())
    findings = run(site, now=C1 - dt.timedelta(hours=1), drafts=[blin_order("o", 9, start=C1)],
                   resources=[*adult(), order])
    assert premed(findings) == expected
