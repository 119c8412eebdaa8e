"""Toxicity rules (clinical-rules.md §3.1, §6 E17–E22, E29; verification §3, §4).

Timelines are built directly, so these rules are tested apart from the medication builders.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.timeline.model import InfusionPeriod
from service.timeline.toxicity import build_toxicities
from tests.builders import at, concept
from tests.threshold_builders import (
    ICD10CM,
    adverse_event,
    condition,
    draft_order,
    infusion,
    restart_position,
    timeline,
    tox,
    tox_observation,
)

NOW = at(2026, 3, 10, 9)
COURSE = at(2026, 3, 1, 8)
RUNNING = (infusion("MedicationAdministration/i1", COURSE, None, 28),)


def run(kb: Knowledge, **kw: Any) -> list[Finding]:
    kw.setdefault("infusions", RUNNING)
    return list(tox_rules.evaluate(timeline(NOW, **kw), kb))


def ids(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.indicator) for f in findings]


# ------------------------------------------------------------------ CRS


def test_crs_grade3_interrupts_with_label_treatment_and_restart_dose(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", 2, at(2026, 3, 9, 1)), tox("crs", 3, at(2026, 3, 9, 6), label="CRS")])
    assert ids([f]) == [("crs-interrupt", "critical")]
    assert (f.facts["grade"], f.facts["label"], f.facts["onset"]) == (3, "CRS", "2026-03-09 06:00 UTC")
    assert (f.facts["dex_mg"], f.facts["dex_interval_hours"], f.facts["dex_max_days"], f.facts["dex_taper_days"]) \
        == (8, 8, 3, 4)
    assert (f.facts["restart_ug_per_day"], f.facts["restart_ug_per_m2_per_day"], f.facts["escalate_ug_per_day"]) \
        == (9, 5, 28)
    assert f.facts["small_patient"] is False and f.facts["default_grading_system"] == "CTCAE v4.0"


def test_crs_grade3_small_patient_gets_bsa_dexamethasone(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 9, 6))], weight_kg=30, bsa_m2=1.0)
    assert f.facts["small_patient"] is True and f.facts["dex_small_dose_mg"] == 5
    (g,) = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 9, 6))], weight_kg=44.9, bsa_m2=1.9)
    assert g.facts["dex_small_dose_mg"] == 8  # capped


def test_resolved_crs_is_quiet(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("crs", 3, at(2026, 3, 8)), tox("crs", 1, at(2026, 3, 9))]) == []
    assert run(kb, toxicities=[tox("crs", 1, at(2026, 3, 9))]) == []


def test_crs_grade4_shows_only_discontinue(kb: Knowledge) -> None:
    findings = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 8)), tox("crs", 4, at(2026, 3, 8, 12))])
    assert ids(findings) == [("crs-discontinue", "critical")]
    assert findings[0].facts["grade"] == 4 and findings[0].facts["dex_mg"] == 8
    # permanent: still shown after the grade 4 resolved
    later = run(kb, toxicities=[tox("crs", 4, at(2026, 3, 8)), tox("crs", 0, at(2026, 3, 9))])
    assert ids(later) == [("crs-discontinue", "critical")]


def test_records_before_the_course_do_not_count(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("crs", 4, at(2026, 2, 1)), tox("seizure", None, at(2026, 2, 2))]) == []


# ------------------------------------------------------------------ neuro and seizures


def test_neuro_grade3_at_28_interrupts(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("neuro", 3, at(2026, 3, 9), label="ICANS")])
    assert ids([f]) == [("neuro-interrupt", "critical")]
    assert (f.facts["dose_at_event"], f.facts["at_step_dose"], f.facts["restart_min_days_resolved"]) == (28, False, 3)


def test_neuro_grade3_at_9_discontinues_instead(kb: Knowledge) -> None:
    infusions = (infusion("MedicationAdministration/i1", COURSE, None, 9),)
    (f,) = run(kb, toxicities=[tox("neuro", 3, at(2026, 3, 5))], infusions=infusions)
    assert ids([f]) == [("neuro-discontinue", "critical")]
    assert f.facts["reasons"] == ["grade-3-at-step-dose"] and f.facts["dose_at_event"] == 9


def test_neuro_grade3_at_bsa_step_dose_for_small_patient(kb: Knowledge) -> None:
    infusions = (infusion("MedicationAdministration/i1", COURSE, None, 5.3),)
    (f,) = run(kb, toxicities=[tox("neuro", 3, at(2026, 3, 5))], infusions=infusions, weight_kg=30, bsa_m2=1.06)
    assert f.rule_id == "neuro-discontinue"
    (g,) = run(kb, toxicities=[tox("neuro", 3, at(2026, 3, 5))],
               infusions=(infusion("MedicationAdministration/i1", COURSE, None, 15.9),), weight_kg=30, bsa_m2=1.06)
    assert g.rule_id == "neuro-interrupt"


@pytest.mark.parametrize(("resolved", "expected"), [
    (at(2026, 3, 8, 10), [("neuro-discontinue", "critical")]),  # 7 days 1 hour
    (at(2026, 3, 8, 9), []),  # exactly 7 days, then resolved
    (None, [("neuro-discontinue", "critical")]),  # unresolved after 9 days
])
def test_neuro_grade3_taking_more_than_7_days(kb: Knowledge, resolved: dt.datetime | None,
                                              expected: list[tuple[str, str]]) -> None:
    records = [tox("neuro", 3, at(2026, 3, 1, 9))]
    if resolved:
        records.append(tox("neuro", 1, resolved))
    findings = run(kb, toxicities=records)
    assert ids(findings) == expected
    if expected:
        assert findings[0].facts["reasons"] == ["grade-3-slow-resolution"]


def test_neuro_grade4_discontinues(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("neuro", 4, at(2026, 3, 9))])
    assert f.rule_id == "neuro-discontinue" and f.facts["reasons"] == ["grade-4"]


def test_first_seizure_warns(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("seizure", None, at(2026, 3, 9), ref="Condition/s1", label="Seizure")])
    assert ids([f]) == [("seizure", "warning")]
    assert f.facts["seizure_count"] == 1 and f.facts["seizure_limit"] == 2 and f.facts["ref"] == "Condition/s1"


def test_second_seizure_discontinues_and_no_seizure_card(kb: Knowledge) -> None:
    records = [tox("seizure", None, at(2026, 3, 5)), tox("seizure", None, at(2026, 3, 5), ref="Condition/dup"),
               tox("seizure", None, at(2026, 3, 9))]
    (f,) = run(kb, toxicities=records)
    assert ids([f]) == [("neuro-discontinue", "critical")]
    assert f.facts["reasons"] == ["seizures"] and f.facts["seizure_count"] == 2
    assert f.facts["seizure_dates"] == ["2026-03-05 00:00 UTC", "2026-03-09 00:00 UTC"]


def test_seizure_needs_a_known_course(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("seizure", None, at(2026, 3, 9))], infusions=()) == []


# ------------------------------------------------------------------ other adverse events


def test_other_grade3_interrupts_and_grade4_discontinues_per_event(kb: Knowledge) -> None:
    findings = run(kb, toxicities=[tox("other", 3, at(2026, 3, 9), label="Pancreatitis"),
                                   tox("other", 4, at(2026, 3, 9), label="Tumor lysis syndrome")])
    assert sorted(ids(findings)) == [("adverse-event-discontinue", "critical"), ("adverse-event-interrupt", "critical")]
    by_rule = {f.rule_id: f for f in findings}
    assert by_rule["adverse-event-interrupt"].facts["label"] == "Pancreatitis"
    assert by_rule["adverse-event-discontinue"].facts["reasons"] == ["grade-4"]


def test_other_grade3_resolution_window_is_14_days(kb: Knowledge) -> None:
    slow = run(kb, toxicities=[tox("other", 3, at(2026, 3, 1, 8), label="Pancreatitis"),
                               tox("other", 1, at(2026, 3, 9), label="Pancreatitis")], infusions=(
        infusion("MedicationAdministration/i0", at(2026, 2, 10), at(2026, 3, 1, 8)),))
    assert ids(slow) == []  # 7.7 days: resolved within 14
    late = run(kb, toxicities=[tox("other", 3, at(2026, 2, 20), label="Pancreatitis"),
                               tox("other", 1, at(2026, 3, 7), label="Pancreatitis")], infusions=(
        infusion("MedicationAdministration/i0", at(2026, 2, 10), at(2026, 2, 20)),))
    assert ids(late) == [("adverse-event-discontinue", "critical")]
    assert late[0].facts["reasons"] == ["grade-3-slow-resolution"] and late[0].facts["days"] == 15.0


# ------------------------------------------------------------------ unknown grade


def test_severe_crs_without_grade_warns(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", None, at(2026, 3, 9), label="Severe CRS")])
    assert ids([f]) == [("toxicity-grade-unknown", "warning")]
    assert (f.facts["kind"], f.facts["label"]) == ("crs", "Severe CRS")


def test_later_graded_record_settles_the_grade(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("neuro", None, at(2026, 3, 8)), tox("neuro", 1, at(2026, 3, 9))]) == []


# ------------------------------------------------------------------ restart


def _neuro_restart(kb: Knowledge, resolved: dt.datetime, restart: dt.datetime, *,
                   with_position: bool) -> list[Finding]:
    stopped = at(2026, 3, 3)
    infusions = (infusion("MedicationAdministration/i1", COURSE, stopped, 28),)
    order = draft_order(start=restart)
    positions = {order.ref: restart_position(stopped, restart, course_start=COURSE)} if with_position else {}
    records = [tox("neuro", 3, stopped, label="Encephalopathy"), tox("neuro", 1, resolved)]
    return run(kb, toxicities=records, infusions=infusions, orders=[order], positions=positions)


@pytest.mark.parametrize("with_position", [True, False])
def test_restart_two_days_after_neuro_resolution_is_premature(kb: Knowledge, with_position: bool) -> None:
    (f,) = _neuro_restart(kb, at(2026, 3, 8, 9), at(2026, 3, 10, 9), with_position=with_position)
    assert ids([f]) == [("restart-premature", "critical")]
    assert f.about == "MedicationRequest/mr1"
    assert (f.facts["reason"], f.facts["kind"], f.facts["days_since_resolved"], f.facts["required_days"]) == (
        "toxicity-resolved-too-recently", "neuro", 2.0, 3)


def test_restart_three_days_after_neuro_resolution_is_quiet(kb: Knowledge) -> None:
    assert _neuro_restart(kb, at(2026, 3, 7, 9), at(2026, 3, 10, 9), with_position=True) == []


def test_crs_has_no_three_day_wait_but_other_events_warn(kb: Knowledge) -> None:
    stopped = at(2026, 3, 5)
    infusions = (infusion("MedicationAdministration/i1", COURSE, stopped, 28),)
    order = draft_order(start=NOW)
    crs = run(kb, toxicities=[tox("crs", 3, stopped), tox("crs", 1, at(2026, 3, 9))], infusions=infusions,
              orders=[order])
    assert crs == []
    other = run(kb, toxicities=[tox("other", 3, stopped, label="Pancreatitis"),
                                tox("other", 1, at(2026, 3, 9), label="Pancreatitis")],
                infusions=infusions, orders=[order])
    assert ids(other) == [("restart-premature", "warning")]


@pytest.mark.parametrize(("hours", "expected"), [(11, [("restart-premature", "critical")]), (12, [])])
@pytest.mark.parametrize("with_position", [True, False])
def test_restart_after_overdose_needs_12_hours(kb: Knowledge, hours: int, expected: list[tuple[str, str]],
                                               with_position: bool) -> None:
    """E29. At 12 h the restart is quiet only because the chart also says the toxicities resolved (grade 0)."""
    stopped = at(2026, 3, 9, 20)
    restart = stopped + dt.timedelta(hours=hours)
    infusions = (infusion("MedicationAdministration/i1", COURSE, stopped, 28, stop_reason="overdose"),)
    order = draft_order(start=restart, ug_per_day=28)
    positions = ({order.ref: restart_position(stopped, restart, course_start=COURSE, reason="overdose")}
                 if with_position else {})
    findings = list(tox_rules.evaluate(timeline(
        restart, toxicities=[tox("overdose", None, stopped, label="Overdose"),
                             tox("other", 1, stopped + dt.timedelta(hours=2), label="Tremor"),
                             tox("other", 0, stopped + dt.timedelta(hours=10), label="Tremor")],
        infusions=infusions, orders=[order], positions=positions), kb))
    assert ids(findings) == expected
    if expected:
        assert (findings[0].facts["reason"], findings[0].facts["hours_since_stop"],
                findings[0].facts["required_hours"]) == ("overdose-too-soon", 11.0, 12)


@pytest.mark.parametrize(("hours", "expected"), [(11, ["restart-premature"]), (12, [])])
def test_overdose_known_only_from_the_infusion_stop_reason(kb: Knowledge, hours: int, expected: list[str]) -> None:
    stopped = at(2026, 3, 9, 20)
    restart = stopped + dt.timedelta(hours=hours)
    infusions = (infusion("MedicationAdministration/i1", COURSE, stopped, 28, stop_reason="flush"),)
    resolved = [tox("crs", 0, stopped + dt.timedelta(hours=6), label="CRS")]
    findings = list(tox_rules.evaluate(timeline(restart, infusions=infusions, toxicities=resolved,
                                                orders=[draft_order(start=restart)]), kb))
    assert [f.rule_id for f in findings] == expected
    if expected:
        assert (findings[0].facts["kind"], findings[0].facts["stopped_at"]) == ("flush", "2026-03-09 20:00 UTC")


def _overdose_restart(kb: Knowledge, records: list[Any], *, hours: int = 14) -> list[Finding]:
    stopped = at(2026, 3, 9, 20)
    restart = stopped + dt.timedelta(hours=hours)
    infusions = (infusion("MedicationAdministration/i1", COURSE, stopped, 28, stop_reason="overdose"),)
    order = draft_order(start=restart, ug_per_day=28)
    return list(tox_rules.evaluate(timeline(
        restart, toxicities=[tox("overdose", None, stopped, label="Overdose"), *records], infusions=infusions,
        orders=[order], positions={order.ref: restart_position(stopped, restart, course_start=COURSE,
                                                               reason="overdose")}), kb))


def test_overdose_restart_after_12_hours_needs_all_toxicities_resolved(kb: Knowledge) -> None:
    """Verification §4 / §9 item 5: "when all toxicities have resolved AND no earlier than 12 hours"."""
    after = at(2026, 3, 9, 22)
    (unresolved,) = _overdose_restart(kb, [tox("other", 2, after, label="Tremor")])
    assert (unresolved.rule_id, unresolved.indicator) == ("restart-premature", "critical")
    assert (unresolved.facts["reason"], unresolved.facts["toxicity_status"]) == (
        "overdose-toxicity-unresolved", "unresolved")
    assert unresolved.facts["unresolved_toxicities"] == [
        {"label": "Tremor", "grade": 2, "at": "2026-03-09 22:00 UTC"}]
    assert unresolved.facts["hours_since_stop"] == 14.0
    # improved to grade 1 is not resolved
    (still,) = _overdose_restart(kb, [tox("other", 2, after, label="Tremor"),
                                      tox("other", 1, after + dt.timedelta(hours=8), label="Tremor")])
    assert still.facts["reason"] == "overdose-toxicity-unresolved"
    # every toxicity charted since the overdose back to grade 0: quiet
    assert _overdose_restart(kb, [tox("other", 2, after, label="Tremor"),
                                  tox("other", 0, after + dt.timedelta(hours=8), label="Tremor")]) == []


def test_overdose_restart_with_unknown_toxicity_status_warns(kb: Knowledge) -> None:
    """§9 item 5: no record says the toxicities resolved → a warning rather than silence."""
    (nothing,) = _overdose_restart(kb, [])
    assert (nothing.rule_id, nothing.indicator) == ("restart-premature", "warning")
    assert (nothing.facts["reason"], nothing.facts["toxicity_status"]) == ("overdose-toxicity-unknown", "unknown")
    # a toxicity without a grade cannot show resolution either
    findings = _overdose_restart(kb, [tox("neuro", None, at(2026, 3, 9, 23), label="Headache")])
    assert ids(findings) == [("toxicity-grade-unknown", "warning"), ("restart-premature", "warning")]
    assert findings[1].facts["reason"] == "overdose-toxicity-unknown"
    # a seizure after the overdose counts with neurological toxicity: a later grade 0 record settles it
    seizure = _overdose_restart(kb, [tox("seizure", None, at(2026, 3, 9, 22)), tox("neuro", 0, at(2026, 3, 10, 6))])
    assert ids(seizure) == [("seizure", "warning")]
    # records before the overdose say nothing about it
    (before,) = _overdose_restart(kb, [tox("crs", 0, at(2026, 3, 5))])
    assert before.facts["reason"] == "overdose-toxicity-unknown"
    # under 12 h stays critical whatever the toxicity status
    (early,) = _overdose_restart(kb, [tox("crs", 0, at(2026, 3, 9, 22))], hours=11)
    assert (early.indicator, early.facts["reason"], early.facts["toxicity_status"]) == (
        "critical", "overdose-too-soon", "resolved")


def test_an_older_overdose_does_not_block_a_later_bag_change(kb: Knowledge) -> None:
    infusions: tuple[InfusionPeriod, ...] = (
        infusion("MedicationAdministration/i1", COURSE, at(2026, 3, 3), 28, stop_reason="overdose"),
        infusion("MedicationAdministration/i2", at(2026, 3, 3, 13), at(2026, 3, 10, 4), 28),
    )
    order = draft_order(start=at(2026, 3, 10, 9), ug_per_day=28)
    assert run(kb, toxicities=[tox("overdose", None, at(2026, 3, 3))], infusions=infusions, orders=[order]) == []


# ------------------------------------------------------------------ from FHIR


def test_fhir_records_end_to_end(kb: Knowledge) -> None:
    """ICD-10-CM D89.833 → CRS grade 3; CTCAE extension on AdverseEvent; grade parsed from text."""
    def findings(**resources: Any) -> list[Finding]:
        records = build_toxicities(observations=resources.get("obs", ()), conditions=resources.get("cond", ()),
                                   adverse_events=resources.get("ae", ()), administrations=(), kb=kb, now=NOW)
        return run(kb, toxicities=records)

    (icd,) = findings(cond=[condition("c1", at(2026, 3, 9), code=concept({"system": ICD10CM, "code": "D89.833"}))])
    assert (icd.rule_id, icd.facts["grade"], icd.facts["ref"]) == ("crs-interrupt", 3, "Condition/c1")
    (ae,) = findings(ae=[adverse_event("a1", at(2026, 3, 9), event=concept(text="ICANS"), grade=3)])
    assert (ae.rule_id, ae.facts["grading_system"]) == ("neuro-interrupt", "CTCAE")
    (text,) = findings(obs=[tox_observation("o1", at(2026, 3, 9), code=concept(text="Note"),
                                            value_string="CRS gr IV")])
    assert (text.rule_id, text.facts["grade"], text.facts["grade_from_text"]) == ("crs-discontinue", 4, True)
    (severe,) = findings(obs=[tox_observation("o1", at(2026, 3, 9), code=concept(text="Severe CRS"))])
    assert severe.rule_id == "toxicity-grade-unknown"


def test_no_records_no_findings(kb: Knowledge) -> None:
    assert run(kb) == []
    assert run(kb, infusions=()) == []
