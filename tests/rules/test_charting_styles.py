"""End to end (timeline → every rule of the service → card files): one child's course charted as Epic-style periods
and Oracle Health-style instants gives the same cards; a correct course is quiet, a late bag over the restart
threshold without a steroid is premed-missing, a cycle started early is treatment-free-interval."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.catalog import build_catalog
from service.knowledge import Knowledge
from service.rules import evaluate
from service.rules.base import Finding
from service.timeline import build_timeline
from tests.builders import blin_order, order_context, steroid_given, view_context
from tests.charting_builders import STYLES, Bag, Style, charted, chicago, not_done
from tests.med_helpers import alarms, ids, one, renderer
from tests.timeline.test_infusion_charting import COURSE, KID

# Dexamethasone 5 mg/m² (5.3 mg at 1.06 m²) 45 min before the cycle start and before the step dose.
PREMEDICATED = [steroid_given("dx1", chicago(3, 1, 9, 15), dose=5.3),
                steroid_given("dx8", chicago(3, 8, 9, 15), dose=5.3)]
STATUS_FACTS = ("cycle", "day", "event", "running", "current_dose_ug_per_day", "next_premed_event", "next_premed_date",
                "interval", "off_days")


def cards(kb: Knowledge, now: dt.datetime, *resources: dict[str, Any],
          drafts: tuple[dict[str, Any], ...] = ()) -> list[Finding]:
    hook = "order-sign" if drafts else "patient-view"
    context = order_context(*drafts) if drafts else view_context()
    timeline = build_timeline(hook=hook, context=context, data={"all": [*KID, *PREMEDICATED, *resources]}, kb=kb,
                              now=now.astimezone(dt.UTC))
    rule_ids = build_catalog(kb)[f"blinatumomab-{hook}"].rule_ids
    findings = list(evaluate(timeline, kb, rule_ids=rule_ids))
    for f in findings:
        renderer().render(f)  # every fact a card needs is there
    return findings


def status(findings: list[Finding]) -> dict[str, Any]:
    facts = one(findings, "therapy-status").facts
    return {k: facts[k] for k in STATUS_FACTS}


@pytest.mark.parametrize(("now", "styles", "cycle", "day", "running"), [
    (chicago(3, 4, 11), STYLES, 1, 4, True),
    (chicago(3, 8, 11), STYLES, 1, 8, True),        # step dose, just after the daylight-saving change
    (chicago(3, 12, 11), STYLES, 1, 12, True),
    (chicago(3, 20, 11), STYLES, 1, 20, True),      # 7-day bag hung
    (chicago(3, 23, 12), STYLES[:3], 1, 23, True),  # inside the 7-day bag (its run time charted)
    (chicago(3, 27, 11), STYLES, 1, 27, True),
    (chicago(3, 30, 12), STYLES[:3], 1, 29, False),  # the cycle completed on day 29 at 10:00
])
def test_a_correct_course_is_quiet_and_the_same_in_every_charting_style(
    kb: Knowledge, now: dt.datetime, styles: tuple[Style, ...], cycle: int, day: int, running: bool,
) -> None:
    by_style = {style: cards(kb, now, *charted(COURSE, style, now=now)) for style in styles}
    for style, findings in by_style.items():
        assert alarms(findings) == [], style
        facts = status(findings)
        assert (facts["cycle"], facts["day"], facts["running"]) == (cycle, day, running), style
        assert facts["current_dose_ug_per_day"] == pytest.approx(15.9 if day >= 8 else 5.3), style
    first = by_style["periods"]
    for style, findings in by_style.items():
        assert ids(findings) == ids(first), style
        assert status(findings) == status(first), style


@pytest.mark.parametrize("now", [chicago(3, 4, 11), chicago(3, 23, 12), chicago(3, 30, 12)])
def test_instants_with_their_orders_give_the_cards_of_periods(kb: Knowledge, now: dt.datetime) -> None:
    """Oracle Health instants with no run time, each fulfilling an order that states its bag volume and rate."""
    instants = cards(kb, now, *charted(COURSE, "instant", now=now, with_orders=True))
    periods = cards(kb, now, *charted(COURSE, "periods", now=now))
    assert alarms(instants) == []
    assert ids(instants) == ids(periods)
    assert status(instants) == status(periods)


@pytest.mark.parametrize("style", STYLES)
def test_a_continuing_order_on_day_9_is_quiet(kb: Knowledge, style: Style) -> None:
    now = chicago(3, 9, 11)
    order = blin_order("o", 15, unit="ug/m2/d", text="15 mcg/m2/day continuous IV")
    assert alarms(cards(kb, now, *charted(COURSE, style, now=now), drafts=(order,))) == []


@pytest.mark.parametrize("style", ["periods", "extension", "volume"])
@pytest.mark.parametrize(("late_minutes", "steroid", "expected"), [
    (239, False, []),                                    # a bag change: no premedication is due
    (240, False, [("premed-missing", "critical")]),      # a restart in cycle 1 started without a steroid
    (240, True, []),                                     # … premedicated 45 min before the late bag
    (6 * 60, True, []),
])
def test_a_late_bag_is_a_restart_only_from_the_threshold(
    kb: Knowledge, style: Style, late_minutes: int, steroid: bool, expected: list[tuple[str, str]],
) -> None:
    late = Bag(COURSE[2].ends + dt.timedelta(minutes=late_minutes), 24, 5.3)
    now = late.hung + dt.timedelta(hours=1)
    extra = [steroid_given("dx-restart", late.hung - dt.timedelta(minutes=45), dose=5.3)] if steroid else []
    findings = cards(kb, now, *charted([*COURSE[:3], late], style, now=now), *extra)
    assert alarms(findings) == expected
    assert status(findings)["event"] == ("cycle-start" if late_minutes < 240 else "restart")


@pytest.mark.parametrize(("reason", "expected"), [
    ("Not Done: Change in Patient Status", [("premed-missing", "critical")]),
    ("Not Done: CRS grade 3, held per oncology", [("premed-missing", "critical")]),
])
def test_a_not_done_row_then_a_bag_hours_later_is_a_restart_in_every_oracle_style(
    kb: Knowledge, reason: str, expected: list[tuple[str, str]],
) -> None:
    """An instant-only chart too: the not-done row ends the bag before it, so the restart is seen."""
    due = COURSE[3].ends
    later = Bag(due + dt.timedelta(hours=6), 24, 5.3)
    now = later.hung + dt.timedelta(hours=1)
    for style in ("extension", "volume", "instant"):
        resources = [*charted([*COURSE[:4], later], style, now=now), not_done("nd", due, reason, ug_per_day=5.3)]
        assert alarms(cards(kb, now, *resources)) == expected, style
        premedicated = steroid_given("dx-restart", later.hung - dt.timedelta(minutes=30), dose=5.3)
        assert alarms(cards(kb, now, *resources, premedicated)) == [], style


@pytest.mark.parametrize("style", ["periods", "extension", "volume"])
@pytest.mark.parametrize(("days_off", "expected"), [(10, [("treatment-free-interval", "warning")]), (14, [])])
def test_cycle_2_started_before_the_treatment_free_interval_is_a_warning(
    kb: Knowledge, style: Style, days_off: int, expected: list[tuple[str, str]],
) -> None:
    """Cycle 1 ended on day 29 at 10:00 (29 March); cycle 2 starts 10 or 14 days later."""
    start = chicago(3, 29, 10) + dt.timedelta(days=days_off)
    now = start + dt.timedelta(hours=1)
    course = [*COURSE, Bag(start, 24, 15.9)]
    findings = cards(kb, now, *charted(course, style, now=now))
    assert alarms(findings) == expected
    facts = status(findings)
    assert (facts["cycle"], facts["day"], facts["event"]) == (2, 1, "cycle-start")
    if expected:
        assert one(findings, "treatment-free-interval").facts["gap_days"] == days_off
