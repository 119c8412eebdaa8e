"""Toxicity records on the timeline: CRS, neurological toxicity, seizures, other graded adverse events,
and overdose / line-flush events, each with its time and (when determinable) its grade.

Sites record these in many shapes (clinical-rules.md §4.4): an AdverseEvent with the CTCAE grade
extension, an Observation whose code or text names the toxicity with the grade as an integer, a grade
code or text, a Condition coded with a graded ICD-10-CM code or with the grade in ``stage.summary``, or
only free text ("CRS gr III"). CRS and ICANS have no standard SNOMED/MedDRA code, so recognition is by
the codes the knowledge lists (including a site's own) and by text. A grade read from text is flagged
``grade_from_text`` so the card can say so. A record that cannot be graded keeps ``grade=None`` (the
grade-unknown rule warns). A Condition's abatement becomes a grade-0 record at the abatement time, so
the rules see when the toxicity resolved.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from service.fhir.extract import codings, parse_instant, relative_ref, texts
from service.knowledge import Knowledge
from service.knowledge.toxicity import ConceptMatcher
from service.timeline.dose import is_blinatumomab, medication_concept
from service.timeline.model import ToxicityRecord

Kind = Literal["crs", "neuro", "seizure", "other", "overdose", "flush"]

_GRADED_KINDS: tuple[Kind, ...] = ("crs", "neuro", "seizure")
_EVENT_KINDS: tuple[Kind, ...] = ("flush", "overdose", "crs", "neuro", "seizure")
_IGNORED_STATUSES = {"entered-in-error", "cancelled", "not-done", "refuted"}


def build_toxicities(
    *,
    observations: Iterable[Mapping[str, Any]],
    conditions: Iterable[Mapping[str, Any]],
    adverse_events: Iterable[Mapping[str, Any]],
    administrations: Iterable[Mapping[str, Any]],
    medications: Mapping[str, Mapping[str, Any]] | None = None,
    kb: Knowledge,
    now: dt.datetime,
) -> tuple[ToxicityRecord, ...]:
    """Every toxicity record, oldest first (records in the future or without a time are dropped).

    ``medications``: the fetched Medications by id, for an administration that names its drug by reference.
    """
    reader = _Reader(kb, medications or {})
    records: list[ToxicityRecord] = []
    seen: set[str] = set()

    def fresh(resource: Mapping[str, Any], resource_type: str) -> bool:
        if resource.get("resourceType") != resource_type:
            return False
        ref = relative_ref(resource)
        if ref in seen and not ref.endswith("/?"):
            return False
        seen.add(ref)
        return True

    for obs in observations:
        if fresh(obs, "Observation"):
            records.extend(reader.observation(obs))
    for cond in conditions:
        if fresh(cond, "Condition"):
            records.extend(reader.condition(cond))
    for event in adverse_events:
        if fresh(event, "AdverseEvent"):
            records.extend(reader.adverse_event(event))
    for admin in administrations:
        if fresh(admin, "MedicationAdministration"):
            records.extend(reader.administration(admin))
    return tuple(sorted((r for r in records if r.at <= now), key=lambda r: (r.at, r.ref)))


class _Reader:
    """Reads one resource at a time against the knowledge's concepts and grade codes."""

    def __init__(self, kb: Knowledge, medications: Mapping[str, Mapping[str, Any]]) -> None:
        self.kb = kb
        self.medications = medications
        self.tox = kb.toxicity
        # Compiled patterns and code sets come ready-made with the knowledge (built once per process).
        self.matchers = self.tox.matchers
        self.grade_codes = self.tox.grade_of_code
        self.grade_re = self.tox.grade_text_re

    # -------------------------------------------------------------- resources

    def observation(self, obs: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        if obs.get("status") in _IGNORED_STATUSES:
            return
        at = _first_instant(obs.get("effectiveDateTime"), obs.get("effectiveInstant"),
                            _get(obs, "effectivePeriod", "start"), obs.get("issued"))
        code = _concept(obs.get("code"))
        kind = self.kind_of(code, _GRADED_KINDS)
        value_text = obs.get("valueString") if isinstance(obs.get("valueString"), str) else None
        if kind is None and value_text is not None:
            kind = self.kind_of({"text": value_text}, _GRADED_KINDS)
        if kind is None:
            value_cc = _concept(obs.get("valueCodeableConcept"))
            if self.kind_of(value_cc, ("seizure",)) == "seizure":
                kind, code = "seizure", value_cc
        if kind is None or at is None or self._absent(obs):
            return
        grade, from_text = self.graded_code(code, kind)
        if grade is None:
            grade, from_text = self._observation_value_grade(obs)
        if grade is None:
            grade, from_text = self.extension_grade(obs), False
        if grade is None:
            grade, from_text = self.text_grade([value_text, *texts(code), *_notes(obs)])
        yield ToxicityRecord(
            kind=kind, ref=relative_ref(obs), at=at, grade=grade, grade_from_text=from_text,
            label=_label(code) or (value_text or ""), grading_system=_label(_concept(obs.get("method"))) or None,
        )

    def condition(self, cond: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        verification = {c.get("code") for c in codings(_concept(cond.get("verificationStatus")))}
        if verification & _IGNORED_STATUSES:
            return
        at = _first_instant(cond.get("onsetDateTime"), _get(cond, "onsetPeriod", "start"), cond.get("recordedDate"))
        code = _concept(cond.get("code"))
        kind = self.kind_of(code, _GRADED_KINDS)
        if kind is None or at is None:
            return
        grade, from_text = self.graded_code(code, kind)
        if grade is None:
            for stage in cond.get("stage") or ():
                summary = _concept(stage.get("summary")) if isinstance(stage, Mapping) else {}
                grade = self.coded_grade(summary)
                if grade is None:
                    grade, from_text = self.text_grade(texts(summary))
                if grade is not None:
                    break
        if grade is None:
            grade, from_text = self.extension_grade(cond), False
        if grade is None:
            grade, from_text = self.text_grade([*texts(code), *_notes(cond)])
        ref, label = relative_ref(cond), _label(code)
        yield ToxicityRecord(kind=kind, ref=ref, at=at, grade=grade, grade_from_text=from_text, label=label)
        abated = _first_instant(cond.get("abatementDateTime"), _get(cond, "abatementPeriod", "end"),
                                _get(cond, "abatementPeriod", "start"))
        if abated is not None and abated >= at:
            yield ToxicityRecord(kind=kind, ref=ref, at=abated, grade=0, label=label)

    def adverse_event(self, event: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        if event.get("status") in _IGNORED_STATUSES or event.get("actuality") == "potential":
            return
        at = _first_instant(event.get("date"), event.get("detected"), event.get("recordedDate"))
        code = _concept(event.get("event"))
        if at is None or not code:
            return
        kind: Kind | None = self.kind_of(code, _EVENT_KINDS)
        if kind is None:
            if _search_any(self.tox.other_exclude_res, list(texts(code))):
                return
            kind = "other"
        grade = self.extension_grade(event)
        system = "CTCAE" if grade is not None else None
        from_text = False
        if grade is None:
            grade, from_text = self.graded_code(code, kind)
        if grade is None:
            grade, from_text = self.text_grade(texts(code))
        yield ToxicityRecord(kind=kind, ref=relative_ref(event), at=at, grade=grade, grade_from_text=from_text,
                             label=_label(code), grading_system=system)

    def administration(self, admin: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        """A blinatumomab administration stopped for an overdose or a flushed line (``statusReason``)."""
        if admin.get("status") in _IGNORED_STATUSES:
            return
        if not is_blinatumomab(medication_concept(admin, self.medications), self.kb):
            return
        at = _first_instant(_get(admin, "effectivePeriod", "end"), admin.get("effectiveDateTime"),
                            _get(admin, "effectivePeriod", "start"))
        if at is None:
            return
        for reason in admin.get("statusReason") or ():
            reason_cc = _concept(reason)
            kind = self.kind_of(reason_cc, ("flush", "overdose"))
            if kind is not None:
                yield ToxicityRecord(kind=kind, ref=relative_ref(admin), at=at, grade=None, label=_label(reason_cc))
                return

    # -------------------------------------------------------------- recognition

    def kind_of(self, codeable: Mapping[str, Any], kinds: Sequence[Kind]) -> Kind | None:
        if not codeable:
            return None
        all_text = list(texts(codeable))
        keys = self._coding_keys(codeable)
        for kind in kinds:
            if self._matches(all_text, keys, self.matchers[kind]):
                return kind
        return None

    @staticmethod
    def _matches(all_text: Sequence[str], keys: Sequence[tuple[str, str]], matcher: ConceptMatcher) -> bool:
        """Excluding text vetoes; else any listed code, else any text pattern."""
        if _search_any(matcher.exclude, all_text):
            return False
        if any(k in matcher.coded for k in keys):
            return True
        return _search_any(matcher.text, all_text)

    def _coding_keys(self, codeable: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(system key, code) of each coding whose system ``codes.toml`` knows (aliases included), in order."""
        keys: list[tuple[str, str]] = []
        for c in codings(codeable):
            system, code = c.get("system"), c.get("code")
            if isinstance(system, str) and isinstance(code, str):
                key = self.kb.codes.system_key(system)
                if key is not None:
                    keys.append((key, code))
        return keys

    def _absent(self, obs: Mapping[str, Any]) -> bool:
        if obs.get("valueBoolean") is False:
            return True
        values = [v for v in (obs.get("valueString"), *texts(_concept(obs.get("valueCodeableConcept"))))
                  if isinstance(v, str)]
        return _search_any(self.tox.absent_value_res, values)

    # -------------------------------------------------------------- grades

    def graded_code(self, codeable: Mapping[str, Any], kind: Kind) -> tuple[int | None, bool]:
        """A grade stated by the code itself (ICD-10-CM D89.833 = CRS grade 3)."""
        if kind not in ("crs", "neuro"):
            return None, False
        grade_of = self.matchers[kind].grade_of
        for key in self._coding_keys(codeable):
            grade = grade_of.get(key)
            if grade is not None:
                return grade, False
        return None, False

    def coded_grade(self, codeable: Mapping[str, Any]) -> int | None:
        for c in codings(codeable):
            system = c.get("system")
            key = self.kb.codes.system_key(system) if isinstance(system, str) else None
            grade = self.grade_codes.get((key or "", str(c.get("code"))))
            if grade is not None:
                return grade
        return None

    def extension_grade(self, resource: Mapping[str, Any]) -> int | None:
        for ext in resource.get("extension") or ():
            if not isinstance(ext, Mapping) or ext.get("url") not in self.tox.grades.extension_urls:
                continue
            grade = self.coded_grade(_concept(ext.get("valueCodeableConcept")))
            if grade is None:
                grade = _small_int(ext.get("valueInteger"))
            if grade is None and isinstance(ext.get("valueCode"), str):
                grade = _small_int(ext["valueCode"])
            if grade is not None:
                return grade
        return None

    def _observation_value_grade(self, obs: Mapping[str, Any]) -> tuple[int | None, bool]:
        grade = _small_int(obs.get("valueInteger"))
        if grade is None:
            grade = _small_int(_get(obs, "valueQuantity", "value"))
        if grade is not None:
            return grade, False
        value_cc = _concept(obs.get("valueCodeableConcept"))
        grade = self.coded_grade(value_cc)
        if grade is not None:
            return grade, False
        return self.text_grade(texts(value_cc))

    def text_grade(self, values: Iterable[str | None]) -> tuple[int | None, bool]:
        """The first grade written in free text ("CRS gr III", "grade 3 ICANS"); flagged as parsed."""
        for value in values:
            if not value:
                continue
            match = self.grade_re.search(value)
            if match is None:
                continue
            token = match.group("grade").lower()
            grade = int(token) if token.isdigit() else self.tox.grades.roman_numerals.get(token)
            if grade is not None:
                return grade, True
        return None, False


def _search_any(patterns: Sequence[re.Pattern[str]], values: Sequence[str]) -> bool:
    return any(p.search(v) for p in patterns for v in values)


def _concept(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _get(resource: Mapping[str, Any], element: str, key: str) -> Any:
    inner = resource.get(element)
    return inner.get(key) if isinstance(inner, Mapping) else None


def _first_instant(*values: Any) -> dt.datetime | None:
    for value in values:
        instant = parse_instant(value)
        if instant is not None:
            return instant.at
    return None


def _notes(resource: Mapping[str, Any]) -> list[str]:
    return [n["text"] for n in resource.get("note") or () if isinstance(n, Mapping) and isinstance(n.get("text"), str)]


def _label(codeable: Mapping[str, Any]) -> str:
    return next(iter(texts(codeable)), "")


def _small_int(value: Any) -> int | None:
    """0–5 from an int (or an integral float / digit string); anything else is not a grade."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= 5 else None
