"""The seizure and neuro-discontinue cards list each distinct seizure with its time and every record of it."""

from __future__ import annotations

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.timeline.toxicity import build_toxicities
from tests.builders import at, concept
from tests.med_helpers import renderer
from tests.threshold_builders import SEIZURE, condition, infusion, timeline, tox_observation

NOW = at(2026, 3, 10, 9)
RUNNING = (infusion("MedicationAdministration/i1", at(2026, 3, 1, 8), None, 28),)


def cards(kb: Knowledge, obs: list[dict[str, object]], cond: list[dict[str, object]]) -> list[str]:
    records = build_toxicities(observations=obs, conditions=cond, adverse_events=(), administrations=(), kb=kb,
                               now=NOW)
    findings = tox_rules.evaluate(timeline(NOW, toxicities=records, infusions=RUNNING, hook="patient-view"), kb)
    out = []
    for f in findings:
        card = renderer().render(f)
        out.append(f"{card.summary}\n{card.detail}")
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
    assert "charted 2 times (Observation 2026-03-09 08:00 UTC; Condition 2026-03-09 08:20 UTC), counted once" in text
