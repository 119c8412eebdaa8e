"""restart-premature (clinical-rules.md §6 E20–E22, E29; verification §4)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.timeline.model import InfusionPeriod
from tests.builders import at
from tests.rules.toxicity.support import COURSE, NOW, ids, run
from tests.threshold_builders import (
    draft_order,
    infusion,
    restart_position,
    timeline,
    tox,
)


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
