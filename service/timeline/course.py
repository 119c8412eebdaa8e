"""Where each order, and today's infusion, sits in the course: cycle, day, and what starts there.

FHIR has no element for cycle and day, so they come from the order's text ("Cycle 2 Day 1", "C2D1",
which wins) or from the administration history:

- a gap of ≥ 14 calendar days (or the regimen's treatment-free interval, if shorter) starts a new cycle;
- an interruption longer than 7 days (168 h) starts a new cycle; ≤ 168 h continues it, and the days
  before and after count toward the cycle's 28 ("inclusive of days before and after the interruption");
- after a cycle reached its last day, the next infusion after an interruption starts a new cycle;
- no history at all → cycle 1 day 1 (``source="default"``).

Day 1 is the first infusion date of the cycle (calendar days in each timestamp's own offset, so a daylight-saving
change moves no bag to another day; a ``Z`` time in the chart's latest local offset, if it has one), minus the
whole days the infusion was interrupted. The event at a start is what premedication and dose rules key
on: ``cycle-start``, ``step`` (a dose increase on the regimen's step cycle from its step day, R/R C1D8),
``re-escalation`` (a dose increase ≥ 7 days after an adverse-event restart), ``restart`` (after an interruption
≥ 240 min; 239 min is a bag change), ``continuation``, or ``dose-change``: a rate increase that is no scheduled
step (28 µg/day on C1D3, an escalation 3 days after an adverse-event restart). A dose-change is a dose problem
for the dose rules and never a premedication trigger: a pump error must not be called a step dose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from service.knowledge import Knowledge
from service.knowledge.regimens import RegimenSpec
from service.timeline.model import BlinOrder, CoursePosition, InfusionPeriod, Interruption, ToxicityRecord

Event = Literal["cycle-start", "step", "re-escalation", "restart", "continuation", "dose-change"]
Reason = Literal["overdose", "flush", "adverse-event"]

CURRENT = "current"
"""Key of :attr:`Timeline.positions` for the running (or last) infusion."""


@dataclass(frozen=True)
class Segment:
    """One infusion period with the course position at its start."""

    start: dt.datetime
    end: dt.datetime | None
    ug_per_day: float | None
    cycle: int
    cycle_start: dt.datetime
    lost_days: int
    event: Event
    course_start: dt.datetime
    interruption: Interruption | None = None
    ae_restart_at: dt.datetime | None = None
    previous_cycle_end: dt.datetime | None = None
    previous_cycle_complete: bool = False
    date_only: bool = False
    previous_cycle: int | None = None


def local_date(t: dt.datetime, reference: dt.datetime) -> dt.date:
    """The calendar date of ``t`` where it was charted: in its own offset when it carries a local one (so a
    daylight-saving change, -06:00 → -05:00, moves no bag to another day); a UTC time (``Z``: Oracle Health, or the
    request's ``now``) in ``reference``'s offset when that is a local one."""
    utc = dt.timedelta(0)
    if t.utcoffset() == utc and reference.utcoffset() != utc:
        return t.astimezone(reference.tzinfo).date()
    return t.date()


def day_of(t: dt.datetime, cycle_start: dt.datetime, lost_days: int, *, reference: dt.datetime | None = None) -> int:
    """Cycle day of ``t``: calendar days since the cycle's first infusion date, less whole interrupted days.
    Each date is taken in its own offset (:func:`local_date`); a UTC ``t`` in ``reference``'s (the latest record's)
    offset, else the cycle start's."""
    start = local_date(cycle_start, t)
    return 1 + (local_date(t, reference or cycle_start) - start).days - lost_days


