"""Steroid premedication rules: premed-missing, premed-timing, premed-dose.

The label asks for a steroid "1 hour prior to" the blinatumomab start at the events its regimen and the
patient's age group name (``premedication.toml``): every cycle start, the R/R step dose (C1D8) and a
restart after an interruption of ≥ 4 h for adults on R/R; the first cycle only for children; each cycle
start only for MRD-positive and consolidation adults. A candidate steroid is any dexamethasone,
prednisone, prednisolone or methylprednisolone administration within 24 h either side of the start, or
(at order time) a draft or active steroid order scheduled (``timing.event``, ``boundsPeriod.start``) within
24 h before it — an order scheduled after the start counts as nothing for it; an untimed order counts or not
as ``premedication.toml [order_timing]`` says, and the card states the assumption. A steroid given for another
reason counts if agent, dose and window qualify. A steroid whose dose is not a mass (``{pill}``) is not judged
on its dose (dose-unverifiable lists it). One event gives at most one timing and one dose card, from the best
candidate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.knowledge import Knowledge
from service.knowledge.premedication import Requirement
from service.rules.base import Finding, Indicator
from service.rules.medication import (
    age_group,
    context_facts,
    current_position,
    focus_targets,
    num,
    order_facts,
    premed_timing_facts,
    when,
)
from service.rules.medication_phrases import worded
from service.rules.suggestions import create_steroid
from service.timeline.model import BlinOrder, CoursePosition, SteroidEvent, Timeline

_ORDER_STATUSES = ("draft", "active", "on-hold")


@dataclass(frozen=True)
class _Candidate:
    event: SteroidEvent
    minutes_before: float | None
    """Δ = infusion start − steroid time, in minutes (negative: after the start); ``None`` for an order."""
    timing_ok: bool
    agent_ok: bool
    dose_ok: bool
    equivalent_mg: float | None
    untimed: bool = False
    """An order with no scheduled time, counted by the ``[order_timing]`` policy (its time is assumed)."""
    at: dt.datetime | None = None
    """The scheduled or given time the window was judged on."""


@dataclass(frozen=True)
class _NotCounted:
    event: SteroidEvent
    why: str
    """``after-start`` (scheduled after the start), ``untimed`` (policy: untimed orders do not count)."""


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    for order, position in focus_targets(timeline):
        yield from map(worded, check_event(timeline, kb, position, order=order, started=False))
    current = current_position(timeline, kb)
    if current is not None:
        yield from map(worded, check_event(timeline, kb, current, order=None, started=True))


def required_for(position: CoursePosition, requirement: Requirement) -> bool:
    """Whether the event at ``position`` needs premedication under ``requirement``."""
    if position.event not in requirement.triggers:
        return False
    return not (requirement.first_cycle_only and position.cycle != 1)


def check_event(
    timeline: Timeline, kb: Knowledge, position: CoursePosition, *, order: BlinOrder | None, started: bool
) -> Iterator[Finding]:
    """When a cycle start, step dose, re-escalation or restart after ≥ 4 h (as the regimen and age group
    require) has no candidate steroid,
    Then premed-missing: critical when the infusion already started without it, else a warning with a
    suggestion creating the steroid order.

    When the best candidate was given more than 60 min before the start, or after it (or only a date is
    known), Then premed-timing (warning).

    When the best candidate's agent or dose is below the requirement (label ratio prednisone 100 mg =
    dexamethasone 16 mg for MRD-positive; the standard table otherwise; children 5 mg/m² −10 % unless the
    20 mg cap applies), Then premed-dose (warning).
    """
    requirement = kb.premedication.requirement(timeline.regimen.id, age_group(timeline, kb))
    if position.at is None or position.date_only or not required_for(position, requirement):
        return
    required_mg = _required_mg(requirement, timeline)
    found, not_counted = _candidates(timeline, kb, position.at, order_time=not started)
    candidates = [_judge(e, t, untimed, position.at, requirement, required_mg, timeline, kb)
                  for e, t, untimed in found]
    base = {
        **context_facts(timeline, kb, position),
        **order_facts(order),
        **_requirement_facts(requirement, required_mg, kb),
        "infusion_started": started,
        "infusion_start": when(position.at),
        "untimed_orders_count": kb.premedication.order_timing.untimed_orders_count,
        "suggested_equivalent": False,
        "orders_not_counted": [{"ref": n.event.ref, "agent": n.event.agent, "why": n.why,
                                "at": when(n.event.time) if n.event.time and not n.event.date_only else None}
                               for n in not_counted],
    }
    about = order.ref if order else None
    if not candidates:
        indicator: Indicator = "critical" if started else "warning"
        action = None
        if not started and order is not None and order.draft:
            agent, mg, per_m2 = _suggested_dose(requirement, required_mg)
            base = {**base, **_suggestion_facts(requirement, agent, mg)}
            action = create_steroid(timeline, agent=agent, dose_mg=mg, dose_mg_per_m2=per_m2, kb=kb,
                                    before=position.at if order.start is not None else None)
            base = {**base, "steroid_agent": agent, "steroid_dose_mg": num(mg, 1),
                    "steroid_dose_mg_per_m2": num(per_m2, 1)}
        else:
            base = {**base, "steroid_agent": requirement.agent, "steroid_dose_mg": num(required_mg, 1),
                    "steroid_dose_mg_per_m2": num(requirement.dose_mg_per_m2, 1)}
        yield Finding("premed-missing", indicator, base, actions=(action,) if action else (), about=about)
        return
    if any(c.timing_ok and c.agent_ok and c.dose_ok for c in candidates):
        return
    best = max(candidates, key=lambda c: (c.timing_ok, c.agent_ok and c.dose_ok, c.equivalent_mg or 0))
    facts = {**base, **_candidate_facts(best, requirement), "steroid_agent": requirement.agent,
             "steroid_dose_mg": num(required_mg, 1), "steroid_dose_mg_per_m2": num(requirement.dose_mg_per_m2, 1)}
    if not best.timing_ok:
        yield Finding("premed-timing", "warning", facts, about=about)
    if not (best.agent_ok and best.dose_ok):
        yield Finding("premed-dose", "warning", facts, about=about)


def _candidates(
    timeline: Timeline, kb: Knowledge, start: dt.datetime, *, order_time: bool
) -> tuple[list[tuple[SteroidEvent, dt.datetime | None, bool]], list[_NotCounted]]:
    """Candidate steroids with the time to judge them on and whether that time is assumed (untimed order),
    and the orders that were looked at but count as nothing for this start."""
    lookback = dt.timedelta(hours=kb.premedication.timing.lookback_hours)
    out: list[tuple[SteroidEvent, dt.datetime | None, bool]] = []
    skipped: list[_NotCounted] = []
    for e in timeline.steroids:
        if e.kind == "administration":
            if e.time is not None and start - lookback <= e.time <= start + lookback:
                out.append((e, e.time, False))
            continue
        if not order_time or not (e.draft or e.status in _ORDER_STATUSES):
            continue
        timed = list(e.scheduled) if not e.date_only else []
        if timed:
            before = [t for t in timed if start - lookback <= t <= start]
            if before:
                out.append((e, max(before), False))
            elif any(t > start for t in timed) and (e.draft or min(t for t in timed if t > start) - start <= lookback):
                skipped.append(_NotCounted(e, "after-start"))
            continue
        if e.date_only and e.time is not None:
            days = (start.astimezone(dt.UTC).date() - e.time.date()).days
            if days < 0:
                skipped.append(_NotCounted(e, "after-start"))
                continue
            if days > -(-kb.premedication.timing.lookback_hours // 24):
                continue  # dated before any day the window reaches: another day's order
        if kb.premedication.order_timing.untimed_orders_count:
            out.append((e, None, True))
        else:
            skipped.append(_NotCounted(e, "untimed"))
    return out, skipped


def _judge(
    e: SteroidEvent, at: dt.datetime | None, untimed: bool, start: dt.datetime, req: Requirement,
    required_mg: float | None, timeline: Timeline, kb: Knowledge,
) -> _Candidate:
    premed = kb.premedication
    if untimed:
        minutes, timing_ok = None, True
    elif at is None or e.date_only:
        minutes, timing_ok = None, False
    else:
        minutes = (start - at).total_seconds() / 60
        timing_ok = 0 <= minutes <= premed.timing.window_minutes
    agent_ok = e.agent == req.agent or req.accept_equivalents
    equivalent = (premed.equivalent_mg(e.dose_mg, e.agent, to=req.agent, regimen=timeline.regimen.id)
                  if e.dose_mg is not None else None)
    dose_ok = False
    if e.dose_mg is None and e.dose_mg_per_m2 is None and e.dose_unit is not None:
        dose_ok = True  # {pill}, mL…: not a mass, the dose check is skipped (dose-unverifiable lists it)
    elif equivalent is not None and required_mg is not None:
        floor = required_mg
        if req.dose_mg_per_m2 is not None:
            capped = req.max_dose_mg is not None and required_mg >= req.max_dose_mg
            floor = required_mg if capped else required_mg * (1 - premed.pediatric_dose.tolerance_pct / 100)
        dose_ok = round(equivalent, 1) >= round(floor, 1)
    elif required_mg is None and req.dose_mg_per_m2 is not None and e.agent == req.agent:
        # BSA unknown: a per-m² order can still be compared per m², and the cap is always enough.
        per_m2_ok = e.dose_mg_per_m2 is not None and e.dose_mg_per_m2 >= req.dose_mg_per_m2 * (
            1 - premed.pediatric_dose.tolerance_pct / 100)
        cap_ok = e.dose_mg is not None and req.max_dose_mg is not None and e.dose_mg >= req.max_dose_mg
        dose_ok = per_m2_ok or cap_ok
    return _Candidate(e, minutes, timing_ok, agent_ok, dose_ok, equivalent, untimed=untimed, at=at)


def _required_mg(req: Requirement, timeline: Timeline) -> float | None:
    """The required dose in mg of the requirement's agent (a per-m² dose needs the BSA; capped)."""
    if req.dose_mg is not None:
        return req.dose_mg
    bsa = timeline.body.bsa_m2
    if bsa is None or req.dose_mg_per_m2 is None:
        return None
    return min(req.dose_mg_per_m2 * bsa, req.max_dose_mg or float("inf"))


