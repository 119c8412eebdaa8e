"""neuro-interrupt, neuro-discontinue and seizure (clinical-rules.md §3.1, §6 E19); the cards list each distinct
seizure with its time and every record of it."""

from __future__ import annotations

import datetime as dt

import pytest

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.timeline.toxicity import build_toxicities
from tests.builders import at, concept
from tests.card_text import as_read
from tests.med_helpers import renderer
from tests.rules.toxicity.support import COURSE, NOW, RUNNING, ids, run
from tests.threshold_builders import (
    SEIZURE,
    condition,
    infusion,
    timeline,
    tox,
    tox_observation,
)


def cards(kb: Knowledge, obs: list[dict[str, object]], cond: list[dict[str, object]]) -> list[str]:
    records = build_toxicities(observations=obs, conditions=cond, adverse_events=(), administrations=(), kb=kb,
                               now=NOW)
    findings = tox_rules.evaluate(timeline(NOW, toxicities=records, infusions=RUNNING, hook="patient-view"), kb)
    out = []
    for f in findings:
        card = renderer().render(f)
        out.append(as_read(f"{card.summary}\n{card.detail}"))
    return out


def test_neuro_discontinue_lists_each_seizure_with_time_and_sources(kb: Knowledge) -> None:
    (text,) = cards(kb, [tox_observation("o1", at(2026, 3, 9, 8), code=concept(text="Seizure activity"),
                                         value_string="tonic-clonic seizure witnessed"),
                         tox_observation("o2", at(2026, 3, 9, 14), code=concept(text="Seizure activity"),
                                         value_string="Seizure x1")],
                    [condition("c1", at(2026, 3, 9, 8, 20), code=concept(SEIZURE))])
    assert "2 seizures this course" in text
    assert "- 2026-03-09 08:00 UTC: Seizure activity — recorded by Observation/o1, Condition/c1" in text
    assert "- 2026-03-09 14:00 UTC: Seizure activity — recorded by Observation/o2" in text
    assert "within 60 minutes" in text


def test_first_seizure_card_says_duplicates_were_counted_once(kb: Knowledge) -> None:
    (text,) = cards(kb, [tox_observation("o1", at(2026, 3, 9, 8), code=concept(text="Seizure activity"),
                                         value_string="Seizure x1 at 08:00")],
                    [condition("c1", at(2026, 3, 9, 8, 20), code=concept(SEIZURE))])
    assert ("charted 2 times (Observation 2026-03-09 08:00 UTC; Condition 2026-03-09 08:20 UTC) and is counted once"
            in text)


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
