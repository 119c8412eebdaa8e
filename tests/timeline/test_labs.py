"""build_labs: the governing liver result per analyte, its ULN and ratio (clinical-rules.md §4.3, §6 E13–E16)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from pydantic import ValidationError

from service.knowledge import Knowledge
from service.knowledge.labs import RangeText, SiteDefaultUln
from service.timeline.labs import build_labs
from tests.builders import at
from tests.threshold_builders import ALT, AST, BILI_MASS, BILI_MOLES, REF_MEANING, lab, reference_range

NOW = at(2026, 3, 10, 9)


def by_analyte(results: tuple[object, ...]) -> dict[str, object]:
    return {r.analyte: r for r in results}  # type: ignore[attr-defined]


def test_ratio_from_reference_range_high(kb: Knowledge) -> None:
    (alt,) = build_labs([lab("a1", ALT, 200.4, "U/L", at(2026, 3, 9), high=40)], kb=kb, now=NOW)
    assert (alt.analyte, alt.value, alt.unit, alt.uln, alt.uln_unit) == ("alt", 200.4, "U/L", 40.0, "U/L")
    assert alt.uln_source == "reference-range"
    assert alt.ratio == pytest.approx(5.01)
    assert alt.problem is None and alt.ref == "Observation/a1"


def test_latest_final_result_governs_and_preliminary_is_ignored(kb: Knowledge) -> None:
    obs = [
        lab("old", ALT, 400, "U/L", at(2026, 3, 1), high=40),
        lab("new", ALT, 60, "U/L", at(2026, 3, 8), high=40),
        lab("prelim", ALT, 900, "U/L", at(2026, 3, 9), high=40, status="preliminary"),
        lab("err", ALT, 900, "U/L", at(2026, 3, 9, 1), high=40, status="entered-in-error"),
    ]
    (alt,) = build_labs(obs, kb=kb, now=NOW)
    assert alt.ref == "Observation/new" and alt.ratio == pytest.approx(1.5)


def test_amended_and_corrected_count_and_ties_break_on_issued(kb: Knowledge) -> None:
    when = at(2026, 3, 8, 6)
    obs = [
        lab("first", AST, 300, "U/L", when, high=40, status="final", issued=at(2026, 3, 8, 7)),
        lab("fix", AST, 100, "U/L", when, high=40, status="corrected", issued=at(2026, 3, 8, 12)),
    ]
    (ast,) = build_labs(obs, kb=kb, now=NOW)
    assert ast.analyte == "ast" and ast.ref == "Observation/fix" and ast.ratio == pytest.approx(2.5)


def test_no_reference_range_without_site_default_is_a_problem(kb: Knowledge) -> None:
    (alt,) = build_labs([lab("a", ALT, 300, "U/L", at(2026, 3, 9))], kb=kb, now=NOW)
    assert alt.problem == "no-uln" and alt.ratio is None and alt.uln is None and alt.value == 300


def test_no_reference_range_uses_the_site_default(kb: Knowledge) -> None:
    site = dataclasses.replace(kb, labs=kb.labs.model_copy(update={"site_default_uln": {
        "alt": SiteDefaultUln(value=40, unit="U/L", source="site lab catalogue", reviewed_on=dt.date(2026, 1, 1),
                              confidence="verified")}}))
    (alt,) = build_labs([lab("a", ALT, 300, "U/L", at(2026, 3, 9))], kb=site, now=NOW)
    assert (alt.uln, alt.uln_source, alt.problem) == (40, "site-default", None)
    assert alt.ratio == pytest.approx(7.5)


def test_bilirubin_umol_value_against_mg_dl_range_is_converted(kb: Knowledge) -> None:
    # 61.56 µmol/L = 3.6 mg/dL; ULN 1.2 mg/dL → 3.0×.
    (bili,) = build_labs([lab("b", BILI_MOLES, 61.56, "umol/L", at(2026, 3, 9), high=1.2, high_unit="mg/dL")],
                         kb=kb, now=NOW)
    assert bili.analyte == "bilirubin" and bili.uln_unit == "mg/dL"
    assert bili.ratio == pytest.approx(3.0)
    (bili2,) = build_labs([lab("b", BILI_MASS, 4.0, "mg/dL", at(2026, 3, 9), high=20.52, high_unit="µmol/L")],
                          kb=kb, now=NOW)
    assert bili2.ratio == pytest.approx(4.0 * 17.1 / 20.52)


def test_unconvertible_unit_is_a_problem(kb: Knowledge) -> None:
    (alt,) = build_labs([lab("a", ALT, 3, "mmol/L", at(2026, 3, 9), high=40, high_unit="U/L")], kb=kb, now=NOW)
    assert alt.problem == "unit-not-convertible" and alt.ratio is None


def test_iu_per_litre_equals_units_per_litre(kb: Knowledge) -> None:
    (alt,) = build_labs([lab("a", ALT, 240, "IU/L", at(2026, 3, 9), high=40, high_unit="U/L")], kb=kb, now=NOW)
    assert alt.ratio == pytest.approx(6.0)


def test_non_normal_range_types_are_skipped_and_age_ranges_match(kb: Knowledge) -> None:
    ranges = [
        reference_range(100, "U/L", type_code="treatment"),
        reference_range(50, "U/L", age=(0, 17)),
        reference_range(40, "U/L", age=(18, 120)),
    ]
    obs = lab("a", ALT, 200, "U/L", at(2026, 3, 9), extra={"referenceRange": ranges})
    (adult,) = build_labs([obs], kb=kb, now=NOW, patient_age_years=40)
    (child,) = build_labs([obs], kb=kb, now=NOW, patient_age_years=10)
    assert (adult.uln, adult.ratio) == (40, 5.0)
    assert (child.uln, child.ratio) == (50, 4.0)
    (unknown_age,) = build_labs([obs], kb=kb, now=NOW)
    assert unknown_age.problem == "uln-ambiguous"


def test_ranges_with_applies_to_count_only_when_nothing_else_does(kb: Knowledge) -> None:
    ranges = [reference_range(33, "U/L", applies_to="female"), reference_range(41, "U/L")]
    (alt,) = build_labs([lab("a", ALT, 82, "U/L", at(2026, 3, 9), extra={"referenceRange": ranges})], kb=kb, now=NOW)
    assert alt.uln == 41


def test_result_without_value_defers_to_the_previous_value(kb: Knowledge) -> None:
    obs = [lab("v", ALT, 250, "U/L", at(2026, 3, 8), high=40), lab("none", ALT, None, None, at(2026, 3, 9), high=40)]
    (alt,) = build_labs(obs, kb=kb, now=NOW)
    assert alt.ref == "Observation/v"
    (only,) = build_labs(obs[1:], kb=kb, now=NOW)
    assert only.problem == "no-value"


def test_each_analyte_separately_and_other_codes_ignored(kb: Knowledge) -> None:
    obs = [
        lab("alt", ALT, 50, "U/L", at(2026, 3, 9), high=40),
        lab("ast", AST, 45, "U/L", at(2026, 3, 9), high=40),
        lab("bili", BILI_MASS, 1.0, "mg/dL", at(2026, 3, 9), high=1.2),
        lab("direct", "35672-5", 9, "mg/dL", at(2026, 3, 9), high=0.3),
        lab("future", ALT, 900, "U/L", at(2026, 3, 11), high=40),
    ]
    results = by_analyte(build_labs(obs, kb=kb, now=NOW))
    assert sorted(results) == ["alt", "ast", "bilirubin"]
    assert results["alt"].ref == "Observation/alt"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- ULN written only in referenceRange.text (§4.3)


def text_range(text: str, **extra: object) -> dict[str, object]:
    return {"referenceRange": [{"text": text, **extra}]}


@pytest.mark.parametrize(("code", "value", "unit", "text", "uln", "uln_unit", "ratio"), [
    (ALT, 250, "U/L", "<40 U/L", 40.0, "U/L", 6.25),
    (ALT, 250, "U/L", "< 40", 40.0, "U/L", 6.25),
    (ALT, 250, "U/L", "<=40 U/L", 40.0, "U/L", 6.25),
    (BILI_MASS, 3.6, "mg/dL", "≤1.2 mg/dL", 1.2, "mg/dL", 3.0),
    (ALT, 200, "U/L", "0-40 U/L", 40.0, "U/L", 5.0),
    (AST, 200, "U/L", "0 - 40", 40.0, "U/L", 5.0),
    (ALT, 112, "U/L", "7–56 U/L", 56.0, "U/L", 2.0),
    (BILI_MOLES, 34, "umol/L", "3.0-17.0 umol/L", 17.0, "umol/L", 2.0),
    # a text unit that converts to the value's: IU/L ≡ U/L; 17.1 µmol/L = 1 mg/dL
    (ALT, 240, "U/L", " <40 IU/L ", 40.0, "IU/L", 6.0),
    (BILI_MASS, 2.0, "mg/dL", "3.0-17.1 µmol/L", 17.1, "µmol/L", 2.0),
])
def test_upper_limit_read_from_range_text(kb: Knowledge, code: str, value: float, unit: str, text: str,
                                          uln: float, uln_unit: str, ratio: float) -> None:
    (result,) = build_labs([lab("t", code, value, unit, at(2026, 3, 9), extra=text_range(text))], kb=kb, now=NOW)
    assert (result.uln, result.uln_unit, result.uln_source, result.problem) == (
        uln, uln_unit, "reference-range-text", None)
    assert result.ratio == pytest.approx(ratio)


@pytest.mark.parametrize(("value", "unit", "text"), [
    (250, "U/L", ">5"),
    (250, "U/L", "see note"),
    (250, "U/L", "negative"),
    (250, "U/L", ""),
    (250, "U/L", "40 50"),             # two numbers, not a range
    (250, "U/L", "40 U/L"),            # a bare number is not a limit
    (250, "U/L", "<40 50 U/L"),
    (250, "U/L", "0-40 U/L 0-35 U/L"),  # two ranges in one text
    (250, "U/L", "40-20 U/L"),         # high below low
    (250, "U/L", "40-40"),             # high equal to low
    (250, "U/L", "<0 U/L"),
    (250, "U/L", "-5-40 U/L"),
    (250, "U/L", "<40 mmol/L"),        # unit not convertible to U/L
    (250, "U/L", "<40 mg/dL"),         # a bilirubin unit on an ALT result
    (250, None, "<40 U/L"),            # the text has a unit, the value none
])
def test_unreadable_range_text_leaves_the_uln_unknown(kb: Knowledge, value: float, unit: str | None,
                                                      text: str) -> None:
    (alt,) = build_labs([lab("t", ALT, value, unit, at(2026, 3, 9), extra=text_range(text))], kb=kb, now=NOW)
    assert (alt.uln, alt.uln_source, alt.ratio, alt.problem) == (None, None, None, "no-uln")


def test_unreadable_range_text_falls_back_to_the_site_default(kb: Knowledge) -> None:
    site = dataclasses.replace(kb, labs=kb.labs.model_copy(update={"site_default_uln": {
        "alt": SiteDefaultUln(value=50, unit="U/L", source="site lab catalogue", reviewed_on=dt.date(2026, 1, 1),
                              confidence="verified")}}))
    (alt,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra=text_range("see note"))], kb=site, now=NOW)
    assert (alt.uln, alt.uln_source, alt.ratio) == (50, "site-default", 6.0)
    (read,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra=text_range("<40 U/L"))], kb=site, now=NOW)
    assert (read.uln, read.uln_source) == (40, "reference-range-text")


def test_a_usable_high_wins_over_the_text(kb: Knowledge) -> None:
    both = {"referenceRange": [{"high": {"value": 50, "unit": "U/L"}, "text": "<40 U/L"}]}
    (alt,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra=both)], kb=kb, now=NOW)
    assert (alt.uln, alt.uln_source) == (50, "reference-range")
    unusable = {"referenceRange": [{"high": {"value": 0, "unit": "U/L"}, "text": "<40 U/L"}]}
    (alt2,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra=unusable)], kb=kb, now=NOW)
    assert (alt2.uln, alt2.uln_source) == (40, "reference-range-text")


def test_range_text_follows_the_range_selection_rules(kb: Knowledge) -> None:
    ranges = [
        {"text": "<100 U/L", "type": {"coding": [{"system": REF_MEANING, "code": "treatment"}]}},
        {**reference_range(50, "U/L", age=(0, 17)), "high": None, "text": "<50 U/L"},
        {**reference_range(40, "U/L", age=(18, 120)), "high": None, "text": "0-40 U/L"},
    ]
    obs = lab("t", ALT, 200, "U/L", at(2026, 3, 9), extra={"referenceRange": ranges})
    (adult,) = build_labs([obs], kb=kb, now=NOW, patient_age_years=40)
    (child,) = build_labs([obs], kb=kb, now=NOW, patient_age_years=10)
    (unknown_age,) = build_labs([obs], kb=kb, now=NOW)
    assert (adult.uln, adult.ratio, adult.uln_source) == (40, 5.0, "reference-range-text")
    assert (child.uln, child.ratio) == (50, 4.0)
    assert unknown_age.problem == "uln-ambiguous"


def test_text_and_structured_ranges_in_one_tier_must_agree(kb: Knowledge) -> None:
    agree = [reference_range(40, "U/L"), {"text": "<40 U/L"}]
    (alt,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra={"referenceRange": agree})], kb=kb, now=NOW)
    assert (alt.uln, alt.uln_source, alt.problem) == (40, "reference-range", None)
    disagree = [reference_range(40, "U/L"), {"text": "<35 U/L"}]
    (alt2,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra={"referenceRange": disagree})],
                         kb=kb, now=NOW)
    assert (alt2.uln, alt2.problem) == (None, "uln-ambiguous")


def test_without_range_text_knowledge_the_text_is_not_read(kb: Knowledge) -> None:
    off = dataclasses.replace(kb, labs=kb.labs.model_copy(update={"range_text": None}))
    (alt,) = build_labs([lab("t", ALT, 300, "U/L", at(2026, 3, 9), extra=text_range("<40 U/L"))], kb=off, now=NOW)
    assert alt.problem == "no-uln"


@pytest.mark.parametrize(("pattern", "message"), [
    (r"<(?P<limit>\d+)", "needs a named group (?P<high>"),
    (r"<(?P<high>\d+)(?P<extra>.*)", "needs a named group (?P<high>"),
    (r"<(?P<high>\d+", "bad regular expression"),
])
def test_range_text_patterns_are_checked_at_load(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RangeText(upper_limit_patterns=(pattern,), source="test", reviewed_on=dt.date(2026, 1, 1),
                  confidence="verified")
