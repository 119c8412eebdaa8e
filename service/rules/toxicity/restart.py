"""restart-premature: a blinatumomab restart ordered before the label's criteria are met."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from service.rules.base import Finding, Indicator
from service.rules.labs import card_context, when
from service.rules.medication import num
from service.rules.toxicity import wording
from service.rules.toxicity.context import FAMILIES, Context, key_of
from service.rules.toxicity.facts import grade_facts
from service.timeline.model import BlinOrder, InfusionPeriod, Interruption, Timeline, ToxicityRecord


def restart_premature(ctx: Context, *, discontinued: set[str]) -> Iterator[Finding]:
    """When a blinatumomab order in focus restarts the infusion after an interruption, and
    (a) a toxicity that needs it has not been at grade ≤ 1 for the required time before the restart
        (neurological toxicity: 3 days, critical; other adverse events: 3 days, a warning, since only a
        secondary source says so; CRS: none, the label restarts "when resolved"), or
    (b) the interruption followed an overdose or a flushed line and the restart is less than 12 hours
        after the infusion stopped (critical), or is later but a toxicity charted since the overdose has
        not resolved (critical), or the chart holds no graded record since the overdose, so "all
        toxicities resolved" cannot be confirmed (warning: the label needs both conditions),
    Then restart-premature (one finding per order and cause). A toxicity already discontinued is left
    to its discontinue card.
    """
    tl = ctx.timeline
    for order in tl.focus_orders:
        if order.start_date_only:
            continue
        restart_at = order.start or tl.now
        interruption = _interruption_before(tl, order, restart_at)
        if interruption is not None:
            yield from _restart_after_toxicity(ctx, order, restart_at, discontinued=discontinued)
            yield from _restart_after_overdose(ctx, order, restart_at, interruption)
        elif not tl.infusions:
            # No administration history at all: measure from the overdose/flush record itself.
            yield from _restart_after_overdose(ctx, order, restart_at, None)


def _restart_after_toxicity(
    ctx: Context, order: BlinOrder, restart_at: dt.datetime, *, discontinued: set[str]
) -> Iterator[Finding]:
    for family in FAMILIES:
        policy = ctx.policy(family)
        if policy.restart_min_days_resolved <= 0:
            continue
        for e in ctx.episodes(family):
            if e.key in discontinued or e.resolved_at is None or not e.onset.at <= e.resolved_at <= restart_at:
                continue
            days = (restart_at - e.resolved_at).total_seconds() / 86400
            if days >= policy.restart_min_days_resolved:
                continue
            yield _restart_finding(ctx, order, restart_at, policy.restart_indicator, {
                "reason": "toxicity-resolved-too-recently", "kind": family, "label": e.peak.label,
                "grade": e.peak.grade, "event_at": when(e.onset.at), "resolved_at": when(e.resolved_at),
                "days_since_resolved": round(days, 1),
                "required_days": num(policy.restart_min_days_resolved),
                "key": e.key, **grade_facts(policy),
            })


def _restart_after_overdose(
    ctx: Context, order: BlinOrder, restart_at: dt.datetime, interruption: Interruption | None
) -> Iterator[Finding]:
    events = [r for r in ctx.records if r.kind in ("overdose", "flush") and r.at <= restart_at]
    # The medication side also reads the stop reason of the infusion (and of the interruption), with its own
    # patterns (``policy.toml [stop_reasons]``): a stop only those patterns recognise is found there.
    events += [ToxicityRecord(kind=p.stop_reason, ref=p.ref, at=p.end, grade=None)
               for p in ctx.timeline.infusions
               if p.stop_reason in ("overdose", "flush") and p.end is not None and p.end <= restart_at]
    if interruption is not None and interruption.reason in ("overdose", "flush"):
        events.append(ToxicityRecord(kind=interruption.reason, ref=order.ref, at=interruption.stopped, grade=None))
    if not events:
        return
    event = max(events, key=lambda r: (r.at, bool(r.label)))
    if interruption is None:
        stopped = event.at
    elif _linked(event, interruption, ctx.timeline.infusions):
        stopped = interruption.stopped
    else:
        return
    hours = (restart_at - stopped).total_seconds() / 3600
    policy = ctx.kb.toxicity.overdose
    status, unresolved = _toxicity_status_since(ctx, min(event.at, stopped), restart_at)
    indicator: Indicator
    if hours < policy.restart_min_hours:
        reason, indicator = "overdose-too-soon", "critical"
    elif status == "unresolved":
        reason, indicator = "overdose-toxicity-unresolved", "critical"
    elif status == "unknown":
        reason, indicator = "overdose-toxicity-unknown", "warning"
    else:
        return
    yield _restart_finding(ctx, order, restart_at, indicator, {
        "reason": reason, "kind": event.kind, "label": event.label, "grade": None,
        "event_at": when(event.at), "stopped_at": when(stopped), "hours_since_stop": round(hours, 1),
        "required_hours": num(policy.restart_min_hours), "key": event.kind,
        "toxicity_status": status, "unresolved_toxicities": unresolved,
        "overdose_resolved_max_grade": policy.resolved_max_grade,
    })


def _toxicity_status_since(
    ctx: Context, since: dt.datetime, until: dt.datetime
) -> tuple[Literal["resolved", "unresolved", "unknown"], list[dict[str, Any]]]:
    """Whether "all toxicities have resolved" between an overdose and a restart (the label's second condition).

    Each toxicity charted in the window (CRS, neurological toxicity and seizures together, each other adverse
    event by what it is) is judged by its latest record: at or below ``overdose.resolved_max_grade`` is
    resolved, above it unresolved, without a grade unknown. No record at all is unknown too: the chart does not
    say the patient is free of toxicity, so the restart gets a warning, not silence.
    """
    latest: dict[str, ToxicityRecord] = {}
    for r in ctx.records:
        if r.kind in ("overdose", "flush") or not since <= r.at <= until:
            continue
        family = "neuro" if r.kind == "seizure" else r.kind
        latest[key_of(family, r)] = r
    limit = ctx.kb.toxicity.overdose.resolved_max_grade
    unresolved = [{"label": r.label, "grade": r.grade, "at": when(r.at)}
                  for r in latest.values() if r.grade is not None and r.grade > limit]
    if unresolved:
        return "unresolved", unresolved
    if not latest or any(r.grade is None for r in latest.values()):
        return "unknown", []
    return "resolved", []


def _restart_finding(
    ctx: Context, order: BlinOrder, restart_at: dt.datetime, indicator: Indicator, specific: dict[str, Any]
) -> Finding:
    facts: dict[str, Any] = {
        **card_context(ctx.timeline, ctx.kb),
        "order_ref": order.ref, "restart_at": when(restart_at), "kind": None, "label": None, "grade": None,
        "event_at": None, "resolved_at": None, "days_since_resolved": None, "required_days": None,
        "stopped_at": None, "hours_since_stop": None, "required_hours": None,
        "toxicity_status": None, "unresolved_toxicities": [], "overdose_resolved_max_grade": None,
        "interrupt_grade": None, "discontinue_grade": None, "resolved_max_grade": None,
        "restart_ug_per_day": num(ctx.kb.regimens.ae_restart.ug_per_day),
    }
    facts.update(specific)
    reason, kind = facts["reason"], facts["kind"]
    facts.update({
        # flags and phrases the card prints: one flag per cause, the event's name, ready lines
        "after_overdose": str(reason).startswith("overdose-"),
        "overdose_too_soon": reason == "overdose-too-soon",
        "overdose_toxicity_unresolved": reason == "overdose-toxicity-unresolved",
        "overdose_toxicity_unknown": reason == "overdose-toxicity-unknown",
        "toxicity_resolved_too_recently": reason == "toxicity-resolved-too-recently",
        "overdose_event": "an overdose" if kind == "overdose" else "a line flush",
        "toxicity_name": facts["label"] or ("Overdose or line flush" if str(reason).startswith("overdose-")
                                         else "Toxicity"),
        "summary_toxicity_name": facts["label"] or "the toxicity",
        "is_neuro": reason == "toxicity-resolved-too-recently" and kind == "neuro",
        "is_other_event": reason == "toxicity-resolved-too-recently" and kind != "neuro",
        "toxicities_unresolved": facts["toxicity_status"] == "unresolved",
        "toxicities_unknown": facts["toxicity_status"] == "unknown",
        "toxicities_resolved": facts["toxicity_status"] == "resolved",
        "unresolved_lines": [f"{t['label']}: grade {t['grade']} on {t['at']}" for t in facts["unresolved_toxicities"]],
        "step_dose": wording.ug_day(facts["restart_ug_per_day"]),
    })
    return Finding(rule_id="restart-premature", indicator=indicator, facts=facts, about=order.ref)


def _interruption_before(tl: Timeline, order: BlinOrder, restart_at: dt.datetime) -> Interruption | None:
    """The interruption this order restarts after: the course position's, else derived from the infusions.

    Derived locally when the medication side gave no interruption: no infusion runs at ``restart_at``
    and an earlier one has ended.
    """
    position = tl.positions.get(order.ref)
    if position is not None and position.interruption is not None:
        return position.interruption
    if any(p.start <= restart_at and (p.end is None or p.end > restart_at) for p in tl.infusions):
        return None
    ended = [p for p in tl.infusions if p.end is not None and p.end <= restart_at]
    if not ended:
        return None
    last = max(ended, key=lambda p: p.end or p.start)
    assert last.end is not None
    return Interruption(stopped=last.end, restarted=restart_at, gap=restart_at - last.end, reason=last.stop_reason)


def _linked(event: ToxicityRecord, interruption: Interruption, infusions: Sequence[InfusionPeriod]) -> bool:
    """Whether the overdose/flush happened in the infusion this interruption ended (no restart in between)."""
    return not any(event.at < p.start < interruption.stopped for p in infusions)
