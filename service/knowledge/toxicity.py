"""``toxicity.toml``: how toxicity records are recognised and graded, and the label's windows.

CRS, ICANS and most adverse events have no standard code: sites record them with local codes or only
as text, so each concept carries codes found in a source, an empty ``site_codings`` list a site fills,
and text patterns. Grades arrive as CTCAE grade codes, NCIt grade codes, ICD-10-CM codes that carry
the grade, integers, or free text ("CRS gr III"); the readers for each are data here.

Recognition runs for every coding and text of every resource of every hook call, so the patterns are
compiled and the code sets built once, when the file is loaded (``Toxicity.matchers`` and friends).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from service.errors import KnowledgeError
from service.knowledge.base import Provenance, Strict
from service.knowledge.codes import Codes


class Coded(Strict):
    system: str
    """A key of ``codes.toml`` ``[code_systems]``."""
    code: str
    display: str | None = None


class GradedCode(Coded):
    grade: int | None = Field(default=None, ge=0, le=5)
    """The grade the code itself states (omitted: "grade unspecified")."""


class ToxicityConcept(Provenance):
    description: str
    codings: tuple[Coded, ...] = ()
    site_codings: tuple[Coded, ...] = ()
    """Local codes a site records this toxicity with (empty as shipped)."""
    graded_codings: tuple[GradedCode, ...] = ()
    """Codes whose meaning includes the grade (ICD-10-CM D89.83x, G92.0x)."""
    text_patterns: tuple[str, ...] = ()
    exclude_text_patterns: tuple[str, ...] = ()


class Concepts(Strict):
    crs: ToxicityConcept
    neuro: ToxicityConcept
    seizure: ToxicityConcept
    overdose: ToxicityConcept
    flush: ToxicityConcept

    def items(self) -> Iterator[tuple[str, ToxicityConcept]]:
        yield from (("crs", self.crs), ("neuro", self.neuro), ("seizure", self.seizure),
                    ("overdose", self.overdose), ("flush", self.flush))


@dataclass(frozen=True)
class ConceptMatcher:
    """One concept's recognition data, ready to use (built once per load from a :class:`ToxicityConcept`)."""

    text: tuple[re.Pattern[str], ...]
    """``text_patterns``, compiled case-insensitive."""
    exclude: tuple[re.Pattern[str], ...]
    """``exclude_text_patterns``, compiled case-insensitive."""
    coded: frozenset[tuple[str, str]]
    """(system key, code) of ``codings``, ``site_codings`` and ``graded_codings``."""
    grade_of: Mapping[tuple[str, str], int]
    """(system key, code) → grade, for the ``graded_codings`` that state one (the first listed wins)."""

    @classmethod
    def of(cls, concept: ToxicityConcept) -> ConceptMatcher:
        grade_of: dict[tuple[str, str], int] = {}
        for g in concept.graded_codings:
            if g.grade is not None:
                grade_of.setdefault((g.system, g.code), g.grade)
        return cls(
            text=_compiled(concept.text_patterns), exclude=_compiled(concept.exclude_text_patterns),
            coded=frozenset((c.system, c.code)
                            for c in (*concept.codings, *concept.site_codings, *concept.graded_codings)),
            grade_of=grade_of,
        )


def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


class OtherEvents(Provenance):
    """Graded AdverseEvents that are none of the named toxicities ("other clinically relevant")."""

    exclude_text_patterns: tuple[str, ...] = ()


class Grades(Provenance):
    extension_urls: tuple[str, ...]
    """Extensions on AdverseEvent (or Observation/Condition) that carry the CTCAE grade."""
    codings: tuple[GradedCode, ...]
    """Grade codes accepted in ``valueCodeableConcept``, ``stage.summary`` or the extension."""
    text_pattern: str
    """Regex with a named group ``grade``: the grade written in free text."""
    roman_numerals: Mapping[str, int]
    absent_value_patterns: tuple[str, ...] = ()
    """An Observation value matching these says the finding is absent (e.g. "No seizure")."""


class Grading(Provenance):
    default_system: str
    """The grading system the label's dose-modification table used; cards name it when a record does not."""


class Policy(Provenance):
    """The label's action thresholds for one toxicity family."""

    interrupt_grade: int = Field(ge=1, le=5)
    discontinue_grade: int = Field(ge=1, le=5)
    resolved_max_grade: int = Field(ge=0, le=5)
    """A later record at or below this grade means the episode resolved."""
    max_days_to_resolve: float | None = Field(default=None, gt=0)
    """An interrupt-grade episode that takes longer than this to resolve means discontinue."""
    restart_min_days_resolved: float = Field(default=0, ge=0)
    """A restart needs the toxicity resolved for at least this long (0: no wait)."""
    restart_indicator: Literal["warning", "critical"] = "critical"


