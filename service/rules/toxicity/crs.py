"""Cytokine release syndrome: crs-interrupt and crs-discontinue."""

from __future__ import annotations

from collections.abc import Iterator

from service.rules.base import Finding
from service.rules.toxicity.context import Context, grade_of
from service.rules.toxicity.facts import crs_treatment, finding, grade_facts, restart_dose


def crs_rules(ctx: Context) -> Iterator[Finding]:
    """crs-discontinue — When a CRS episode of the current course reached grade 4 (resolved or not),
    Then critical: discontinue permanently, with the label's dexamethasone treatment.

    crs-interrupt — When the latest CRS episode is grade 3 and has not resolved (no later record at
    grade ≤ 1, "No CRS" or "Resolved"), and no grade 4 occurred,
    Then critical: interrupt, with the label's dexamethasone treatment and the restart dose (9 µg/day;
    5 µg/m²/day below 45 kg). The 2016 review's "< grade 1 for 3 days" is not used: the label wins.

    An episode an AdverseEvent attributes to another drug gives neither card.
    """
    policy = ctx.policy("crs")
    episodes = ctx.episodes("crs")
    severe = [e for e in episodes if grade_of(e.peak) >= policy.discontinue_grade]
    if severe:
        e = severe[-1]
        yield finding("crs-discontinue", "critical", ctx, e, {**crs_treatment(ctx), **grade_facts(policy),
                                                              "reasons": ["grade-4"]})
        return
    if episodes and episodes[-1].resolved_at is None:
        e = episodes[-1]
        yield finding("crs-interrupt", "critical", ctx, e, {**crs_treatment(ctx), **restart_dose(ctx),
                                                            **grade_facts(policy)})
