"""Infusion periods from every charting style: periods, instants with infuse-over-time, volume ÷ rate, instants
ended by the next record; not-done rows, statuses, bag changes, late bags and a daylight-saving change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.timeline.course import CURRENT
from service.timeline.model import Timeline
from tests.builders import at, height, medication_administration, patient, quantity, steroid_given, weight
from tests.charting_builders import STYLES, Bag, Style, bag_record, charted, chicago, not_done
from tests.med_helpers import make_timeline

KID = [patient(birth_date="2016-01-01"), weight("w", 30, chicago(2, 27, 9)), height("h", 135, chicago(2, 27, 9))]
# A child's R/R cycle 1 (30 kg, 135 cm: 5.3 then 15.9 µg/day), bags changed at about 10:00 local time, the
# daylight-saving change (-06:00 → -05:00) on day 8, the step dose on day 8, then 48 h, 96 h and 7-day bags.
COURSE = [
    Bag(chicago(3, 1, 10), 24, 5.3), Bag(chicago(3, 2, 10, 10), 24, 5.3), Bag(chicago(3, 3, 9, 55), 24, 5.3),
    Bag(chicago(3, 4, 10, 5), 24, 5.3), Bag(chicago(3, 5, 10), 24, 5.3), Bag(chicago(3, 6, 10, 20), 24, 5.3),
    Bag(chicago(3, 7, 10), 24, 5.3),
    Bag(chicago(3, 8, 10), 48, 15.9), Bag(chicago(3, 10, 10, 5), 48, 15.9), Bag(chicago(3, 12, 9, 50), 96, 15.9),
    Bag(chicago(3, 16, 10), 96, 15.9), Bag(chicago(3, 20, 10), 168, 15.9), Bag(chicago(3, 27, 10), 48, 15.9),
]


def timeline(kb: Knowledge, now: dt.datetime, *resources: dict[str, Any]) -> Timeline:
    return make_timeline(kb, now=now.astimezone(dt.UTC), hook="patient-view", resources=[*KID, *resources])


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("now", "day", "event"), [
    (chicago(3, 4, 11), 4, "cycle-start"),    # "day 4", not "day 2" after three bag changes
    (chicago(3, 8, 11), 8, "step"),           # the step bag, hung after the clocks changed
    (chicago(3, 10, 11), 10, "step"),         # a 48 h bag changed 5 minutes late
    (chicago(3, 12, 11), 12, "step"),         # 96 h bag hung 10 minutes early
    (chicago(3, 20, 11), 20, "step"),         # 7-day bag
    (chicago(3, 27, 11), 27, "step"),
])
def test_cycle_day_and_running_bag_are_the_same_in_every_style(
    kb: Knowledge, style: Style, now: dt.datetime, day: int, event: str,
) -> None:
    t = timeline(kb, now, *charted(COURSE, style, now=now))
    p = t.positions[CURRENT]
    assert (p.cycle, p.day, p.event, p.interruption) == (1, day, event, None)
    assert t.infusions[-1].end is None  # the bag hung an hour ago is running
    assert t.infusions[-1].ug_per_day == pytest.approx(15.9 if day >= 8 else 5.3)


@pytest.mark.parametrize("style", ["periods", "extension", "volume"])
@pytest.mark.parametrize(("now", "day", "running"), [
    (chicago(3, 9, 16), 9, True),        # 30 h into a 48 h bag
    (chicago(3, 14, 17, 30), 14, True),  # 3 days into a 96 h bag
    (chicago(3, 25, 12), 25, True),      # day 6 of a 7-day bag
    (chicago(3, 30, 12), 29, False),     # the cycle ended on day 29 at 10:00 (28 days of infusion)
])
def test_bags_with_a_known_run_time_are_running_until_they_end(
    kb: Knowledge, style: Style, now: dt.datetime, day: int, running: bool,
) -> None:
    t = timeline(kb, now, *charted(COURSE, style, now=now))
    p = t.positions[CURRENT]
    assert (p.cycle, p.day) == (1, day)
    assert (t.infusions[-1].end is None) is running
    if not running:
        assert t.infusions[-1].end == chicago(3, 29, 10)


@pytest.mark.parametrize("style", ["periods", "extension", "volume"])
@pytest.mark.parametrize(("late", "event"), [(dt.timedelta(minutes=239), "cycle-start"),
                                             (dt.timedelta(minutes=240), "restart")])
def test_a_bag_hung_late_is_an_interruption_only_from_the_restart_threshold(
    kb: Knowledge, style: Style, late: dt.timedelta, event: str,
) -> None:
    """Bag 3 ran out at 09:55 on day 4; bag 4 was hung 3 h 59 min later (a bag change) or 4 h later (a restart)."""
    bags = [*COURSE[:3], Bag(COURSE[2].ends + late, 24, 5.3)]
    now = COURSE[2].ends + late + dt.timedelta(hours=1)
    t = timeline(kb, now, *charted(bags, style, now=now))
    p = t.positions[CURRENT]
    assert (p.cycle, p.day, p.event) == (1, 4, event)
    if event == "restart":
        assert p.interruption is not None and p.interruption.gap == late
        assert p.interruption.stopped == COURSE[2].ends and p.at == bags[-1].hung
    else:
        assert p.interruption is None


@pytest.mark.parametrize(("reason", "hung_after", "event", "why"), [
    ("Not Done: Change in Patient Status", dt.timedelta(hours=2), "cycle-start", None),
    ("Not Done: Change in Patient Status", dt.timedelta(hours=6), "restart", None),
    ("Not Done: CRS grade 3, held per oncology", dt.timedelta(hours=6), "restart", "adverse-event"),
])
def test_a_not_done_row_is_a_pause_with_its_reason(
    kb: Knowledge, reason: str, hung_after: dt.timedelta, event: str, why: str | None,
) -> None:
    """Oracle Health: the "Infuse" task at the bag change is charted not done; the next bag is hung later."""
    due = COURSE[3].ends
    bags = [*COURSE[:4], Bag(due + hung_after, 24, 5.3)]
    now = due + hung_after + dt.timedelta(hours=1)
    for style in ("extension", "volume", "instant"):
        t = timeline(kb, now, *charted(bags, style, now=now), not_done("nd", due, reason, ug_per_day=5.3))
        p = t.positions[CURRENT]
        assert (p.cycle, p.day, p.event) == (1, 5, event), style
        assert t.infusions[3].end == due, style
        assert p.interruption is None if event != "restart" else (
            p.interruption is not None and (p.interruption.gap, p.interruption.reason) == (hung_after, why)), style


def test_an_instant_runs_until_the_next_record_and_a_not_done_row_ends_it(kb: Knowledge) -> None:
    """Instants with no run time: a bag runs until the next bag; a not-done row at the bag change ends it there."""
    bags = [*COURSE[:4], Bag(COURSE[3].ends + dt.timedelta(hours=6), 24, 5.3)]
    now = bags[-1].hung + dt.timedelta(hours=1)
    t = timeline(kb, now, *charted(bags, "instant", now=now))
    assert [p.end for p in t.infusions[:4]] == [b.hung for b in bags[1:]]
    assert t.positions[CURRENT].event == "cycle-start"
    t = timeline(kb, now, *charted(bags, "instant", now=now),
                 not_done("nd", COURSE[3].ends, "Not Done: Patient off unit", ug_per_day=5.3))
    assert t.infusions[3].end == COURSE[3].ends and t.positions[CURRENT].event == "restart"


def test_the_last_instant_with_no_run_time_runs_for_the_knowledge_bag_length(kb: Knowledge) -> None:
    """Nothing after it and no run time charted: ``[running_infusion] unended_bag_hours`` (the shortest bag)."""
    hours = kb.dosing.running_infusion.unended_bag_hours
    bags = COURSE[:3]
    running = timeline(kb, bags[-1].hung + dt.timedelta(hours=hours - 1), *charted(bags, "instant", now=bags[-1].hung))
    assert running.infusions[-1].end is None
    ended = timeline(kb, bags[-1].hung + dt.timedelta(hours=hours + 1), *charted(bags, "instant", now=bags[-1].hung))
    assert ended.infusions[-1].end == bags[-1].hung + dt.timedelta(hours=hours)


def test_an_instant_followed_only_after_the_longest_bag_is_no_week_long_bag(kb: Knowledge) -> None:
    """A next record more than 7 days later ([bags] longest) does not stretch the bag: the gap is a new cycle."""
    first, late = COURSE[0], Bag(COURSE[0].hung + dt.timedelta(days=10), 24, 5.3)
    t = timeline(kb, late.hung + dt.timedelta(hours=1), *charted([first, late], "instant", now=late.hung))
    assert t.infusions[0].end == first.hung + dt.timedelta(hours=kb.dosing.running_infusion.unended_bag_hours)
    assert (t.positions[CURRENT].cycle, t.positions[CURRENT].event) == (2, "cycle-start")


def test_entered_in_error_bag_next_to_its_corrected_twin_is_ignored(kb: Knowledge) -> None:
    now = chicago(3, 4, 11)
    wrong = bag_record("err", Bag(chicago(3, 2, 22), 24, 5.3), "extension", now=now)
    wrong["status"] = "entered-in-error"
    t = timeline(kb, now, *charted(COURSE, "extension", now=now), wrong)
    assert "MedicationAdministration/err" not in {p.ref for p in t.infusions}
    assert (t.positions[CURRENT].day, t.positions[CURRENT].event) == (4, "cycle-start")


def test_epic_pause_on_hold_then_restart_in_progress(kb: Knowledge) -> None:
    """Epic actions: New Bag (in-progress, open), Paused (on-hold, rate 0, reason), Restarted (in-progress)."""
    hung, paused, restarted = chicago(3, 1, 10), chicago(3, 3, 2, 10), chicago(3, 3, 8, 40)
    rate = quantity(10, "mL/hr", code="mL/h")
    bag = medication_administration("b1", start=hung, status="in-progress", rate=rate)
    hold = medication_administration("b2", start=paused, status="on-hold", rate=quantity(0, "mL/hr", code="mL/h"),
                                     status_reason="Paused - CRS grade 3 per oncology")
    again = medication_administration("b3", start=restarted, status="in-progress", rate=rate)
    for ma in (bag, again):
        ma["dosage"]["text"] = "blinatumomab (BLINCYTO) 5.3 mcg/24 hr at 10 mL/hr"
    t = timeline(kb, chicago(3, 3, 10), bag, hold, again)
    assert [(p.ref, p.end) for p in t.infusions] == [
        ("MedicationAdministration/b1", paused), ("MedicationAdministration/b2", paused),
        ("MedicationAdministration/b3", None)]
    p = t.positions[CURRENT]
    assert p.event == "restart" and p.interruption is not None
    assert (p.interruption.gap, p.interruption.reason) == (restarted - paused, "adverse-event")


def test_completed_open_period_is_read_like_an_instant(kb: Knowledge) -> None:
    """A completed bag charted with only its start (Epic "Given") runs until the next bag, never a point."""
    rate = quantity(5.3, "ug/d")
    first = medication_administration("g1", start=chicago(3, 1, 10), status="completed", rate=rate)
    second = medication_administration("g2", start=chicago(3, 2, 10, 30), status="completed", rate=rate)
    t = timeline(kb, chicago(3, 2, 12), first, second)
    assert t.infusions[0].end == chicago(3, 2, 10, 30)
    assert (t.positions[CURRENT].day, t.positions[CURRENT].event) == (2, "cycle-start")


@pytest.mark.parametrize(("dose", "rate", "hours"), [
    (quantity(240, "mL"), quantity(10, "mL/h"), 24),
    (quantity(0.24, "L"), quantity(10, "mL/hr", code="mL/h"), 24),
    (quantity(100.8, "mL"), quantity(0.6, "mL/h"), 168),
    (quantity(28, "ug"), quantity(10, "mL/h"), None),    # a drug amount: no volume to run down
    (quantity(240, "mL"), quantity(28, "ug/d"), None),   # a dose rate: no pump rate
])
def test_run_time_from_volume_over_rate(kb: Knowledge, dose: dict[str, Any], rate: dict[str, Any],
                                        hours: int | None) -> None:
    hung = at(2026, 3, 1, 16)
    ma = medication_administration("v", effective=hung, dose=dose, rate=rate)
    t = make_timeline(kb, now=at(2026, 3, 20), hook="patient-view", resources=[ma])
    expected = hung + dt.timedelta(hours=hours or kb.dosing.running_infusion.unended_bag_hours)
    assert t.infusions[0].end == expected


def test_late_evening_is_the_local_day_of_a_chart_in_local_offsets(kb: Knowledge) -> None:
    """23:30 on day 14 is already 15 March in UTC: a chart that sends local offsets keeps its own day. (A chart
    that sends only ``Z``, as Oracle Health does, counts days in UTC: no local offset is known.)"""
    now = chicago(3, 14, 23, 30)
    assert timeline(kb, now, *charted(COURSE, "periods", now=now)).positions[CURRENT].day == 14


def test_a_bag_changed_after_midnight_keeps_its_local_day_across_the_daylight_saving_change(kb: Knowledge) -> None:
    """00:30 CDT on 9 March is 23:30 CST on 8 March: the bag is on day 9 as charted, not day 8."""
    bags = [Bag(chicago(3, 1, 0, 30), 24, 5.3), *(Bag(chicago(3, d, 0, 30), 24, 5.3) for d in range(2, 8)),
            Bag(chicago(3, 8, 0, 30), 24, 15.9), Bag(chicago(3, 9, 0, 30), 24, 15.9)]
    steroids = [steroid_given("dx1", chicago(3, 1, 0), dose=5.3), steroid_given("dx8", chicago(3, 8, 0), dose=5.3)]
    t = timeline(kb, chicago(3, 9, 0, 45), *charted(bags, "periods", now=chicago(3, 9, 0, 45)), *steroids)
    assert t.positions[CURRENT].day == 9
    assert t.positions["MedicationAdministration/bag9"].day == 9
    assert t.positions["MedicationAdministration/bag9"].at == chicago(3, 9, 0, 30)


@pytest.mark.parametrize(("now", "day", "end"), [
    (chicago(3, 23, 12), 23, None),                      # inside the 7-day bag its order names
    (chicago(3, 30, 12), 29, chicago(3, 29, 10)),        # the last 48 h bag (240 mL at 5 mL/h) ended on day 29
])
def test_an_instant_runs_for_the_bag_length_of_the_order_it_fulfils(
    kb: Knowledge, now: dt.datetime, day: int, end: dt.datetime | None,
) -> None:
    t = timeline(kb, now, *charted(COURSE, "instant", now=now, with_orders=True))
    assert (t.positions[CURRENT].cycle, t.positions[CURRENT].day) == (1, day)
    assert t.infusions[-1].end == end


def test_an_instant_with_its_orders_bag_length_shows_a_late_bag_as_a_restart(kb: Knowledge) -> None:
    late = Bag(COURSE[2].ends + dt.timedelta(hours=5), 24, 5.3)
    now = late.hung + dt.timedelta(hours=1)
    t = timeline(kb, now, *charted([*COURSE[:3], late], "instant", now=now, with_orders=True))
    p = t.positions[CURRENT]
    assert p.event == "restart" and p.interruption is not None and p.interruption.gap == dt.timedelta(hours=5)
    # without the orders nothing says how long a bag runs: the bag runs on until the next one
    t = timeline(kb, now, *charted([*COURSE[:3], late], "instant", now=now))
    assert t.positions[CURRENT].event == "cycle-start"


@pytest.mark.parametrize("reference", [
    "MedicationRequest/{id}", "https://fhir.example.org/r4/MedicationRequest/{id}",
    "MedicationRequest/{id}/_history/2", "MedicationRequest/other"])
def test_the_order_is_found_by_a_relative_absolute_or_versioned_request(kb: Knowledge, reference: str) -> None:
    bag = COURSE[7]  # 48 h: the order's length (240 mL at 5 mL/h), not the 24 h of a bag with no length
    now = bag.hung + dt.timedelta(hours=50)
    record, order = charted([bag], "instant", now=now, with_orders=True)
    record["request"] = {"reference": reference.format(id=order["id"])}
    (period,) = timeline(kb, now, record, order).infusions
    unended = dt.timedelta(hours=kb.dosing.running_infusion.unended_bag_hours)
    assert period.end == (bag.hung + unended if reference.endswith("/other") else bag.ends)
