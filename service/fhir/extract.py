"""Small readers over FHIR JSON (dicts): codings, references, instants, quantities.

The hot path never builds ``fhir.resources`` models for prefetched data (about 60× slower);
these helpers read the few elements the timeline needs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeGuard

from service.memo import Memo

if TYPE_CHECKING:
    from service.knowledge.codes import Codes

_DATE_ONLY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(frozen=True)
class Instant:
    """A FHIR date/dateTime/instant. ``date_only`` when no time was given (never guess a time)."""

    at: dt.datetime
    date_only: bool


def parse_instant(value: Any) -> Instant | None:
    """``"2026-03-01T08:00:00Z"`` → aware datetime; ``"2026-03-01"`` → midnight UTC, ``date_only``.

    A dateTime without a timezone is read as UTC (FHIR requires a zone when a time is given).
    """
    if not isinstance(value, str) or not value:
        return None
    if _DATE_ONLY.match(value):
        parts = [int(p) for p in value.split("-")] + [1, 1]
        try:
            return Instant(dt.datetime(parts[0], parts[1], parts[2], tzinfo=dt.UTC), True)
        except ValueError:  # "2026-13-45"
            return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return Instant(parsed, False)


def observation_instant(obs: Mapping[str, Any]) -> Instant | None:
    """When an Observation was made: ``effectiveDateTime``, ``effectiveInstant``, ``effectivePeriod`` (start,
    else end), else ``issued``."""
    raw_period = obs.get("effectivePeriod")
    period: Mapping[str, Any] = raw_period if isinstance(raw_period, Mapping) else {}
    for raw in (obs.get("effectiveDateTime"), obs.get("effectiveInstant"), period.get("start"), period.get("end"),
                obs.get("issued")):
        instant = parse_instant(raw)
        if instant is not None:
            return instant
    return None


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, at the cost of a type check for the dicts parsed JSON is made of."""
    return type(value) is dict or isinstance(value, Mapping)


def codings(codeable: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    if not _is_map(codeable) or not isinstance(codeable.get("coding"), list):
        return
    for c in codeable["coding"]:
        if _is_map(c):
            yield c


def texts(codeable: Mapping[str, Any] | None) -> Iterator[str]:
    """``text`` then every coding ``display`` of a CodeableConcept."""
    if not _is_map(codeable):
        return
    if isinstance(codeable.get("text"), str):
        yield codeable["text"]
    for c in codings(codeable):
        if isinstance(c.get("display"), str):
            yield c["display"]


@lru_cache(maxsize=512)
def _pattern(expr: str) -> re.Pattern[str]:
    return re.compile(expr, re.IGNORECASE)


def concept_matches(codeable: Mapping[str, Any], codes: Codes, concept: str) -> bool:
    """Whether a CodeableConcept names ``concept``: by coding first, else by text pattern.

    Exclusion patterns (``exclude_text_patterns``) veto any match, so a coded kit line whose text says
    "IV Solution Stabilizer" is never read as the drug.
    """
    spec = codes.concepts[concept]
    wanted = codes.wanted(concept)
    coded = False
    for c in codings(codeable):
        system, code = c.get("system"), c.get("code")
        if isinstance(system, str) and isinstance(code, str) and (codes.canonical_uri(system), code) in wanted:
            coded = True
            break
    if not coded and not spec.text_patterns:
        return False  # the common case on the hot path: another concept's coding, nothing to read
    all_text = tuple(texts(codeable))
    key = (spec.text_patterns, spec.exclude_text_patterns, coded, all_text)
    # a chart names the same few drugs in the same words on hundreds of records
    return _TEXT_VERDICTS.get(key, sum(map(len, all_text)), lambda: _text_verdict(*key))


_TEXT_VERDICTS: Memo[tuple[tuple[str, ...], tuple[str, ...], bool, tuple[str, ...]], bool] = Memo(4096)
"""(text patterns, exclude patterns, coded, texts) → :func:`concept_matches`' verdict, for this process."""


def _text_verdict(patterns: tuple[str, ...], excludes: tuple[str, ...], coded: bool, all_text: tuple[str, ...]
                  ) -> bool:
    if excludes and any(_pattern(p).search(t) for p in excludes for t in all_text):
        return False
    return coded or any(_pattern(p).search(t) for p in patterns for t in all_text)


def first_concept(codeable: Mapping[str, Any], codes: Codes, concepts: Sequence[str]) -> str | None:
    """The first of ``concepts`` a CodeableConcept names (as :func:`concept_matches`, tried in order).

    Concepts known by code alone (no text patterns: the LOINC lab and body-size concepts) are told by one look-up
    per coding (``Codes.concepts_of_pair``) instead of one pass over the codings per concept.
    """
    named: set[str] = set()
    for c in codings(codeable):
        system, code = c.get("system"), c.get("code")
        if isinstance(system, str) and isinstance(code, str):
            named.update(codes.concepts_of_pair.get((codes.canonical_uri(system), code), ()))
    for name in concepts:
        spec = codes.concepts[name]
        if spec.text_patterns or spec.exclude_text_patterns:
            if concept_matches(codeable, codes, name):
                return name
        elif name in named:
            return name
    return None


def reference_id(ref: Any, resource_type: str | None = None) -> str | None:
    """``{"reference": "Patient/123"}`` → ``"123"`` (optionally only when the type matches)."""
    if not isinstance(ref, Mapping) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].rstrip("/").split("/")
    if len(parts) < 2:
        return None
    if resource_type and parts[-2] != resource_type:
        return None
    return str(parts[-1])


def relative_ref(resource: Mapping[str, Any]) -> str:
    """``"MedicationRequest/abc"`` for a resource (``"MedicationRequest/?"`` without an id)."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


def bundle_resources(bundle: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The resources of a Bundle's entries (entries without a resource are skipped)."""
    entries = bundle.get("entry") if isinstance(bundle, Mapping) else None
    if not isinstance(entries, list):
        return []
    return [e["resource"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)]


def find_invalid_resource(
    data: Mapping[str, Sequence[Mapping[str, Any]]], drafts: Sequence[Mapping[str, Any]]
) -> tuple[str, str, str] | None:
    """The first resource that is not valid FHIR R4, as (where, reference, problem); ``None`` if all are.

    Used only after the timeline failed to read the data (the slow path): ``fhir.resources`` names the
    broken element so the caller gets a 400 that says what to fix. Unknown elements are not counted as
    problems (the R4B models forbid them; a real EHR sends extensions and newer elements).
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    places = [
        *((f"prefetch.{key}", r) for key, resources in data.items() for r in resources),
        *(("context.draftOrders", r) for r in drafts),
    ]
    for where, resource in places:
        rtype = resource.get("resourceType")
        try:
            model = get_fhir_model_class(str(rtype))
        except (KeyError, ValueError):
            return where, relative_ref(resource), f"unknown resourceType {rtype!r}"
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            for err in exc.errors():
                if err["type"] != "extra_forbidden":
                    loc = ".".join(str(p) for p in err["loc"])
                    return where, relative_ref(resource), f"{loc}: {err['msg']}"
    return None
