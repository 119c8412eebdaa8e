"""Other adverse events (issue 6 items 5–7): graded Observations, grade 4 and slow grade 3 discontinue at every
hook, and events an AdverseEvent attributes to another drug give no blinatumomab card."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.timeline.toxicity import build_toxicities
from tests.builders import BLIN_SCD, at, concept
from tests.rules.toxicity.support import ids, run
from tests.threshold_builders import (
    NCIT,
    adverse_event,
    draft_order,
    infusion,
    restart_position,
    timeline,
    tox,
    tox_observation,
)

AE_COURSE = at(2026, 2, 20, 8)
AE_NOW = at(2026, 3, 20, 9)


def findings(kb: Knowledge, *, obs: Any = (), ae: Any = (), admins: Any = (), hook: str = "patient-view",
             now: dt.datetime = AE_NOW, stopped: dt.datetime | None = None) -> list[Finding]:
    records = build_toxicities(observations=obs, conditions=(), adverse_events=ae, administrations=admins, kb=kb,
                               now=now)
    infusions = (infusion("MedicationAdministration/i1", AE_COURSE, stopped, 28),)
    orders, positions = [], {}
    if hook == "order-sign":
        order = draft_order(start=now, ug_per_day=9)
        orders = [order]
        positions = {order.ref: restart_position(stopped or AE_COURSE, now, course_start=AE_COURSE,
                                                 reason="adverse-event")}
    return list(tox_rules.evaluate(timeline(now, hook=hook, toxicities=records, infusions=infusions, orders=orders,
                                            positions=positions), kb))


def test_grade_4_tls_observation_with_an_ncit_grade_value_discontinues(kb: Knowledge) -> None:
    tls = tox_observation("o1", at(2026, 3, 19, 22), code=concept(
        {"system": NCIT, "code": "C146688", "display": "Tumor lysis syndrome"}),
        value_concept=concept({"system": NCIT, "code": "C41337", "display": "Grade 4 Life Threatening"}))
    (f,) = findings(kb, obs=[tls])
    assert (f.rule_id, f.facts["grade"], f.facts["label"], f.facts["reasons"]) == (
        "adverse-event-discontinue", 4, "Tumor lysis syndrome", ["grade-4"])


def test_a_pain_score_or_lab_is_never_a_grade(kb: Knowledge) -> None:
    assert findings(kb, obs=[tox_observation("p", at(2026, 3, 19), code=concept(text="Pain score"),
                                             value_integer=4)]) == []


def test_the_same_event_from_observation_and_adverse_event_gives_one_card(kb: Knowledge) -> None:
    (f,) = findings(kb, obs=[tox_observation("o1", at(2026, 3, 19, 10), code=concept(text="Tumor lysis syndrome grade"),
                                             value_integer=3)],
                    ae=[adverse_event("a1", at(2026, 3, 19, 10, 40), event=concept(text="Tumor lysis syndrome"),
                                      grade=3)])
    assert (f.rule_id, f.facts["onset"]) == ("adverse-event-interrupt", "2026-03-19 10:00 UTC")


@pytest.mark.parametrize("hook", ["patient-view", "order-sign"])
def test_grade_3_that_took_16_days_to_reach_grade_1_discontinues(kb: Knowledge, hook: str) -> None:
    """Pancreatitis grade 3 on day 3, grade 2 on day 10, grade 1 on day 19: the restart order and the chart both
    get adverse-event-discontinue."""
    onset = at(2026, 2, 22, 6)
    rows = [tox_observation("g3", onset, code=concept(text="Pancreatitis"), value_integer=3, method="CTCAE v5.0"),
            tox_observation("g2", onset + dt.timedelta(days=7), code=concept(text="Pancreatitis"), value_integer=2,
                            method="CTCAE v5.0"),
            tox_observation("g1", onset + dt.timedelta(days=16), code=concept(text="Pancreatitis"), value_integer=1,
                            method="CTCAE v5.0")]
    (f,) = findings(kb, obs=rows, hook=hook, stopped=onset)
    assert (f.rule_id, f.facts["reasons"], f.facts["days"]) == (
        "adverse-event-discontinue", ["grade-3-slow-resolution"], 16.0)


def _ae(suspect: list[dict[str, Any]], grade: int = 4, text: str = "Pancreatitis") -> dict[str, Any]:
    return {**adverse_event("a1", at(2026, 3, 19, 10), event=concept(text=text), grade=grade),
            "suspectEntity": suspect}


CYTARABINE_MA = {"resourceType": "MedicationAdministration", "id": "cyt1", "status": "completed",
                 "medicationCodeableConcept": {"text": "cytarabine 100 mg IV"}, "subject": {"reference": "Patient/p1"},
                 "effectiveDateTime": "2026-03-18T10:00:00Z"}
BLIN_MA = {"resourceType": "MedicationAdministration", "id": "blin1", "status": "in-progress",
           "medicationCodeableConcept": concept(BLIN_SCD), "subject": {"reference": "Patient/p1"},
           "effectivePeriod": {"start": "2026-03-18T10:00:00Z"}}


def test_attribution_to_another_drug_gives_no_blinatumomab_card(kb: Knowledge) -> None:
    by_display = _ae([{"instance": {"display": "pegaspargase"}}])
    by_reference = _ae([{"instance": {"reference": "MedicationAdministration/cyt1"}}])
    assert findings(kb, ae=[by_display]) == []
    assert findings(kb, ae=[by_reference], admins=[CYTARABINE_MA]) == []
    # a CRS or seizure attributed elsewhere gives no card either
    assert findings(kb, ae=[_ae([{"instance": {"display": "tocilizumab"}}], grade=3, text="CRS")]) == []


def test_causality_unrelated_to_blinatumomab_gives_no_card(kb: Knowledge) -> None:
    unrelated = _ae([{"instance": {"reference": "MedicationAdministration/blin1"},
                      "causality": [{"assessment": {"text": "Unrelated"}}]}])
    assert findings(kb, ae=[unrelated], admins=[BLIN_MA]) == []


@pytest.mark.parametrize("suspect", [
    [{"instance": {"reference": "MedicationAdministration/blin1"}}],
    [{"instance": {"display": "cytarabine"}}, {"instance": {"display": "BLINCYTO"}}],
    [{"instance": {"reference": "MedicationAdministration/not-fetched"}}],
    [{"instance": {"reference": "MedicationAdministration/blin1"},
      "causality": [{"assessment": {"text": "Probably related"}}]}],
])
def test_an_event_that_may_be_blinatumomab_still_discontinues(kb: Knowledge, suspect: list[dict[str, Any]]) -> None:
    (f,) = findings(kb, ae=[_ae(suspect)], admins=[BLIN_MA])
    assert f.rule_id == "adverse-event-discontinue"


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
