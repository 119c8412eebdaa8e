"""The toxicity family end to end: FHIR records through the timeline to findings."""

from __future__ import annotations

from typing import Any

from service.knowledge import Knowledge
from service.rules.base import Finding
from service.timeline.toxicity import build_toxicities
from tests.builders import at, concept
from tests.rules.toxicity.support import NOW, run
from tests.threshold_builders import (
    ICD10CM,
    adverse_event,
    condition,
    tox_observation,
)


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
