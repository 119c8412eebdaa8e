"""Course rules: cycle-new-required, cycle-limit, treatment-free-interval, and the therapy-status summary.

They read the course positions the timeline derived (``service.timeline.course``): at order hooks the
position of each blinatumomab order in focus, at patient-view the running or just-finished infusion.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from service.knowledge import Knowledge
from service.knowledge.premedication import Requirement
from service.rules.base import Finding
from service.rules.medication import (
    age_group,
    context_facts,
    current_position,
    day,
    focus_targets,
    last_infusion,
    num,
    on_blinatumomab,
    order_facts,
    premed_timing_facts,
    spec_of,
)
from service.rules.medication_phrases import worded
from service.timeline.course import CURRENT, checked_infusions, local_date
from service.timeline.model import BlinOrder, CoursePosition, InfusionPeriod, Timeline


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    targets: list[tuple[BlinOrder | None, CoursePosition]] = list(focus_targets(timeline))
    current = current_position(timeline, kb)
    if current is not None:
        targets.append((None, current))
    for order, position in targets:
        base = {**context_facts(timeline, kb, position), **order_facts(order)}
        about = order.ref if order else None
        if order is not None:
            yield from map(worded, cycle_new_required(position, base, kb, about=about))
        yield from map(worded, cycle_limit(position, base, timeline, kb, about=about))
        yield from map(worded, treatment_free_interval(position, base, timeline, kb, about=about))
    yield from map(worded, therapy_status(timeline, kb))


def cycle_new_required(
    position: CoursePosition, base: dict[str, Any], kb: Knowledge, *, about: str | None
) -> Iterator[Finding]:
    """When the order's text continues a cycle (same cycle number, a later day) after an interruption
    longer than 7 days (168 h; exactly 168 h still continues it),
    Then warning: the label starts a new cycle after such an interruption (full premedication, Day 1 dosing).
    """
    gap = position.interruption.gap if position.interruption else None
    limit = dt.timedelta(hours=kb.regimens.cycle_rules.same_cycle_max_hours)
    if (position.source != "order-text" or gap is None or gap <= limit or position.derived_cycle is None
            or position.cycle >= position.derived_cycle or position.day == 1):
        return
    assert position.interruption is not None
    yield Finding("cycle-new-required", "warning", {
        **base,
        "gap_days": num(gap.total_seconds() / 86400, 1),
        "gap_hours": num(gap.total_seconds() / 3600, 1),
        "stopped_at": day(position.interruption.stopped),
        "interruption_reason": position.interruption.reason,
        "same_cycle_max_days": num(limit.total_seconds() / 86400, 1),
        "cycle_days": kb.regimens.cycle_rules.cycle_days,
    }, about=about)


def cycle_limit(
    position: CoursePosition, base: dict[str, Any], timeline: Timeline, kb: Knowledge, *, about: str | None
) -> Iterator[Finding]:
    """When the cycle number exceeds the regimen's maximum (R/R 9, MRD-positive 4, consolidation 4 [pending
    label confirmation]),
    Then warning.
    """
    spec = spec_of(timeline, kb)
    if position.cycle > spec.max_cycles:
        yield Finding("cycle-limit", "warning", {
            **base,
            "max_cycles": spec.max_cycles,
            "max_cycles_by_regimen": {name: r.max_cycles for name, r in kb.regimens.regimens.items()},
            "phase_cycles": ({name: last - first + 1 for name, (first, last) in spec.phases.ranges().items()}
                             if spec.phases else {}),
        }, about=about)


def treatment_free_interval(
    position: CoursePosition, base: dict[str, Any], timeline: Timeline, kb: Knowledge, *, about: str | None
) -> Iterator[Finding]:
    """When a new cycle starts after a completed cycle before the treatment-free interval has passed
    (14 days; 56 days after continued-therapy cycles 6–8 on R/R), counted in calendar days from the last
    infusion day,
    Then warning.
    """
    end = position.previous_cycle_end
    if (position.event != "cycle-start" or position.cycle < 2 or end is None or position.at is None
            or not position.previous_cycle_complete or position.date_only):
        return
    # The interval follows the cycle before this one as the order numbers it (a longer interval after a
    # continued-therapy cycle must not be missed because earlier cycles were given elsewhere); the card also
    # names the cycle the record shows, so it never speaks of a cycle as if it were on record when it is not.
    previous = position.cycle - 1
    required = spec_of(timeline, kb).tfi_days(previous)
    end_date = local_date(end, position.at)  # each date in its own offset (a daylight-saving change moves none)
    gap_days = (local_date(position.at, end) - end_date).days
    if required is None or gap_days >= required:
        return
    spec = spec_of(timeline, kb)
    yield Finding("treatment-free-interval", "warning", {
        **base,
        "previous_cycle": previous,
        "previous_cycle_on_record": position.previous_cycle,
        "previous_cycle_end": day(end),
        "gap_days": gap_days,
        "required_days": required,
        "earliest_start": (end_date + dt.timedelta(days=required)).isoformat(),
        "cycle_days": kb.regimens.cycle_rules.cycle_days,
        "previous_phase": spec.phases.of(previous) if spec.phases else None,
        "phase_ranges": {name: list(r) for name, r in spec.phases.ranges().items()} if spec.phases else {},
        "continued_therapy_tfi_days": _continued_therapy_tfi_days(kb),
    }, about=about)


def _continued_therapy_tfi_days(kb: Knowledge) -> int | None:
    """The treatment-free interval after a continued-therapy cycle (R/R: 56 days), whatever the regimen.

    The card's source note names it for every regimen; ``None`` when no regimen has continued therapy.
    """
    for spec in kb.regimens.regimens.values():
        if spec.phases is not None and spec.phases.continued_therapy is not None:
            return spec.tfi_days(spec.phases.continued_therapy[0])
    return None


def therapy_status(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    """When patient-view opens a patient with blinatumomab in the last 90 days,
    Then info: regimen (and why), cycle/day, current dose, whether it is running, and the next event that
    needs premedication with its earliest date.
    """
    if timeline.hook != "patient-view" or not on_blinatumomab(timeline, kb):
        return
    position = timeline.positions.get(CURRENT)
    last = last_infusion(timeline)
    requirement = kb.premedication.requirement(timeline.regimen.id, age_group(timeline, kb))
    next_event, next_date = _next_premedication(timeline, kb, position, requirement=requirement, last=last)
    yield Finding("therapy-status", "info", {
        **context_facts(timeline, kb, position),
        **_pause_facts(timeline, kb, position, last),
        **_unchecked_rate_facts(timeline, kb),
        "running": last is not None and last.end is None,
        "current_dose_ug_per_day": num(last.ug_per_day) if last else None,
        "last_infusion_end": day(last.end) if last and last.end else None,
        "next_premed_event": next_event,
        "next_premed_date": next_date,
        "premed_agent": requirement.agent,
        "premed_dose_mg": num(requirement.dose_mg, 1),
        "premed_dose_mg_per_m2": num(requirement.dose_mg_per_m2, 1),
        "premed_max_mg": num(requirement.max_dose_mg, 1),
        **premed_timing_facts(kb),
    })


def _pause_facts(
    timeline: Timeline, kb: Knowledge, position: CoursePosition | None, last: InfusionPeriod | None
) -> dict[str, Any]:
    """Where a stopped course stands: in the treatment-free interval after a completed cycle (its day N of M,
    counted in calendar days from the last infusion day, and the earliest next start), or interrupted mid-cycle."""
    facts: dict[str, Any] = {"interval": None, "off_days": None, "tfi_required_days": None, "tfi_day": None,
                             "next_cycle_earliest": None, "cycle_days": kb.regimens.cycle_rules.cycle_days}
    if position is None or last is None or last.end is None or position.cycle_start is None:
        return facts
    off = (local_date(timeline.now, last.end) - last.end.date()).days
    facts["off_days"] = off
    if position.day < kb.regimens.cycle_rules.cycle_days:
        facts["interval"] = "interruption"
        return facts
    spec = spec_of(timeline, kb)
    required = spec.tfi_days(position.cycle)
    facts.update(interval="treatment-free", tfi_required_days=required, tfi_day=off)
    if required is not None and position.cycle < spec.max_cycles:
        facts["next_cycle_earliest"] = (last.end.date() + dt.timedelta(days=required)).isoformat()
    return facts


def _unchecked_rate_facts(timeline: Timeline, kb: Knowledge) -> dict[str, Any]:
    """The running infusion's rate when the dose rules could not check it (mL/h without a concentration…)."""
    for period in checked_infusions(timeline.infusions, kb=kb, now=timeline.now):
        if period.dose is not None and period.dose.problem is not None:
            return {"unchecked_rate": period.dose.display, "unchecked_problem": period.dose.problem}
        break
    return {"unchecked_rate": None, "unchecked_problem": None}