def _suggested_dose(req: Requirement, required_mg: float | None) -> tuple[str, float | None, float | None]:
    """Agent and dose of the steroid order to suggest: exactly the requirement premed-dose checks against, or
    the orderable equivalent the label names (MRD-positive: dexamethasone 16 mg for "prednisone 100 mg IV").

    The label's premedication dose follows the age group, not the weight band (clinical-rules.md §0.3, E26):
    an adult under 45 kg gets the adult dose, as a 16-year-old over 45 kg gets the pediatric one. Suggesting
    anything else would create an order this rule itself then calls too low.
    """
    if req.suggest_agent is not None and req.suggest_dose_mg is not None:
        return req.suggest_agent, req.suggest_dose_mg, None
    if required_mg is not None:
        return req.agent, required_mg, None
    return req.agent, None, req.dose_mg_per_m2


def _suggestion_facts(req: Requirement, agent: str, mg: float | None) -> dict[str, Any]:
    return {"suggested_equivalent": agent != req.agent, "steroid_agent": agent, "steroid_dose_mg": num(mg, 1)}


def _requirement_facts(req: Requirement, required_mg: float | None, kb: Knowledge) -> dict[str, Any]:
    return {
        "required_agent": req.agent,
        "required_dose_mg": num(req.dose_mg, 1),
        "required_dose_mg_per_m2": num(req.dose_mg_per_m2, 1),
        "required_max_mg": num(req.max_dose_mg, 1),
        "required_mg_for_patient": num(required_mg, 1),
        "required_route": req.route,
        "accept_equivalents": req.accept_equivalents,
        "first_cycle_only": req.first_cycle_only,
        "requirement_confidence": req.confidence,
        "requirement_source": req.source,
        "requirement_secondary": req.confidence == "secondary",
        "requirement_unconfirmed": req.confidence == "unconfirmed",
        "pediatric_tolerance_pct": num(kb.premedication.pediatric_dose.tolerance_pct),
        **premed_timing_facts(kb),
        **_equivalence_facts(req, kb),
    }


