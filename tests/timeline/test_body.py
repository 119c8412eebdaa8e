"""Body size: latest weight with unit conversion, staleness, the 45 kg straddle, height, BSA, age."""

from __future__ import annotations

import datetime as dt

import pytest

from service.knowledge import Knowledge
from service.timeline.body import build_body
from tests.builders import at, bsa, height, patient, weight

NOW = at(2026, 3, 10, 8)


def body(kb: Knowledge, *observations: dict, birth_date: str | None = "1980-01-01"):  # type: ignore[no-untyped-def]
    return build_body(observations, patient(birth_date=birth_date), kb=kb, now=NOW)


@pytest.mark.parametrize(
    ("value", "unit", "kg"),
    [(44.9, "kg", 44.9), (45.0, "kg", 45.0), (100, "[lb_av]", 45.359237), (99, "lb", 44.9056), (45000, "g", 45.0)],
)
def test_weight_units_are_converted_before_banding(kb: Knowledge, value: float, unit: str, kg: float) -> None:
    b = body(kb, weight("w", value, at(2026, 3, 9), unit=unit))
    assert b.weight_kg == pytest.approx(kg, abs=1e-4)
    assert b.weight_problem is None


def test_weight_without_unit_cannot_be_banded(kb: Knowledge) -> None:
    b = body(kb, weight("w", 50, at(2026, 3, 9), unit=None))  # type: ignore[arg-type]
    assert (b.weight_kg, b.weight_problem) == (None, "unit-missing")


def test_unknown_weight_unit(kb: Knowledge) -> None:
    assert body(kb, weight("w", 50, at(2026, 3, 9), unit="stone")).weight_problem == "unit-not-convertible"


def test_latest_weight_governs_and_an_older_one_never_fills_in(kb: Knowledge) -> None:
    b = body(kb, weight("old", 60, at(2026, 3, 1)), weight("new", 58, at(2026, 3, 9, 7)),
             weight("prelim", 30, at(2026, 3, 9, 9), status="preliminary"))
    assert b.weight_kg == 58 and b.weight_at == at(2026, 3, 9, 7)


def test_missing_weight(kb: Knowledge) -> None:
    assert body(kb).weight_problem == "missing"


@pytest.mark.parametrize(("days", "stale"), [(30, False), (31, True)])
def test_weight_older_than_freshness_is_stale(kb: Knowledge, days: int, stale: bool) -> None:
    b = body(kb, weight("w", 70, at(2026, 3, 10, 8) - dt.timedelta(days=days)))
    assert b.weight_stale is stale


@pytest.mark.parametrize(("hours_apart", "problem"), [(23, "straddles-45kg"), (24, "straddles-45kg"), (25, None)])
def test_two_weights_within_24h_straddling_45kg(kb: Knowledge, hours_apart: int, problem: str | None) -> None:
    later = at(2026, 3, 9, 8)
    earlier = later - dt.timedelta(hours=hours_apart)
    b = body(kb, weight("a", 45.2, earlier), weight("b", 44.8, later))
    assert b.weight_problem == problem
    assert b.weight_kg == 44.8


def test_mosteller_bsa_from_latest_height_and_weight(kb: Knowledge) -> None:
    b = body(kb, weight("w", 40, at(2026, 3, 9)), height("h", 160, at(2026, 1, 1)))
    assert b.bsa_m2 == pytest.approx(1.333, abs=1e-3)
    assert b.bsa_method == "mosteller"
    assert b.height_cm == 160


def test_height_in_metres(kb: Knowledge) -> None:
    assert body(kb, height("h", 1.5, at(2026, 3, 9), unit="m")).height_cm == pytest.approx(150)


def test_recorded_bsa_within_freshness_wins_else_mosteller(kb: Knowledge) -> None:
    fresh = body(kb, weight("w", 30, at(2026, 3, 9)), height("h", 135, at(2026, 3, 9)), bsa("b", 1.1, at(2026, 3, 5)))
    assert (fresh.bsa_m2, fresh.bsa_method) == (1.1, "observation")
    stale = body(kb, weight("w", 30, at(2026, 3, 9)), height("h", 135, at(2026, 3, 9)), bsa("b", 1.1, at(2026, 1, 5)))
    assert stale.bsa_method == "mosteller"
    assert stale.bsa_m2 == pytest.approx(1.061, abs=1e-3)


def test_no_height_no_bsa(kb: Knowledge) -> None:
    b = body(kb, weight("w", 30, at(2026, 3, 9)))
    assert (b.bsa_m2, b.bsa_method) == (None, None)


@pytest.mark.parametrize(("birth", "years"), [("2010-03-11", 15), ("2010-03-10", 16), ("1980-01-01", 46), (None, None)])
def test_age_from_birth_date(kb: Knowledge, birth: str | None, years: int | None) -> None:
    age = body(kb, birth_date=birth).age_years
    assert (int(age) if age is not None else None) == years


def test_weight_charted_with_effective_instant_or_period_is_read(kb: Knowledge) -> None:
    by_instant = weight("wi", 70, at(2026, 3, 9))
    by_instant["effectiveInstant"] = by_instant.pop("effectiveDateTime")
    assert body(kb, by_instant).weight_kg == 70
    by_period = weight("wp", 71, at(2026, 3, 9))
    by_period["effectivePeriod"] = {"start": by_period.pop("effectiveDateTime")}
    assert body(kb, by_period).weight_kg == 71