def _next_premedication(
    timeline: Timeline, kb: Knowledge, position: CoursePosition | None, *, requirement: Requirement,
    last: InfusionPeriod | None,
) -> tuple[str | None, str | None]:
    """The next scheduled event that needs premedication and its earliest date (unplanned restarts excluded)."""
    if position is None or position.cycle_start is None:
        return None, None
    spec = spec_of(timeline, kb)
    running = last is not None and last.end is None
    start_date = position.cycle_start.date()
    today = local_date(timeline.now, last.start if last else position.cycle_start)
    lost_days = (today - start_date).days + 1 - position.day
    offset = lost_days if running else 0
    ae = kb.regimens.ae_restart
    current = last.ug_per_day if last else None
    if running and "re-escalation" in requirement.triggers and position.ae_restart_at is not None and (
        current is not None and current <= ae.ug_per_day and (position.cycle == 1 or not requirement.first_cycle_only)
    ):
        return "re-escalation", (position.ae_restart_at.date() + dt.timedelta(days=ae.escalate_after_days)).isoformat()
    if (running and "step" in requirement.triggers and spec.step_cycle == position.cycle and spec.step_day
            and position.day < spec.step_day and (position.cycle == 1 or not requirement.first_cycle_only)):
        due = start_date + dt.timedelta(days=spec.step_day - 1 + offset)
        return "step", due.isoformat()
    if ("cycle-start" not in requirement.triggers or requirement.first_cycle_only
            or position.cycle >= spec.max_cycles):
        return None, None
    tfi = spec.tfi_days(position.cycle) or 0
    cycle_end = (start_date + dt.timedelta(days=kb.regimens.cycle_rules.cycle_days + offset) if running
                 else (last.end.date() if last and last.end else None))
    if cycle_end is None:
        return None, None
    return "cycle-start", (cycle_end + dt.timedelta(days=tfi)).isoformat()
