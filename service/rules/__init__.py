"""The rule catalog and the evaluation step (pipeline step 3).

Rule ids are fixed: they are ``card.source.topic.code``, the card file names in ``cards/``, and the
keys of feedback analytics. Each family module exposes ``evaluate(timeline, kb) -> Iterable[Finding]``.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.knowledge import Knowledge
from service.rules import bags, course, dosing, labs, premedication, toxicity
from service.rules.base import Finding, Rule
from service.rules.medication import on_blinatumomab
from service.timeline import Timeline

RULE_IDS: tuple[str, ...] = (
    "premed-missing",
    "premed-timing",
    "premed-dose",
    "dose-schedule",
    "dose-limit",
    "dose-weight-band",
    "preservative-bag-weight",
    "dose-unverifiable",
    "hepatic-interrupt",
    "lab-unevaluable",
    "crs-interrupt",
    "crs-discontinue",
    "neuro-interrupt",
    "neuro-discontinue",
    "seizure",
    "adverse-event-interrupt",
    "adverse-event-discontinue",
    "toxicity-grade-unknown",
    "restart-premature",
    "cycle-new-required",
    "cycle-limit",
    "treatment-free-interval",
    "therapy-status",
)

FAMILIES: tuple[Rule, ...] = (
    labs.evaluate, toxicity.evaluate, premedication.evaluate, dosing.evaluate, bags.evaluate, course.evaluate,
)
"""Every rule family's ``evaluate``; each yields findings for the rule ids it owns."""


def evaluate(timeline: Timeline, kb: Knowledge, *, rule_ids: Iterable[str]) -> list[Finding]:
    """Run every family; keep the findings whose rule id the calling service offers.

    patient-view speaks only about a patient on blinatumomab (a running infusion, or one within the
    lookback in ``policy.toml``, or an active order): a raised ALT in someone not on the drug is not ours to card.
    """
    if timeline.hook == "patient-view" and not on_blinatumomab(timeline, kb):
        return []
    wanted = set(rule_ids)
    return [f for family in FAMILIES for f in family(timeline, kb) if f.rule_id in wanted]
