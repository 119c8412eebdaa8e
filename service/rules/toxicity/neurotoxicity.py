"""Neurological toxicity (ICANS, encephalopathy) and seizures: neuro-interrupt, neuro-discontinue, seizure."""

from __future__ import annotations

from collections.abc import Iterator

from service.rules.base import Finding
from service.rules.labs import card_context, when
from service.rules.medication import num
from service.rules.toxicity import wording
from service.rules.toxicity.context import Context, Episode, grade_of
from service.rules.toxicity.facts import (
    at_step_dose,
    dose_facts,
    finding,
    grade_facts,
    restart_dose,
    seizure_facts,
    source_of,
)

_DISCONTINUE_REASONS = ("grade-4", "grade-3-at-step-dose", "grade-3-slow-resolution", "seizures")
"""Each gives the card a flag ``reason_<name>`` (``reason_grade_4``…) for its sentence."""


def neuro_rules(ctx: Context) -> Iterator[Finding]:
    """neuro-discontinue — When in the current course a neurological toxicity (ICANS, encephalopathy…)
    reached grade 4; or reached grade 3 while the infusion ran at the step dose (9 µg/day, or
    5 µg/m²/day below 45 kg); or a grade 3 took more than 7 days to resolve (or is unresolved after 7
    days); or more than one seizure occurred (distinct episodes: one seizure charted by a nurse, a
    physician and an AdverseEvent report is one),
    Then critical: discontinue permanently (one finding listing every reason and each seizure with its
    time and sources).

    neuro-interrupt — When the latest neurological-toxicity episode is grade 3, unresolved, and none of
    the above applies (it occurred at 28 µg/day or 15 µg/m²/day, or the dose is unknown),
    Then critical: withhold until grade ≤ 1 for at least 3 days, then restart at the restart dose.

    seizure — When exactly one seizure occurred in the current course and neuro-discontinue did not fire,
    Then warning: a second seizure means permanent discontinuation.
    """
    policy = ctx.policy("neuro")
    tox = ctx.kb.toxicity
    now = ctx.timeline.now
    episodes = ctx.episodes("neuro")
    seizures = ctx.seizure_episodes
    count = ctx.seizure_count()
    reasons: list[str] = []
    trigger: Episode | None = None
    for e in episodes:
        found: list[str] = []
        if grade_of(e.peak) >= policy.discontinue_grade:
            found.append("grade-4")
        else:
            if at_step_dose(ctx, e.onset.at) is True:
                found.append("grade-3-at-step-dose")
            if policy.max_days_to_resolve is not None and e.days_to_resolve(now) > policy.max_days_to_resolve:
                found.append("grade-3-slow-resolution")
        if found:
            reasons += [r for r in found if r not in reasons]
            trigger = e
    if count >= tox.seizures.discontinue_count:
        reasons.append("seizures")
    episodes_facts = seizure_facts(seizures)
    facts = {
        "seizure_count": count,
        "seizure_dates": [when(s.at) for s in seizures],
        "seizure_episodes": episodes_facts,
        "seizure_lines": [wording.seizure_line(e) for e in episodes_facts],
        "seizure_limit": tox.seizures.discontinue_count,
        "next_ordinal": wording.ordinal(tox.seizures.discontinue_count),
        "same_event_window_minutes": num(tox.episodes.same_event_window_minutes),
        **grade_facts(policy),
    }
    if reasons:
        yield finding("neuro-discontinue", "critical", ctx, trigger, {
            "reasons": reasons, **facts, **dose_facts(ctx, trigger),
            **{f"reason_{r.replace('-', '_')}": r in reasons for r in _DISCONTINUE_REASONS},
            "max_days_to_resolve": num(policy.max_days_to_resolve),
        }, key="neuro")
        return
    if episodes and episodes[-1].resolved_at is None:
        e = episodes[-1]
        yield finding("neuro-interrupt", "critical", ctx, e, {
            **dose_facts(ctx, e), **restart_dose(ctx), **grade_facts(policy),
            "restart_min_days_resolved": num(policy.restart_min_days_resolved),
            "max_days_to_resolve": num(policy.max_days_to_resolve),
        })
    if count == 1:
        s = seizures[0].first
        sources = episodes_facts[0]["sources"]
        yield Finding(
            rule_id="seizure", indicator="warning", about=s.ref,
            facts={**card_context(ctx.timeline, ctx.kb), **facts,
                   "at": when(seizures[0].at), "label": s.label, "ref": s.ref, "source": source_of(s),
                   "toxicity_name": wording.event_name(s.label, "seizure"),
                   "charted_more_than_once": len(sources) > 1, "record_count": len(sources),
                   "records": wording.records_phrase(sources),
                   "key": "neuro"},
        )
