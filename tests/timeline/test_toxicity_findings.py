"""Real-looking flowsheet phrasings, positive and negative, through ``build_toxicities`` (issue 6 items 3 and 5).

Each row is one Observation as a nursing or physician flowsheet sends it: the row name (``code.text``), and its
value. The expectation is the record the timeline keeps: ``None`` (nothing: not assessed, not a toxicity, a
number that does not say it is a grade), or (kind, grade, absent, count). ``absent`` records are never an event
and never "grade unknown"; they show an earlier episode resolved.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.knowledge import Knowledge
from service.timeline.toxicity import build_toxicities
from tests.builders import SNOMED, at
from tests.threshold_builders import CTCAE_GRADE_SYSTEM, NCIT

WHEN = at(2026, 3, 9, 8)
NOW = at(2026, 3, 10, 9)
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def cc(code: str | None = None, system: str = LOCAL, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if code is not None:
        out["coding"] = [{"system": system, "code": code}]
    if text is not None:
        out["text"] = text
    return out


def obs(row: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": LOCAL, "code": "3040" + str(len(row))}], "text": row},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-03-09T08:00:00Z", **value}


Expected = tuple[str, int | None, bool, int] | None
ABSENT_SEIZURE: Expected = ("seizure", 0, True, 1)
SEIZURE: Expected = ("seizure", None, False, 1)

PHRASINGS: list[tuple[str, dict[str, Any], Expected]] = [
    # ---------------------------------------------------------------- seizure rows, negative
    ("seizure: not observed", obs("Seizure activity", valueString="Not observed"), ABSENT_SEIZURE),
    ("seizure: None", obs("Seizure activity", valueString="None"), ABSENT_SEIZURE),
    ("seizure: None noted", obs("Seizure activity", valueString="None noted"), ABSENT_SEIZURE),
    ("seizure: nil", obs("Seizure activity", valueString="nil"), ABSENT_SEIZURE),
    ("seizure: No", obs("Seizure activity", valueString="No"), ABSENT_SEIZURE),
    ("seizure: Negative", obs("Seizure activity", valueString="Negative"), ABSENT_SEIZURE),
    ("seizure: Absent", obs("Seizure activity", valueString="Absent"), ABSENT_SEIZURE),
    ("seizure: denies", obs("Seizure activity", valueString="Denies"), ABSENT_SEIZURE),
    ("seizure count 0 (integer)", obs("Seizures this shift", valueInteger=0), ABSENT_SEIZURE),
    ("seizure count '0' (string)", obs("Seizure count", valueString="0"), ABSENT_SEIZURE),
    ("seizure? false", obs("Seizure?", valueBoolean=False), ABSENT_SEIZURE),
    ("seizure: SNOMED Absent", obs("Seizure activity", valueCodeableConcept=cc("2667000", SNOMED)), ABSENT_SEIZURE),
    ("seizure: SNOMED Negative", obs("Seizure activity", valueCodeableConcept=cc("260385009", SNOMED)),
     ABSENT_SEIZURE),
    ("seizure: local list 'Not observed'",
     obs("Seizure activity", valueCodeableConcept=cc("1020", text="Not observed")), ABSENT_SEIZURE),
    ("seizure: interpretation Normal",
     obs("Seizure activity", valueString="see neuro note", interpretation=[cc("N", V3, "Normal")]), ABSENT_SEIZURE),
    ("seizure: 'No seizure activity noted this shift'",
     obs("Neuro checks", valueString="No seizure activity noted this shift"), ABSENT_SEIZURE),
    ("seizure: resolved", obs("Seizure activity", valueString="Resolved"), ABSENT_SEIZURE),
    # not charted: no record at all
    ("seizure: dataAbsentReason", obs("Seizure activity", dataAbsentReason=cc("not-performed", DAR)), None),
    ("seizure: N/A", obs("Seizure activity", valueString="N/A"), None),
    ("seizure: unable to assess", obs("Seizure activity", valueString="Unable to assess - pt sedated"), None),
    ("seizure precautions row", obs("Seizure precautions", valueString="In place"), None),
    # ---------------------------------------------------------------- seizure rows, positive
    ("seizure x1 at 14:20", obs("Seizure activity", valueString="Seizure x1 at 14:20"), SEIZURE),
    ("tonic-clonic seizure witnessed", obs("Seizure activity", valueString="tonic-clonic seizure witnessed"),
     SEIZURE),
    ("seizure: Yes", obs("Seizure activity", valueString="Yes - generalized, 2 min, lorazepam given"), SEIZURE),
    ("seizure? true", obs("Seizure?", valueBoolean=True), SEIZURE),
    ("seizures this shift: 2", obs("Seizures this shift", valueInteger=2), ("seizure", None, False, 2)),
    ("neuro check text: focal seizure x2", obs("Neuro checks", valueString="Focal seizure R arm x2"),
     ("seizure", None, False, 2)),
    ("SNOMED seizure code, no value",
     {**obs("Seizure"), "code": {"coding": [{"system": SNOMED, "code": "91175000"}]}}, SEIZURE),
    # ---------------------------------------------------------------- ICE score
    ("ICE 10 (integer)", obs("ICE score", valueInteger=10), ("neuro", 0, True, 1)),
    ("ICE '10/10'", obs("ICE score", valueString="10/10"), ("neuro", 0, True, 1)),
    ("ICE 10/10 - no ICANS", obs("Neuro assessment", valueString="ICE 10/10 - no ICANS"), ("neuro", 0, True, 1)),
    ("ICE 8 (quantity)", obs("ICE Score", valueQuantity={"value": 8, "system": "http://unitsofmeasure.org",
                                                          "code": "{score}"}), ("neuro", 1, False, 1)),
    ("ICE score 6/10 in text", obs("Neuro assessment", valueString="ICE score 6/10, word-finding difficulty"),
     ("neuro", 2, False, 1)),
    ("ICE 2", obs("ICE score", valueInteger=2), ("neuro", 3, False, 1)),
    ("ICE unable to assess", obs("ICE score", valueString="Unable to assess (asleep)"), None),
    ("ice pack is not ICE", obs("Ice pack applied", valueString="yes, left knee"), None),
    # ---------------------------------------------------------------- ICANS and CRS rows
    ("no ICANS", obs("ICANS", valueString="no ICANS"), ("neuro", 0, True, 1)),
    ("ICANS grade '0'", obs("ICANS grade", valueString="0"), ("neuro", 0, True, 1)),
    ("ICANS grade 'Grade 2'", obs("ICANS grade", valueString="Grade 2"), ("neuro", 2, False, 1)),
    ("CRS grade '3' (bare string)", obs("CRS grade", valueString="3"), ("crs", 3, False, 1)),
    ("CRS grade 'III'", obs("CRS grade", valueString="III"), ("crs", 3, False, 1)),
    ("CRS grade 2 (integer)", obs("CRS grade", valueInteger=2), ("crs", 2, False, 1)),
    ("CRS grade 0", obs("CRS grade", valueInteger=0), ("crs", 0, True, 1)),
    ("No CRS", obs("CRS", valueString="No CRS"), ("crs", 0, True, 1)),
    ("CRS: Resolved", obs("CRS assessment", valueString="Resolved"), ("crs", 0, True, 1)),
    ("CRS 'Gr 2 (ASTCT)'", obs("CRS", valueString="Gr 2 (ASTCT)"), ("crs", 2, False, 1)),
    ("CRS with method ASTCT and integer", obs("CRS", valueInteger=3, method={"text": "ASTCT 2019"}),
     ("crs", 3, False, 1)),
    ("CRS '3' that does not say grade", obs("CRS", valueInteger=3), ("crs", None, False, 1)),
    ("nursing note: No CRS, no ICANS", obs("Nursing note", valueString="No CRS, no ICANS"), ("crs", 0, True, 1)),
    ("CRS SNOMED Negative", obs("Cytokine release syndrome", valueCodeableConcept=cc("260385009", SNOMED)),
     ("crs", 0, True, 1)),
    ("CRS grade 2, not resolved", obs("CRS grade", valueString="grade 2, not resolved"), ("crs", 2, False, 1)),
    ("denies headache/confusion", obs("Neuro checks", valueString="Pt denies headache/confusion"), None),
    # ---------------------------------------------------------------- other graded adverse events
    ("TLS with NCIt grade 4 value", obs("Tumor lysis syndrome", valueCodeableConcept=cc("C41337", NCIT)),
     ("other", 4, False, 1)),
    ("mucositis, method CTCAE", obs("Oral mucositis", valueInteger=3, method={"text": "CTCAE v5.0"}),
     ("other", 3, False, 1)),
    ("febrile neutropenia 'Grade 3'", obs("Febrile neutropenia", valueString="Grade 3"), ("other", 3, False, 1)),
    ("rash CTCAE grade code 0", obs("Rash", valueCodeableConcept=cc("0", CTCAE_GRADE_SYSTEM)),
     ("other", 0, True, 1)),
    ("pain score 4 is not a grade", obs("Pain score (0-10)", valueInteger=4), None),
    ("diarrhea '3' does not say grade", obs("Diarrhea episodes", valueString="3"), None),
    ("motor strength grade is not an adverse event", obs("Motor strength grade (RUE)", valueInteger=4), None),
    ("histologic grade is not an adverse event", obs("Histologic grade", valueString="Grade 3"), None),
    ("heart rate is not a grade", obs("Heart rate", valueQuantity={"value": 3, "unit": "/min"}), None),
]


@pytest.mark.parametrize(("resource", "expected"), [(r, e) for _, r, e in PHRASINGS],
                         ids=[name for name, _, _ in PHRASINGS])
def test_flowsheet_phrasing(kb: Knowledge, resource: dict[str, Any], expected: Expected) -> None:
    records = build_toxicities(observations=[resource], conditions=(), adverse_events=(), administrations=(),
                               kb=kb, now=NOW)
    got = [(r.kind, r.grade, r.absent, r.count) for r in records]
    assert got == ([] if expected is None else [expected])


def test_the_table_covers_forty_phrasings_both_ways() -> None:
    positive = [e for _, _, e in PHRASINGS if e is not None and not e[2]]
    negative = [e for _, _, e in PHRASINGS if e is None or e[2]]
    assert len(PHRASINGS) >= 40 and len(positive) >= 15 and len(negative) >= 15


def test_an_ice_score_label_states_the_score_out_of_the_knowledge_maximum(kb: Knowledge) -> None:
    records = build_toxicities(observations=[obs("ICE score", valueInteger=2)], conditions=(), adverse_events=(),
                               administrations=(), kb=kb, now=NOW)
    assert [r.label for r in records] == [f"ICE score (2/{kb.toxicity.ice_score.max_score})"]


def test_an_observation_with_only_a_period_end_is_read_at_that_end(kb: Knowledge) -> None:
    """The time is read as every other Observation reader reads it (``observation_instant``)."""
    row = obs("CRS grade", valueInteger=3)
    del row["effectiveDateTime"]
    row["effectivePeriod"] = {"end": "2026-03-09T20:00:00Z"}
    records = build_toxicities(observations=[row], conditions=(), adverse_events=(), administrations=(),
                               kb=kb, now=NOW)
    assert [(r.kind, r.grade, r.at, r.date_only) for r in records] == [("crs", 3, at(2026, 3, 9, 20), False)]
