"""Card text follows the knowledge files: a number a pharmacist changes in ``service/knowledge/*.toml`` changes
what the card says, because the rule passes it as a fact instead of the card spelling it out."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from service.errors import KnowledgeError
from service.knowledge import Knowledge, load_knowledge
from service.rules import labs as lab_rules
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.settings import DEFAULT_KNOWLEDGE_DIR
from tests.builders import at, blin_order, height, patient, weight
from tests.card_text import as_read
from tests.med_helpers import one, renderer, run
from tests.threshold_builders import infusion, lab_result, timeline, tox

NOW = at(2026, 3, 10, 9)
COURSE = at(2026, 3, 1, 8)
C1 = at(2026, 3, 1, 10)


def edited_knowledge(tmp_path: Path, edits: Mapping[str, list[tuple[str, str]]]) -> Knowledge:
    """The shipped knowledge with each ``(old, new)`` text replacement applied (each ``old`` must occur once)."""
    directory = tmp_path / "knowledge"
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name, pairs in edits.items():
        path = directory / name
        text = path.read_text(encoding="utf-8")
        for old, new in pairs:
            assert text.count(old) == 1, (name, old)
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
    return load_knowledge(directory)


def threshold_findings(kb: Knowledge) -> list[Finding]:
    """A lab without a usable ULN and an ungraded neurotoxicity record, through the threshold rules."""
    tl = timeline(NOW, labs=[lab_result("alt", None, NOW, uln=None, problem="no-uln")],
                  toxicities=[tox("neuro", None, at(2026, 3, 9), label="Confusion, neurotoxicity")],
                  infusions=(infusion("MedicationAdministration/i1", COURSE, None, 28),))
    return [*lab_rules.evaluate(tl, kb), *tox_rules.evaluate(tl, kb)]


def texts(finding: Finding) -> str:
    card = renderer().render(finding)
    labels = [f"{s.label} | {a.description}" for s in card.suggestions or () for a in s.actions or ()]
    return "\n".join([card.summary, as_read(card.detail), *labels])


def test_card_text_follows_a_changed_knowledge_number(kb: Knowledge, tmp_path: Path) -> None:
    edited = edited_knowledge(tmp_path, {
        "labs.toml": [('display = "ALT"\nmultiple_of_uln = 5.0', 'display = "ALT"\nmultiple_of_uln = 4.0'),
                      ('display = "AST"\nmultiple_of_uln = 5.0', 'display = "AST"\nmultiple_of_uln = 4.0'),
                      ("multiple_of_uln = 3.0", "multiple_of_uln = 2.5")],
        # The restart (step) dose is stated once, in regimens.toml [ae_restart]: the toxicity cards read it there.
        "regimens.toml": [("\nug_per_day = 9\n", "\nug_per_day = 10\n"),
                          ("cap_ug_per_day = 9\n", "cap_ug_per_day = 10\n")],
        "premedication.toml": [("window_minutes = 60", "window_minutes = 90"),
                               ("lookback_hours = 24", "lookback_hours = 36")],
        "dosing.toml": [("restart_threshold_minutes = 240", "restart_threshold_minutes = 180")],
    })
    shipped = {f.rule_id: texts(f) for f in threshold_findings(kb)}
    changed = {f.rule_id: texts(f) for f in threshold_findings(edited)}

    assert "the latest ALT and AST with 5 × ULN and total bilirubin with 3 × ULN" in shipped["lab-unevaluable"]
    assert "the latest ALT and AST with 4 × ULN and total bilirubin with 2.5 × ULN" in changed["lab-unevaluable"]
    assert "(or discontinuing if it occurred at 9 µg/day)" in shipped["toxicity-grade-unknown"]
    assert "(or discontinuing if it occurred at 10 µg/day)" in changed["toxicity-grade-unknown"]

    def premed_missing(k: Knowledge) -> str:
        resources = [patient(), weight("w", 70, at(2026, 2, 28)), height("h", 175, at(2026, 2, 28))]
        return texts(one(run(k, now=C1, drafts=[blin_order("o", 9, start=C1)], resources=resources), "premed-missing"))

    before, after = premed_missing(kb), premed_missing(edited)
    assert "No steroid administration in the 24 hours before the start" in before
    assert "No steroid administration in the 36 hours before the start" in after
    assert "IV 1 hour before the infusion" in before and "IV 1.5 hours before the infusion" in after
    assert "interruption of 4 hours or more" in before and "interruption of 3 hours or more" in after
    assert "4 hours" not in after and "24 hours" not in after


def test_regimen_phases_must_cover_the_course(tmp_path: Path) -> None:
    """The phases a card names (2 induction, 3 consolidation, 4 continued therapy) cannot drift from max_cycles."""
    with pytest.raises(KnowledgeError, match=r"regimens\.relapsed-refractory\.phases: must end at max_cycles \(10\)"):
        edited_knowledge(tmp_path, {"regimens.toml": [("max_cycles = 9", "max_cycles = 10"),
                                                      ("{ cycles = [2, 9], days = [1, 28]",
                                                       "{ cycles = [2, 10], days = [1, 28]"),
                                                      ("{ after_cycles = [6, 9], days = 56 }",
                                                       "{ after_cycles = [6, 10], days = 56 }")]})
