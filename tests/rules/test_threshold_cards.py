"""Every threshold finding renders with its card file (StrictUndefined: a fact the card names must exist)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from service.knowledge import Knowledge
from service.render import SUMMARY_LIMIT, CardRenderer
from service.rules import labs as lab_rules
from service.rules import toxicity as tox_rules
from service.rules.base import Finding
from service.settings import DEFAULT_CARDS_DIR
from service.timeline.model import Regimen
from tests.builders import at
from tests.card_text import as_read
from tests.threshold_builders import draft_order, infusion, lab_result, restart_position, timeline, tox

THRESHOLD_RULES = (
    "hepatic-interrupt", "lab-unevaluable", "crs-interrupt", "crs-discontinue", "neuro-interrupt",
    "neuro-discontinue", "seizure", "adverse-event-interrupt", "adverse-event-discontinue",
    "toxicity-grade-unknown", "restart-premature",
)
NOW = at(2026, 3, 10, 9)
COURSE = at(2026, 3, 1, 8)


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> CardRenderer:
    cards = tmp_path_factory.mktemp("cards")
    for name in ("_defaults", *THRESHOLD_RULES):
        shutil.copy(Path(DEFAULT_CARDS_DIR) / f"{name}.toml", cards / f"{name}.toml")
    return CardRenderer.load(cards, THRESHOLD_RULES)


def findings(kb: Knowledge) -> list[Finding]:
    running = (infusion("MedicationAdministration/i1", COURSE, None, 28),)
    out: list[Finding] = []

    def add(**kw: object) -> None:
        tl = timeline(NOW, **kw)  # type: ignore[arg-type]
        out.extend(lab_rules.evaluate(tl, kb))
        out.extend(tox_rules.evaluate(tl, kb))

    add(labs=[lab_result("alt", 6.2, NOW), lab_result("bilirubin", 3.4, NOW, uln=1.2)], orders=[draft_order()])
    add(labs=[lab_result("ast", 5.5, NOW, uln_source="site-default")], hook="patient-view")
    add(labs=[lab_result("alt", None, NOW, uln=None, problem="no-uln"),
              lab_result("bilirubin", None, NOW, uln=None, problem="unit-not-convertible")])
    for weight, bsa in ((70, None), (30, 1.0), (None, None)):
        add(toxicities=[tox("crs", 3, at(2026, 3, 9), from_text=True)], infusions=running, weight_kg=weight,
            bsa_m2=bsa)
    add(toxicities=[tox("crs", 4, at(2026, 3, 9), system="ASTCT")], infusions=running)
    add(toxicities=[tox("neuro", 3, at(2026, 3, 9), label="ICANS")], infusions=running)
    add(toxicities=[tox("neuro", 3, at(2026, 3, 9))], infusions=())
    add(toxicities=[tox("neuro", 3, at(2026, 3, 2)), tox("seizure", None, at(2026, 3, 5)),
                    tox("seizure", None, at(2026, 3, 6))], infusions=(infusion("i", COURSE, None, 9),))
    add(toxicities=[tox("seizure", None, at(2026, 3, 5))], infusions=running)
    add(toxicities=[tox("other", 3, at(2026, 3, 9), label="Pancreatitis"),
                    tox("other", 4, at(2026, 3, 9), label="Tumor lysis syndrome"),
                    tox("other", 3, at(2026, 3, 1, 9), label="Colitis")], infusions=running)
    add(toxicities=[tox("crs", None, at(2026, 3, 9), label="Severe CRS"),
                    tox("neuro", None, at(2026, 3, 9), label="Confusion, neurotoxicity")], infusions=running)
    stopped = at(2026, 3, 3)
    order = draft_order(start=NOW)
    add(toxicities=[tox("neuro", 3, stopped), tox("neuro", 1, at(2026, 3, 8)), tox("other", 3, stopped, label="Rash"),
                    tox("other", 0, at(2026, 3, 9), label="Rash")],
        infusions=(infusion("i", COURSE, stopped),), orders=[order],
        positions={order.ref: restart_position(stopped, NOW, course_start=COURSE)})
    late = NOW - dt.timedelta(hours=5)
    add(toxicities=[tox("flush", None, late, label="Line flushed")], infusions=(infusion("i", COURSE, late),),
        orders=[order])
    return out


def test_every_threshold_rule_renders(kb: Knowledge, renderer: CardRenderer) -> None:
    produced = findings(kb)
    assert {f.rule_id for f in produced} == set(THRESHOLD_RULES)
    # the order-sign hepatic finding carries the delete action, the patient-view one none
    assert [bool(f.actions) for f in produced if f.rule_id == "hepatic-interrupt"] == [True, False]
    for finding in produced:
        card = renderer.render(finding)
        assert len(card.summary) <= SUMMARY_LIMIT and not card.summary.endswith("…"), card.summary
        assert card.detail and "{{" not in card.detail and "section" not in card.detail.lower()
        assert card.indicator == finding.indicator
        assert card.source.topic is not None and card.source.topic.code == finding.rule_id
        assert card.overrideReasons
        if finding.rule_id == "hepatic-interrupt" and finding.actions:
            assert card.suggestions and card.suggestions[0].actions
            assert card.suggestions[0].actions[0].resourceId == "MedicationRequest/mr1"


def test_card_text_carries_the_facts(kb: Knowledge, renderer: CardRenderer) -> None:
    by_rule: dict[str, list[str]] = {}
    for finding in findings(kb):
        card = renderer.render(finding)
        by_rule.setdefault(finding.rule_id, []).append(as_read(f"{card.summary}\n{card.detail}"))
    assert "ALT 6.2×ULN" in by_rule["hepatic-interrupt"][0]
    assert "site's configured default ULN" in by_rule["hepatic-interrupt"][1]
    assert "dexamethasone 8 mg every 8 hours" in by_rule["crs-interrupt"][0]
    assert "grade parsed from free text" in by_rule["crs-interrupt"][0]
    assert "5 mg/m² (maximum 8 mg; 5 mg for this patient" in by_rule["crs-interrupt"][1]
    assert "restart at 9 µg/day" in by_rule["crs-interrupt"][0]
    assert "label wins" not in by_rule["crs-interrupt"][0] and "current label" in by_rule["crs-interrupt"][0]
    assert "2 seizures this course" in by_rule["neuro-discontinue"][0]
    assert "Consider stopping" in " ".join(by_rule["adverse-event-discontinue"])
    assert any("wait ≥ 12 h" in text for text in by_rule["restart-premature"])


def _texts(kb: Knowledge, renderer: CardRenderer, **kw: object) -> dict[str, str]:
    tl = timeline(NOW, **kw)  # type: ignore[arg-type]
    out: dict[str, str] = {}
    for finding in [*lab_rules.evaluate(tl, kb), *tox_rules.evaluate(tl, kb)]:
        card = renderer.render(finding)
        assert len(card.summary) <= SUMMARY_LIMIT and "section" not in card.detail.lower(), card.summary
        out[finding.rule_id] = as_read(f"{card.summary}\n{card.detail}")
    return out


def test_overdose_restart_cards_name_both_label_conditions(kb: Knowledge, renderer: CardRenderer) -> None:
    stopped = NOW - dt.timedelta(hours=14)
    order = draft_order(start=NOW)
    common = {"infusions": (infusion("i", COURSE, stopped, stop_reason="overdose"),), "orders": [order],
              "positions": {order.ref: restart_position(stopped, NOW, course_start=COURSE, reason="overdose")}}
    overdose = tox("overdose", None, stopped, label="Overdose")
    unknown = _texts(kb, renderer, toxicities=[overdose], **common)["restart-premature"]
    assert "confirm all toxicities resolved" in unknown and "No graded record since the overdose" in unknown
    assert "**both** conditions" in unknown and "12 hours" in unknown
    unresolved = _texts(kb, renderer, toxicities=[overdose, tox("other", 2, NOW - dt.timedelta(hours=3),
                                                                 label="Tremor")], **common)["restart-premature"]
    assert "while toxicity is unresolved" in unresolved and "- Tremor: grade 2 on" in unresolved


def test_restart_dose_is_called_unconfirmed_outside_relapsed_refractory(kb: Knowledge,
                                                                         renderer: CardRenderer) -> None:
    """clinical-rules.md §8 item 8: the 9 µg/day restart dose was read for R/R only."""
    running = (infusion("i", COURSE, None, 28),)
    crs = [tox("crs", 3, at(2026, 3, 9))]
    rr = _texts(kb, renderer, toxicities=crs, infusions=running)["crs-interrupt"]
    assert "not confirmed" not in rr and "**Weight band:** 70 kg" in rr and "≥ 45 kg, fixed dosing" in rr
    assert "relapsed or refractory B-cell precursor ALL — assumed (the service default)" in rr
    mrd = Regimen(id="mrd-positive", why="order-canonical", evidence="urn:blina-cds:regimen:mrd-positive")
    for rule, toxicities in (("crs-interrupt", crs), ("neuro-interrupt", [tox("neuro", 3, at(2026, 3, 9))]),
                             ("adverse-event-interrupt", [tox("other", 3, at(2026, 3, 9), label="Rash")])):
        text = _texts(kb, renderer, toxicities=toxicities, infusions=running, regimen=mrd)[rule]
        assert "for the MRD-positive B-cell precursor ALL regimen" in text and "it is not confirmed" in text, rule


def test_hepatic_card_attributes_its_sources_correctly(kb: Knowledge, renderer: CardRenderer) -> None:
    text = _texts(kb, renderer, labs=[lab_result("alt", 6.2, NOW)])["hepatic-interrupt"]
    assert "LiverTox (NIH) gives the same thresholds" in text
    assert "the 2016 review (Table 3) says to interrupt until resolved" in text
    assert "LiverTox say to interrupt until resolved" not in text


def test_grade_without_a_grading_system_is_accepted_with_a_note(kb: Knowledge, renderer: CardRenderer) -> None:
    """E18: the numeric grade is used and the card says the grading system was not stated."""
    text = _texts(kb, renderer, toxicities=[tox("crs", 3, at(2026, 3, 9))],
                  infusions=(infusion("i", COURSE, None, 28),))["crs-interrupt"]
    assert "grading system not stated; the label's table used CTCAE v4.0" in text
