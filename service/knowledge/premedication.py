"""``premedication.toml``: steroid premedication per regimen and age group, window, equivalence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from service.knowledge.base import Provenance, Strict

Trigger = Literal["cycle-start", "step", "re-escalation", "restart"]
AgeGroup = Literal["adult", "pediatric"]


class Timing(Provenance):
    window_minutes: PositiveInt
    lookback_hours: PositiveInt


class OrderTiming(Provenance):
    untimed_orders_count: bool


class AgeCutoff(Provenance):
    pediatric_below_years: PositiveFloat


class PediatricDose(Provenance):
    tolerance_pct: NonNegativeFloat


class RouteCoding(Provenance):
    system: str
    code: str
    display: str


class Equivalence(Provenance):
    doses_mg: Mapping[str, PositiveFloat]
    regimens: tuple[str, ...] = ()


class Requirement(Provenance):
    regimen: str
    age_group: AgeGroup
    agent: str
    dose_mg: PositiveFloat | None = None
    dose_mg_per_m2: PositiveFloat | None = None
    max_dose_mg: PositiveFloat | None = None
    route: str
    triggers: tuple[Trigger, ...]
    first_cycle_only: bool
    accept_equivalents: bool
    suggest_agent: str | None = None
    """The agent the premed-missing suggestion orders when the required one is not orderable as written."""
    suggest_dose_mg: PositiveFloat | None = None

    @model_validator(mode="after")
    def _one_dose(self) -> Requirement:
        if (self.dose_mg is None) == (self.dose_mg_per_m2 is None):
            raise ValueError("give exactly one of dose_mg and dose_mg_per_m2")
        if self.dose_mg_per_m2 is not None and self.max_dose_mg is None:
            raise ValueError("a per-m² dose needs max_dose_mg")
        if (self.suggest_agent is None) != (self.suggest_dose_mg is None):
            raise ValueError("suggest_agent and suggest_dose_mg go together")
        return self


class SuggestedOrder(Provenance):
    text: str


class Premedication(Strict):
    timing: Timing
    order_timing: OrderTiming
    age: AgeCutoff
    pediatric_dose: PediatricDose
    iv_route: RouteCoding
    equivalence: Equivalence
    label_equivalence: Equivalence
    requirements: tuple[Requirement, ...]
    suggested_order: SuggestedOrder

    @model_validator(mode="after")
    def _unique(self) -> Premedication:
        seen: set[tuple[str, str]] = set()
        for r in self.requirements:
            if (r.regimen, r.age_group) in seen:
                raise ValueError(f"requirements: two entries for {r.regimen}/{r.age_group}")
            seen.add((r.regimen, r.age_group))
            if r.agent not in self.equivalence.doses_mg:
                raise ValueError(f"requirements: agent '{r.agent}' has no [equivalence] dose")
            if r.suggest_agent is not None and r.suggest_dose_mg is not None and r.dose_mg is not None:
                eq = self.equivalent_mg(r.suggest_dose_mg, r.suggest_agent, to=r.agent, regimen=r.regimen)
                if eq is None or round(eq, 1) < round(r.dose_mg, 1):
                    raise ValueError(f"requirements: {r.regimen}/{r.age_group} suggests {r.suggest_dose_mg} mg "
                                     f"{r.suggest_agent}, below {r.dose_mg} mg {r.agent}")
        return self

    def requirement(self, regimen: str, age_group: AgeGroup) -> Requirement:
        return next(r for r in self.requirements if r.regimen == regimen and r.age_group == age_group)

    def equivalent_mg(self, dose_mg: float, agent: str, *, to: str, regimen: str) -> float | None:
        """``dose_mg`` of ``agent`` expressed as mg of ``to`` (label ratio where it applies; else standard)."""
        label = self.label_equivalence
        if regimen in label.regimens and agent in label.doses_mg and to in label.doses_mg:
            return dose_mg * label.doses_mg[to] / label.doses_mg[agent]
        std = self.equivalence.doses_mg
        if agent not in std or to not in std:
            return None
        return dose_mg * std[to] / std[agent]
