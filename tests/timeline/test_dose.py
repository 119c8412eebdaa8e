"""Names and units as charted (issue 6 item 9): the phrasings live in ``service/knowledge/`` and are table-tested here.

Each row is a real-looking phrasing; negative rows are the traps (dexmedetomidine is not dexamethasone, mcg/hr is per
hour, the kit's stabilizer is not the drug).
"""

from __future__ import annotations

import pytest

from service.knowledge import Knowledge
from service.timeline.dose import (
    concentration_ug_per_ml,
    daily_dose,
    is_blinatumomab,
    parse_rate_unit,
    steroid_agent,
)
from tests.builders import RXNORM

STEROID_NAMES = [
    ("Dexamethasone sodium phosphate 4 mg/mL injection", "dexamethasone"),
    ("DEXAMETHASONE 20 MG IV ONCE", "dexamethasone"),
    ("Decadron 20 mg IV", "dexamethasone"),
    ("dexamethasone (DECADRON) injection 20 mg", "dexamethasone"),
    ("Dexamethasone 0.75 MG Oral Tablet [Decadron]", "dexamethasone"),
    ("Hemady 20 mg tablet", "dexamethasone"),
    ("DexPak 13 day", "dexamethasone"),
    ("TaperDex 6-day", "dexamethasone"),
    ("Dex 20 mg IV 1 hr prior to blina", "dexamethasone"),
    ("dex 8mg q8h (CRS)", "dexamethasone"),
    ("dexmedetomidine 0.4 mcg/kg/hr infusion", None),
    ("Precedex 200 mcg/50 mL", None),
    ("dex 0.7 mcg/kg/h", None),
    ("DXM 30 mg", None),              # dextromethorphan far more often than dexamethasone
    ("dextrose 5% in water", None),
    ("Solu-Medrol 125 mg IV push", "methylprednisolone"),
    ("SOLU-MEDROL (methylPREDNISolone sodium succinate)", "methylprednisolone"),
    ("Solumedrol 80 mg", "methylprednisolone"),
    ("Solu Medrol 80 mg", "methylprednisolone"),
    ("Medrol 4 mg dose pack", "methylprednisolone"),
    ("Depo-Medrol 40 mg/mL IM", "methylprednisolone"),
    ("A-Methapred 125 mg", "methylprednisolone"),
    ("methylpred 80 mg IV", "methylprednisolone"),
    ("methylprednisolone acetate", "methylprednisolone"),
    ("predniSONE 100 mg tablet", "prednisone"),
    ("Deltasone 20 mg", "prednisone"),
    ("Rayos 5 mg delayed-release", "prednisone"),
    ("prednisoLONE 15 mg/5 mL", "prednisolone"),
    ("Orapred ODT 30 mg", "prednisolone"),
    ("Millipred 5 mg", "prednisolone"),
    ("Pediapred oral solution", "prednisolone"),
    ("pred forte eye drops", None),   # "pred" alone names no single agent
    ("hydroxyzine 25 mg", None),
]


@pytest.mark.parametrize(("text", "agent"), STEROID_NAMES)
def test_steroid_names_as_charted(kb: Knowledge, text: str, agent: str | None) -> None:
    assert steroid_agent({"text": text}, kb) == agent


@pytest.mark.parametrize(("code", "agent"), [("197582", "dexamethasone"), ("343040", "dexamethasone"),
                                             ("312615", "prednisone"), ("259966", "methylprednisolone")])
def test_sandbox_product_codes_are_their_ingredient(kb: Knowledge, code: str, agent: str) -> None:
    assert steroid_agent({"coding": [{"system": RXNORM, "code": code}]}, kb) == agent


BLIN_NAMES = [
    ("BLINCYTO (blinatumomab) for injection", True),
    ("blinatumomab 28 mcg [28 mcg/24 hr] + sodium chloride 0.9% 250 mL", True),
    ("Blincyto 35 mcg vial", True),
    ("blina 28 mcg/24 hr IV continuous", True),
    ("AMG 103 (blinatumomab) per protocol", True),
    ("MT103 infusion", True),
    ("MT-103", True),
    ("BLINCYTO IV Solution Stabilizer 10 mL", False),
    ("IV solution stabiliser for blinatumomab", False),
    ("blinded study drug", False),
    ("blinking", False),
    ("inotuzumab ozogamicin (Besponsa)", False),
]


@pytest.mark.parametrize(("text", "expected"), BLIN_NAMES)
def test_blinatumomab_names_as_charted(kb: Knowledge, text: str, expected: bool) -> None:
    assert is_blinatumomab({"text": text}, kb) is expected


