"""Liver tests on the timeline: the governing ALT, AST and total bilirubin, each with its ULN and ratio.

The label's liver rule compares a result with a multiple of the upper limit of normal, so the timeline
keeps, per analyte, the latest accepted result (``final``/``amended``/``corrected``; ties broken by
``issued``) and the ULN it was judged against: ``referenceRange.high`` of the normal (or untyped) range
that applies to the patient — or, when that range has no usable ``high``, the upper limit written in its
``text`` ("<40 U/L", "7–56 U/L"; the patterns are ``labs.toml [range_text]``) — else the site's
configured default. The ratio is computed only in one unit (converted with the knowledge's conversion
table); otherwise ``problem`` says why not, and the lab-unevaluable rule warns instead of guessing.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from service.fhir.extract import codings, first_concept, observation_instant, parse_instant, relative_ref
from service.knowledge import Knowledge
from service.knowledge.labs import Analyte, AnalyteId, unit_key
from service.timeline.dose import quantity_unit
from service.timeline.model import LabResult, UlnSource

_AGE_UNIT_YEARS = {"a": 1.0, "yr": 1.0, "year": 1.0, "years": 1.0, "mo": 1 / 12, "month": 1 / 12,
                   "months": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}


@dataclass(frozen=True)
class _High:
    """One applicable range's upper limit: its value, its unit (``None``: the result's own), and whether
    it was read from the range's ``text``."""

    value: float
    unit: str | None
    from_text: bool = False


@dataclass(frozen=True)
class _Candidate:
    analyte: AnalyteId
    resource: Mapping[str, Any]
    at: dt.datetime
    issued: dt.datetime


def build_labs(
    observations: Iterable[Mapping[str, Any]],
    *,
    kb: Knowledge,
    now: dt.datetime,
    patient_age_years: float | None = None,
) -> tuple[LabResult, ...]:
    """The governing result per analyte (at most one each for ALT, AST, total bilirubin).

    The latest accepted result with a numeric value governs; when no result has one, the latest
    is returned with ``problem="no-value"``.
    """
    policy = kb.labs.results
    by_analyte: dict[AnalyteId, list[_Candidate]] = {}
    seen: set[str] = set()
    for obs in observations:
        if obs.get("resourceType") != "Observation" or obs.get("status") not in policy.accepted_statuses:
            continue
        ref = relative_ref(obs)
        if ref in seen and not ref.endswith("/?"):
            continue
        seen.add(ref)
        analyte = _analyte_of(obs, kb)
        if analyte is None:
            continue
        at = _effective(obs)
        if at is None or at > now:
            continue
        if policy.lookback_days is not None and now - at > dt.timedelta(days=policy.lookback_days):
            continue
        issued = parse_instant(obs.get("issued"))
        by_analyte.setdefault(analyte, []).append(
            _Candidate(analyte, obs, at, issued.at if issued else at)
        )
    results: list[LabResult] = []
    for analyte_id in ("alt", "ast", "bilirubin"):
        candidates = sorted(by_analyte.get(analyte_id, ()), key=lambda c: (c.at, c.issued))
        if not candidates:
            continue
        with_value = [c for c in candidates if _value(c.resource) is not None]
        chosen = with_value[-1] if with_value else candidates[-1]
        results.append(_evaluate(chosen, kb=kb, patient_age_years=patient_age_years))
    return tuple(results)


def _analyte_of(obs: Mapping[str, Any], kb: Knowledge) -> AnalyteId | None:
    code = obs.get("code")
    if not isinstance(code, Mapping):
        return None
    analytes = kb.labs.analytes
    concept = first_concept(code, kb.codes, [a.concept for a in analytes.values()])
    return next((name for name, a in analytes.items() if a.concept == concept), None) if concept else None


def _effective(obs: Mapping[str, Any]) -> dt.datetime | None:
    instant = observation_instant(obs)
    return instant.at if instant else None


def _value(obs: Mapping[str, Any]) -> tuple[float, str | None] | None:
    quantity = obs.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value), _unit(quantity)


def _unit(quantity: Mapping[str, Any]) -> str | None:
    unit = quantity_unit(quantity)
    return unit.strip() if unit is not None else None


def _evaluate(candidate: _Candidate, *, kb: Knowledge, patient_age_years: float | None) -> LabResult:
    obs = candidate.resource
    analyte = kb.labs.analytes[candidate.analyte]
    ref = relative_ref(obs)
    value = _value(obs)
    if value is None:
        return LabResult(analyte=candidate.analyte, ref=ref, at=candidate.at, value=None, unit=None, uln=None,
                         uln_source=None, ratio=None, problem="no-value")
    number, unit = value
    uln, uln_unit, source, problem = _uln(obs, kb=kb, analyte_id=candidate.analyte, value_unit=unit,
                                          patient_age_years=patient_age_years)
    ratio = _ratio(number, unit, uln, uln_unit, analyte=analyte) if uln is not None else None
    if uln is not None and ratio is None:
        problem = "unit-not-convertible"
    return LabResult(
        analyte=candidate.analyte, ref=ref, at=candidate.at, value=number, unit=unit, uln=uln, uln_unit=uln_unit,
        uln_source=source, ratio=ratio, problem=problem,
    )


def _ratio(value: float, unit: str | None, uln: float, uln_unit: str | None, *, analyte: Analyte) -> float | None:
    """value ÷ ULN in one unit. A side without a unit is read in the other side's unit (same observation)."""
    if unit is None or uln_unit is None or unit_key(unit) == unit_key(uln_unit):
        return value / uln
    value_conv, uln_conv = analyte.conversion(unit), analyte.conversion(uln_unit)
    if value_conv is None or uln_conv is None:
        return None
    return value_conv.to_canonical(value) / uln_conv.to_canonical(uln)


