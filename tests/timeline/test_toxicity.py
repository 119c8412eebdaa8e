"""build_toxicities: toxicity records from Observation, Condition, AdverseEvent and MedicationAdministration
(clinical-rules.md §4.4, §6 E17–E19, E29)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from service.errors import KnowledgeError
from service.knowledge import Knowledge, load_knowledge
from service.settings import DEFAULT_KNOWLEDGE_DIR
from service.timeline.model import ToxicityRecord
from service.timeline.toxicity import build_toxicities
from tests.builders import at, blin_infusion, concept
from tests.threshold_builders import (
    ICD10CM,
    NCIT,
    SEIZURE,
    adverse_event,
    condition,
    tox_observation,
)

NOW = at(2026, 3, 10, 9)
WHEN = at(2026, 3, 9, 8)


def build(kb: Knowledge, *, observations: Any = (), conditions: Any = (), adverse_events: Any = (),
          administrations: Any = ()) -> tuple[ToxicityRecord, ...]:
    return build_toxicities(observations=observations, conditions=conditions, adverse_events=adverse_events,
                            administrations=administrations, kb=kb, now=NOW)


def test_observation_with_local_text_code_and_value_integer(kb: Knowledge) -> None:
    (rec,) = build(kb, observations=[tox_observation("o1", WHEN, code=concept(text="CRS grade (ASTCT)"),
                                                     value_integer=3, method="ASTCT 2019")])
    assert (rec.kind, rec.grade, rec.grade_from_text, rec.at) == ("crs", 3, False, WHEN)
    assert rec.grading_system == "ASTCT 2019" and rec.label == "CRS grade (ASTCT)" and rec.ref == "Observation/o1"


def test_observation_grade_as_ncit_or_ctcae_code(kb: Knowledge) -> None:
    recs = build(kb, observations=[
        tox_observation("o1", WHEN, code=concept({"system": NCIT, "code": "C143394"}),
                        value_concept=concept({"system": NCIT, "code": "C41337"})),
        tox_observation("o2", at(2026, 3, 9, 9), code=concept(text="ICANS"),
                        value_concept=concept({"system": "http://hl7.org/fhir/us/ctcae/CodeSystem/ctcae-grade-code-system",
                                               "code": "2"})),
    ])
    assert [(r.kind, r.grade, r.grade_from_text) for r in recs] == [("crs", 4, False), ("neuro", 2, False)]


def test_grade_only_in_free_text_is_parsed_including_roman_numerals(kb: Knowledge) -> None:
    recs = build(kb, observations=[
        tox_observation("o1", WHEN, code=concept(text="Toxicity assessment"), value_string="CRS gr III"),
        tox_observation("o2", at(2026, 3, 9, 9), code=concept(text="Nursing note"), value_string="grade 3 ICANS"),
        tox_observation("o3", at(2026, 3, 9, 10), code=concept(text="Neurotoxicity"), note="now G4, intubated"),
    ])
    assert [(r.kind, r.grade, r.grade_from_text) for r in recs] == [
        ("crs", 3, True), ("neuro", 3, True), ("neuro", 4, True)]


def test_severe_crs_without_a_number_has_no_grade(kb: Knowledge) -> None:
    (rec,) = build(kb, observations=[tox_observation("o1", WHEN, code=concept(text="Severe CRS"))])
    assert (rec.kind, rec.grade) == ("crs", None)


def test_adverse_event_with_ctcae_grade_extension(kb: Knowledge) -> None:
    recs = build(kb, adverse_events=[
        adverse_event("ae1", WHEN, event=concept(text="Cytokine release syndrome"), grade=3),
        adverse_event("ae2", at(2026, 3, 9, 9), event=concept(text="Pancreatitis"), grade=4),
        adverse_event("ae3", at(2026, 3, 9, 10), event=concept(text="Pancreatitis"), grade=4, actuality="potential"),
    ])
    assert [(r.kind, r.grade, r.grading_system, r.label) for r in recs] == [
        ("crs", 3, "CTCAE", "Cytokine release syndrome"), ("other", 4, "CTCAE", "Pancreatitis")]


def test_condition_icd10cm_graded_code(kb: Knowledge) -> None:
    recs = build(kb, conditions=[
        condition("c1", WHEN, code=concept({"system": ICD10CM, "code": "D89.833"})),
        condition("c2", at(2026, 3, 9, 9), code=concept({"system": ICD10CM, "code": "G92.00"})),
        condition("c3", at(2026, 3, 9, 10), code=concept({"system": ICD10CM, "code": "G92.04"})),
    ])
    assert [(r.kind, r.grade, r.grade_from_text) for r in recs] == [
        ("crs", 3, False), ("neuro", None, False), ("neuro", 4, False)]


def test_condition_stage_summary_and_abatement_resolution(kb: Knowledge) -> None:
    recs = build(kb, conditions=[
        condition("c1", WHEN, code=concept(text="ICANS"), stage_summary=concept({"system": NCIT, "code": "C41340"}),
                  abated=at(2026, 3, 9, 20)),
        condition("c2", WHEN, code=concept(text="CRS"), verification="entered-in-error"),
    ])
    assert [(r.kind, r.grade, r.at, r.absent) for r in recs] == [
        ("neuro", 3, WHEN, False), ("neuro", 0, at(2026, 3, 9, 20), True)]


def test_seizures_from_snomed_condition_and_observation_and_negation(kb: Knowledge) -> None:
    recs = build(
        kb,
        conditions=[condition("c1", WHEN, code=concept(SEIZURE))],
        observations=[
            tox_observation("o1", at(2026, 3, 9, 12), code=concept(SEIZURE)),
            tox_observation("o2", at(2026, 3, 9, 13), code=concept(text="Seizure"), value_boolean=False),
            tox_observation("o3", at(2026, 3, 9, 14), code=concept(text="Seizure"), value_string="No seizure activity"),
            tox_observation("o4", at(2026, 3, 9, 15), code=concept(text="Seizure prophylaxis")),
        ],
    )
    assert [(r.kind, r.ref, r.absent) for r in recs] == [
        ("seizure", "Condition/c1", False), ("seizure", "Observation/o1", False),
        ("seizure", "Observation/o2", True), ("seizure", "Observation/o3", True)]


def test_overdose_and_flush_from_adverse_event_and_administration(kb: Knowledge) -> None:
    recs = build(
        kb,
        adverse_events=[
            adverse_event("ae1", WHEN, event=concept(text="Medication error: BLINCYTO line flushed at bag change")),
            adverse_event("ae2", at(2026, 3, 9, 9), event=concept(text="Overdose")),
            adverse_event("ae3", at(2026, 3, 9, 10), event=concept(text="Flushing"), grade=1),
        ],
        administrations=[
            blin_infusion("ma1", at(2026, 3, 8), at(2026, 3, 9, 11), status="stopped",
                          status_reason="Pump programming error - overdose"),
            blin_infusion("ma2", at(2026, 3, 9, 11), at(2026, 3, 9, 12), status="entered-in-error",
                          status_reason="overdose"),
            blin_infusion("ma3", at(2026, 3, 9, 12), None),
        ],
    )
    assert [(r.kind, r.ref, r.at) for r in recs] == [
        ("flush", "AdverseEvent/ae1", WHEN),
        ("overdose", "AdverseEvent/ae2", at(2026, 3, 9, 9)),
        ("other", "AdverseEvent/ae3", at(2026, 3, 9, 10)),
        ("overdose", "MedicationAdministration/ma1", at(2026, 3, 9, 11)),
    ]


def test_entered_in_error_duplicates_and_future_records_are_dropped(kb: Knowledge) -> None:
    obs = tox_observation("o1", WHEN, code=concept(text="CRS grade"), value_integer=2)
    recs = build(kb, observations=[
        obs, dict(obs),
        tox_observation("o2", WHEN, code=concept(text="CRS"), value_integer=4, status="entered-in-error"),
        tox_observation("o3", at(2026, 3, 11), code=concept(text="CRS"), value_integer=4),
        tox_observation("o4", WHEN, code=concept(text="Heart rate"), value_integer=3),
    ])
    assert [(r.ref, r.grade) for r in recs] == [("Observation/o1", 2)]


def test_bad_toxicity_knowledge_stops_start_up_naming_file_and_key(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, tmp_path / "kb")
    path = tmp_path / "kb" / "toxicity.toml"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace('site_codings = []', 'site_codings = [{ system = "local", code = "X1" }]', 1),
                    encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"toxicity.toml: concepts.crs.site_codings: unknown code system key"):
        load_knowledge(tmp_path / "kb")
    path.write_text(original.replace("'\\bCRS\\b'", "'(CRS'", 1), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"toxicity.toml.*concepts.crs.text_patterns: bad regular expression"):
        load_knowledge(tmp_path / "kb")


def test_restart_dose_is_stated_once_and_confirmed_regimens_must_exist(tmp_path: Path) -> None:
    """The restart dose and the regimens it is confirmed for live in regimens.toml [ae_restart], the 45 kg band in
    dosing.toml: toxicity.toml no longer repeats them (a copy could drift); the confirmed regimens must exist."""
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, tmp_path / "kb")
    path = tmp_path / "kb" / "toxicity.toml"
    original = path.read_text(encoding="utf-8")
    section = original[original.index("[restart_dose]"):original.index("[scope]")]
    keys = {line.split("=")[0].strip() for line in section.splitlines()[1:] if "=" in line and not line.startswith("#")}
    assert keys == {"dose_match_tolerance", "source", "reviewed_on", "confidence"}
    for extra in ("ug_per_day = 9", 'confirmed_regimens = ["relapsed-refractory"]'):
        path.write_text(original.replace("[restart_dose]\n", f"[restart_dose]\n{extra}\n", 1), encoding="utf-8")
        with pytest.raises(KnowledgeError, match=r"toxicity.toml: restart_dose\.\w+: Extra inputs"):
            load_knowledge(tmp_path / "kb")
    path.write_text(original, encoding="utf-8")
    regimens = tmp_path / "kb" / "regimens.toml"
    text = regimens.read_text(encoding="utf-8")
    regimens.write_text(text.replace('confirmed_regimens = ["relapsed-refractory"]', 'confirmed_regimens = ["rr"]', 1),
                        encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"regimens.toml.*confirmed_regimens: 'rr' is not a \[regimens.\*\] table"):
        load_knowledge(tmp_path / "kb")


def test_overdose_on_an_administration_naming_its_medication_by_reference(kb: Knowledge) -> None:
    """The drug is recognised as the infusion builder recognises it: through a contained Medication or a
    fetched one, so the overdose record (with its label) is not lost."""
    from tests.builders import BLIN_SCD
    from tests.med_helpers import make_timeline

    def by_reference(id: str, reference: str) -> dict[str, Any]:
        admin = blin_infusion(id, at(2026, 3, 8), at(2026, 3, 9, 11), status="stopped",
                              status_reason="Pump programming error - overdose")
        del admin["medicationCodeableConcept"]
        return {**admin, "medicationReference": {"reference": reference}}

    medication = {"resourceType": "Medication", "id": "blin", "code": concept(BLIN_SCD)}
    contained = {**by_reference("ma1", "#blin"), "contained": [medication]}
    fetched = by_reference("ma2", "Medication/blin")
    timeline = make_timeline(kb, now=NOW, hook="patient-view", resources=[contained, fetched, medication])
    assert [(r.kind, r.ref, r.label) for r in timeline.toxicities] == [
        ("overdose", "MedicationAdministration/ma1", "Pump programming error - overdose"),
        ("overdose", "MedicationAdministration/ma2", "Pump programming error - overdose"),
    ]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("{ min = 7, max = 9, grade = 1 }", "{ min = 7, max = 8, grade = 1 }",
     r"ice_score.*score 9 must fall in exactly one band"),
    ("value_pattern = '(?P<score>", "value_pattern = '(?P<points>", r"ice_score.value_pattern: needs a named group"),
    ("same_event_window_minutes = 60", "same_event_window_minutes = 0", r"episodes.same_event_window_minutes"),
    ('{ system = "v3_interpretation", code = "N"', '{ system = "v3", code = "N"',
     r"findings.normal_interpretations: unknown code system key 'v3'"),
])
def test_bad_findings_knowledge_stops_start_up(tmp_path: Path, old: str, new: str, message: str) -> None:
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, tmp_path / "kb")
    path = tmp_path / "kb" / "toxicity.toml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(tmp_path / "kb")


def test_a_negative_check_during_an_unexplained_stop_is_not_its_reason(kb: Knowledge) -> None:
    """A bag hung late with "Seizure activity: Not observed" charted in the gap is not an adverse-event interruption
    (which would call for the 9 µg/day restart dose); a real seizure in the gap is."""
    from tests.med_helpers import make_timeline

    def reason(value: str) -> str | None:
        resources = [blin_infusion("ma1", at(2026, 3, 1, 8), at(2026, 3, 5, 8)),
                     blin_infusion("ma2", at(2026, 3, 5, 13), None),
                     tox_observation("o1", at(2026, 3, 5, 10), code=concept(text="Seizure activity"),
                                     value_string=value)]
        tl = make_timeline(kb, now=at(2026, 3, 6, 9), hook="patient-view", resources=resources)
        interruption = tl.positions["current"].interruption
        assert interruption is not None
        return interruption.reason

    assert reason("Not observed") is None
    assert reason("Generalized seizure x1") == "adverse-event"
