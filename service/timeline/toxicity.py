"""Toxicity records on the timeline: CRS, neurological toxicity, seizures, other graded adverse events,
and overdose / line-flush events, each with its time and (when determinable) its grade.

Sites record these in many shapes (clinical-rules.md §4.4, real-world-charting.md §3–§5): an AdverseEvent
with the CTCAE grade extension, a flowsheet Observation whose code or text names the toxicity (often a local
code) with the grade as an integer, a string, a Roman numeral or a grade code, an ICE score, a Condition
coded with a graded ICD-10-CM code or with the grade in ``stage.summary``, or only free text ("CRS gr III").
CRS and ICANS have no standard SNOMED/MedDRA code, so recognition is by the codes the knowledge lists
(including a site's own) and by text. A grade read from text is flagged ``grade_from_text``.

Most of what a nurse charts is the *absence* of toxicity: "Seizure activity: Not observed" every shift, a
count of 0, ``valueBoolean: false``, SNOMED "Absent", an interpretation of normal, "ICE 10/10 – no ICANS".
Such a finding is never an event and never "grade unknown": it becomes an ``absent`` record (grade 0),
which also shows that an earlier episode resolved. "Not assessed" (a ``dataAbsentReason``, "N/A", "unable
to assess") gives no record at all. A Condition's abatement is an ``absent`` record at the abatement time
(a resolution, never a second event). The phrasings and codes are ``toxicity.toml [findings]``.

An Observation that is not CRS, neurological toxicity or a seizure is a toxicity record only when it says
it is graded (``[graded_observations]``): a pain score of 4 or a lab value is never read as a grade. The same
holds for a Condition (``[conditions]``; Oracle Health sends no AdverseEvent): a problem-list item or encounter
diagnosis is an "other" adverse event only when it states a grade; history-of entries, the malignancy itself,
refuted and entered-in-error entries never are. Records of one "other" event that share a coding are grouped
under one name, so a problem and a diagnosis worded differently stay one event.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from service.fhir.extract import codings, observation_instant, parse_instant, reference_id, relative_ref, texts
from service.knowledge import Knowledge
from service.knowledge.toxicity import ConceptMatcher
from service.timeline.dose import is_blinatumomab, medication_concept
from service.timeline.model import ToxicityRecord

Kind = Literal["crs", "neuro", "seizure", "other", "overdose", "flush"]

_GRADED_KINDS: tuple[Kind, ...] = ("crs", "neuro", "seizure")
_EVENT_KINDS: tuple[Kind, ...] = ("flush", "overdose", "crs", "neuro", "seizure")
_IGNORED_STATUSES = {"entered-in-error", "cancelled", "not-done", "refuted"}
_MEDICATION_TYPES = ("MedicationAdministration", "MedicationRequest", "MedicationStatement")


def build_toxicities(
    *,
    observations: Iterable[Mapping[str, Any]],
    conditions: Iterable[Mapping[str, Any]],
    adverse_events: Iterable[Mapping[str, Any]],
    administrations: Iterable[Mapping[str, Any]],
    medications: Mapping[str, Mapping[str, Any]] | None = None,
    medication_requests: Iterable[Mapping[str, Any]] = (),
    kb: Knowledge,
    now: dt.datetime,
) -> tuple[ToxicityRecord, ...]:
    """Every toxicity record, oldest first (records in the future or without a time are dropped).

    ``medications``: the fetched Medications by id, for an administration that names its drug by reference.
    ``administrations`` and ``medication_requests`` also let an AdverseEvent's ``suspectEntity`` be resolved.
    """
    administrations = list(administrations)
    reader = _Reader(kb, medications or {}, [*administrations, *medication_requests])
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
    """Reads one resource at a time against the knowledge's concepts, grade codes and finding phrasings."""

    def __init__(self, kb: Knowledge, medications: Mapping[str, Mapping[str, Any]],
                 medication_resources: Sequence[Mapping[str, Any]]) -> None:
        self.kb = kb
        self.medications = medications
        self.tox = kb.toxicity
        # Compiled patterns and code sets come ready-made with the knowledge (built once per process).
        self.matchers = self.tox.matchers
        self.grade_codes = self.tox.grade_of_code
        self.grade_re = self.tox.grade_text_re
        findings = self.tox.findings
        self.absent_codes = {(c.system, c.code) for c in findings.absent_codings}
        self.normal_codes = {(c.system, c.code) for c in findings.normal_interpretations}
        self.med_by_ref = {relative_ref(r): r for r in medication_resources if isinstance(r, Mapping)}
        self.record_texts: dict[str, bool] = {}
        """Text → whether it can make an Observation a record (``_may_be_record``; this call's texts only)."""
        self.key_by_coding: dict[tuple[str, str], str] = {}
        """(system, code) → the key of the "other" event first read with that coding."""
        self.kinds: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[Kind, ...]], Kind | None] = {}
        """(texts, coding keys, kinds asked) → ``kind_of``'s answer (this call's concepts only)."""

    # -------------------------------------------------------------- resources

    def observation(self, obs: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        if obs.get("status") in _IGNORED_STATUSES or not self._may_be_record(obs):
            return
        instant = observation_instant(obs)
        if instant is None or "dataAbsentReason" in obs:
            return  # not charted: no finding either way
        at, date_only = instant.at, instant.date_only
        code = _concept(obs.get("code"))
        value_cc = _concept(obs.get("valueCodeableConcept"))
        value_string = obs.get("valueString") if isinstance(obs.get("valueString"), str) else None
        value_texts = [t for t in (value_string, *texts(value_cc)) if t]
        code_texts = list(texts(code))
        if _search_any(self.tox.not_assessed_res, value_texts):
            return
        kind = self.kind_of(code, _GRADED_KINDS)
        if kind is None and value_string is not None:
            kind = self.kind_of({"text": value_string}, _GRADED_KINDS)
        if kind is None and self.kind_of(value_cc, ("seizure",)) == "seizure":
            kind, code = "seizure", value_cc
        ice = self._ice_score(obs, code_texts, value_texts)
        if kind is None and ice is not None:
            kind = "neuro"
        ref = relative_ref(obs)
        method = _label(_concept(obs.get("method"))) or None
        base = ToxicityRecord(kind="other", ref=ref, at=at, grade=None, date_only=date_only)
        if kind == "seizure":
            yield from self._seizure_observation(obs, base, code, value_texts)
            return
        if kind == "neuro" and ice is not None and ice[1] is not None:
            score, ice_grade = ice
            label = _label(code) or (value_string or "ICE score")
            if ice_grade == 0 or self._negative(obs, value_cc, value_texts, code_texts):
                yield replace(base, kind="neuro", grade=0, absent=True, label=label)
            else:
                ice_scale = self.tox.ice_score
                yield replace(base, kind="neuro", grade=ice_grade, label=f"{label} ({score}/{ice_scale.max_score})",
                              grading_system=ice_scale.grading_system)
            return
        grade, from_text, graded = self._observation_grade(obs, code, value_cc, value_string)
        if kind is None:
            if not graded or _search_any(self.tox.other_exclude_res, code_texts):
                return
            kind = "other"
        label = _label(code) or (value_string or "")
        name_key = self.other_key(code, label) if kind == "other" else self.name_key(label)
        if self._resolved(value_texts) or (
                (grade is None or grade == 0) and self._negative(obs, value_cc, value_texts, code_texts)):
            yield replace(base, kind=kind, grade=0, absent=True, label=label, name_key=name_key)
            return
        if grade is None:
            grade, from_text = self.text_grade([*code_texts, *_notes(obs)])
        yield replace(base, kind=kind, grade=grade, grade_from_text=from_text, label=label, grading_system=method,
                      name_key=name_key, absent=grade == 0)

    def _may_be_record(self, obs: Mapping[str, Any]) -> bool:
        """Whether anything in the Observation can make it a toxicity record: a CRS, neurological, seizure or grade
        code in its code or value, a grade extension, or a text (code, value, method) matching one of the patterns
        that recognise a toxicity, an ICE score or a grade. Everything else (the labs and vital signs that make
        up most of a long history, a nurse's free-text note) is no record, read without the rest of the reader.

        A quick, exact test: every record ``observation`` yields needs one of these (its kind from a code or
        text, an ICE score, or a grade from a code, an extension, a grading system or grade words)."""
        codes = self.tox.observation_codes
        system_key = self.kb.codes.system_key
        value_cc = obs.get("valueCodeableConcept")
        for codeable in (obs.get("code"), value_cc):
            for c in codings(codeable):
                system = c.get("system")
                if isinstance(system, str) and (system_key(system), str(c.get("code"))) in codes:
                    return True
        urls = self.tox.grades.extension_urls
        for ext in obs.get("extension") or ():
            if isinstance(ext, Mapping) and ext.get("url") in urls:
                return True
        value_string = obs.get("valueString")
        candidates = [*texts(obs.get("code")), *texts(value_cc), *texts(obs.get("method"))]
        if isinstance(value_string, str):
            candidates.append(value_string)
        known = self.record_texts
        for text in candidates:
            says = known.get(text)
            if says is None:  # a long history repeats a few dozen code names thousands of times: search each once
                says = known[text] = _search_any(self.tox.observation_texts, [text])
            if says:
                return True
        return False

    def _seizure_observation(self, obs: Mapping[str, Any], base: ToxicityRecord, code: Mapping[str, Any],
                             value_texts: Sequence[str]) -> Iterator[ToxicityRecord]:
        """A seizure row: its number is a count ("Seizures this shift: 2"), never a grade; 0 is absent."""
        label = _label(code) or next(iter(value_texts), "Seizure")
        count = _small_count(obs.get("valueInteger"))
        if count is None:
            count = _small_count(_get(obs, "valueQuantity", "value"))
        if count is None:
            count = self._text_count(value_texts)
        value_cc = _concept(obs.get("valueCodeableConcept"))
        negative = self._negative(obs, value_cc, value_texts, list(texts(code))) or self._resolved(value_texts)
        if count == 0 or (negative and not count):
            yield replace(base, kind="seizure", grade=0, absent=True, label=label)
            return
        yield replace(base, kind="seizure", label=label, count=count or 1)

    def condition(self, cond: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        """A problem-list item or encounter diagnosis that records a toxicity (``toxicity.toml [conditions]``).

        CRS, neurological toxicity and seizures are recognised by code or text; any other Condition is an adverse
        event only when it states a grade (``_condition_grade``): an ungraded diagnosis never is. Refuted and
        entered-in-error entries, history-of entries and the malignancy itself are never records.
        """
        verification = {c.get("code") for c in codings(_concept(cond.get("verificationStatus")))}
        if verification & _IGNORED_STATUSES:
            return
        instant = _first_instant(cond.get("onsetDateTime"), _get(cond, "onsetPeriod", "start"),
                                 cond.get("recordedDate"))
        code = _concept(cond.get("code"))
        code_texts = list(texts(code))
        if instant is None or not code or _search_any(self.tox.condition_exclude_res, code_texts):
            return
        kind = self.kind_of(code, _GRADED_KINDS)
        if kind is None and _search_any(self.tox.other_exclude_res, code_texts):
            return
        at, date_only = instant
        ref, label = relative_ref(cond), _label(code)
        if kind is not None and _search_any(self.tox.absent_res, code_texts):
            yield ToxicityRecord(kind=kind, ref=ref, at=at, grade=0, absent=True, label=label, date_only=date_only)
            return
        grade, from_text = (None, False)
        if kind != "seizure":
            grade, from_text = self._condition_grade(cond, code, kind or "other", notes=kind is not None)
        if kind is None:
            if grade is None:
                return  # an ungraded diagnosis is not an adverse event
            kind = "other"
        abated = _first_instant(cond.get("abatementDateTime"), _get(cond, "abatementPeriod", "end"),
                                _get(cond, "abatementPeriod", "start"))
        if abated is not None and abated[0] < at:
            # Onset unknown (only the date it was recorded), but over before then: the event ended at the abatement.
            at, date_only = abated
        common = ToxicityRecord(kind=kind, ref=ref, at=at, grade=None, label=label, date_only=date_only,
                                name_key=self.other_key(code, label) if kind == "other" else "")
        yield replace(common, grade=grade, grade_from_text=from_text)
        if abated is None and self._clinically_over(cond):
            abated = at, date_only  # resolved, date not charted: read as resolved at its onset
        if abated is not None:
            # The abatement marks resolution, never another event (a resolved seizure is still one seizure).
            yield replace(common, at=abated[0], grade=0, absent=True, date_only=abated[1])

    def _condition_grade(self, cond: Mapping[str, Any], code: Mapping[str, Any], kind: Kind, *,
                         notes: bool) -> tuple[int | None, bool]:
        """The grade a Condition states: its graded code (ICD-10-CM D89.833), ``stage.summary``, ``severity`` when
        it holds a grade code or "grade N" (never mild/moderate/severe), the CTCAE grade extension, then "grade N"
        in its code text (and notes, for CRS and neurotoxicity)."""
        grade, from_text = self.graded_code(code, kind)
        if grade is None:
            grade, from_text = self._stage_grade(cond)
        if grade is None:
            grade, from_text = self._summary_grade(_concept(cond.get("severity")))
        if grade is None:
            grade, from_text = self.extension_grade(cond), False
        if grade is None:
            grade, from_text = self.text_grade([*texts(code), *(_notes(cond) if notes else ())])
        return grade, from_text

    def _clinically_over(self, cond: Mapping[str, Any]) -> bool:
        statuses = {c.get("code") for c in codings(_concept(cond.get("clinicalStatus")))}
        return bool(statuses & set(self.tox.conditions.resolved_clinical_statuses))

    def _stage_grade(self, cond: Mapping[str, Any]) -> tuple[int | None, bool]:
        for stage in cond.get("stage") or ():
            if isinstance(stage, Mapping):
                grade, from_text = self._summary_grade(_concept(stage.get("summary")))
                if grade is not None:
                    return grade, from_text
        return None, False

    def _summary_grade(self, summary: Mapping[str, Any]) -> tuple[int | None, bool]:
        """A grade code (CTCAE, NCIt) or "grade N" in a CodeableConcept (a stage summary or a severity)."""
        grade = self.coded_grade(summary)
        if grade is not None:
            return grade, False
        return self.text_grade(texts(summary))

    def other_key(self, code: Mapping[str, Any], label: str) -> str:
        """An "other" event's grouping key: its name without grade words, unless a record read before carried one
        of its codings (a problem-list "Pancreatitis" and the encounter diagnosis "Acute pancreatitis" with the
        same code are one event)."""
        key = self.name_key(label)
        pairs = [(str(c.get("system")), str(c.get("code"))) for c in codings(code) if c.get("code")]
        known = next((self.key_by_coding[p] for p in pairs if p in self.key_by_coding), None)
        for p in pairs:
            self.key_by_coding.setdefault(p, known or key)
        return known or key

    def adverse_event(self, event: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        if event.get("status") in _IGNORED_STATUSES or event.get("actuality") == "potential":
            return
        instant = _first_instant(event.get("date"), event.get("detected"), event.get("recordedDate"))
        code = _concept(event.get("event"))
        if instant is None or not code:
            return
        at, date_only = instant
        code_texts = list(texts(code))
        kind: Kind | None = self.kind_of(code, _EVENT_KINDS)
        if kind is None:
            if _search_any(self.tox.other_exclude_res, code_texts):
                return
            kind = "other"
        label = _label(code)
        attributed = self.attribution(event) if kind not in ("overdose", "flush") else None
        common = ToxicityRecord(kind=kind, ref=relative_ref(event), at=at, grade=None, label=label,
                                date_only=date_only, attributed_elsewhere=attributed,
                                name_key=self.other_key(code, label) if kind == "other" else self.name_key(label))
        if kind not in ("overdose", "flush") and _search_any(self.tox.absent_res, code_texts):
            yield replace(common, grade=0, absent=True)
            return
        grade = self.extension_grade(event)
        system = "CTCAE" if grade is not None else None
        from_text = False
        if grade is None:
            grade, from_text = self.graded_code(code, kind)
        if grade is None:
            grade, from_text = self.text_grade(code_texts)
        if kind == "seizure":
            grade = None
        yield replace(common, grade=grade, grade_from_text=from_text, grading_system=system)
        outcome = {c.get("code") for c in codings(_concept(event.get("outcome")))}
        if kind not in ("overdose", "flush") and outcome & {"resolved", "recovered"}:
            recorded = _first_instant(event.get("recordedDate"))
            resolved_at = recorded[0] if recorded is not None and recorded[0] > at else at
            yield replace(common, at=resolved_at, grade=0, absent=True, grading_system=None)

    def attribution(self, event: Mapping[str, Any]) -> str | None:
        """What an AdverseEvent blames instead of blinatumomab: the other drugs its ``suspectEntity`` names when
        none is blinatumomab, or ``"unrelated"`` when the causality assessment of blinatumomab says so.

        An entity whose drug cannot be told (a reference to a resource not fetched, with no display) may be
        blinatumomab: the event then stays attributed to it.
        """
        others: list[str] = []
        blin_unrelated = False
        names_blin = False
        for entity in event.get("suspectEntity") or ():
            if not isinstance(entity, Mapping):
                continue
            concept = self._suspect_concept(_concept(entity.get("instance")))
            if not concept:
                return None
            if is_blinatumomab(concept, self.kb):
                names_blin = True
                blin_unrelated = blin_unrelated or self._unrelated(entity)
            else:
                others.append(_label(concept) or "another drug")
        if names_blin:
            return "unrelated" if blin_unrelated else None
        return ", ".join(dict.fromkeys(others)) or None

    def _suspect_concept(self, instance: Mapping[str, Any]) -> Mapping[str, Any]:
        for rtype in _MEDICATION_TYPES:
            rid = reference_id(instance, rtype)
            resource = self.med_by_ref.get(f"{rtype}/{rid}") if rid else None
            if resource is not None:
                return medication_concept(resource, self.medications)
        rid = reference_id(instance, "Medication")
        med = self.medications.get(rid) if rid else None
        if med is not None:
            return _concept(med.get("code"))
        display = instance.get("display")
        return {"text": display} if isinstance(display, str) and display.strip() else {}

    def _unrelated(self, entity: Mapping[str, Any]) -> bool:
        for causality in entity.get("causality") or ():
            if not isinstance(causality, Mapping):
                continue
            said = [*texts(_concept(causality.get("assessment")))]
            if isinstance(causality.get("productRelatedness"), str):
                said.append(causality["productRelatedness"])
            if _search_any(self.tox.unrelated_res, said):
                return True
        return False

    def administration(self, admin: Mapping[str, Any]) -> Iterator[ToxicityRecord]:
        """A blinatumomab administration stopped for an overdose or a flushed line (``statusReason``)."""
        if admin.get("status") in _IGNORED_STATUSES:
            return
        if not is_blinatumomab(medication_concept(admin, self.medications), self.kb):
            return
        instant = _first_instant(_get(admin, "effectivePeriod", "end"), admin.get("effectiveDateTime"),
                                 _get(admin, "effectivePeriod", "start"))
        if instant is None:
            return
        for reason in admin.get("statusReason") or ():
            reason_cc = _concept(reason)
            kind = self.kind_of(reason_cc, ("flush", "overdose"))
            if kind is not None:
                yield ToxicityRecord(kind=kind, ref=relative_ref(admin), at=instant[0], grade=None,
                                     label=_label(reason_cc), date_only=instant[1])
                return

    # -------------------------------------------------------------- recognition

    def kind_of(self, codeable: Mapping[str, Any], kinds: Sequence[Kind]) -> Kind | None:
        if not codeable:
            return None
        all_text = tuple(texts(codeable))
        keys = tuple(self._coding_keys(codeable))
        memo = (all_text, keys, tuple(kinds))
        if memo in self.kinds:  # a flowsheet repeats the same few rows every shift: match their words once
            return self.kinds[memo]
        found = next((kind for kind in kinds if self._matches(all_text, keys, self.matchers[kind])), None)
        self.kinds[memo] = found
        return found

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

    def _negative(self, obs: Mapping[str, Any], value_cc: Mapping[str, Any], value_texts: Sequence[str],
                  code_texts: Sequence[str]) -> bool:
        """The Observation says the finding is absent: false, 0, an absent/negative code, a normal
        interpretation, or absence wording in its value (or in its code text when it has no value)."""
        if obs.get("valueBoolean") is False:
            return True
        if _small_count(obs.get("valueInteger")) == 0 or _small_count(_get(obs, "valueQuantity", "value")) == 0:
            return True
        if any(k in self.absent_codes for k in self._coding_keys(value_cc)):
            return True
        for interpretation in obs.get("interpretation") or ():
            if any(k in self.normal_codes for k in self._coding_keys(_concept(interpretation))):
                return True
        has_value = any(k.startswith("value") for k in obs)
        return _search_any(self.tox.absent_res, value_texts if has_value else code_texts)

    def _resolved(self, value_texts: Sequence[str]) -> bool:
        return _search_any(self.tox.resolved_res, value_texts)

    def _ice_score(self, obs: Mapping[str, Any], code_texts: Sequence[str],
                   value_texts: Sequence[str]) -> tuple[int, int | None] | None:
        """An ICE score: ``(score, grade)`` (grade ``None`` when out of range), or ``None`` when not an ICE entry."""
        ice = self.tox.ice_score
        if _search_any(self.tox.ice_res, code_texts):
            number = _small_count(obs.get("valueInteger"), limit=ice.max_score)
            if number is None:
                number = _small_count(_get(obs, "valueQuantity", "value"), limit=ice.max_score)
            if number is None:
                number = self._ice_in_text(value_texts, bare=True)
            return None if number is None else (number, ice.grade(number))
        mentioned = [t for t in value_texts if _search_any(self.tox.ice_res, [t])]
        number = self._ice_in_text(mentioned, bare=False)
        return None if number is None else (number, ice.grade(number))

    def _ice_in_text(self, values: Sequence[str], *, bare: bool) -> int | None:
        limit = self.tox.ice_score.max_score
        for value in values:
            match = self.tox.ice_value_re.search(value)
            if match is not None and int(match.group("score")) <= limit:
                return int(match.group("score"))
            if bare and value.strip().isdigit() and int(value.strip()) <= limit:
                return int(value.strip())
        return None

    def _text_count(self, values: Sequence[str]) -> int | None:
        for value in values:
            for pattern in self.tox.seizure_count_res:
                match = pattern.search(value)
                if match is not None:
                    return int(match.group("count"))
            if value.strip().isdigit():
                return int(value.strip())
        return None

    def name_key(self, label: str) -> str:
        """An event's name without grade words, for grouping the records of one "other" event."""
        name = label.lower()
        for pattern in self.tox.name_noise_res:
            name = pattern.sub(" ", name)
        return " ".join(name.split())

    # -------------------------------------------------------------- grades

    def _observation_grade(self, obs: Mapping[str, Any], code: Mapping[str, Any], value_cc: Mapping[str, Any],
                           value_string: str | None) -> tuple[int | None, bool, bool]:
        """``(grade, from_text, graded)``: the grade an Observation states, and whether it says it is graded.

        Graded when the ``method`` names a grading system, the value is a grade code, or the code/text says
        "grade" (then a bare number 0–5 or a Roman numeral in the value is the grade). A value string that
        itself says "grade 3" is a graded record too.
        """
        code_grade, _ = self.graded_code(code, "crs")
        if code_grade is None:
            code_grade, _ = self.graded_code(code, "neuro")
        if code_grade is not None:
            return code_grade, False, True
        coded = self.coded_grade(value_cc)
        if coded is not None:
            return coded, False, True
        method_texts = list(texts(_concept(obs.get("method"))))
        says_grade = (_search_any(self.tox.grading_system_res, method_texts)
                      or _search_any(self.tox.says_grade_res, list(texts(code))))
        if says_grade:
            bare = _small_int(obs.get("valueInteger"))
            if bare is None:
                bare = _small_int(_get(obs, "valueQuantity", "value"))
            if bare is None and value_string is not None:
                bare = _small_int(value_string)
                if bare is None:
                    bare = self.tox.grades.roman_numerals.get(value_string.strip().lower())
            if bare is not None:
                return bare, False, True
        grade, from_text = self.text_grade([value_string, *texts(value_cc)])
        if grade is not None:
            return grade, from_text, True
        extension = self.extension_grade(obs)
        if extension is not None:
            return extension, False, True
        return None, False, bool(says_grade)

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


def _first_instant(*values: Any) -> tuple[dt.datetime, bool] | None:
    """The first parseable time and whether it arrived as a bare date."""
    for value in values:
        instant = parse_instant(value)
        if instant is not None:
            return instant.at, instant.date_only
    return None


def _notes(resource: Mapping[str, Any]) -> list[str]:
    return [n["text"] for n in resource.get("note") or () if isinstance(n, Mapping) and isinstance(n.get("text"), str)]


def _label(codeable: Mapping[str, Any]) -> str:
    return next(iter(texts(codeable)), "")


def _small_int(value: Any) -> int | None:
    """0–5 from an int (or an integral float / digit string); anything else is not a grade."""
    return _small_count(value, limit=5)


def _small_count(value: Any, *, limit: int = 99) -> int | None:
    """0–``limit`` from an int, an integral float or a digit string; anything else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= limit else None
