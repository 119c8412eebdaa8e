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
            text=_any_of(concept.text_patterns), exclude=_any_of(concept.exclude_text_patterns),
            coded=frozenset((c.system, c.code)
                            for c in (*concept.codings, *concept.site_codings, *concept.graded_codings)),
            grade_of=grade_of,
        )


def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def _any_of(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """A list matched as "any of these": one alternation, compiled case-insensitive (one search per text, not one per
    pattern: these run for every text of every resource). Empty list: no pattern."""
    return (re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE),) if patterns else ()


def _one_search(patterns: list[str], *, also: re.Pattern[str]) -> tuple[re.Pattern[str], ...]:
    """Case-insensitive ``patterns`` as one alternation (one search per text), and ``also`` as compiled; each
    pattern on its own when they cannot share one expression (a named group used twice)."""
    try:
        return (*_any_of(tuple(patterns)), also)
    except re.error:
        return (*_compiled(tuple(patterns)), also)


class OtherEvents(Provenance):
    """Graded AdverseEvents that are none of the named toxicities ("other clinically relevant")."""

    exclude_text_patterns: tuple[str, ...] = ()


class Conditions(Provenance):
    """Which Conditions (problem list, encounter diagnoses) are toxicity records, and when one is over."""

    exclude_text_patterns: tuple[str, ...] = ()
    """A Condition whose text matches is never a toxicity record (history-of entries, the malignancy itself)."""
    resolved_clinical_statuses: tuple[str, ...] = ()
    """``clinicalStatus`` codes meaning the condition is over (with or without an abatement date)."""


class Grades(Provenance):
    extension_urls: tuple[str, ...]
    """Extensions on AdverseEvent (or Observation/Condition) that carry the CTCAE grade."""
    codings: tuple[GradedCode, ...]
    """Grade codes accepted in ``valueCodeableConcept``, ``stage.summary`` or the extension."""
    text_pattern: str
    """Regex with a named group ``grade``: the grade written in free text."""
    roman_numerals: Mapping[str, int]


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
    """What the toxicity rules add to the adverse-event restart dose of ``regimens.toml [ae_restart]``."""

    dose_match_tolerance: float = Field(ge=0, lt=1)
    """A running dose within this fraction of the step dose counts as "at the step dose"."""


class Findings(Provenance):
    """How charting says a toxicity is absent, resolved or simply not assessed (never an event)."""

    absent_text_patterns: tuple[str, ...]
    resolved_text_patterns: tuple[str, ...]
    not_assessed_text_patterns: tuple[str, ...]
    absent_codings: tuple[Coded, ...]
    """Coded values (SNOMED qualifiers) meaning absent, negative or resolved."""
    normal_interpretations: tuple[Coded, ...]
    """``Observation.interpretation`` codes meaning normal: the finding is absent."""


class IceBand(Strict):
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    grade: int = Field(ge=0, le=5)


class IceScore(Provenance):
    """ASTCT: the ICE score (0–10) read as the lower bound of the ICANS grade."""

    text_patterns: tuple[str, ...]
    value_pattern: str
    """Regex with a named group ``score`` ("8/10", "6 out of 10")."""
    max_score: int = Field(gt=0)
    bands: tuple[IceBand, ...]
    grading_system: str

    @model_validator(mode="after")
    def _bands_cover_every_score(self) -> IceScore:
        for score in range(self.max_score + 1):
            if sum(b.min <= score <= b.max for b in self.bands) != 1:
                raise ValueError(f"bands: score {score} must fall in exactly one band")
        return self

    def grade(self, score: int) -> int | None:
        return next((b.grade for b in self.bands if b.min <= score <= b.max), None)


class GradedObservations(Provenance):
    grading_system_patterns: tuple[str, ...]
    """An Observation whose ``method`` matches one of these is a graded toxicity record."""
    says_grade_patterns: tuple[str, ...]
    """Code/text saying "grade": then a bare number 0–5 in the value is the grade."""
    name_noise_patterns: tuple[str, ...]
    """Removed (in order) from an "other" event's name to key its episodes ("TLS grade" and "TLS" are one event)."""


