"""``dosing.toml``: weight band, BSA, freshness, absolute maximum, unit arithmetic, bags, interruptions."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, model_validator

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


class Units(Provenance):
    aliases: Mapping[str, str]
    mass_to_ug: Mapping[str, PositiveFloat]
    steroid_mass_to_mg: Mapping[str, PositiveFloat]
    per_time_to_per_day: Mapping[str, PositiveFloat]
    duration_to_hours: Mapping[str, PositiveFloat]
    weight_to_kg: Mapping[str, PositiveFloat]
    height_to_cm: Mapping[str, PositiveFloat]

    def norm(self, unit: str) -> str:
        """``"mcg/day"`` → ``"ug/d"``: lower-case, no spaces, each ``/``-part through ``aliases``."""
        cleaned = unit.strip().replace(" ", "").replace("(", "").replace(")", "")
        parts = [self.aliases.get(p, self.aliases.get(p.lower(), p.lower())) for p in cleaned.split("/")]
        return "/".join(parts)


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
    order_text: OrderText

    @model_validator(mode="after")
    def _preservative_bags_are_bags(self) -> Dosing:
        unknown = set(self.preservative_bags.durations_hours) - set(self.bags.durations_hours)
        if unknown:
            raise ValueError(f"preservative_bags.durations_hours: not in [bags]: {sorted(unknown)}")
        return self
