"""Toxicity rules, one module per family: CRS (``crs``), neurological toxicity and seizures
(``neurotoxicity``), other adverse events (``adverse_events``), unknown grades (``grade_unknown``) and
restarts ordered before the label's criteria are met (``restart``). ``context`` groups the timeline's
records into episodes once per call; ``facts`` holds what several cards share.

"Discontinue outranks interrupt": for one toxicity only the stronger card shows, and a toxicity already
discontinued is left out of the grade-unknown and restart checks.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.knowledge import Knowledge
from service.rules.base import Finding
from service.rules.toxicity.adverse_events import other_event_rules
from service.rules.toxicity.context import Context
from service.rules.toxicity.crs import crs_rules
from service.rules.toxicity.grade_unknown import grade_unknown, interrupted_families
from service.rules.toxicity.neurotoxicity import neuro_rules
from service.rules.toxicity.restart import restart_premature
from service.timeline.model import Timeline

__all__ = ["evaluate"]


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    ctx = Context.build(timeline, kb)
    discontinued: set[str] = set()
    for finding in (*crs_rules(ctx), *neuro_rules(ctx), *other_event_rules(ctx)):
        if finding.indicator == "critical" and finding.rule_id.endswith("-discontinue"):
            discontinued.add(str(finding.facts["key"]))
        yield finding
    yield from grade_unknown(ctx, discontinued=discontinued, interrupted=interrupted_families(ctx))
    yield from restart_premature(ctx, discontinued=discontinued)
