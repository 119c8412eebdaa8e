"""Shared reasoning of the medication-side rules: context facts, the expected dose, age group, recency.

Every medication card shows the same context (regimen and why it was assumed, cycle/day and where it
came from, weight band, BSA and method, age group, the sources' confidence), so the facts come from
one place and every finding carries every key (card templates use StrictUndefined).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from service.knowledge import Knowledge
from service.knowledge.premedication import AgeGroup
from service.knowledge.regimens import RegimenSpec
from service.rules import phrases
from service.timeline.course import CURRENT, checked_infusions
from service.timeline.model import BlinOrder, CoursePosition, DailyDose, InfusionPeriod, Timeline

Band = Literal["fixed", "bsa"]
WEIGHT_PROBLEMS = {
    "missing": "weight-missing",
    "unit-missing": "weight-unit-missing",
    "unit-not-convertible": "weight-unit-not-convertible",
    "straddles-45kg": "weight-straddles-band",
}
"""``BodySize.weight_problem`` values that leave the band unknown → the dose-unverifiable card's problem code."""


def num(value: float | None, digits: int = 2) -> float | int | None:
    """A number for display: integral values as ints (``9`` not ``9.0``), others rounded."""
    if value is None:
        return None
    rounded = round(value, digits)
    return int(rounded) if float(rounded).is_integer() else rounded


def when(value: dt.datetime | None) -> str | None:
    """A time as every card prints it (``phrases.clock``: ``2026-03-05 14:20 UTC+01:00``)."""
    return phrases.clock(value)


def day(value: dt.datetime | None) -> str | None:
    """A date as every card prints it (``2026-03-05``)."""
    return phrases.date(value)


def spec_of(timeline: Timeline, kb: Knowledge) -> RegimenSpec:
    return kb.regimens.regimens[timeline.regimen.id]


def weight_band(timeline: Timeline, kb: Knowledge) -> Band | None:
    """``fixed`` (≥ 45 kg) or ``bsa`` (< 45 kg); ``None`` when the weight is missing, stale or ambiguous."""
    body = timeline.body
    if body.weight_kg is None or body.weight_stale or body.weight_problem in WEIGHT_PROBLEMS:
        return None
    return "fixed" if body.weight_kg >= kb.dosing.weight_band.threshold_kg else "bsa"


def age_group(timeline: Timeline, kb: Knowledge) -> AgeGroup:
    """``pediatric`` below the configured age; ``adult`` otherwise, including when the age is unknown."""
    age = timeline.body.age_years
    return "pediatric" if age is not None and age < kb.premedication.age.pediatric_below_years else "adult"


@dataclass(frozen=True)
class Expected:
    """The dose the regimen expects at a position."""

    ug_per_day: float
    ug_per_m2_per_day: float
    cap_ug_per_day: float
    basis: Literal["schedule", "ae-restart"]


def expected_dose(position: CoursePosition, spec: RegimenSpec, kb: Knowledge) -> Expected | None:
    """The schedule row for the cycle and day, or the adverse-event restart dose during its 7-day hold."""
    ae = kb.regimens.ae_restart
    hold = dt.timedelta(days=ae.escalate_after_days)
    if position.ae_restart_at is not None and position.at is not None and position.at - position.ae_restart_at < hold:
        return Expected(ae.ug_per_day, ae.ug_per_m2_per_day, ae.cap_ug_per_day, "ae-restart")
    row = spec.row(position.cycle, position.day)
    if row is None:
        return None
    return Expected(row.ug_per_day, row.ug_per_m2_per_day, row.cap_ug_per_day, "schedule")


def bsa_dose(expected: Expected, bsa_m2: float) -> float:
    return min(expected.ug_per_m2_per_day * bsa_m2, expected.cap_ug_per_day)


def context_facts(timeline: Timeline, kb: Knowledge, position: CoursePosition | None) -> dict[str, Any]:
    """Regimen, course position, body size and age: the context every card shows.

    The codes (``regimen_why``, ``position_source``…) and, worded from them, the phrases the shared
    ``context`` block of ``cards/_defaults.toml`` prints (``phrases.context_phrases``).
    """
    spec = spec_of(timeline, kb)
    body = timeline.body
    facts: dict[str, Any] = {
        "regimen": timeline.regimen.id,
        "regimen_label": spec.label,
        "regimen_why": timeline.regimen.why,
        "regimen_evidence": timeline.regimen.evidence,
        "regimen_confidence": spec.confidence,
        "cycle": position.cycle if position else None,
        "day": position.day if position else None,
        "position_source": position.source if position else None,
        "event": position.event if position else None,
        "event_at": when(position.at) if position else None,
        "derived_cycle": position.derived_cycle if position else None,
        "derived_day": position.derived_day if position else None,
        "weight_kg": num(body.weight_kg, 1),
        "weight_date": day(body.weight_at),
        "weight_stale": body.weight_stale,
        "weight_problem": body.weight_problem,
        "weight_band": weight_band(timeline, kb),
        "weight_threshold_kg": num(kb.dosing.weight_band.threshold_kg),
        "bsa_m2": num(body.bsa_m2, 2),
        "bsa_method": body.bsa_method,
        "height_cm": num(body.height_cm, 1),
        "age_years": num(body.age_years, 1),
        "age_group": age_group(timeline, kb),
    }
    return {**facts, **phrases.context_phrases(facts)}


