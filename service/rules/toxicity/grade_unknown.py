"""toxicity-grade-unknown: CRS or neurological toxicity recorded without a determinable grade."""

from __future__ import annotations

from collections.abc import Iterator

from service.rules.base import Finding
from service.rules.labs import card_context, when
from service.rules.medication import num
from service.rules.toxicity import wording
from service.rules.toxicity.context import Context, Family
from service.rules.toxicity.facts import grade_facts


def interrupted_families(ctx: Context) -> set[str]:
    families: tuple[Family, ...] = ("crs", "neuro")
    return {f for f in families if (eps := ctx.episodes(f)) and eps[-1].resolved_at is None}


def grade_unknown(ctx: Context, *, discontinued: set[str], interrupted: set[str]) -> Iterator[Finding]:
    """When the latest CRS or neurological-toxicity record of the current course has no determinable
    grade (e.g. "severe CRS") and no card already covers that toxicity,
    Then warning: the interruption rules cannot be checked; grade it.

    An absent or resolved finding ("No CRS", "ICE 10/10", "Resolved") has grade 0: it never asks for a grade,
    and it settles an earlier ungraded record. A record attributed to another drug is not asked about.
    """
    families: tuple[Family, ...] = ("crs", "neuro")
    for family in families:
        if family in discontinued or family in interrupted:
            continue
        recs = [r for r in ctx.records if r.kind == family and not r.attributed_elsewhere]
        if not recs or recs[-1].grade is not None:
            continue
        latest = recs[-1]
        if any(r.grade is not None and r.at >= latest.at for r in recs):
            continue
        yield Finding(
            rule_id="toxicity-grade-unknown", indicator="warning", about=latest.ref,
            facts={**card_context(ctx.timeline, ctx.kb),
                   "kind": family, "key": family, "label": latest.label, "at": when(latest.at), "ref": latest.ref,
                   "is_crs": family == "crs", "family_name": wording.FAMILY_NAMES[family],
                   "toxicity_name": wording.event_name(latest.label, family),
                   "step_dose": wording.ug_day(num(ctx.kb.regimens.ae_restart.ug_per_day)),
                   "default_grading_system": ctx.kb.toxicity.grading.default_system,
                   "restart_ug_per_day": num(ctx.kb.regimens.ae_restart.ug_per_day),
                   **grade_facts(ctx.policy(family))},
        )
