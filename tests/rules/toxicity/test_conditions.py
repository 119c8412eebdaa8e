"""Adverse events as Conditions (issue 7 item 4): Oracle Health sends no AdverseEvent, so a graded toxicity arrives on
the problem list (``problem-list-item``, date-only onset) and as encounter diagnoses (``encounter-diagnosis``, timed
onset, SNOMED plus ICD-10-CM), with the grade in ``stage.summary``, ``severity`` or text. One episode charted both
ways is one event; unrelated diagnoses are never adverse events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.timeline.toxicity import build_toxicities
from tests.builders import SNOMED, at, concept, iso
from tests.rules.toxicity.support import NOW, RUNNING
from tests.threshold_builders import ICD10CM, NCIT, SEIZURE, timeline

CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# A site's local problem code (Oracle Health sends local codes beside SNOMED/ICD-10-CM); no real code is implied.
LOCAL = "https://fhir.example-site.org/codeSet/problem"
SEVERE = {"system": SNOMED, "code": "24484000", "display": "Severe"}
B_ALL = {"system": SNOMED, "code": "277571004", "display": "B-cell acute lymphoblastic leukemia (disorder)"}


def problem(id: str, onset: str | dt.datetime, code: dict[str, Any], *, category: str = "problem-list-item",
            clinical: str = "active", verification: str = "confirmed", stage: dict[str, Any] | None = None,
            severity: dict[str, Any] | None = None, abated: dt.datetime | None = None,
            recorded: dt.datetime | None = None) -> dict[str, Any]:
    """A Condition the way Oracle Health sends one: categories, statuses with text, ``p…``/``d…`` ids."""
    out: dict[str, Any] = {
        "resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"}, "code": code,
        "category": [{"coding": [{"system": CATEGORY, "code": category}]},
                     {"coding": [{"system": SNOMED, "code": "74188005", "display": "Medical"}], "text": "Medical"}],
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": clinical}], "text": clinical.title()},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verification}],
                               "text": verification.title()},
        "onsetDateTime": onset if isinstance(onset, str) else iso(onset),
        "recordedDate": iso(recorded or (at(2026, 3, 9, 18) if isinstance(onset, str) else onset)),
    }
    if stage is not None:
        out["stage"] = [{"summary": stage}]
    if severity is not None:
        out["severity"] = severity
    if abated is not None:
        out["abatementDateTime"] = iso(abated)
    return out


def diagnosis(id: str, onset: dt.datetime, code: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return problem(id, onset, code, category="encounter-diagnosis", **kw)


def findings(kb: Knowledge, *conditions: dict[str, Any], obs: Any = (), now: dt.datetime = NOW) -> list[Finding]:
    records = build_toxicities(observations=obs, conditions=conditions, adverse_events=(), administrations=(), kb=kb,
                               now=now)
    return list(tox_rules.evaluate(timeline(now, toxicities=records, infusions=RUNNING), kb))


def pancreatitis(text: str = "Pancreatitis") -> dict[str, Any]:
    return {"coding": [{"system": LOCAL, "code": "P-PANC", "display": "Pancreatitis"}], "text": text}


# ---------------------------------------------------------------- a grade wherever a Condition carries it

@pytest.mark.parametrize("where", [
    {"stage": {"text": "Grade 3"}},
    {"stage": concept({"system": NCIT, "code": "C41340", "display": "Grade 3 Severe Adverse Event"})},
    {"severity": concept({"system": NCIT, "code": "C41340", "display": "Grade 3 Severe Adverse Event"})},
    {"severity": {"text": "CTCAE grade 3"}},
])
def test_a_grade_3_event_on_the_problem_list_interrupts(kb: Knowledge, where: dict[str, Any]) -> None:
    (f,) = findings(kb, problem("p73077203", at(2026, 3, 8, 14), pancreatitis(), **where))
    assert (f.rule_id, f.indicator, f.facts["grade"], f.facts["label"]) == (
        "adverse-event-interrupt", "critical", 3, "Pancreatitis")


def test_a_grade_in_the_problem_text_is_read_and_grade_4_discontinues(kb: Knowledge) -> None:
    (f,) = findings(kb, diagnosis("d1", at(2026, 3, 9, 2), {"text": "Tumor lysis syndrome, grade 4"}))
    assert (f.rule_id, f.facts["grade"], f.facts["reasons"]) == ("adverse-event-discontinue", 4, ["grade-4"])


def test_severity_severe_is_not_a_ctcae_grade(kb: Knowledge) -> None:
    """Three severity levels cannot tell grade 3 from 4: an ungraded "other" diagnosis is no adverse event, and
    CRS charted only as severe asks for the grade."""
    assert findings(kb, problem("p1", at(2026, 3, 8, 14), pancreatitis(), severity=concept(SEVERE))) == []
    (f,) = findings(kb, problem("p2", at(2026, 3, 8, 14), {"text": "Cytokine release syndrome"},
                                severity=concept(SEVERE)))
    assert (f.rule_id, f.indicator) == ("toxicity-grade-unknown", "warning")


def test_an_icans_grade_in_stage_summary_is_a_neurotoxicity_grade(kb: Knowledge) -> None:
    (f,) = findings(kb, diagnosis("d1", at(2026, 3, 9, 6), {"text": "ICANS"}, stage={"text": "Grade 4"}))
    assert (f.rule_id, f.facts["grade"]) == ("neuro-discontinue", 4)


# ---------------------------------------------------------------- one episode, one count

def test_one_graded_event_on_the_problem_list_and_as_a_diagnosis_gives_one_card(kb: Knowledge) -> None:
    """Problem "Pancreatitis" (date-only onset, stage Grade 3) and the encounter diagnosis "Acute pancreatitis,
    grade 3" (timed, same local code): one episode, one card, onset the diagnosis's time."""
    (f,) = findings(kb, problem("p1", "2026-03-08", pancreatitis(), stage={"text": "Grade 3"}),
                    diagnosis("d1", at(2026, 3, 8, 15, 30), pancreatitis("Acute pancreatitis, grade 3")))
    assert (f.rule_id, f.facts["onset"]) == ("adverse-event-interrupt", "2026-03-08 15:30 UTC")


