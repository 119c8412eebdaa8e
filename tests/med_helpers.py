"""Helpers for medication-side tests: build a timeline from FHIR dicts, run the medication rule families,
and render every finding through the real card files (a fact a card needs but a finding lacks fails)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from service.knowledge import Knowledge
from service.render import CardRenderer
from service.rules import RULE_IDS, course, dosing, premedication
from service.rules.base import Finding
from service.settings import DEFAULT_CARDS_DIR
from service.timeline import build_timeline
from service.timeline.model import HookName, Timeline
from tests.builders import order_context, view_context


def make_timeline(
    kb: Knowledge, *, now: dt.datetime, hook: HookName = "order-sign", drafts: Iterable[Mapping[str, Any]] = (),
    resources: Iterable[Mapping[str, Any]] = (), selections: list[str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Timeline:
    if context is None:
        context = view_context() if hook == "patient-view" else order_context(*drafts, selections=selections)
    return build_timeline(hook=hook, context=context, data={"all": list(resources)}, kb=kb, now=now)


def run(kb: Knowledge, **kw: Any) -> list[Finding]:
    """Medication findings for a timeline built with :func:`make_timeline`, each rendered once."""
    timeline = make_timeline(kb, **kw)
    findings = [f for family in (premedication.evaluate, dosing.evaluate, course.evaluate)
                for f in family(timeline, kb)]
    for f in findings:
        renderer().render(f)
    return findings


@lru_cache(maxsize=1)
def renderer() -> CardRenderer:
    return CardRenderer.load(DEFAULT_CARDS_DIR, RULE_IDS)


def ids(findings: Iterable[Finding]) -> list[tuple[str, str]]:
    return sorted((f.rule_id, f.indicator) for f in findings)


def alarms(findings: Iterable[Finding]) -> list[tuple[str, str]]:
    """Warning and critical findings only (the quiet courses must have none)."""
    return [x for x in ids(findings) if x[1] != "info"]


def one(findings: Iterable[Finding], rule_id: str) -> Finding:
    matching = [f for f in findings if f.rule_id == rule_id]
    assert len(matching) == 1, [f.rule_id for f in findings]
    return matching[0]


def detail_of(finding: Finding) -> str:
    """The card's detail as one line: a card file wraps its sentences where it likes (lines ≤ 120 characters),
    so tests look for the words, not for where a line ends."""
    return " ".join((renderer().render(finding).detail or "").split())