class Policies(Strict):
    crs: Policy
    neuro: Policy
    other: Policy


class SeizurePolicy(Provenance):
    discontinue_count: int = Field(ge=2)
    """This many seizures in the current course → discontinue ("more than one seizure")."""


class OverduePolicy(Provenance):
    restart_min_hours: float = Field(gt=0)
    """A restart after an overdose or flush interruption no earlier than this."""
    resolved_max_grade: int = Field(ge=0, le=5)
    """"All toxicities resolved": the latest record of each toxicity since the overdose is at or below this."""


class CrsTreatment(Provenance):
    """The label's dexamethasone treatment for grade 3 (and 4) CRS."""

    dexamethasone_mg: float
    interval_hours: float
    max_days: float
    taper_days: float
    small_patient_mg_per_m2: float
    small_patient_max_mg: float


class RestartDose(Provenance):
    """Restart after an adverse-reaction interruption, and the step dose the neuro rule compares with."""

    ug_per_day: float
    ug_per_m2_per_day: float
    escalate_ug_per_day: float
    escalate_ug_per_m2_per_day: float
    escalate_after_days: float
    weight_band_kg: float
    """Below this weight the BSA doses apply."""
    dose_match_tolerance: float = Field(ge=0, lt=1)
    """A running dose within this fraction of the step dose counts as "at the step dose"."""
    confirmed_regimens: tuple[str, ...] = ()
    """Regimens for which a source states this restart dose; for the others cards call it unconfirmed."""


class Scope(Provenance):
    unanchored_lookback_days: float = Field(gt=0)
    """Without a known course start, only records this recent count."""


class Toxicity(Strict):
    grading: Grading
    grades: Grades
    concepts: Concepts
    other_events: OtherEvents
    policies: Policies
    seizures: SeizurePolicy
    overdose: OverduePolicy
    crs_grade3_treatment: CrsTreatment
    restart_dose: RestartDose
    scope: Scope

    # Built once per load by ``_patterns_compile`` (plain instance attributes set past pydantic's frozen
    # __setattr__, as in codes.py). A ``model_copy(update=...)`` of concepts, grades or other_events would
    # keep the old ones: build a changed file with ``model_validate`` instead.
    matchers: ClassVar[Mapping[str, ConceptMatcher]]
    """Per concept name (``crs``, ``neuro``, ``seizure``, ``overdose``, ``flush``)."""
    grade_text_re: ClassVar[re.Pattern[str]]
    """``grades.text_pattern``, compiled as written (no flags)."""
    absent_value_res: ClassVar[tuple[re.Pattern[str], ...]]
    other_exclude_res: ClassVar[tuple[re.Pattern[str], ...]]
    grade_of_code: ClassVar[Mapping[tuple[str, str], int | None]]
    """(system key, code) → grade of ``grades.codings``."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> Toxicity:
        patterns = [("grades.text_pattern", self.grades.text_pattern)]
        patterns += [("grades.absent_value_patterns", p) for p in self.grades.absent_value_patterns]
        patterns += [("other_events.exclude_text_patterns", p) for p in self.other_events.exclude_text_patterns]
        for name, concept in self.concepts.items():
            patterns += [(f"concepts.{name}.text_patterns", p) for p in concept.text_patterns]
            patterns += [(f"concepts.{name}.exclude_text_patterns", p) for p in concept.exclude_text_patterns]
        for where, pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{where}: bad regular expression {pattern!r} ({exc})") from None
        if "(?P<grade>" not in self.grades.text_pattern:
            raise ValueError("grades.text_pattern: needs a named group (?P<grade>...)")
        object.__setattr__(self, "matchers", {name: ConceptMatcher.of(c) for name, c in self.concepts.items()})
        object.__setattr__(self, "grade_text_re", re.compile(self.grades.text_pattern))
        object.__setattr__(self, "absent_value_res", _compiled(self.grades.absent_value_patterns))
        object.__setattr__(self, "other_exclude_res", _compiled(self.other_events.exclude_text_patterns))
        object.__setattr__(self, "grade_of_code", {(c.system, c.code): c.grade for c in self.grades.codings})
        return self

    def checked(self, codes: Codes) -> Toxicity:
        """This file, after checking every coding uses a ``codes.toml`` system key (else start-up stops)."""
        groups: list[tuple[str, tuple[Coded, ...]]] = [("grades.codings", self.grades.codings)]
        for name, concept in self.concepts.items():
            groups += [(f"concepts.{name}.codings", concept.codings),
                       (f"concepts.{name}.site_codings", concept.site_codings),
                       (f"concepts.{name}.graded_codings", concept.graded_codings)]
        for where, items in groups:
            for c in items:
                if c.system not in codes.code_systems:
                    raise KnowledgeError(f"unknown code system key '{c.system}'", file="toxicity.toml", key=where)
        return self
