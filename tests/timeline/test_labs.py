"""build_labs: the governing liver result per analyte, its ULN and ratio (clinical-rules.md §4.3, §6 E13–E16)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from service.knowledge import Knowledge
from service.knowledge.labs import SiteDefaultUln
from service.timeline.labs import build_labs
from tests.builders import at
from tests.threshold_builders import ALT, AST, BILI_MASS, BILI_MOLES, lab, reference_range

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
