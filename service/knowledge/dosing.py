"""``dosing.toml``: weight band, BSA, freshness, absolute maximum, unit arithmetic, bags, interruptions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from service.knowledge.base import Provenance, Strict


class WeightBand(Provenance):
    threshold_kg: PositiveFloat
    straddle_window_hours: PositiveFloat


class Bsa(Provenance):
    tolerance_pct: PositiveFloat
    mosteller_divisor: PositiveFloat


class Freshness(Provenance):
    weight_days: PositiveInt


class Limits(Provenance):
    absolute_max_ug_per_day: PositiveFloat
    fixed_dose_compare_decimals: NonNegativeInt


class InterruptionPolicy(Provenance):
    restart_threshold_minutes: PositiveInt


class Bags(Provenance):
    durations_hours: tuple[PositiveFloat, ...]


class PreservativeBags(Provenance):
    """Benzyl-alcohol (preservative) bags and the weight below which the label advises against them (E32)."""

    durations_hours: tuple[PositiveFloat, ...]
    min_weight_kg: PositiveFloat
    legacy_min_weight_kg: PositiveFloat
    text_patterns: tuple[str, ...] = ()
    """Text naming the preservative ("Bacteriostatic 0.9% Sodium Chloride", "benzyl alcohol", "with preservative")."""
    exclude_text_patterns: tuple[str, ...] = ()
    """Negations that veto a text match ("preservative-free")."""
    duration_text_patterns: tuple[str, ...] = ()
    """A bag duration written in text, with named groups ``value`` and ``unit`` ("over 7 days", "96-h bag")."""

    # Compiled once per load (set past pydantic's frozen __setattr__, as in toxicity.py).
    text_res: ClassVar[tuple[re.Pattern[str], ...]]
    exclude_res: ClassVar[tuple[re.Pattern[str], ...]]
    duration_res: ClassVar[tuple[re.Pattern[str], ...]]

    @model_validator(mode="after")
    def _patterns_compile(self) -> PreservativeBags:
        compiled: dict[str, tuple[re.Pattern[str], ...]] = {}
        for key in ("text_patterns", "exclude_text_patterns", "duration_text_patterns"):
            try:
                compiled[key] = tuple(re.compile(p, re.IGNORECASE) for p in getattr(self, key))
            except re.error as exc:
                raise ValueError(f"{key}: bad regular expression ({exc})") from None
        for p in compiled["duration_text_patterns"]:
            if not {"value", "unit"} <= set(p.groupindex):
                raise ValueError(f"duration_text_patterns: {p.pattern!r} needs named groups value and unit")
        object.__setattr__(self, "text_res", compiled["text_patterns"])
        object.__setattr__(self, "exclude_res", compiled["exclude_text_patterns"])
        object.__setattr__(self, "duration_res", compiled["duration_text_patterns"])
        return self

    def names_preservative(self, text: str) -> bool:
        """The text says the bag holds the preservative, and no negation in it says otherwise."""
        return any(p.search(text) for p in self.text_res) and not any(p.search(text) for p in self.exclude_res)

    def is_preservative_duration(self, hours: float) -> bool:
        return any(abs(hours - d) < 0.5 for d in self.durations_hours)


class Units(Provenance):
    aliases: Mapping[str, str]
    mass_to_ug: Mapping[str, PositiveFloat]
    steroid_mass_to_mg: Mapping[str, PositiveFloat]
    per_time_to_per_day: Mapping[str, PositiveFloat]
    duration_to_hours: Mapping[str, PositiveFloat]
    weight_to_kg: Mapping[str, PositiveFloat]
    height_to_cm: Mapping[str, PositiveFloat]

    def norm(self, unit: str) -> str:
        """``"mcg/day"`` → ``"ug/d"``: lower-case, no spaces, each ``/``-part through ``aliases``; the word "per"
        between spaces is a ``/`` ("mcg per day")."""
        cleaned = _PER_WORD.sub("/", unit.strip()).replace(" ", "").replace("(", "").replace(")", "")
        parts = [self.aliases.get(p, self.aliases.get(p.lower(), p.lower())) for p in cleaned.split("/")]
        return "/".join(parts)


_PER_WORD = re.compile(r"\s+per\s+", re.IGNORECASE)


class RunningInfusion(Provenance):
    recent_stop_hours: PositiveFloat
    infuse_over_time_extensions: tuple[str, ...] = ()
    unended_bag_hours: PositiveFloat


@dataclass(frozen=True)
class TextDose:
    """A dose per time read from text: ``value`` ``mass`` (``ug``/``mg``) per ``basis`` (``m2``/``kg``/None) per
    ``time`` (``d``/``h``); ``span`` is where it was found (the update-dose suggestion rewrites it)."""

    value: float
    mass: str
    basis: str | None
    time: str
    span: tuple[int, int]

    @property
    def unit(self) -> str:
        return "/".join(p for p in (self.mass, self.basis, self.time) if p)


class DoseText(Provenance):
    """How a dose per time is written in text (``dosing.toml [dose_text]``); compiled once at load."""

    mass: Mapping[str, tuple[str, ...]] = Field(min_length=1)
    per: tuple[str, ...] = Field(min_length=1)
    basis: Mapping[str, tuple[str, ...]]
    time: Mapping[str, tuple[str, ...]] = Field(min_length=1)
    daily: tuple[str, ...] = ()

    pattern: ClassVar[re.Pattern[str]]

    @field_validator("per", "daily")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for p in patterns:
            _compile(p)
        return patterns

    @field_validator("mass", "basis", "time")
    @classmethod
    def _all_compile(cls, words: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
        for ps in words.values():
            for p in ps:
                _compile(p)
        return words

    def model_post_init(self, context: Any, /) -> None:
        def group(prefix: str, words: Mapping[str, tuple[str, ...]]) -> str:
            return "|".join(f"(?P<{prefix}_{key}>{'|'.join(f'(?:{p})' for p in ps)})" for key, ps in words.items())

        per = "|".join(f"(?:{p})" for p in self.per)
        end = r"(?![a-zµμ²])"
        basis = rf"(?:(?:{group('b', self.basis)})\s*(?:{per})\s*)?" if self.basis else ""
        per_time = rf"\s*(?:{per})\s*{basis}(?:{group('t', self.time)}){end}"
        daily = rf"|\s+(?P<daily>{'|'.join(f'(?:{p})' for p in self.daily)}){end}" if self.daily else ""
        mass = rf"(?:{group('m', self.mass)})"
        pattern = rf"(?P<v>\d+(?:\.\d+)?)\s*{mass}(?:{per_time}{daily})"
        object.__setattr__(self, "pattern", re.compile(pattern, re.IGNORECASE))

    def find(self, text: str) -> TextDose | None:
        """The first dose per time in ``text`` ("28 mcg/24 hr" → 28 ug/d; "1.2 mcg/hr" → 1.2 ug/h)."""
        m = self.pattern.search(text)
        if m is None:
            return None
        named = {k for k, v in m.groupdict().items() if v is not None}
        mass = next(k[2:] for k in named if k.startswith("m_"))
        basis = next((k[2:] for k in named if k.startswith("b_")), None)
        time = "d" if "daily" in named else next(k[2:] for k in named if k.startswith("t_"))
        return TextDose(float(m.group("v")), mass, basis, time, m.span())


def _compile(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad pattern {pattern!r}: {exc}") from None


class OrderText(Provenance):
    dose: str


class Dosing(Strict):
    weight_band: WeightBand
    bsa: Bsa
    freshness: Freshness
    limits: Limits
    interruption: InterruptionPolicy
    bags: Bags
    preservative_bags: PreservativeBags
    units: Units
    running_infusion: RunningInfusion
    dose_text: DoseText
    order_text: OrderText

    @model_validator(mode="after")
    def _preservative_bags_are_bags(self) -> Dosing:
        unknown = set(self.preservative_bags.durations_hours) - set(self.bags.durations_hours)
        if unknown:
            raise ValueError(f"preservative_bags.durations_hours: not in [bags]: {sorted(unknown)}")
        if self.running_infusion.unended_bag_hours not in self.bags.durations_hours:
            raise ValueError(f"running_infusion.unended_bag_hours: not in [bags]: "
                             f"{self.running_infusion.unended_bag_hours:g}")
        return self
