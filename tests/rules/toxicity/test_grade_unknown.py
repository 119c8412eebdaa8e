"""toxicity-grade-unknown (clinical-rules.md §4.4, §6 E17)."""

from __future__ import annotations

from service.knowledge import Knowledge
from tests.builders import at
from tests.rules.toxicity.support import ids, run
from tests.threshold_builders import (
    tox,
)


def test_severe_crs_without_grade_warns(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", None, at(2026, 3, 9), label="Severe CRS")])
    assert ids([f]) == [("toxicity-grade-unknown", "warning")]
    assert (f.facts["kind"], f.facts["label"]) == ("crs", "Severe CRS")


def test_later_graded_record_settles_the_grade(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("neuro", None, at(2026, 3, 8)), tox("neuro", 1, at(2026, 3, 9))]) == []