def premed_timing_facts(kb: Knowledge) -> dict[str, Any]:
    """The premedication windows and the restart threshold, for cards that name them.

    Hours as well as minutes, so a card can say "4 hours" and still follow ``dosing.toml`` when it changes.
    """
    timing = kb.premedication.timing
    threshold = kb.dosing.interruption.restart_threshold_minutes
    return {
        "window_minutes": timing.window_minutes,
        "window_hours": num(timing.window_minutes / 60),
        "lookback_hours": timing.lookback_hours,
        "restart_threshold_minutes": threshold,
        "restart_threshold_hours": num(threshold / 60),
        "window_phrase": phrases.plural(num(timing.window_minutes / 60), "hour"),
        "restart_threshold_phrase": phrases.plural(num(threshold / 60), "hour"),
    }


def order_facts(order: BlinOrder | None) -> dict[str, Any]:
    """The order a finding is about (every key ``None`` for the running infusion at patient-view)."""
    return {
        "order_ref": order.ref if order else None,
        "dose_display": order.dose.display if order else None,
        "dose_basis": order.dose.basis if order else None,
        "dose_ug_per_day": num(order.dose.ug_per_day) if order else None,
        "dose_ug_per_m2_per_day": num(order.dose.ug_per_m2_per_day) if order else None,
    }


@dataclass(frozen=True)
class Dosed:
    """What a dose rule checks: a blinatumomab order in focus, or an administration (running or just stopped).

    Orders and running infusions are judged with the same dose tables; only the evidence and the fix differ
    (an order gets an update suggestion, an administration a "check the pump programming / bag" action).
    """

    ref: str
    dose: DailyDose
    order: BlinOrder | None = None
    infusion: InfusionPeriod | None = None

    @property
    def draft(self) -> bool:
        return self.order is not None and self.order.draft


def infusion_targets(timeline: Timeline, kb: Knowledge) -> list[tuple[Dosed, CoursePosition]]:
    """The administrations the dose rules check, newest first, with their positions at their start.

    One stopped for an overdose or a flushed line is left out: it was stopped for that very reason, and the
    restart rules speak to it. A pause record (``on-hold``, or a rate of 0) is not a dose and is left out too.
    """
    out: list[tuple[Dosed, CoursePosition]] = []
    for period in checked_infusions(timeline.infusions, kb=kb, now=timeline.now):
        position = timeline.positions.get(period.ref)
        if position is None or period.dose is None or period.stop_reason in ("overdose", "flush"):
            continue
        if period.status == "on-hold" or period.ug_per_day == 0:
            continue  # a pause (Epic "Paused", rate 0) is not a dose
        out.append((Dosed(period.ref, period.dose, infusion=period), position))
    return out


def administration_facts(infusion: InfusionPeriod | None) -> dict[str, Any]:
    """The administration a dose finding is about (every key ``None`` for an order)."""
    return {
        "checked": "administration" if infusion else "order",
        "administration_ref": infusion.ref if infusion else None,
        "administration_start": when(infusion.start) if infusion else None,
        "administration_end": when(infusion.end) if infusion else None,
        "administration_running": infusion is not None and infusion.end is None,
        "administration_status": infusion.status if infusion else None,
    }


def focus_targets(timeline: Timeline) -> list[tuple[BlinOrder, CoursePosition]]:
    """The in-focus orders with their positions (order hooks only)."""
    if timeline.hook == "patient-view":
        return []
    return [(o, timeline.positions[o.ref]) for o in timeline.focus_orders if o.ref in timeline.positions]


def last_infusion(timeline: Timeline) -> InfusionPeriod | None:
    past = [p for p in timeline.infusions if p.start <= timeline.now]
    return past[-1] if past else None


def on_blinatumomab(timeline: Timeline, kb: Knowledge) -> bool:
    """A blinatumomab infusion running or given within the patient-view lookback, or an active order."""
    since = timeline.now - dt.timedelta(days=kb.policy.patient_view.lookback_days)
    last = last_infusion(timeline)
    if last is not None and (last.end is None or last.end >= since):
        return True
    return any(o.status == "active" and (o.start is None or o.start >= since) for o in timeline.orders)


def current_position(timeline: Timeline, kb: Knowledge) -> CoursePosition | None:
    """patient-view: the running infusion's position, or the last one's if it ended within the premed lookback.

    Older events are history: a card about them would not change what anyone does today.
    """
    if timeline.hook != "patient-view":
        return None
    position = timeline.positions.get(CURRENT)
    last = last_infusion(timeline)
    if position is None or last is None:
        return None
    recent = timeline.now - dt.timedelta(hours=kb.premedication.timing.lookback_hours)
    return position if last.end is None or last.end >= recent else None