class SeizureCounts(Provenance):
    text_patterns: tuple[str, ...]
    """Regexes with a named group ``count``."""


class Episodes(Provenance):
    same_event_window_minutes: float = Field(gt=0)
    """Records of one toxicity whose onsets lie this close to an episode's first record are that episode."""


class Attribution(Provenance):
    unrelated_text_patterns: tuple[str, ...]
    """A causality assessment matching these says the event is unrelated to the suspect drug."""


class Scope(Provenance):
    unanchored_lookback_days: float = Field(gt=0)
    """Without a known course start, only records this recent count."""


class Toxicity(Strict):
    grading: Grading
    grades: Grades
    concepts: Concepts
    other_events: OtherEvents
    conditions: Conditions
    policies: Policies
    seizures: SeizurePolicy
    overdose: OverduePolicy
    crs_grade3_treatment: CrsTreatment
    restart_dose: RestartDose
    scope: Scope
    findings: Findings
    ice_score: IceScore
    graded_observations: GradedObservations
    seizure_counts: SeizureCounts
    episodes: Episodes
    attribution: Attribution

    # Built once per load by ``_patterns_compile`` (plain instance attributes set past pydantic's frozen
    # __setattr__, as in codes.py). A ``model_copy(update=...)`` of concepts, grades or other_events would
    # keep the old ones: build a changed file with ``model_validate`` instead.
    matchers: ClassVar[Mapping[str, ConceptMatcher]]
    """Per concept name (``crs``, ``neuro``, ``seizure``, ``overdose``, ``flush``)."""
    grade_text_re: ClassVar[re.Pattern[str]]
    """``grades.text_pattern``, compiled as written (no flags)."""
    other_exclude_res: ClassVar[tuple[re.Pattern[str], ...]]
    condition_exclude_res: ClassVar[tuple[re.Pattern[str], ...]]
    absent_res: ClassVar[tuple[re.Pattern[str], ...]]
    resolved_res: ClassVar[tuple[re.Pattern[str], ...]]
    not_assessed_res: ClassVar[tuple[re.Pattern[str], ...]]
    ice_res: ClassVar[tuple[re.Pattern[str], ...]]
    ice_value_re: ClassVar[re.Pattern[str]]
    grading_system_res: ClassVar[tuple[re.Pattern[str], ...]]
    says_grade_res: ClassVar[tuple[re.Pattern[str], ...]]
    name_noise_res: ClassVar[tuple[re.Pattern[str], ...]]
    seizure_count_res: ClassVar[tuple[re.Pattern[str], ...]]
    unrelated_res: ClassVar[tuple[re.Pattern[str], ...]]
    grade_of_code: ClassVar[Mapping[tuple[str, str], int | None]]
    """(system key, code) → grade of ``grades.codings``."""
    observation_codes: ClassVar[frozenset[tuple[str, str]]]
    """(system key, code) that can make an Observation a toxicity record: the CRS, neurological and seizure codes
    and the grade codes."""
    observation_texts: ClassVar[tuple[re.Pattern[str], ...]]
    """The patterns that can make an Observation a toxicity record when one of its texts matches: the CRS,
    neurological and seizure text patterns, the ICE patterns, "grade" and grading-system words, a grade in free
    text. An Observation none of whose codes, texts or extensions can is no record (``timeline.toxicity``)."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> Toxicity:
        patterns = [("grades.text_pattern", self.grades.text_pattern)]
        lists = {
            "findings.absent_text_patterns": self.findings.absent_text_patterns,
            "findings.resolved_text_patterns": self.findings.resolved_text_patterns,
            "findings.not_assessed_text_patterns": self.findings.not_assessed_text_patterns,
            "ice_score.text_patterns": self.ice_score.text_patterns,
            "graded_observations.grading_system_patterns": self.graded_observations.grading_system_patterns,
            "graded_observations.says_grade_patterns": self.graded_observations.says_grade_patterns,
            "graded_observations.name_noise_patterns": self.graded_observations.name_noise_patterns,
            "seizure_counts.text_patterns": self.seizure_counts.text_patterns,
            "attribution.unrelated_text_patterns": self.attribution.unrelated_text_patterns,
        }
        patterns += [(where, p) for where, group in lists.items() for p in group]
        patterns.append(("ice_score.value_pattern", self.ice_score.value_pattern))
        patterns += [("other_events.exclude_text_patterns", p) for p in self.other_events.exclude_text_patterns]
        patterns += [("conditions.exclude_text_patterns", p) for p in self.conditions.exclude_text_patterns]
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
        if "(?P<score>" not in self.ice_score.value_pattern:
            raise ValueError("ice_score.value_pattern: needs a named group (?P<score>...)")
        for p in self.seizure_counts.text_patterns:
            if "(?P<count>" not in p:
                raise ValueError(f"seizure_counts.text_patterns: {p!r} needs a named group (?P<count>...)")
        object.__setattr__(self, "matchers", {name: ConceptMatcher.of(c) for name, c in self.concepts.items()})
        object.__setattr__(self, "grade_text_re", re.compile(self.grades.text_pattern))
        object.__setattr__(self, "absent_res", _any_of(self.findings.absent_text_patterns))
        object.__setattr__(self, "resolved_res", _any_of(self.findings.resolved_text_patterns))
        object.__setattr__(self, "not_assessed_res", _any_of(self.findings.not_assessed_text_patterns))
        object.__setattr__(self, "ice_res", _any_of(self.ice_score.text_patterns))
        object.__setattr__(self, "ice_value_re", re.compile(self.ice_score.value_pattern, re.IGNORECASE))
        object.__setattr__(self, "grading_system_res", _any_of(self.graded_observations.grading_system_patterns))
        object.__setattr__(self, "says_grade_res", _any_of(self.graded_observations.says_grade_patterns))
        object.__setattr__(self, "name_noise_res", _compiled(self.graded_observations.name_noise_patterns))
        object.__setattr__(self, "seizure_count_res", _compiled(self.seizure_counts.text_patterns))
        object.__setattr__(self, "unrelated_res", _any_of(self.attribution.unrelated_text_patterns))
        object.__setattr__(self, "other_exclude_res", _any_of(self.other_events.exclude_text_patterns))
        object.__setattr__(self, "condition_exclude_res", _any_of(self.conditions.exclude_text_patterns))
        object.__setattr__(self, "grade_of_code", {(c.system, c.code): c.grade for c in self.grades.codings})
        graded = ("crs", "neuro", "seizure")
        object.__setattr__(self, "observation_codes", frozenset(
            (*(k for name in graded for k in self.matchers[name].coded), *self.grade_of_code)))
        object.__setattr__(self, "observation_texts", _one_search(
            [p for name in graded for p in getattr(self.concepts, name).text_patterns]
            + [*self.ice_score.text_patterns, *self.graded_observations.grading_system_patterns,
               *self.graded_observations.says_grade_patterns], also=self.grade_text_re))
        return self

    def checked(self, codes: Codes) -> Toxicity:
        """This file, after checking every coding uses a ``codes.toml`` system key (else start-up stops)."""
        groups: list[tuple[str, tuple[Coded, ...]]] = [
            ("grades.codings", self.grades.codings), ("findings.absent_codings", self.findings.absent_codings),
            ("findings.normal_interpretations", self.findings.normal_interpretations)]
        for name, concept in self.concepts.items():
            groups += [(f"concepts.{name}.codings", concept.codings),
                       (f"concepts.{name}.site_codings", concept.site_codings),
                       (f"concepts.{name}.graded_codings", concept.graded_codings)]
        for where, items in groups:
            for c in items:
                if c.system not in codes.code_systems:
                    raise KnowledgeError(f"unknown code system key '{c.system}'", file="toxicity.toml", key=where)
        return self
