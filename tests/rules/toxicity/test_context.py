"""One event, one count (issue 6 item 4): records of one toxicity from several sources are one episode, a
Condition's abatement is a resolution, and absent findings never open or count anything."""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.timeline.toxicity import build_toxicities
from tests.builders import at, concept
from tests.rules.toxicity.support import NOW, RUNNING
from tests.threshold_builders import SEIZURE, adverse_event, condition, timeline, tox_observation


def findings(kb: Knowledge, *, obs: Any = (), cond: Any = (), ae: Any = (), now: dt.datetime = NOW) -> list[Finding]:
    records = build_toxicities(observations=obs, conditions=cond, adverse_events=ae, administrations=(), kb=kb,
                               now=now)
    return list(tox_rules.evaluate(timeline(now, toxicities=records, infusions=RUNNING), kb))


def seizure_row(id: str, when: dt.datetime, value: str) -> dict[str, Any]:
    return tox_observation(id, when, code=concept(text="Seizure activity"), value_string=value)


def test_one_seizure_charted_by_nurse_physician_and_ae_report_counts_once(kb: Knowledge) -> None:
    """Flowsheet row at 14:20, problem-list Condition at 14:35, AdverseEvent report at 15:05 (within 60 min)."""
    (f,) = findings(kb, obs=[seizure_row("o1", at(2026, 3, 9, 14, 20), "Seizure x1 at 14:20")],
                    cond=[condition("c1", at(2026, 3, 9, 14, 35), code=concept(SEIZURE))],
                    ae=[adverse_event("a1", at(2026, 3, 9, 15, 5), event=concept(text="Seizure"))])
    assert (f.rule_id, f.indicator, f.facts["seizure_count"]) == ("seizure", "warning", 1)
    (episode,) = f.facts["seizure_episodes"]
    assert [s["type"] for s in episode["sources"]] == ["Observation", "Condition", "AdverseEvent"]
    assert episode["at"] == "2026-03-09 14:20 UTC"


def test_two_seizures_six_hours_apart_discontinue_listing_each(kb: Knowledge) -> None:
    (f,) = findings(kb, obs=[seizure_row("o1", at(2026, 3, 9, 8), "tonic-clonic seizure witnessed"),
                             seizure_row("o2", at(2026, 3, 9, 14), "Seizure x1, focal")],
                    cond=[condition("c1", at(2026, 3, 9, 8, 30), code=concept(SEIZURE))])
    assert (f.rule_id, f.facts["reasons"], f.facts["seizure_count"]) == ("neuro-discontinue", ["seizures"], 2)
    assert [(e["at"], len(e["sources"])) for e in f.facts["seizure_episodes"]] == [
        ("2026-03-09 08:00 UTC", 2), ("2026-03-09 14:00 UTC", 1)]


def test_a_resolved_seizure_condition_is_one_seizure(kb: Knowledge) -> None:
    """The abatement is the resolution, not a second event."""
    (f,) = findings(kb, cond=[condition("c1", at(2026, 3, 5, 10), code=concept(SEIZURE),
                                        abated=at(2026, 3, 5, 10, 4))])
    assert (f.rule_id, f.facts["seizure_count"]) == ("seizure", 1)


def test_problem_list_date_only_onset_joins_the_same_days_diagnosis(kb: Knowledge) -> None:
    (f,) = findings(kb, cond=[condition("p1", "2026-03-05", code=concept(SEIZURE)),
                              condition("d1", at(2026, 3, 5, 16, 40), code=concept(SEIZURE))])
    assert (f.rule_id, f.facts["seizure_count"]) == ("seizure", 1)
    assert {s["ref"] for s in f.facts["seizure_episodes"][0]["sources"]} == {"Condition/p1", "Condition/d1"}


def test_negative_checks_every_shift_are_silent(kb: Knowledge) -> None:
    shifts = [at(2026, 3, 2) + dt.timedelta(hours=8 * i) for i in range(24)]
    rows = []
    for i, t in enumerate(shifts):
        rows += [seizure_row(f"s{i}", t, ["Not observed", "None", "0", "Nil"][i % 4]),
                 tox_observation(f"ice{i}", t, code=concept(text="ICE score"), value_integer=10),
                 tox_observation(f"crs{i}", t, code=concept(text="CRS"), value_string="No CRS"),
                 tox_observation(f"dup{i}", t, code=concept(text="Seizure activity"), value_string="Not observed")]
    assert findings(kb, obs=rows) == []


def test_a_charted_count_of_two_is_two_seizures(kb: Knowledge) -> None:
    (f,) = findings(kb, obs=[tox_observation("o1", at(2026, 3, 9, 6), code=concept(text="Seizures this shift"),
                                             value_integer=2)])
    assert (f.rule_id, f.facts["seizure_count"]) == ("neuro-discontinue", 2)


def test_crs_resolved_or_denied_after_an_episode_is_quiet(kb: Knowledge) -> None:
    g3 = tox_observation("g3", at(2026, 3, 8, 10), code=concept(text="CRS grade"), value_integer=3)
    resolved = tox_observation("r", at(2026, 3, 9, 10), code=concept(text="CRS assessment"), value_string="Resolved")
    assert [f.rule_id for f in findings(kb, obs=[g3])] == ["crs-interrupt"]
    assert findings(kb, obs=[g3, resolved]) == []
    severe = tox_observation("s", at(2026, 3, 8, 10), code=concept(text="Severe CRS"))
    no_crs = tox_observation("n", at(2026, 3, 9, 10), code=concept(text="CRS"), value_string="No CRS")
    assert [f.rule_id for f in findings(kb, obs=[severe])] == ["toxicity-grade-unknown"]
    assert findings(kb, obs=[severe, no_crs]) == []


def test_crs_grade_charted_by_two_sources_gives_one_card(kb: Knowledge) -> None:
    from tests.threshold_builders import ICD10CM

    (f,) = findings(kb, obs=[tox_observation("o1", at(2026, 3, 9, 10), code=concept(text="CRS grade"),
                                             value_string="3")],
                    cond=[condition("c1", at(2026, 3, 9, 10, 25),
                                    code=concept({"system": ICD10CM, "code": "D89.833"}))])
    assert (f.rule_id, f.facts["grade"], f.facts["onset"]) == ("crs-interrupt", 3, "2026-03-09 10:00 UTC")


def test_a_diagnosis_charted_after_the_flowsheet_showed_resolution_is_the_same_episode(kb: Knowledge) -> None:
    """Flowsheet CRS grade 3 at 10:00, 'Resolved' at 10:40 after tocilizumab; the physician's D89.833 diagnosis with
    onset 10:50 (entered at noon) is the same CRS, not a new unresolved one. A grade 3 two hours later is new."""
    from tests.threshold_builders import ICD10CM

    rows = [tox_observation("g3", at(2026, 3, 9, 10), code=concept(text="CRS grade"), value_integer=3),
            tox_observation("res", at(2026, 3, 9, 10, 40), code=concept(text="CRS"), value_string="Resolved")]
    dx = condition("dx", at(2026, 3, 9, 10, 50), code=concept({"system": ICD10CM, "code": "D89.833"}))
    assert findings(kb, obs=rows, cond=[dx]) == []
    again = tox_observation("g3b", at(2026, 3, 9, 12, 30), code=concept(text="CRS grade"), value_integer=3)
    assert [f.rule_id for f in findings(kb, obs=[*rows, again], cond=[dx])] == ["crs-interrupt"]
