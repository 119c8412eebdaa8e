"""Course position: cycle, day and event from order text or administration history."""

from __future__ import annotations

import datetime as dt

import pytest

from service.knowledge import Knowledge
from service.timeline.course import CURRENT
from service.timeline.model import CoursePosition
from tests.builders import at, blin_infusion, blin_order, medication_administration, quantity
from tests.med_helpers import make_timeline

C1 = at(2026, 3, 1, 10)


def position(kb: Knowledge, order: dict, *history: dict, now: dt.datetime) -> CoursePosition:
    timeline = make_timeline(kb, now=now, drafts=[order], resources=history)
    return timeline.positions[f"MedicationRequest/{order['id']}"]


def test_no_history_is_cycle_1_day_1_by_default(kb: Knowledge) -> None:
    p = position(kb, blin_order("o", 9), now=C1)
    assert (p.cycle, p.day, p.source, p.event) == (1, 1, "default", "cycle-start")


def test_day_8_step_is_derived_from_the_first_infusion_date(kb: Knowledge) -> None:
    history = [blin_infusion("a", C1, at(2026, 3, 3, 10), ug_per_day=9),
               blin_infusion("b", at(2026, 3, 3, 10, 5), None, ug_per_day=9)]
    p = position(kb, blin_order("o", 28), *history, now=at(2026, 3, 8, 8))
    assert (p.cycle, p.day, p.source, p.event) == (1, 8, "history", "step")
    assert p.cycle_start == C1


def test_bag_change_under_4h_continues_4h_is_a_restart(kb: Knowledge) -> None:
    stop = at(2026, 3, 5, 10)
    history = [blin_infusion("a", C1, stop, ug_per_day=28)]
    p = position(kb, blin_order("o", 28, start=stop + dt.timedelta(minutes=239)), *history, now=at(2026, 3, 6))
    assert p.event == "continuation" and p.interruption is None
    p = position(kb, blin_order("o", 28, start=stop + dt.timedelta(minutes=240)), *history, now=at(2026, 3, 6))
    assert p.event == "restart"
    assert p.interruption is not None and p.interruption.gap == dt.timedelta(minutes=240)


def test_interruption_of_exactly_7_days_continues_the_cycle_and_days_count(kb: Knowledge) -> None:
    stop = at(2026, 3, 6, 10)  # day 6
    history = [blin_infusion("a", C1, stop, ug_per_day=28, status="stopped", status_reason="CRS grade 3")]
    p = position(kb, blin_order("o", 9, start=stop + dt.timedelta(days=7)), *history, now=at(2026, 3, 14))
    assert (p.cycle, p.day, p.event) == (1, 6, "restart")
    assert p.interruption is not None and p.interruption.reason == "adverse-event"
    assert p.ae_restart_at == stop + dt.timedelta(days=7)


def test_interruption_of_7_days_and_1_minute_starts_a_new_cycle(kb: Knowledge) -> None:
    stop = at(2026, 3, 6, 10)
    history = [blin_infusion("a", C1, stop, ug_per_day=28, status="stopped", status_reason="CRS grade 3")]
    p = position(kb, blin_order("o", 9, start=stop + dt.timedelta(days=7, minutes=1)), *history, now=at(2026, 3, 14))
    assert (p.cycle, p.day, p.event) == (2, 1, "cycle-start")
    assert not p.previous_cycle_complete


def test_a_14_day_gap_after_a_full_cycle_starts_the_next_cycle(kb: Knowledge) -> None:
    end = at(2026, 3, 29, 10)
    history = [blin_infusion("a", C1, at(2026, 3, 8, 10), ug_per_day=9),
               blin_infusion("b", at(2026, 3, 8, 10), end, ug_per_day=28)]
    p = position(kb, blin_order("o", 28, start=at(2026, 4, 12, 9)), *history, now=at(2026, 4, 12, 8))
    assert (p.cycle, p.day, p.event) == (2, 1, "cycle-start")
    assert p.previous_cycle_end == end and p.previous_cycle_complete


def test_explicit_text_wins_and_the_derived_position_is_kept(kb: Knowledge) -> None:
    history = [blin_infusion("a", C1, at(2026, 3, 20, 10), ug_per_day=28)]
    p = position(kb, blin_order("o", 28, text="Cycle 3 Day 1"), *history, now=at(2026, 3, 21, 10))
    assert (p.cycle, p.day, p.source, p.event) == (3, 1, "order-text", "cycle-start")
    assert (p.derived_cycle, p.derived_day) == (1, 20)  # the 24 h interruption does not count as a day


@pytest.mark.parametrize(("now", "event"), [
    (at(2026, 3, 19, 10), "re-escalation"),   # 7 days after the restart at 9 µg/day: the scheduled escalation
    (at(2026, 3, 15, 10), "dose-change"),     # 3 days after: a dose problem, never a premedication trigger
])
def test_dose_increase_after_an_adverse_event_restart_is_a_re_escalation_only_after_7_days(
    kb: Knowledge, now: dt.datetime, event: str,
) -> None:
    history = [
        blin_infusion("a", C1, at(2026, 3, 10, 10), ug_per_day=28, status="stopped", status_reason="adverse event"),
        blin_infusion("b", at(2026, 3, 12, 10), None, ug_per_day=9),
    ]
    p = position(kb, blin_order("o", 28), *history, now=now)
    assert p.event == event
    assert p.ae_restart_at == at(2026, 3, 12, 10)


