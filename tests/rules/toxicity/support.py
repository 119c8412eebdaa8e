"""Shared by the toxicity rule tests: a running 28 µg/day course from 2026-03-01 and the rules on a built timeline.

Timelines are built directly, so the rules are tested apart from the medication builders.
"""

from __future__ import annotations

from typing import Any

from service.knowledge import Knowledge
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from tests.builders import at
from tests.threshold_builders import infusion, timeline

NOW = at(2026, 3, 10, 9)
COURSE = at(2026, 3, 1, 8)
RUNNING = (infusion("MedicationAdministration/i1", COURSE, None, 28),)


def run(kb: Knowledge, **kw: Any) -> list[Finding]:
    kw.setdefault("infusions", RUNNING)
    return list(tox_rules.evaluate(timeline(NOW, **kw), kb))


def ids(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.indicator) for f in findings]