def test_crs_on_the_problem_list_and_as_a_diagnosis_gives_one_card(kb: Knowledge) -> None:
    d89833 = {"coding": [{"system": ICD10CM, "code": "D89.833", "display": "Cytokine release syndrome, grade 3"}],
              "text": "Cytokine release syndrome grade 3"}
    (f,) = findings(kb, problem("p1", "2026-03-09", d89833), diagnosis("d1", at(2026, 3, 9, 4, 10), d89833))
    assert (f.rule_id, f.facts["grade"], f.facts["onset"]) == ("crs-interrupt", 3, "2026-03-09 04:10 UTC")


@pytest.mark.parametrize("diagnosed", [
    at(2026, 3, 5, 16, 40),
    dt.datetime(2026, 3, 5, 21, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # 02:30 UTC next day, local 5 Mar
    "2026-03-05",
])
def test_one_seizure_on_the_problem_list_and_as_a_diagnosis_counts_once(kb: Knowledge,
                                                                        diagnosed: dt.datetime | str) -> None:
    resolved_problem = problem("p1", "2026-03-05", concept(SEIZURE), clinical="resolved",
                               abated=at(2026, 3, 5, 17, 0))
    dx = problem("d1", diagnosed, concept(SEIZURE, text="Seizure"), category="encounter-diagnosis")
    (f,) = findings(kb, resolved_problem, dx)
    assert (f.rule_id, f.indicator, f.facts["seizure_count"]) == ("seizure", "warning", 1)


def test_two_seizure_diagnoses_on_different_days_are_two_seizures(kb: Knowledge) -> None:
    (f,) = findings(kb, diagnosis("d1", at(2026, 3, 5, 16), concept(SEIZURE)),
                    diagnosis("d2", at(2026, 3, 8, 9), concept(SEIZURE)))
    assert (f.rule_id, f.facts["seizure_count"]) == ("neuro-discontinue", 2)


# ---------------------------------------------------------------- what is never an adverse event

def test_unrelated_diagnoses_are_never_adverse_events(kb: Knowledge) -> None:
    in_course = at(2026, 3, 4, 10)
    charts = [
        diagnosis("d1", in_course, concept(B_ALL), stage={"text": "G3"}),  # the malignancy (histologic grade)
        problem("p1", in_course, {"text": "Hypertension"}, severity=concept(SEVERE), stage={"text": "Stage 2"}),
        problem("p2", in_course, {"text": "History of pancreatitis, grade 3"}),
        problem("p3", in_course, {"text": "H/O seizure"}),
        problem("p4", in_course, pancreatitis(), stage={"text": "Grade 3"}, verification="refuted"),
        problem("p5", in_course, concept(SEIZURE), verification="entered-in-error"),
        problem("p6", in_course, {"text": "Neutropenic fever"}),  # no grade stated
    ]
    assert findings(kb, *charts) == []


def test_a_resolved_event_from_before_the_course_stays_out(kb: Knowledge) -> None:
    """Resolved problems reconciled today: onset and abatement before the course, or only the recorded date now
    with an abatement before the course."""
    old = problem("p1", "2025-11-02", pancreatitis(), stage={"text": "Grade 3"}, clinical="resolved",
                  abated=at(2025, 11, 20))
    reconciled = problem("p2", "2025-11-02", {"text": "Tumor lysis syndrome grade 4"}, clinical="resolved",
                         abated=at(2025, 12, 1, 12))
    del reconciled["onsetDateTime"]
    reconciled["recordedDate"] = iso(at(2026, 3, 9, 10))
    old_seizure = problem("p3", "2025-10-01", concept(SEIZURE), clinical="resolved", abated=at(2025, 10, 1, 12))
    assert findings(kb, old, reconciled, old_seizure, diagnosis("d1", at(2026, 3, 8, 10), concept(SEIZURE))) != []
    assert findings(kb, old, reconciled, old_seizure) == []


def test_resolved_without_an_abatement_date_does_not_interrupt(kb: Knowledge) -> None:
    resolved = problem("p1", at(2026, 3, 6, 10), pancreatitis(), stage={"text": "Grade 3"}, clinical="resolved")
    assert findings(kb, resolved) == []
    grade_4 = problem("p2", at(2026, 3, 6, 10), {"text": "Tumor lysis syndrome"}, stage={"text": "Grade 4"},
                      clinical="resolved")
    (f,) = findings(kb, grade_4)
    assert f.rule_id == "adverse-event-discontinue"  # a grade 4 in the course still says "consider discontinuing"


def test_a_condition_has_no_attribution_and_counts_from_the_course_start(kb: Knowledge) -> None:
    """No suspectEntity on a Condition: like an AdverseEvent without one, it counts when it began in the course."""
    before = problem("p1", at(2026, 2, 27, 10), pancreatitis(), stage={"text": "Grade 3"})
    during = problem("p2", at(2026, 3, 2, 10), {"text": "Hepatic failure"}, stage={"text": "Grade 3"})
    (f,) = findings(kb, before, during)
    assert (f.rule_id, f.facts["label"]) == ("adverse-event-interrupt", "Hepatic failure")