DOSE_TEXTS = [
    ("BLINCYTO 28 mcg/day continuous IV", 28.0),
    ("28 mcg/24 hr", 28.0),
    ("28 mcg/24hr", 28.0),
    ("28mcg/24 hrs", 28.0),
    ("9 mcg per day", 9.0),
    ("9 mcg/d", 9.0),
    ("28 microgram/day", 28.0),
    ("28 micrograms per 24 hours", 28.0),
    ("28 µg/day", 28.0),
    ("28 μg/day", 28.0),
    ("9 ug/d", 9.0),
    ("9mcg/day", 9.0),
    ("9 MCG/DAY", 9.0),
    ("28 mcg daily", 28.0),
    ("1.167 mcg/hr", 28.0),        # per hour → × 24
    ("1.2 mcg/h", 28.8),
    ("0.028 mg/day", 28.0),
    ("restart at 9 mcg/d per protocol", 9.0),
]


@pytest.mark.parametrize(("text", "ug_per_day"), DOSE_TEXTS)
def test_dose_per_time_in_text(kb: Knowledge, text: str, ug_per_day: float) -> None:
    dose = daily_dose([], kb=kb, text=text)
    assert dose.basis == "text"
    assert dose.ug_per_day == pytest.approx(ug_per_day, abs=0.01)


@pytest.mark.parametrize("text", [
    "10 mL/hr over 24 hrs",            # a pump rate, not a dose
    "28 mcg/dose",                      # per dose is not per time
    "28 mcg",                           # no time
    "Cycle 2 Day 1, do not flush",
])
def test_text_without_a_dose_per_time_is_not_read_as_one(kb: Knowledge, text: str) -> None:
    assert daily_dose([], kb=kb, text=text).ug_per_day is None


def test_per_hour_is_never_per_day(kb: Knowledge) -> None:
    per_hour = daily_dose([], kb=kb, text="28 mcg/hr")
    assert per_hour.ug_per_day == pytest.approx(672)
    assert per_hour.unit_slip == "per-hour-for-per-day"


@pytest.mark.parametrize(("text", "per_m2"), [("15 mcg/m2/day", 15.0), ("5 mcg/m^2/d", 5.0),
                                              ("15 microgram/m² per day", 15.0), ("5 mcg/sq m/day", 5.0)])
def test_bsa_based_dose_text(kb: Knowledge, text: str, per_m2: float) -> None:
    assert daily_dose([], kb=kb, text=text).ug_per_m2_per_day == pytest.approx(per_m2)


@pytest.mark.parametrize(("unit", "per_day", "per_hour"), [
    ("ug/d", 1.0, False), ("mcg/d", 1.0, False), ("mcg/day", 1.0, False), ("mcg/24 hr", 1 / 24 * 24, False),
    ("mcg/24hr", 1.0, False), ("ug/(24.h)", 1.0, False), ("mcg per day", 1.0, False), ("microgram/day", 1.0, False),
    ("µg/day", 1.0, False), ("ug/h", 24.0, True), ("mcg/hr", 24.0, True), ("mcg/hour", 24.0, True),
    ("mL/hr", 24.0, True),
])
def test_rate_units_as_charted(kb: Knowledge, unit: str, per_day: float, per_hour: bool) -> None:
    parsed = parse_rate_unit(unit, kb)
    assert parsed is not None
    assert parsed.per_day == pytest.approx(per_day)
    assert parsed.per_hour is per_hour


@pytest.mark.parametrize("unit", ["{pill}", "mcg", "mL", "tab", "ug/dose"])
def test_units_that_are_not_a_rate(kb: Knowledge, unit: str) -> None:
    assert parse_rate_unit(unit, kb) is None


@pytest.mark.parametrize("unit", ["ug/0h", "ug/(0.h)", "mg/0.0d", "ug/m2/0d", "ug/" + "9" * 400 + "h"])
def test_a_rate_over_zero_or_endless_time_is_no_rate(kb: Knowledge, unit: str) -> None:
    """Found by the property tests: "ug/(0.h)" divided by zero (a 500 from the hook)."""
    assert parse_rate_unit(unit, kb) is None
    ratio = {"rateRatio": {"numerator": {"value": 28, "code": "ug"}, "denominator": {"value": 1, "code": "0h"}}}
    assert daily_dose([ratio], kb=kb).problem == "unit-not-convertible"


@pytest.mark.parametrize("ingredient", [5, True, "blinatumomab", {"strength": {}}])
def test_a_medication_whose_ingredient_is_not_a_list_has_no_concentration(kb: Knowledge, ingredient: object) -> None:
    """Found by the property tests: a non-list ``ingredient`` raised TypeError."""
    assert concentration_ug_per_ml({"resourceType": "Medication", "ingredient": ingredient}, kb) is None