class CourseBuilder:
    """Derives segments from history and positions for orders; one per timeline."""

    def __init__(self, *, spec: RegimenSpec, kb: Knowledge, toxicities: Sequence[ToxicityRecord] = ()) -> None:
        self.spec = spec
        self.rules = kb.regimens.cycle_rules
        self.restart_gap = dt.timedelta(minutes=kb.dosing.interruption.restart_threshold_minutes)
        self.same_cycle_max = dt.timedelta(hours=self.rules.same_cycle_max_hours)
        self.escalation_hold = dt.timedelta(days=kb.regimens.ae_restart.escalate_after_days)
        self.decimals = kb.dosing.limits.fixed_dose_compare_decimals
        self.toxicities = tuple(sorted(toxicities, key=lambda r: r.at))
        policies = kb.toxicity.policies
        self.interrupt_grade = min(policies.crs.interrupt_grade, policies.neuro.interrupt_grade,
                                   policies.other.interrupt_grade)
        """A toxicity at this grade or above, charted during an unexplained stop, was why it stopped."""

    def advance(
        self, prev: Segment | None, start: dt.datetime, dose: float | None, *, date_only: bool = False,
        prev_reason: Reason | None = None,
    ) -> Segment:
        """The segment that starts at ``start`` after ``prev`` (``None``: the first infusion of the course)."""
        if prev is None:
            return Segment(start=start, end=None, ug_per_day=dose, cycle=1, cycle_start=start, lost_days=0,
                           event="cycle-start", course_start=start, date_only=date_only)
        date_only = date_only or prev.date_only
        base = Segment(
            start=start, end=None, ug_per_day=dose, cycle=prev.cycle, cycle_start=prev.cycle_start,
            lost_days=prev.lost_days, event="continuation", course_start=prev.course_start,
            ae_restart_at=prev.ae_restart_at, previous_cycle_end=prev.previous_cycle_end,
            previous_cycle_complete=prev.previous_cycle_complete, date_only=date_only,
            previous_cycle=prev.previous_cycle,
        )
        if prev.end is None or prev.end >= start:
            return replace(base, event=self._dose_event(prev, base, dose))
        gap = start - prev.end
        reason = prev_reason or self._toxicity_reason(prev.start, start)
        interruption = Interruption(stopped=prev.end, restarted=start, gap=gap, reason=reason)
        prev_day = day_of(prev.end, prev.cycle_start, prev.lost_days, reference=prev.start)
        gap_days = (local_date(start, prev.end) - local_date(prev.end, start)).days
        tfi = self.spec.tfi_days(prev.cycle) or self.rules.new_cycle_gap_days
        completed = prev_day >= self.rules.cycle_days
        if (gap_days >= min(self.rules.new_cycle_gap_days, tfi) or gap > self.same_cycle_max
                or (gap >= self.restart_gap and completed)):
            return Segment(
                start=start, end=None, ug_per_day=dose, cycle=prev.cycle + 1, cycle_start=start, lost_days=0,
                event="cycle-start", course_start=prev.course_start, interruption=interruption,
                previous_cycle_end=prev.end, previous_cycle_complete=completed, date_only=date_only,
                previous_cycle=prev.cycle,
                # The label's restart dose after an adverse reaction holds however long the interruption was.
                ae_restart_at=start if reason == "adverse-event" and not completed else None,
            )
        if gap >= self.restart_gap:
            return replace(
                base, event="restart", interruption=interruption, lost_days=prev.lost_days + gap.days,
                ae_restart_at=start if reason == "adverse-event" else prev.ae_restart_at,
            )
        return replace(base, event=self._dose_event(prev, base, dose))

    def _dose_event(self, prev: Segment, seg: Segment, dose: float | None) -> Event:
        """What a dose change without an interruption is.

        An increase is a ``step`` only on the regimen's step cycle from its step day on (R/R C1D8; a late step is
        still the step) and only from the pre-step dose (≤ its cap); a ``re-escalation`` only once the hold after
        an adverse-event restart has passed (7 days); any other increase is a ``dose-change`` (a dose problem,
        never a premedication trigger). No increase: ``continuation``. With a dose unknown on either side the
        calendar decides (the step day is a step).
        """
        before = prev.ug_per_day
        day = day_of(seg.start, seg.cycle_start, seg.lost_days)
        if dose is not None and before is not None:
            if round(dose, self.decimals) <= round(before, self.decimals):
                return "continuation"
            if seg.ae_restart_at is not None:
                return "re-escalation" if seg.start - seg.ae_restart_at >= self.escalation_hold else "dose-change"
            step_day = self.spec.step_day
            if self.spec.step_cycle == seg.cycle and step_day is not None and day >= step_day:
                # The step leaves the pre-step dose (R/R: ≤ 9 µg/day); a second increase after it is no step.
                pre = self.spec.row(seg.cycle, step_day - 1)
                if pre is None or round(before, self.decimals) <= pre.cap_ug_per_day:
                    return "step"
            return "dose-change"
        return "step" if self.spec.is_step(seg.cycle, day) else "continuation"

    def _toxicity_reason(self, since: dt.datetime, until: dt.datetime) -> Reason | None:
        """An interruption with no stated reason, during which a toxicity was recorded, was for that toxicity."""
        for t in self.toxicities:
            if not since <= t.at <= until or t.absent:  # "Seizure activity: Not observed" is no reason
                continue
            if t.kind in ("overdose", "flush"):
                return t.kind
            if t.kind == "seizure" or (t.grade is not None and t.grade >= self.interrupt_grade):
                return "adverse-event"
        return None

    def segments(self, infusions: Iterable[InfusionPeriod]) -> list[Segment]:
        """Every infusion period with its position, oldest first."""
        out: list[Segment] = []
        reason: Reason | None = None
        for p in sorted(infusions, key=lambda i: i.start):
            # A pause charted as its own record at rate 0 (Epic "Paused", rate 0 mL/hr) carries the running dose:
            # resuming at that dose is no increase (never a "step").
            dose = out[-1].ug_per_day if p.ug_per_day == 0 and out else p.ug_per_day
            seg = self.advance(out[-1] if out else None, p.start, dose, date_only=p.date_only,
                               prev_reason=reason)
            out.append(replace(seg, end=p.end))
            reason = p.stop_reason
        return out

    def position_for(
        self, order: BlinOrder, segments: Sequence[Segment], stop_reasons: Mapping[dt.datetime, Reason | None], *,
        now: dt.datetime,
    ) -> CoursePosition:
        """The position of an order starting at its start time (``now`` when it gives none)."""
        at = order.start or now
        before = [s for s in segments if s.start < at]
        prev = before[-1] if before else None
        seg = self.advance(prev, at, order.dose.ug_per_day, date_only=order.start_date_only,
                           prev_reason=stop_reasons.get(prev.start) if prev else None)
        day = day_of(at, seg.cycle_start, seg.lost_days, reference=prev.start if prev else None)
        position = _position(seg, day=day, at=at, source="history" if prev else "default")
        if order.explicit_cycle is None or order.explicit_day is None:
            return position
        if prev is None:
            # Nothing on record to derive from: the text is all there is (no "history suggests cycle 1"). Its day 1
            # is a cycle start, its step day the step (earlier days may have been given elsewhere).
            cycle, day = order.explicit_cycle, order.explicit_day
            first: Event = ("cycle-start" if day == 1 else "step" if self.spec.is_step(cycle, day)
                            else "continuation")
            return replace(position, cycle=cycle, day=day, source="order-text", event=first, previous_cycle=None)
        cycle, day = order.explicit_cycle, order.explicit_day
        event: Event = seg.event
        if day == 1:
            event = "cycle-start"
        elif self.spec.is_step(cycle, day) and seg.event in ("continuation", "step"):
            event = "step"
        elif seg.event == "cycle-start":
            event = "restart" if seg.interruption is not None else "continuation"
        prev_end, complete = seg.previous_cycle_end, seg.previous_cycle_complete
        previous_cycle = seg.previous_cycle
        if day == 1 and seg.event != "cycle-start" and prev.end is not None and prev.end < at:
            prev_end = prev.end
            complete = day_of(prev.end, prev.cycle_start, prev.lost_days, reference=prev.start) >= self.rules.cycle_days
            previous_cycle = prev.cycle
        return replace(
            position, cycle=cycle, day=day, source="order-text", event=event, derived_cycle=seg.cycle,
            derived_day=position.day, previous_cycle_end=prev_end, previous_cycle_complete=complete,
            previous_cycle=previous_cycle,
        )

    def current(self, segments: Sequence[Segment], *, now: dt.datetime) -> CoursePosition | None:
        """The running (or last) infusion: today's cycle/day, and the latest event that started something."""
        past = [s for s in segments if s.start <= now]
        if not past:
            return None
        last = past[-1]
        trigger = last
        for s in reversed(past):
            if s.cycle != last.cycle:
                break
            trigger = s
            if s.event not in ("continuation", "dose-change"):
                break
        day = day_of(now if last.end is None else last.end, last.cycle_start, last.lost_days, reference=last.start)
        position = _position(trigger, day=day, at=trigger.start, source="history")
        return replace(position, cycle=last.cycle, ae_restart_at=last.ae_restart_at,
                       date_only=trigger.date_only or last.date_only)