def _uln(
    obs: Mapping[str, Any], *, kb: Knowledge, analyte_id: AnalyteId, value_unit: str | None,
    patient_age_years: float | None,
) -> tuple[float | None, str | None, UlnSource | None, str | None]:
    """(ULN, its unit, where it came from, problem)."""
    analyte = kb.labs.analytes[analyte_id]
    read = partial(_range_high, kb=kb, analyte=analyte, value_unit=value_unit)
    highs = _applicable_highs(obs.get("referenceRange"), kb=kb, patient_age_years=patient_age_years, read=read)
    if highs:
        distinct = {_canonical_or_raw(h.value, h.unit or value_unit, analyte) for h in highs}
        if len(distinct) > 1:
            return None, None, None, "uln-ambiguous"
        # They agree: a structured ``high`` is named as the source whenever one is among them.
        chosen = min(highs, key=lambda h: h.from_text)
        source: UlnSource = "reference-range-text" if chosen.from_text else "reference-range"
        return chosen.value, chosen.unit or value_unit, source, None
    default = kb.labs.site_default_uln.get(analyte_id)
    if default is not None:
        if value_unit is None:
            return None, None, None, "unit-not-convertible"
        return default.value, default.unit, "site-default", None
    return None, None, None, "no-uln"


def _range_high(r: Mapping[str, Any], *, kb: Knowledge, analyte: Analyte, value_unit: str | None) -> _High | None:
    """A range's ``high`` when usable (a positive number), else the upper limit in its ``text``."""
    high = r.get("high")
    if isinstance(high, Mapping):
        value = high.get("value")
        if not isinstance(value, bool) and isinstance(value, int | float) and value > 0:
            return _High(float(value), _unit(high))
    text = r.get("text")
    if isinstance(text, str) and kb.labs.range_text is not None:
        return _text_high(text, patterns=kb.labs.range_text.compiled, analyte=analyte, value_unit=value_unit)
    return None


def _text_high(
    text: str, *, patterns: Sequence[re.Pattern[str]], analyte: Analyte, value_unit: str | None
) -> _High | None:
    """The upper limit written in a range's text, or ``None`` when it cannot be read with confidence.

    The first pattern that matches the whole text is read. Refused: a "range" whose upper end is not above
    its lower end; a unit that is neither the value's nor convertible to it (including any unit when the
    value has none). A text without a unit is read in the value's unit.
    """
    match = next((m for p in patterns if (m := p.fullmatch(text.strip())) is not None), None)
    if match is None:
        return None
    groups = match.groupdict()
    try:
        high = float(groups["high"])
        low = float(groups["low"]) if groups.get("low") is not None else None
    except (TypeError, ValueError):
        return None
    if not math.isfinite(high) or high <= 0 or (low is not None and not high > low):
        return None
    unit = groups.get("unit")
    if not unit:
        return _High(high, None, from_text=True)
    if value_unit is None:
        return None
    if unit_key(unit) != unit_key(value_unit) and (
            analyte.conversion(unit) is None or analyte.conversion(value_unit) is None):
        return None
    return _High(high, unit.strip(), from_text=True)


def _canonical_or_raw(value: float, unit: str | None, analyte: Analyte) -> tuple[float, str]:
    conv = analyte.conversion(unit) if unit else None
    if conv is None:
        return value, unit_key(unit) if unit else ""
    return round(conv.to_canonical(value), 9), analyte.canonical_unit


def _applicable_highs(
    ranges: Any, *, kb: Knowledge, patient_age_years: float | None,
    read: Callable[[Mapping[str, Any]], _High | None],
) -> list[_High]:
    """The upper limits (``read`` from each range) of the ranges that apply, most specific tier first.

    Tiers: normal/untyped ranges whose age matches the patient; then ranges without age or appliesTo;
    then age-bound ranges when the patient's age is unknown; then ranges with appliesTo (we cannot
    match those, so they count only when nothing else does). Several different highs in the chosen
    tier make the ULN ambiguous.
    """
    if not isinstance(ranges, Sequence):
        return []
    tiers: list[list[_High]] = [[], [], [], []]
    for r in ranges:
        if not isinstance(r, Mapping) or not _normal_type(r.get("type"), kb=kb):
            continue
        entry = read(r)
        if entry is None:
            continue
        age_match = _age_matches(r.get("age"), patient_age_years)
        if age_match is False:
            continue
        if r.get("appliesTo"):
            tiers[3].append(entry)
        elif age_match is True:
            tiers[0].append(entry)
        elif r.get("age"):
            tiers[2].append(entry)
        else:
            tiers[1].append(entry)
    return next((t for t in tiers if t), [])


def _normal_type(type_: Any, *, kb: Knowledge) -> bool:
    policy = kb.labs.results
    if not isinstance(type_, Mapping) or not type_:
        return policy.accept_untyped_range
    for c in codings(type_):
        if c.get("code") in policy.range_type_codes and c.get("system") in (policy.range_type_system, None):
            return True
    text = type_.get("text")
    return isinstance(text, str) and text.strip().lower() in policy.range_type_codes


def _age_matches(age: Any, patient_age_years: float | None) -> bool | None:
    """True/False when both the range's age and the patient's are known; ``None`` when not decidable."""
    if not isinstance(age, Mapping) or patient_age_years is None:
        return None
    for bound in ("low", "high"):
        q = age.get(bound)
        if not isinstance(q, Mapping) or not isinstance(q.get("value"), int | float):
            continue
        factor = _AGE_UNIT_YEARS.get(str(q.get("code") or q.get("unit") or "a").lower())
        if factor is None:
            return None
        limit = float(q["value"]) * factor
        if (bound == "low" and patient_age_years < limit) or (bound == "high" and patient_age_years > limit):
            return False
    return True
