"""FHIR-dict and timeline builders for the threshold side (labs and toxicity).

Kept apart from ``tests/builders.py`` (the medication side's) to avoid edit collisions; reuses its
``at``/``iso``/``concept``/``observation``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from service.timeline.model import (
    BlinOrder,
    BodySize,
    CoursePosition,
    DailyDose,
    InfusionPeriod,
    Interruption,
    LabResult,
    Regimen,
    Timeline,
    ToxicityRecord,
)
from tests.builders import LOINC, SNOMED, UCUM, concept, iso, observation

ALT = "1742-6"
AST = "1920-8"
BILI_MASS = "1975-2"
BILI_MOLES = "14631-6"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CTCAE_GRADE_SYSTEM = "http://hl7.org/fhir/us/ctcae/CodeSystem/ctcae-grade-code-system"
CTCAE_GRADE_EXT = "http://hl7.org/fhir/us/ctcae/StructureDefinition/ctcae-grade"
REF_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
SEIZURE = {"system": SNOMED, "code": "91175000", "display": "Seizure (finding)"}

__all__ = ["LOINC", "UCUM"]


def lab(id: str, code: str, value: float | None, unit: str | None, when: dt.datetime | str, *,
        high: float | None = None, high_unit: str | None = None, **kw: Any) -> dict[str, Any]:
    """A lab Observation; ``high`` → one untyped ``referenceRange`` (``extra`` replaces it when given)."""
    return observation(id, code, value, unit, when=when, reference_high=high, reference_unit=high_unit, **kw)


def reference_range(high: float, unit: str, *, type_code: str | None = "normal",
                    age: tuple[float, float] | None = None, applies_to: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}
    if type_code is not None:
        out["type"] = {"coding": [{"system": REF_MEANING, "code": type_code}]}
    if age is not None:
        out["age"] = {"low": {"value": age[0], "unit": "a", "system": UCUM, "code": "a"},
                      "high": {"value": age[1], "unit": "a", "system": UCUM, "code": "a"}}
    if applies_to is not None:
        out["appliesTo"] = [{"text": applies_to}]
    return out


def tox_observation(id: str, when: dt.datetime | str, *, code: Mapping[str, Any], status: str = "final",
                    value_integer: int | None = None, value_string: str | None = None,
                    value_concept: Mapping[str, Any] | None = None, value_boolean: bool | None = None,
                    method: str | None = None, note: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Observation", "id": id, "status": status, "code": dict(code),
                           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": iso(when)}
    if value_integer is not None:
        out["valueInteger"] = value_integer
    if value_string is not None:
        out["valueString"] = value_string
    if value_concept is not None:
        out["valueCodeableConcept"] = dict(value_concept)
    if value_boolean is not None:
        out["valueBoolean"] = value_boolean
    if method is not None:
        out["method"] = {"text": method}
    if note is not None:
        out["note"] = [{"text": note}]
    return out


def adverse_event(id: str, when: dt.datetime | str, *, event: Mapping[str, Any], grade: int | None = None,
                  actuality: str = "actual") -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "AdverseEvent", "id": id, "actuality": actuality, "event": dict(event),
                           "subject": {"reference": "Patient/p1"}, "date": iso(when)}
    if grade is not None:
        out["extension"] = [{"url": CTCAE_GRADE_EXT, "valueCodeableConcept": concept(
            {"system": CTCAE_GRADE_SYSTEM, "code": str(grade)})}]
    return out


def condition(id: str, when: dt.datetime | str, *, code: Mapping[str, Any],
              stage_summary: Mapping[str, Any] | None = None, abated: dt.datetime | str | None = None,
              verification: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Condition", "id": id, "code": dict(code),
                           "subject": {"reference": "Patient/p1"}, "onsetDateTime": iso(when)}
    if stage_summary is not None:
        out["stage"] = [{"summary": dict(stage_summary)}]
    if abated is not None:
        out["abatementDateTime"] = iso(abated)
    if verification is not None:
        out["verificationStatus"] = {"coding": [{"code": verification}]}
    return out


# ---------------------------------------------------------------- timeline objects (rule tests)


def lab_result(analyte: str, ratio: float | None, at: dt.datetime, *, uln: float | None = 40.0,
               problem: str | None = None, uln_source: str | None = "reference-range") -> LabResult:
    value = ratio * uln if ratio is not None and uln is not None else None
    unit = "mg/dL" if analyte == "bilirubin" else "U/L"
    return LabResult(analyte=analyte, ref=f"Observation/{analyte}", at=at, value=value, unit=unit,  # type: ignore[arg-type]
                     uln=uln, uln_unit=unit if uln else None,
                     uln_source=uln_source if uln else None, ratio=ratio, problem=problem)  # type: ignore[arg-type]


def tox(kind: str, grade: int | None, at: dt.datetime, *, ref: str | None = None, label: str = "",
        from_text: bool = False, system: str | None = None) -> ToxicityRecord:
    return ToxicityRecord(kind=kind, ref=ref or f"Observation/{kind}-{at:%m%d%H%M}", at=at, grade=grade,  # type: ignore[arg-type]
                          grade_from_text=from_text, label=label or kind, grading_system=system)


def infusion(ref: str, start: dt.datetime, end: dt.datetime | None, ug_per_day: float | None = 28,
             stop_reason: str | None = None) -> InfusionPeriod:
    return InfusionPeriod(ref=ref, start=start, end=end, status="completed" if end else "in-progress",
                          ug_per_day=ug_per_day, stop_reason=stop_reason)  # type: ignore[arg-type]


def draft_order(ref: str = "MedicationRequest/mr1", start: dt.datetime | None = None,
                ug_per_day: float = 9) -> BlinOrder:
    return BlinOrder(ref=ref, resource={"resourceType": "MedicationRequest", "id": ref.split("/")[1]},
                     status="draft", draft=True, in_focus=True, start=start, start_date_only=False,
                     dose=DailyDose(ug_per_day=ug_per_day, basis="rateQuantity", display=f"{ug_per_day} ug/d"))


def timeline(now: dt.datetime, *, hook: str = "order-sign", labs: Sequence[LabResult] = (),
             toxicities: Sequence[ToxicityRecord] = (), infusions: Sequence[InfusionPeriod] = (),
             orders: Sequence[BlinOrder] = (), positions: Mapping[str, CoursePosition] | None = None,
             weight_kg: float | None = 70, bsa_m2: float | None = None,
             regimen: Regimen | None = None) -> Timeline:
    return Timeline(now=now, hook=hook, labs=tuple(labs), toxicities=tuple(toxicities),  # type: ignore[arg-type]
                    infusions=tuple(infusions), orders=tuple(orders), positions=dict(positions or {}),
                    body=BodySize(weight_kg=weight_kg, bsa_m2=bsa_m2),
                    regimen=regimen or Regimen(id="relapsed-refractory", why="default"))


def restart_position(stopped: dt.datetime, restarted: dt.datetime, *, course_start: dt.datetime,
                     reason: str | None = None, cycle: int = 1, day: int = 10) -> CoursePosition:
    return CoursePosition(cycle=cycle, day=day, source="history", event="restart", at=restarted,
                          course_start=course_start,
                          interruption=Interruption(stopped=stopped, restarted=restarted, gap=restarted - stopped,
                                                    reason=reason))  # type: ignore[arg-type]