def _position(seg: Segment, *, day: int, at: dt.datetime, source: Literal["history", "default"]) -> CoursePosition:
    return CoursePosition(
        cycle=seg.cycle,
        day=day,
        source=source,
        event=seg.event,
        at=at,
        course_start=seg.course_start,
        cycle_start=seg.cycle_start,
        interruption=seg.interruption if seg.event in ("restart", "cycle-start") else None,
        previous_cycle_end=seg.previous_cycle_end,
        previous_cycle_complete=seg.previous_cycle_complete,
        ae_restart_at=seg.ae_restart_at,
        date_only=seg.date_only,
        previous_cycle=seg.previous_cycle,
    )


def build_positions(
    orders: Sequence[BlinOrder],
    infusions: Sequence[InfusionPeriod],
    *,
    spec: RegimenSpec,
    kb: Knowledge,
    toxicities: Sequence[ToxicityRecord],
    now: dt.datetime,
) -> dict[str, CoursePosition]:
    """Positions of every in-focus order (by ``ref``), of the running/last infusion (``"current"``), and of
    each administration the dose rules check (:func:`checked_infusions`, by its ``ref``): the position at its
    start, i.e. the cycle and day the bag was hung or the rate changed (a bag is judged by the dose due then)."""
    builder = CourseBuilder(spec=spec, kb=kb, toxicities=toxicities)
    ordered = sorted(infusions, key=lambda i: i.start)
    segments = builder.segments(ordered)
    stop_reasons = {p.start: p.stop_reason for p in infusions}
    positions: dict[str, CoursePosition] = {}
    for order in orders:
        if order.in_focus:
            positions[order.ref] = builder.position_for(order, segments, stop_reasons, now=now)
    current = builder.current(segments, now=now)
    if current is not None:
        positions[CURRENT] = current
    checked = {p.ref for p in checked_infusions(ordered, kb=kb, now=now)}
    for period, seg in zip(ordered, segments, strict=True):
        if period.ref in checked:
            positions[period.ref] = _position(seg, day=day_of(seg.start, seg.cycle_start, seg.lost_days),
                                              at=seg.start, source="history")
    return positions


def checked_infusions(
    infusions: Sequence[InfusionPeriod], *, kb: Knowledge, now: dt.datetime
) -> list[InfusionPeriod]:
    """The blinatumomab administrations the dose rules check, newest first: the one in progress and any stopped
    within ``dosing.toml [running_infusion] recent_stop_hours`` (24 h) of ``now``."""
    since = now - dt.timedelta(hours=kb.dosing.running_infusion.recent_stop_hours)
    return sorted((p for p in infusions if p.start <= now and (p.end is None or p.end >= since)),
                  key=lambda p: p.start, reverse=True)
