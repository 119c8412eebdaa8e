"""hepatic-interrupt and lab-unevaluable (clinical-rules.md §3.1, §6 E13–E16)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from service.knowledge import Knowledge
from service.knowledge.labs import SiteDefaultUln
from service.render import CardRenderer
from service.rules import RULE_IDS
from service.rules import labs as lab_rules
from service.rules.base import Action, Finding
from service.settings import DEFAULT_CARDS_DIR
from service.timeline.labs import build_labs
from tests.builders import at
from tests.threshold_builders import ALT, BILI_MASS, BILI_MOLES, draft_order, lab, lab_result, timeline

NOW = at(2026, 3, 10, 9)
DAY = at(2026, 3, 9, 6)


def run(kb: Knowledge, **kw: object) -> list[Finding]:
    return list(lab_rules.evaluate(timeline(NOW, **kw), kb))  # type: ignore[arg-type]


def test_alt_just_above_five_times_uln_is_critical_with_removal_at_order_sign(kb: Knowledge) -> None:
    order = draft_order()
    (finding,) = run(kb, labs=[lab_result("alt", 5.01, DAY)], orders=[order])
    assert (finding.rule_id, finding.indicator) == ("hepatic-interrupt", "critical")
    (breach,) = finding.facts["breaches"]
    assert breach["analyte"] == "alt" and breach["display"] == "ALT"
    assert breach["ratio"] == 5.01 and breach["limit"] == 5 and breach["uln"] == 40
    assert breach["uln_source"] == "reference-range" and breach["at"] == "2026-03-09 06:00 UTC"
    assert finding.facts["orders"] == ["MedicationRequest/mr1"]
    assert finding.actions == (Action(type="delete", key="remove-order", resource_id="MedicationRequest/mr1"),)


@pytest.mark.parametrize(("analyte", "ratio"), [("alt", 5.0), ("ast", 5.0), ("bilirubin", 3.0), ("alt", 4.99)])
def test_exactly_at_the_multiple_is_quiet(kb: Knowledge, analyte: str, ratio: float) -> None:
    assert run(kb, labs=[lab_result(analyte, ratio, DAY)]) == []


def test_bilirubin_above_three_times_and_both_breaches_on_one_card(kb: Knowledge) -> None:
    (finding,) = run(kb, labs=[lab_result("ast", 7.2, DAY), lab_result("bilirubin", 3.01, DAY, uln=1.2)],
                     hook="patient-view", orders=[draft_order()])
    assert [b["analyte"] for b in finding.facts["breaches"]] == ["ast", "bilirubin"]
    assert finding.actions == () and finding.facts["orders"] == []


def test_normal_labs_are_quiet(kb: Knowledge) -> None:
    assert run(kb, labs=[lab_result("alt", 1.1, DAY), lab_result("ast", 0.8, DAY),
                         lab_result("bilirubin", 0.5, DAY, uln=1.2)]) == []


def test_no_uln_without_site_default_warns(kb: Knowledge) -> None:
    (finding,) = run(kb, labs=[lab_result("alt", None, DAY, uln=None, problem="no-uln")])
    assert (finding.rule_id, finding.indicator) == ("lab-unevaluable", "warning")
    assert [(x["analyte"], x["problem"]) for x in finding.facts["labs"]] == [("alt", "no-uln")]


def test_end_to_end_from_fhir(kb: Knowledge) -> None:
    """Latest wins (earlier breach normalised), preliminary ignored, µmol/L bilirubin vs mg/dL range."""
    observations = [
        lab("alt-old", ALT, 800, "U/L", at(2026, 3, 5), high=40),
        lab("alt-new", ALT, 80, "U/L", at(2026, 3, 8), high=40),
        lab("alt-prelim", ALT, 900, "U/L", at(2026, 3, 9), high=40, status="preliminary"),
        lab("bili", BILI_MOLES, 61.57, "umol/L", at(2026, 3, 9), high=1.2, high_unit="mg/dL"),
    ]
    tl = timeline(NOW, labs=build_labs(observations, kb=kb, now=NOW))
    (finding,) = lab_rules.evaluate(tl, kb)
    assert finding.rule_id == "hepatic-interrupt"
    (breach,) = finding.facts["breaches"]
    assert breach["analyte"] == "bilirubin" and breach["unit"] == "umol/L" and breach["uln_unit"] == "mg/dL"
    assert breach["ratio"] == 3.0  # 3.0005 shown to 2 decimals; it is strictly above 3
    assert tl.labs[-1].ratio is not None and tl.labs[-1].ratio > 3.0

    exactly = [lab("bili", BILI_MASS, 3.6, "mg/dL", at(2026, 3, 9), high=1.2)]
    assert list(lab_rules.evaluate(timeline(NOW, labs=build_labs(exactly, kb=kb, now=NOW)), kb)) == []


def test_no_range_with_site_default_evaluates_and_says_so(kb: Knowledge) -> None:
    site = dataclasses.replace(kb, labs=kb.labs.model_copy(update={"site_default_uln": {
        "alt": SiteDefaultUln(value=40, unit="U/L", source="site", reviewed_on=dt.date(2026, 1, 1),
                              confidence="verified")}}))
    observations = [lab("a", ALT, 240, "U/L", at(2026, 3, 9))]
    (finding,) = lab_rules.evaluate(timeline(NOW, labs=build_labs(observations, kb=site, now=NOW)), site)
    assert finding.rule_id == "hepatic-interrupt" and finding.facts["uses_site_default"] is True
    assert finding.facts["breaches"][0]["uln_source"] == "site-default"
    (warning,) = lab_rules.evaluate(timeline(NOW, labs=build_labs(observations, kb=kb, now=NOW)), kb)
    assert warning.rule_id == "lab-unevaluable"


def test_unconvertible_unit_warns(kb: Knowledge) -> None:
    observations = [lab("a", ALT, 3, "mmol/L", at(2026, 3, 9), high=40, high_unit="U/L")]
    (finding,) = lab_rules.evaluate(timeline(NOW, labs=build_labs(observations, kb=kb, now=NOW)), kb)
    assert finding.rule_id == "lab-unevaluable"
    assert finding.facts["labs"][0]["problem"] == "unit-not-convertible"


def test_uln_read_from_range_text_interrupts_and_the_card_says_so(kb: Knowledge) -> None:
    """§4.3: a reference range given only as text ("<40 U/L") is parsed; ALT 250 = 6.25× fires, 200 = 5.0× not."""
    text_only = {"referenceRange": [{"text": "<40 U/L"}]}
    above = [lab("a", ALT, 250, "U/L", at(2026, 3, 9), extra=text_only)]
    (finding,) = lab_rules.evaluate(timeline(NOW, labs=build_labs(above, kb=kb, now=NOW)), kb)
    assert (finding.rule_id, finding.indicator) == ("hepatic-interrupt", "critical")
    (breach,) = finding.facts["breaches"]
    assert (breach["uln"], breach["uln_unit"], breach["uln_source"], breach["ratio"]) == (
        40, "U/L", "reference-range-text", 6.25)
    assert finding.facts["uses_site_default"] is False
    card = CardRenderer.load(Path(DEFAULT_CARDS_DIR), RULE_IDS).render(finding)
    assert "ULN 40 U/L, read from the text of the result's reference range" in card.detail

    at_limit = [lab("a", ALT, 200, "U/L", at(2026, 3, 9), extra=text_only)]
    assert list(lab_rules.evaluate(timeline(NOW, labs=build_labs(at_limit, kb=kb, now=NOW)), kb)) == []


def test_a_value_that_rounds_to_a_whole_number_is_shown_without_a_decimal(kb: Knowledge) -> None:
    """Values are shown as the other cards show them: 200.004 U/L reads "200", never "200.0"."""
    observations = [lab("a", ALT, 200.004, "U/L", at(2026, 3, 9), high=40)]
    (finding,) = lab_rules.evaluate(timeline(NOW, labs=build_labs(observations, kb=kb, now=NOW)), kb)
    card = CardRenderer.load(Path(DEFAULT_CARDS_DIR), RULE_IDS).render(finding)
    assert "- ALT 200 U/L on 2026-03-09 00:00 UTC: " in card.detail


@pytest.mark.parametrize(("ratio", "limit", "shown"), [
    (5.01, 5.0, "5.01"), (5.004, 5.0, "5.004"), (6.625, 5.0, "6.6"), (3.04, 3.0, "3.04"), (4.996, 5.0, "4.996"),
    (20.0, 5.0, "20.0"),
])
def test_a_multiple_of_uln_is_never_shown_rounded_onto_its_limit(ratio: float, limit: float, shown: str) -> None:
    assert lab_rules.ratio_display(ratio, limit) == shown


def test_hepatic_card_shows_5_01_next_to_the_limit(kb: Knowledge) -> None:
    (finding,) = run(kb, labs=[lab_result("alt", 5.01, DAY)], hook="patient-view")
    from tests.med_helpers import renderer

    card = renderer().render(finding)
    assert "ALT 5.01×ULN (limit: above 5×)" in card.summary
    assert "5.01 × ULN" in (card.detail or "") and "5.0×" not in card.summary
