"""``regimens.toml``: the per-cycle dose schedule of each blinatumomab regimen and the cycle rules."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from service.knowledge.base import Provenance, Strict


class ScheduleRow(Strict):
    """Doses for a range of cycles and days (both inclusive)."""

    cycles: tuple[PositiveInt, PositiveInt]
    days: tuple[PositiveInt, PositiveInt]
    ug_per_day: PositiveFloat
    ug_per_m2_per_day: PositiveFloat
    cap_ug_per_day: PositiveFloat

    def covers(self, cycle: int, day: int) -> bool:
        return self.cycles[0] <= cycle <= self.cycles[1] and self.days[0] <= day <= self.days[1]


class TreatmentFree(Strict):
    after_cycles: tuple[PositiveInt, PositiveInt]
    days: PositiveInt


class Phases(Provenance):
    """Which cycles of a course are induction, consolidation and continued therapy (first, last; inclusive).

    Cards name the phases ("2 induction, 3 consolidation and 4 continued-therapy cycles"); the phases given
    must cover cycles 1 to ``max_cycles`` in order, so a change to ``max_cycles`` cannot leave them stale.
    """

    induction: tuple[PositiveInt, PositiveInt] | None = None
    consolidation: tuple[PositiveInt, PositiveInt] | None = None
    continued_therapy: tuple[PositiveInt, PositiveInt] | None = None

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Phase name → (first, last) cycle, in course order, for the phases given."""
        named = {"induction": self.induction, "consolidation": self.consolidation,
                 "continued_therapy": self.continued_therapy}
        return {name: r for name, r in named.items() if r is not None}

    def of(self, cycle: int) -> str | None:
        return next((name for name, (first, last) in self.ranges().items() if first <= cycle <= last), None)


class RegimenSpec(Provenance):
    label: str
    canonical: str
    max_cycles: PositiveInt
    step_cycle: PositiveInt | None = None
    step_day: PositiveInt | None = None
    schedule: tuple[ScheduleRow, ...]
    treatment_free: tuple[TreatmentFree, ...]
    phases: Phases | None = None
    """Absent: the sources name no phases for this regimen (cards then say nothing about phases)."""

    def row(self, cycle: int, day: int) -> ScheduleRow | None:
        """The schedule row for a cycle and day (``None`` beyond the last cycle or day)."""
        return next((r for r in self.schedule if r.covers(cycle, day)), None)

    def tfi_days(self, after_cycle: int) -> int | None:
        return next((t.days for t in self.treatment_free if t.after_cycles[0] <= after_cycle <= t.after_cycles[1]),
                    None)

    def is_step(self, cycle: int, day: int) -> bool:
        return self.step_cycle == cycle and self.step_day == day


class CycleRules(Provenance):
    cycle_days: PositiveInt
    new_cycle_gap_days: PositiveInt
    same_cycle_max_hours: PositiveInt


class AeRestart(Provenance):
    """The one statement of the restart dose after an adverse-reaction interruption (toxicity cards read it too)."""

    ug_per_day: PositiveFloat
    ug_per_m2_per_day: PositiveFloat
    cap_ug_per_day: PositiveFloat
    escalate_after_days: PositiveInt
    confirmed_regimens: tuple[str, ...] = ()
    """Regimens for which a source states this restart dose; for the others cards call it unconfirmed."""


class ReasonMapping(Provenance):
    system: str
    """A key of ``codes.toml`` ``[code_systems]``."""
    code: str
    regimen: str


class Regimens(Strict):
    default_regimen: str
    reason_map: tuple[ReasonMapping, ...] = ()
    cycle_rules: CycleRules
    ae_restart: AeRestart
    regimens: Mapping[str, RegimenSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Regimens:
        if self.default_regimen not in self.regimens:
            raise ValueError(f"default_regimen '{self.default_regimen}' is not a [regimens.*] table")
        canonicals: set[str] = set()
        for name, spec in self.regimens.items():
            if spec.canonical in canonicals:
                raise ValueError(f"regimens.{name}.canonical '{spec.canonical}' is used twice")
            canonicals.add(spec.canonical)
            if (spec.step_cycle is None) != (spec.step_day is None):
                raise ValueError(f"regimens.{name}: step_cycle and step_day go together")
            for row in spec.schedule:
                if row.cycles[0] > row.cycles[1] or row.days[0] > row.days[1]:
                    raise ValueError(f"regimens.{name}.schedule: a range runs backwards")
                if row.ug_per_day > row.cap_ug_per_day:
                    raise ValueError(f"regimens.{name}.schedule: ug_per_day above cap_ug_per_day")
            for cycle in range(1, spec.max_cycles + 1):
                for day in range(1, self.cycle_rules.cycle_days + 1):
                    if spec.row(cycle, day) is None:
                        raise ValueError(f"regimens.{name}.schedule: no dose for cycle {cycle} day {day}")
                if spec.tfi_days(cycle) is None:
                    raise ValueError(f"regimens.{name}.treatment_free: no interval after cycle {cycle}")
            if spec.phases is not None:
                expected_first = 1
                for phase, (first, last) in spec.phases.ranges().items():
                    if first != expected_first or last < first:
                        raise ValueError(f"regimens.{name}.phases.{phase}: must start at cycle {expected_first} "
                                         "and not run backwards")
                    expected_first = last + 1
                if expected_first != spec.max_cycles + 1:
                    raise ValueError(f"regimens.{name}.phases: must end at max_cycles ({spec.max_cycles})")
        for name in self.ae_restart.confirmed_regimens:
            if name not in self.regimens:
                raise ValueError(f"ae_restart.confirmed_regimens: '{name}' is not a [regimens.*] table")
        for i, m in enumerate(self.reason_map):
            if m.regimen not in self.regimens:
                raise ValueError(f"reason_map.{i}.regimen '{m.regimen}' is not a [regimens.*] table")
        return self

    def by_canonical(self, url: str) -> str | None:
        base = url.split("|", 1)[0]
        return next((name for name, spec in self.regimens.items() if spec.canonical == base), None)
