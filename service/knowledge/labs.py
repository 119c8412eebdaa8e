"""``labs.toml``: the liver-test thresholds and how a result and its upper limit of normal are read.

The hepatic-interrupt rule compares the latest accepted ALT, AST and total bilirubin with a multiple
of the ULN. Everything it needs to decide that (which statuses count, which reference range is "the"
normal range, how a ULN written only as range text ("<40 U/L") is read, which unit strings mean the
same quantity, an optional site default ULN) is data here, so a pharmacist reviews a change as a diff of
this file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from service.errors import KnowledgeError
from service.knowledge.base import Provenance, Strict
from service.knowledge.codes import Codes

AnalyteId = Literal["alt", "ast", "bilirubin"]


_SPACES = re.compile(r"\s+")


def unit_key(unit: str) -> str:
    """Normalise a unit string for lookup: case, spaces and the micro sign variants do not matter."""
    return _SPACES.sub("", unit).replace("µ", "u").replace("μ", "u").lower()


class UnitConversion(Strict):
    """Unit strings that convert to the analyte's canonical unit by one factor.

    Exactly one of ``multiply_by`` / ``divide_by`` (value in canonical unit = value × or ÷ factor).
    """

    units: tuple[str, ...]
    multiply_by: float | None = Field(default=None, gt=0)
    divide_by: float | None = Field(default=None, gt=0)
    source: str
    confidence: Literal["verified", "secondary", "unconfirmed"]

    @model_validator(mode="after")
    def _one_factor(self) -> UnitConversion:
        if (self.multiply_by is None) == (self.divide_by is None):
            raise ValueError("give exactly one of multiply_by or divide_by")
        return self

    def to_canonical(self, value: float) -> float:
        if self.multiply_by is not None:
            return value * self.multiply_by
        assert self.divide_by is not None
        return value / self.divide_by


class Analyte(Provenance):
    concept: str
    """The ``codes.toml`` concept whose LOINC codes identify the result."""
    display: str
    """Short name shown on cards, e.g. ``ALT``."""
    multiple_of_uln: float = Field(gt=0)
    """The rule fires when value ÷ ULN is strictly greater than this."""
    canonical_unit: str
    conversions: tuple[UnitConversion, ...]

    # Built once per load (a plain instance attribute set past pydantic's frozen __setattr__, as in codes.py):
    # every liver result of every call looks its units up here.
    conversion_of_key: ClassVar[Mapping[str, UnitConversion]]
    """``unit_key`` of each listed unit → its conversion (the first listed wins)."""

    def model_post_init(self, context: Any, /) -> None:
        table: dict[str, UnitConversion] = {}
        for conv in self.conversions:
            for u in conv.units:
                table.setdefault(unit_key(u), conv)
        object.__setattr__(self, "conversion_of_key", table)

    def conversion(self, unit: str) -> UnitConversion | None:
        return self.conversion_of_key.get(unit_key(unit))


class ResultPolicy(Provenance):
    accepted_statuses: tuple[str, ...]
    """Only these Observation statuses count (preliminary, cancelled, entered-in-error never do)."""
    range_type_system: str
    range_type_codes: tuple[str, ...]
    """A reference range counts when its ``type`` has one of these codes (in ``range_type_system``)…"""
    accept_untyped_range: bool
    """…or when it has no ``type`` at all."""
    lookback_days: float | None = Field(default=None, gt=0)
    """When set, a governing result older than this is ignored. Unset: any age (the query bounds the data)."""


class RangeText(Provenance):
    """How the upper limit is read from ``referenceRange.text`` when a range has no usable ``high``.

    Each pattern is matched against the whole text (``fullmatch``); named groups ``high`` (required),
    ``low`` and ``unit`` (optional). Compiled once at load: this runs for every liver result of every call.
    """

    upper_limit_patterns: tuple[str, ...] = Field(min_length=1)

    compiled: ClassVar[tuple[re.Pattern[str], ...]]

    @model_validator(mode="after")
    def _compile(self) -> RangeText:
        compiled: list[re.Pattern[str]] = []
        for i, pattern in enumerate(self.upper_limit_patterns):
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(f"upper_limit_patterns.{i}: bad regular expression {pattern!r} ({exc})") from None
            groups = set(compiled[-1].groupindex)
            if "high" not in groups or not groups <= {"high", "low", "unit"}:
                raise ValueError(f"upper_limit_patterns.{i}: needs a named group (?P<high>...); "
                                 "other groups may be only low and unit")
        # A plain instance attribute set past pydantic's frozen __setattr__ (as in codes.py).
        object.__setattr__(self, "compiled", tuple(compiled))
        return self


class SiteDefaultUln(Provenance):
    """A site's own ULN, used only when a result carries no usable reference range; the card says so."""

    value: float = Field(gt=0)
    unit: str


class Labs(Strict):
    results: ResultPolicy
    range_text: RangeText | None = None
    """Absent: a range given only as text leaves the ULN unknown (lab-unevaluable, or the site default)."""
    analytes: Mapping[AnalyteId, Analyte]
    site_default_uln: Mapping[AnalyteId, SiteDefaultUln] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Labs:
        missing = {"alt", "ast", "bilirubin"} - set(self.analytes)
        if missing:
            raise ValueError(f"analytes: missing {', '.join(sorted(missing))}")
        for name, default in self.site_default_uln.items():
            analyte = self.analytes[name]
            if analyte.conversion(default.unit) is None:
                raise ValueError(f"site_default_uln.{name}: unit '{default.unit}' has no conversion for {name}")
        return self

    def checked(self, codes: Codes) -> Labs:
        """This file, after checking every analyte names a ``codes.toml`` concept (else start-up stops)."""
        for name, analyte in self.analytes.items():
            if analyte.concept not in codes.concepts:
                raise KnowledgeError(f"unknown codes.toml concept '{analyte.concept}'", file="labs.toml",
                                     key=f"analytes.{name}.concept")
        return self