def _equivalence_facts(req: Requirement, kb: Knowledge) -> dict[str, Any]:
    """What the card says about "or equivalent": the label's own ratio, and the standard table's doses.

    ``label_equivalents``: the label's pair (e.g. prednisone 100 mg, dexamethasone 16 mg) when it applies to
    the regimen, in file order; ``standard_equivalent_mg``: each agent's dose equivalent to the required fixed
    dose by the standard table (empty for a per-m² requirement).
    """
    premed = kb.premedication
    label = premed.label_equivalence
    label_pairs = [{"agent": agent, "mg": num(mg, 1)} for agent, mg in label.doses_mg.items()
                   ] if req.regimen in label.regimens else []
    std = premed.equivalence.doses_mg
    standard = ({agent: num(req.dose_mg * mg / std[req.agent], 1) for agent, mg in std.items()}
                if req.dose_mg is not None and req.agent in std else {})
    return {"label_equivalents": label_pairs, "standard_equivalent_mg": standard}


def _candidate_facts(c: _Candidate, req: Requirement) -> dict[str, Any]:
    e = c.event
    return {
        "given_ref": e.ref,
        "given_kind": e.kind,
        "given_agent": e.agent,
        "given_dose_mg": num(e.dose_mg, 1),
        "given_at": when(c.at if c.at is not None else e.time),
        "given_date_only": e.date_only,
        "minutes_before": num(c.minutes_before, 0),
        "given_after_start": c.minutes_before is not None and c.minutes_before < 0,
        "equivalent_mg": num(c.equivalent_mg, 1),
        "agent_ok": c.agent_ok,
        "dose_ok": c.dose_ok,
        "given_untimed": c.untimed,
        "given_dose_unit": e.dose_unit,
    }
