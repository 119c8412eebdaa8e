"""crs-interrupt and crs-discontinue (clinical-rules.md §3.1)."""

from __future__ import annotations

from service.knowledge import Knowledge
from tests.builders import at
from tests.rules.toxicity.support import ids, run
from tests.threshold_builders import (
    tox,
)


def test_crs_grade3_interrupts_with_label_treatment_and_restart_dose(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", 2, at(2026, 3, 9, 1)), tox("crs", 3, at(2026, 3, 9, 6), label="CRS")])
    assert ids([f]) == [("crs-interrupt", "critical")]
    assert (f.facts["grade"], f.facts["label"], f.facts["onset"]) == (3, "CRS", "2026-03-09 06:00 UTC")
    assert (f.facts["dex_mg"], f.facts["dex_interval_hours"], f.facts["dex_max_days"], f.facts["dex_taper_days"]) \
        == (8, 8, 3, 4)
    assert (f.facts["restart_ug_per_day"], f.facts["restart_ug_per_m2_per_day"], f.facts["escalate_ug_per_day"]) \
        == (9, 5, 28)
    assert f.facts["small_patient"] is False and f.facts["default_grading_system"] == "CTCAE v4.0"


def test_crs_grade3_small_patient_gets_bsa_dexamethasone(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 9, 6))], weight_kg=30, bsa_m2=1.0)
    assert f.facts["small_patient"] is True and f.facts["dex_small_dose_mg"] == 5
    (g,) = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 9, 6))], weight_kg=44.9, bsa_m2=1.9)
    assert g.facts["dex_small_dose_mg"] == 8  # capped


def test_resolved_crs_is_quiet(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("crs", 3, at(2026, 3, 8)), tox("crs", 1, at(2026, 3, 9))]) == []
    assert run(kb, toxicities=[tox("crs", 1, at(2026, 3, 9))]) == []


def test_crs_grade4_shows_only_discontinue(kb: Knowledge) -> None:
    findings = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 8)), tox("crs", 4, at(2026, 3, 8, 12))])
    assert ids(findings) == [("crs-discontinue", "critical")]
    assert findings[0].facts["grade"] == 4 and findings[0].facts["dex_mg"] == 8
    # permanent: still shown after the grade 4 resolved
    later = run(kb, toxicities=[tox("crs", 4, at(2026, 3, 8)), tox("crs", 0, at(2026, 3, 9))])
    assert ids(later) == [("crs-discontinue", "critical")]


def test_records_before_the_course_do_not_count(kb: Knowledge) -> None:
    assert run(kb, toxicities=[tox("crs", 4, at(2026, 2, 1)), tox("seizure", None, at(2026, 2, 2))]) == []
