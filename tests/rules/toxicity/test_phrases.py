"""The phrase facts the toxicity cards print as they are (service/rules/toxicity/wording.py)."""

from __future__ import annotations

from service.knowledge import Knowledge
from service.rules.toxicity import wording
from tests.builders import at
from tests.card_text import as_read
from tests.med_helpers import renderer
from tests.rules.toxicity.support import run
from tests.threshold_builders import tox


def test_doses_follow_the_weight_band_and_show_both_bands_when_the_weight_is_unknown(kb: Knowledge) -> None:
    crs = [tox("crs", 3, at(2026, 3, 9, 6), label="CRS")]
    (adult,) = run(kb, toxicities=crs, weight_kg=70)
    assert (adult.facts["dex_dose"], adult.facts["restart_dose"], adult.facts["escalate_dose"]) == (
        "8 mg", "9 µg/day", "28 µg/day")
    (small,) = run(kb, toxicities=crs, weight_kg=30, bsa_m2=1.0)
    assert (small.facts["dex_dose"], small.facts["restart_dose"], small.facts["escalate_dose"]) == (
        "5 mg/m² (maximum 8 mg; 5 mg for this patient's BSA)", "5 µg/m²/day", "15 µg/m²/day")
    (unknown,) = run(kb, toxicities=crs, weight_kg=None)
    assert unknown.facts["weight_unknown"] is True
    assert unknown.facts["dex_dose"] == "8 mg (under 45 kg: 5 mg/m², maximum 8 mg)"
    assert unknown.facts["restart_dose"] == "9 µg/day (under 45 kg: 5 µg/m²/day)"
    text = as_read(renderer().render(unknown).detail)
    assert "Weight unknown, so both weight bands are shown." in text
    assert "restart at 9 µg/day (under 45 kg: 5 µg/m²/day) and escalate to 28 µg/day (under 45 kg: 15 µg/m²/day)" \
        in text
    assert "Weight unknown" not in as_read(renderer().render(adult).detail)


def test_the_event_name_and_grading_note_are_ready_made(kb: Knowledge) -> None:
    (f,) = run(kb, toxicities=[tox("crs", 3, at(2026, 3, 9, 6), label="CRS grade")])
    assert f.facts["toxicity_name"] == "CRS grade"
    assert wording.event_name("", "crs") == "Cytokine release syndrome"
    assert f.facts["grading_note"] == "grading system not stated; the label's table used CTCAE v4.0"
    assert wording.grading_note("CTCAE v5.0", "CTCAE v4.0", from_text=True) == (
        "CTCAE v5.0; grade parsed from free text")
    assert wording.event_name(None, "neuro") == "Neurological toxicity"


def test_each_discontinue_reason_is_a_flag_and_each_seizure_a_ready_line(kb: Knowledge) -> None:
    seizures = [tox("seizure", None, at(2026, 3, 9, 6), label="Seizure activity"),
                tox("seizure", None, at(2026, 3, 9, 12), label="Seizure")]
    (f,) = run(kb, toxicities=seizures)
    assert (f.facts["reason_seizures"], f.facts["reason_grade_4"], f.facts["reason_grade_3_at_step_dose"]) == (
        True, False, False)
    assert [line.split(" — ")[0] for line in f.facts["seizure_lines"]] == [
        "2026-03-09 06:00 UTC: Seizure activity", "2026-03-09 12:00 UTC: Seizure"]
    card = renderer().render(f)
    assert card.summary == "Discontinue blinatumomab permanently: 2 seizures this course"
    assert "Grade 4 neurological toxicity." not in as_read(card.detail)
    assert wording.ordinal(2) == "second" and wording.ordinal(9) == "further"
    assert wording.seizure_line({"at": "2026-03-09 06:00 UTC", "label": None, "count": 3,
                                 "sources": [{"ref": "Observation/o1"}, {"ref": "Condition/c1"}]}) == (
        "2026-03-09 06:00 UTC: Seizure (3 seizures charted) — recorded by Observation/o1, Condition/c1")


def test_by_band_gives_one_band_when_the_weight_is_known_and_both_otherwise() -> None:
    args = ("9 µg/day", "5 µg/m²/day", 45)
    assert wording.by_band(*args, True) == "5 µg/m²/day"
    assert wording.by_band(*args, False) == "9 µg/day"
    assert wording.by_band(*args, None) == "9 µg/day (under 45 kg: 5 µg/m²/day)"
    assert wording.with_small_band(*args, True) == "9 µg/day (under 45 kg: 5 µg/m²/day)"
    assert wording.with_small_band(*args, False) == "9 µg/day"
    assert wording.by_band("9 µg/day", None, 45, None) == "9 µg/day"
