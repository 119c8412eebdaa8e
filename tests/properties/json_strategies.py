"""Strategies for the FHIR JSON an EHR may send where a dose or a unit is expected: realistic values most of the
time, and anything JSON can carry (wrong types, missing fields, odd numbers) the rest of the time.

Numbers stay within what the service's JSON parser (orjson) can hand over: 64-bit integers and finite doubles
(it refuses ``NaN``, ``Infinity`` and ``1e400``). :data:`NAN_INF` adds those for the functions that must also
survive them when called from Python.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

UCUM = "http://unitsofmeasure.org"

INTS = st.one_of(st.integers(-1000, 1000), st.integers(-(2**63), 2**64 - 1))
FLOATS = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1.7976931348623157e308]))
NAN_INF = st.sampled_from([float("nan"), float("inf"), float("-inf")])
NUMBERS = st.one_of(INTS, FLOATS, st.sampled_from([0, 1, 9, 28, 56, 196, 15, 5, 24, 48, 10, 0.6, 1.8]))

SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=12))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
"""Any JSON value."""

MASS = ["ug", "mcg", "µg", "μg", "microgram", "micrograms", "mg", "milligram", "g", "ng", "mL", "ml", "L", "kg", "",
        "{pill}", "[iU]", "U", "mmol", "mcgs", "ugs"]
COUNTS = ["", "", "1", "24", "0", "0.", "00", "0.0", "2", "1e3", "-1"]
TIMES = ["d", "day", "days", "h", "hr", "hrs", "hour", "min", "wk", "week", "mo", "a", "s", ""]
BASES = ["", "", "", "m2/", "m2.", "m^2/", "m²/", "kg/"]
PER = st.builds(lambda basis, count, time, wrap: f"({basis}{count}{time})" if wrap else f"{basis}{count}{time}",
                st.sampled_from(BASES), st.sampled_from(COUNTS), st.sampled_from(TIMES),
                st.sampled_from([False, False, True]))
UNIT_PARTS = st.builds(lambda m, sep, p: f"{m}{sep}{p}", st.sampled_from(MASS),
                       st.sampled_from(["/", "/", ".", " / "]), PER)
UNITS = st.one_of(
    st.sampled_from(["ug/d", "mcg/d", "ug/h", "ug/min", "mg/d", "ug/m2/d", "ug/(m2.d)", "ug/kg/d", "mL/h", "mL/hr",
                     "ml/h", "ug/(24.h)", "mcg/24 hr", "ug", "mg", "mL", "m2", "d", "h", "{pill}", "ug/d/d"]),
    UNIT_PARTS,
    UNIT_PARTS,
    st.text(max_size=16),
)
"""UCUM codes, print units and free text (valid, invalid, and half-valid composites like ``ug/0h``)."""


def quantity(value: st.SearchStrategy[Any] = NUMBERS) -> st.SearchStrategy[dict[str, Any]]:
    """A Quantity: each of ``value``/``unit``/``code``/``system`` present or not, usually the right type."""
    return st.fixed_dictionaries({}, optional={
        "value": st.one_of(value, value, JSON),
        "unit": st.one_of(UNITS, JSON),
        "code": st.one_of(UNITS, UNITS, JSON),
        "system": st.one_of(st.just(UCUM), JSON),
    })


def rate_ratio(value: st.SearchStrategy[Any] = NUMBERS) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={"numerator": st.one_of(quantity(value), JSON),
                                               "denominator": st.one_of(quantity(value), JSON)})


def dose_and_rate(value: st.SearchStrategy[Any] = NUMBERS) -> st.SearchStrategy[dict[str, Any]]:
    """One ``doseAndRate`` entry (any mix of its elements, each possibly the wrong type)."""
    return st.fixed_dictionaries({}, optional={
        "rateQuantity": st.one_of(quantity(value), quantity(value), JSON),
        "rateRatio": st.one_of(rate_ratio(value), JSON),
        "doseQuantity": st.one_of(quantity(value), quantity(value), JSON),
        "rateRange": JSON,
        "type": JSON,
    })


def timing(value: st.SearchStrategy[Any] = NUMBERS) -> st.SearchStrategy[dict[str, Any]]:
    """A Timing with a ``repeat`` of bag duration, bounds and frequency (any of it wrong or missing)."""
    repeat = st.fixed_dictionaries({}, optional={
        "duration": st.one_of(value, JSON),
        "durationUnit": st.one_of(st.sampled_from(["h", "d", "min", "wk", "hr", "s", "mo"]), JSON),
        "boundsDuration": st.one_of(quantity(value), JSON),
        "frequency": st.one_of(value, JSON),
        "period": st.one_of(value, JSON),
        "periodUnit": st.one_of(st.sampled_from(["d", "h", "wk", "min", "a"]), JSON),
        "boundsPeriod": JSON,
    })
    return st.fixed_dictionaries({}, optional={"repeat": st.one_of(repeat, repeat, JSON), "event": JSON,
                                               "code": JSON})


DOSE_TEXTS = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.builds(lambda n, u: f"BLINCYTO {n} {u} continuous IV", st.one_of(NUMBERS, st.text(max_size=4)),
              st.sampled_from(["mcg/day", "mcg/24 hr", "microgram/day", "mcg/m2/day", "ug/h", "mg/d", "mcg per day",
                               "mcg daily", "mcg/kg/day", "mL/hr", "mcg / 0 h", "9mcg/day"])),
)
