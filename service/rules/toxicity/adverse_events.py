"""Other clinically relevant adverse events: adverse-event-interrupt and adverse-event-discontinue."""

from __future__ import annotations

from collections.abc import Iterator

from service.rules.base import Finding
from service.rules.medication import num
from service.rules.toxicity.context import Context, Episode, grade_of
from service.rules.toxicity.facts import finding, grade_facts, restart_dose


def other_event_rules(ctx: Context) -> Iterator[Finding]:
    """adverse-event-discontinue — When another adverse event (not CRS, neurological toxicity, a seizure, an
    overdose or a line flush; an AdverseEvent, or an Observation that says it is graded: "TLS grade 4",
    an NCIt grade code, method CTCAE) reached grade 4 in the current course (the label says "consider
    discontinuing"), or a grade 3 took more than 14 days to reach grade ≤ 1 (or is still above it after 14
    days),
    Then critical, per event, at every hook (patient-view and the restart order alike).

    adverse-event-interrupt — When the latest episode of such an event is grade 3 and unresolved,
    Then critical: withhold until grade ≤ 1, then restart at the restart dose.

    An event an AdverseEvent attributes to another drug (or calls unrelated) gives neither card.
    """
    policy = ctx.policy("other")
    now = ctx.timeline.now
    by_key: dict[str, list[Episode]] = {}
    for e in ctx.episodes("other"):
        by_key.setdefault(e.key, []).append(e)
    for key, episodes in by_key.items():
        reasons: list[str] = []
        trigger: Episode | None = None
        for e in episodes:
            if grade_of(e.peak) >= policy.discontinue_grade:
                reasons, trigger = [*reasons, "grade-4"], e
            elif policy.max_days_to_resolve is not None and e.days_to_resolve(now) > policy.max_days_to_resolve:
                reasons, trigger = [*reasons, "grade-3-slow-resolution"], e
        if trigger is not None:
            yield finding("adverse-event-discontinue", "critical", ctx, trigger, {
                "reasons": sorted(set(reasons)),
                "reason_grade_4": "grade-4" in reasons,
                "reason_grade_3_slow_resolution": "grade-3-slow-resolution" in reasons,
                "policy_unconfirmed": policy.confidence == "unconfirmed",
                "max_days_to_resolve": num(policy.max_days_to_resolve),
                "policy_confidence": policy.confidence, **grade_facts(policy),
            }, key=key)
        elif episodes[-1].resolved_at is None:
            yield finding("adverse-event-interrupt", "critical", ctx, episodes[-1], {
                **restart_dose(ctx), "max_days_to_resolve": num(policy.max_days_to_resolve),
                "restart_min_days_resolved": num(policy.restart_min_days_resolved),
                "policy_confidence": policy.confidence,
                "policy_unconfirmed": policy.confidence == "unconfirmed", **grade_facts(policy),
            }, key=key)
