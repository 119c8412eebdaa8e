"""Body size on the timeline: latest weight (banded at 45 kg), height, BSA and age.

The dose band hangs on one number, so the builder is strict: the latest accepted weight governs (an
older one never fills in), lb and g are converted, a weight without a unit is a problem rather than a
guess, a weight older than the freshness window is stale, and two weights within a day on either side
of the band threshold make the band unverifiable. BSA is a recorded 8277-6 observation within the
freshness window, else Mosteller from the latest height and weight; the card says which.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from service.fhir.extract import first_concept, observation_instant, parse_instant
from service.knowledge import Knowledge
from service.timeline.dose import quantity_unit
from service.timeline.model import BodySize

_CONCEPTS = ("body_weight", "body_height", "body_surface_area")
"""Tried in this order: the first a code names is the measurement's kind."""


@dataclass(frozen=True)
class _Measure:
    at: dt.datetime
    value: float | None
    problem: str | None


def build_body(
    observations: Iterable[Mapping[str, Any]],
    patient: Mapping[str, Any] | None,
    *,
    kb: Knowledge,
    now: dt.datetime,
) -> BodySize:
    dosing = kb.dosing
    units = dosing.units
    weights: list[_Measure] = []
    heights: list[_Measure] = []
    bsas: list[_Measure] = []
    for obs in observations:
        if obs.get("resourceType") != "Observation" or obs.get("status") not in kb.policy.observations.statuses:
            continue
        code = obs.get("code")
        if not isinstance(code, Mapping):
            continue
        concept = first_concept(code, kb.codes, _CONCEPTS)
        if concept is None:
            continue
        instant = observation_instant(obs)
        if instant is None or instant.at > now:
            continue
        if concept == "body_weight":
            weights.append(_measure(obs, instant.at, units.weight_to_kg, units.norm))
        elif concept == "body_height":
            heights.append(_measure(obs, instant.at, units.height_to_cm, units.norm))
        else:
            bsas.append(_measure(obs, instant.at, {"m2": 1.0}, units.norm))

    weights = [w for w in weights if w.problem != "no-value"]
    fresh_after = now - dt.timedelta(days=dosing.freshness.weight_days)
    weight = max(weights, key=lambda m: m.at, default=None)
    height = max((h for h in heights if h.value is not None), key=lambda m: m.at, default=None)
    bsa_obs = max((b for b in bsas if b.value is not None and b.at >= fresh_after), key=lambda m: m.at, default=None)

    problem: str | None = None
    if weight is None:
        problem = "missing"
    elif weight.problem:
        problem = weight.problem
    elif _straddles(weight, weights, kb):
        problem = "straddles-45kg"
    weight_kg = weight.value if weight is not None else None

    bsa: float | None = None
    method: Literal["observation", "mosteller"] | None = None
    if bsa_obs is not None:
        bsa, method = bsa_obs.value, "observation"
    elif weight_kg and height is not None and height.value:
        bsa, method = math.sqrt(height.value * weight_kg / dosing.bsa.mosteller_divisor), "mosteller"

    return BodySize(
        weight_kg=weight_kg,
        weight_at=weight.at if weight else None,
        weight_stale=weight is not None and weight.at < fresh_after,
        weight_problem=problem,
        height_cm=height.value if height else None,
        bsa_m2=bsa,
        bsa_method=method,
        age_years=_age_years(patient, now),
    )


def _measure(
    obs: Mapping[str, Any], at: dt.datetime, table: Mapping[str, float], norm: Callable[[str], str]
) -> _Measure:
    q = obs.get("valueQuantity")
    value = q.get("value") if isinstance(q, Mapping) else None
    # A size that is not a positive finite number is no measurement (nonsense data must not size a dose).
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return _Measure(at, None, "no-value")
    unit = quantity_unit(q) if isinstance(q, Mapping) else None
    if unit is None:
        return _Measure(at, None, "unit-missing")
    factor = table.get(norm(unit))
    if factor is None:
        return _Measure(at, None, "unit-not-convertible")
    return _Measure(at, float(value) * factor, None)


def _straddles(latest: _Measure, weights: list[_Measure], kb: Knowledge) -> bool:
    """Another weight within the straddle window lies on the other side of the band threshold (E1)."""
    band = kb.dosing.weight_band
    window = dt.timedelta(hours=band.straddle_window_hours)
    assert latest.value is not None
    above = latest.value >= band.threshold_kg
    return any(
        w is not latest and w.value is not None and abs(w.at - latest.at) <= window
        and (w.value >= band.threshold_kg) != above
        for w in weights
    )


def _age_years(patient: Mapping[str, Any] | None, now: dt.datetime) -> float | None:
    birth = parse_instant(patient.get("birthDate")) if patient else None
    if birth is None:
        return None
    b, today = birth.at.date(), now.date()
    years = today.year - b.year - ((today.month, today.day) < (b.month, b.day))
    try:
        last_birthday = b.replace(year=b.year + years)
    except ValueError:  # 29 February
        last_birthday = dt.date(b.year + years, 3, 1)
    return years + (today - last_birthday).days / 366.0
