"""Dose normalisation never crashes on any unit or quantity: it returns a dose or says why there is none.

``daily_dose``, ``parse_rate_unit``, ``text_dose`` and ``concentration_ug_per_ml`` read whatever an EHR sends in a
dosage (clinical-rules.md §5.3, real-world-charting.md §7): UCUM codes and print units, composites such as
``ug/(24.h)``, text doses, wrong JSON types, missing fields, zero, negative and huge numbers. Each must return (a
``DailyDose`` whose µg/day is a number or ``None`` with a ``problem``), never raise; and a dose the service will
compare with the 28 µg/day limit is never ``NaN`` (a NaN passes every comparison silently).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.catalog import build_catalog
from service.errors import InvalidRequest
from service.offload import Evaluator
from service.pipeline import evaluate_cards
from service.timeline.dose import (
    BodyBasis,
    RateUnit,
    concentration_ug_per_ml,
    daily_dose,
    parse_rate_unit,
    text_dose,
)
from service.timeline.model import DailyDose
from tests.builders import (
    BLIN_SCD,
    at,
    blin_infusion,
    concept,
    height,
    medication_request,
    order_context,
    patient,
    view_context,
    weight,
)
from tests.med_helpers import renderer
from tests.properties.json_strategies import (
    DOSE_TEXTS,
    JSON,
    NAN_INF,
    NUMBERS,
    UNITS,
    dose_and_rate,
    quantity,
    timing,
)
from tests.properties.profiles import PROFILE, knowledge, scaled

kb = knowledge()
CATALOG = build_catalog(kb)
EVALUATOR = Evaluator(kb=kb, catalog=dict(CATALOG), renderer=renderer())

NOW = at(2026, 6, 1, 9)
BODIES = st.builds(BodyBasis, bsa_m2=st.one_of(st.none(), st.floats(0.2, 2.6)),
                   weight_kg=st.one_of(st.none(), st.floats(2, 150)))
CONCENTRATIONS = st.one_of(st.none(), st.floats(1e-4, 10))
PERIODS = st.one_of(st.none(), st.floats(0.01, 24 * 7 * 2))


def _check(dose: DailyDose) -> None:
    assert isinstance(dose, DailyDose)
    assert isinstance(dose.display, str) and isinstance(dose.basis, str)
    for value in (dose.ug_per_day, dose.ug_per_m2_per_day):
        assert value is None or (isinstance(value, float | int) and not math.isnan(value)), dose
    if dose.ug_per_day is None and dose.ug_per_m2_per_day is None and not dose.per_kg:
        assert dose.problem, dose  # no dose: it says why


@PROFILE
@given(st.text(max_size=24) | UNITS)
def test_parse_rate_unit_reads_or_refuses_any_unit(unit: str) -> None:
    parsed = parse_rate_unit(unit, kb)
    assert parsed is None or isinstance(parsed, RateUnit)
    if parsed is not None:
        assert math.isfinite(parsed.per_day) and parsed.per_day > 0, (unit, parsed)


@PROFILE
@given(entries=st.lists(dose_and_rate(), max_size=3), timing_=st.one_of(st.none(), timing()), text=DOSE_TEXTS,
       body=BODIES, concentration=CONCENTRATIONS, period=PERIODS)
def test_daily_dose_returns_a_dose_or_a_problem(
    entries: list[dict[str, Any]], timing_: dict[str, Any] | None, text: str | None, body: BodyBasis,
    concentration: float | None, period: float | None,
) -> None:
    _check(daily_dose(entries, kb=kb, timing=timing_, text=text, body=body, concentration_ug_per_ml=concentration,
                      period_hours=period))


@PROFILE
@given(entries=st.lists(dose_and_rate(NUMBERS | NAN_INF), min_size=1, max_size=2),
       timing_=st.one_of(st.none(), timing(NUMBERS | NAN_INF)), body=BODIES)
def test_daily_dose_survives_nan_and_infinity_from_python_callers(
    entries: list[dict[str, Any]], timing_: dict[str, Any] | None, body: BodyBasis
) -> None:
    _check(daily_dose(entries, kb=kb, timing=timing_, body=body))


@PROFILE
@given(text=DOSE_TEXTS, body=BODIES)
def test_text_dose_reads_or_refuses_any_text(text: str | None, body: BodyBasis) -> None:
    dose = text_dose(text, kb=kb, body=body)
    if dose is not None:
        _check(dose)
        assert dose.basis == "text"


INGREDIENT = st.fixed_dictionaries({}, optional={
    "itemCodeableConcept": st.one_of(st.just(concept(BLIN_SCD)), st.just({"text": "sodium chloride 0.9%"}), JSON),
    "strength": st.one_of(st.fixed_dictionaries({}, optional={"numerator": quantity() | JSON,
                                                              "denominator": quantity() | JSON}), JSON),
})


@PROFILE
@given(medication=st.one_of(st.none(), st.fixed_dictionaries(
    {"resourceType": st.just("Medication")}, optional={"ingredient": st.lists(INGREDIENT | JSON, max_size=3) | JSON})))
def test_concentration_is_a_number_or_none(medication: dict[str, Any] | None) -> None:
    value = concentration_ug_per_ml(medication, kb)
    assert value is None or (isinstance(value, float) and not math.isnan(value))


DOSAGE = st.fixed_dictionaries({}, optional={
    "text": DOSE_TEXTS, "timing": st.one_of(timing(), JSON),
    "doseAndRate": st.one_of(st.lists(dose_and_rate(), max_size=2), JSON),
})
MA_DOSAGE = st.fixed_dictionaries({}, optional={
    "text": DOSE_TEXTS, "rateQuantity": quantity() | JSON, "rateRatio": JSON, "dose": quantity() | JSON,
})


@scaled(0.5)
@given(dosage=DOSAGE, ma_dosage=MA_DOSAGE, kg=st.sampled_from([12.0, 30.0, 44.9, 45.0, 78.0]),
       hook=st.sampled_from(["order-sign", "patient-view"]))
def test_any_dosage_on_an_order_or_a_bag_gives_cards_or_a_400(
    dosage: dict[str, Any], ma_dosage: dict[str, Any], kg: float, hook: str
) -> None:
    """End to end (timeline, every rule, every card file), with the odd dosage on the order in focus and on the
    running bag: cards, or a 400 naming the resource when it is not valid FHIR R4 (a dosage whose ``timing.event``
    is a number); never any other error (a 500)."""
    order = medication_request("mr1", start=NOW)
    order["dosageInstruction"] = [dosage]
    bag = blin_infusion("bag", NOW - dt.timedelta(days=2), None)
    bag["dosage"] = ma_dosage
    chart = [patient(), weight("w", kg, NOW - dt.timedelta(days=1)), height("h", 140, NOW - dt.timedelta(days=1)),
             bag]
    context = order_context(order) if hook == "order-sign" else view_context()
    service = CATALOG["blinatumomab-order-sign" if hook == "order-sign" else "blinatumomab-patient-view"]
    try:
        cards = evaluate_cards(EVALUATOR, service, context, {"all": chart}, now=NOW)
    except InvalidRequest as exc:
        assert "is not valid FHIR R4" in str(exc)
        return
    assert all(indicator in ("info", "warning", "critical") for _, _, indicator in cards)