@pytest.mark.parametrize(("day", "event"), [(3, "dose-change"), (8, "step"), (10, "step")])
def test_a_rate_increase_in_cycle_1_is_a_step_only_from_day_8(kb: Knowledge, day: int, event: str) -> None:
    """28 µg/day on C1D3 is a pump or order error, not a step dose; a late step (day 10) is still the step."""
    change = C1 + dt.timedelta(days=day - 1)
    history = [blin_infusion("a", C1, change, ug_per_day=9), blin_infusion("b", change, None, ug_per_day=28)]
    timeline = make_timeline(kb, now=change + dt.timedelta(hours=2), hook="patient-view", resources=history)
    assert timeline.positions["MedicationAdministration/b"].event == event
    assert timeline.positions["MedicationAdministration/b"].day == day
    assert timeline.positions[CURRENT].event == ("cycle-start" if event == "dose-change" else "step")


@pytest.mark.parametrize(("text", "event"), [("Cycle 2 Day 1", "cycle-start"), ("Cycle 1 Day 8", "step"),
                                            ("Cycle 1 Day 12", "continuation")])
def test_text_without_history_is_not_compared_with_a_default(kb: Knowledge, text: str, event: str) -> None:
    p = position(kb, blin_order("o", 28, text=text), now=at(2026, 3, 21, 10))
    assert (p.source, p.event) == ("order-text", event)
    assert (p.derived_cycle, p.derived_day, p.previous_cycle) == (None, None, None)


def test_current_position_reports_the_event_that_started_the_run(kb: Knowledge) -> None:
    c2 = at(2026, 4, 12, 10)
    history = [blin_infusion("a", C1, at(2026, 3, 29, 10), ug_per_day=28),
               blin_infusion("b", c2, at(2026, 4, 14, 10), ug_per_day=28),
               blin_infusion("c", at(2026, 4, 14, 10, 30), None, ug_per_day=28)]
    timeline = make_timeline(kb, now=at(2026, 4, 15, 12), hook="patient-view", resources=history)
    p = timeline.positions[CURRENT]
    assert (p.cycle, p.day, p.event, p.at) == (2, 4, "cycle-start", c2)


def test_date_only_history_marks_the_position(kb: Knowledge) -> None:
    history = [medication_administration("a", effective="2026-03-01", status="completed", rate=quantity(9, "ug/d"))]
    p = position(kb, blin_order("o", 9), *history, now=at(2026, 3, 3, 10))
    assert p.date_only


def test_a_stop_is_read_as_for_an_adverse_event_at_the_knowledge_interrupt_grade(kb: Knowledge) -> None:
    """The grade that makes an unexplained stop an adverse-event interruption comes from toxicity.toml (the
    lowest interrupt grade of its policies), never from a number in the code."""
    import dataclasses

    from service.timeline.course import CourseBuilder
    from tests.threshold_builders import infusion, tox

    periods = [infusion("a", C1, at(2026, 3, 10, 10), 28), infusion("b", at(2026, 3, 10, 16), None, 9)]
    spec = kb.regimens.regimens["relapsed-refractory"]

    def reason(knowledge: Knowledge, grade: int) -> str | None:
        builder = CourseBuilder(spec=spec, kb=knowledge, toxicities=[tox("other", grade, at(2026, 3, 10, 12))])
        interruption = builder.segments(periods)[-1].interruption
        assert interruption is not None
        return interruption.reason

    assert (reason(kb, 2), reason(kb, 3)) == (None, "adverse-event")
    policies = kb.toxicity.policies
    lowered = policies.model_copy(update={"other": policies.other.model_copy(update={"interrupt_grade": 2})})
    site = dataclasses.replace(kb, toxicity=kb.toxicity.model_copy(update={"policies": lowered}))
    assert reason(site, 2) == "adverse-event"


def test_a_bsa_dose_raised_after_the_step_is_no_second_step(kb: Knowledge) -> None:
    """Found by the property tests: an 8 kg child (BSA 0.42 m²) steps from 2.1 to 6.24 µg/day on day 8; on day 15
    the bag is recalculated for a heavier weight (6.45 µg/day). Every one of those doses is under the 9 µg/day
    pre-step cap, and the later increase was read as a second step needing premedication (a false critical)."""
    week = dt.timedelta(days=7)
    history = [blin_infusion("a", C1, C1 + week, ug_per_day=2.1),
               blin_infusion("b", C1 + week, C1 + 2 * week, ug_per_day=6.24),
               blin_infusion("c", C1 + 2 * week, None, ug_per_day=6.45)]
    timeline = make_timeline(kb, now=C1 + 2 * week + dt.timedelta(days=1), hook="patient-view", resources=history)
    assert timeline.positions["MedicationAdministration/b"].event == "step"
    assert timeline.positions["MedicationAdministration/c"].event == "dose-change"
    assert timeline.positions[CURRENT].event == "step" and timeline.positions[CURRENT].at == C1 + week
    # an order raising it again later is no step either
    p = position(kb, blin_order("o", 6.6, start=C1 + 2 * week + dt.timedelta(days=2)), *history,
                 now=C1 + 2 * week + dt.timedelta(days=1))
    assert p.event == "dose-change"
