"""Medication identity and dose arithmetic shared by the order and administration builders.

Blinatumomab arrives coded at ingredient or product level (SCD and SBD codings on one order are one
drug), as a ``medicationReference`` to a contained Medication (``#id``) or to a Medication resource
(``Medication/<id>``: prefetched through the medication keys' ``_include``, else read from ``fhirServer``), or as
text only; the kit's IV Solution Stabilizer is never the drug (``codes.toml`` excludes it by text). A Medication
names the drug by its ``code`` (coding, display or text), or, when its code is empty, by its ingredients. Doses
arrive in half a dozen FHIR shapes; :func:`daily_dose` turns the first usable one into µg/day and says which it
used, and refuses to guess when a pump rate in mL/h has no concentration (the bag's concentration comes from the
Medication's ``ingredient.strength`` or ``amount``: :func:`concentration_ug_per_ml`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.fhir.extract import codings, concept_matches, texts
from service.knowledge import Knowledge
from service.memo import MEMO_MAX_KEY_CHARS
from service.timeline.model import DailyDose

STEROIDS: tuple[str, ...] = ("dexamethasone", "methylprednisolone", "prednisolone", "prednisone")
"""Steroid concepts of ``codes.toml``, most specific first (methylprednisolone before prednisolone)."""

_CYCLE_DAY = re.compile(r"\b(?:cycle\s*|c)(\d{1,2})\s*[,;/-]?\s*(?:day\s*|d)(\d{1,2})\b", re.IGNORECASE)
_UNIT_SEPARATOR = re.compile(r"[/.]")
_COUNT_UNIT = re.compile(r"1|\{[^}]*\}|bags?|ea|each")
"""A Ratio denominator that counts products (UCUM ``1`` or an annotation such as ``{bag}``): "28 ug per 1 bag"."""
_UNIT_TOKEN = re.compile(r"(\d+(?:\.\d+)?)?([a-z]\w*)?")
"""One part of a rate unit's denominator: an optional count and a name (``24``, ``h``, ``m2``)."""


_MEDICATION_REF = re.compile(
    r"^(?P<base>.*/)?Medication/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
"""``Medication/<id>``, absolute (``https://…/Medication/<id>``) or versioned (``…/_history/<v>``)."""


def medication_concept(resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """The CodeableConcept naming a MedicationRequest's/-Administration's drug (resolving a Medication reference)."""
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, Mapping):
        return concept
    med = referenced_medication(resource, medications)
    code = _medication_code(med) if med else {}
    if code:
        return code
    ref = resource.get("medicationReference")  # a reference we cannot resolve may still name the drug
    display = ref.get("display") if isinstance(ref, Mapping) else None
    return {"text": display} if isinstance(display, str) and display.strip() else {}


def _medication_code(med: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Medication's ``code``; when it names nothing (no coding, no text), its ingredients' codings and texts
    (``itemCodeableConcept``, or an ``itemReference``'s display) — a compounded bag is often coded only there."""
    code = med.get("code")
    if isinstance(code, Mapping) and (code.get("coding") or code.get("text")):
        return code
    merged: dict[str, Any] = {"coding": []}
    for ing in med.get("ingredient") or ():
        if not isinstance(ing, Mapping):
            continue
        item = ing.get("itemCodeableConcept")
        if isinstance(item, Mapping):
            merged["coding"].extend(c for c in item.get("coding") or () if isinstance(c, Mapping))
            text = item.get("text")
        else:
            ref = ing.get("itemReference")
            text = ref.get("display") if isinstance(ref, Mapping) else None
        if isinstance(text, str) and text.strip():
            merged["coding"].append({"display": text})
    return merged if merged["coding"] else {}


def medication_reference_id(resource: Mapping[str, Any], *, relative_only: bool = False) -> str | None:
    """The id behind a ``medicationReference`` to a Medication resource (not a contained ``#id``); ``None`` for
    anything else. With ``relative_only``, only ``Medication/<id>`` (what may be read from ``fhirServer``: an
    absolute URL may name another server)."""
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, Mapping) else None
    if not isinstance(target, str) or target.startswith("#"):
        return None
    m = _MEDICATION_REF.match(target.strip())
    if m is None or (relative_only and m.group("base")):
        return None
    return m.group("id")


def referenced_medication(
    resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The Medication behind ``medicationReference``: contained (``#id``) or one of the fetched resources."""
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, Mapping) else None
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        contained = resource.get("contained")
        return next((c for c in contained if isinstance(c, Mapping) and c.get("resourceType") == "Medication"
                     and c.get("id") == target[1:]), None) if isinstance(contained, list) else None
    medication_id = medication_reference_id(resource)
    return medications.get(medication_id) if medication_id is not None else None


def medication_to_read(
    resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]], kb: Knowledge
) -> str | None:
    """The id of the Medication a MedicationRequest/-Administration needs read from ``fhirServer``, if any.

    Needed when the record points at ``Medication/<id>`` that is neither contained nor among ``medications``, and
    the record does not name its drug otherwise (no code, no display) or names one the rules read (blinatumomab,
    whose strength may live there, or a steroid). A record whose reference display names another drug is left
    alone: reading every formulary item of a chart would cost a request each for nothing.
    """
    if resource.get("resourceType") not in ("MedicationRequest", "MedicationAdministration"):
        return None
    if isinstance(resource.get("medicationCodeableConcept"), Mapping):
        return None
    medication_id = medication_reference_id(resource, relative_only=True)
    if medication_id is None or medication_id in medications:
        return None
    concept = medication_concept(resource, medications)
    if concept and not is_blinatumomab(concept, kb) and steroid_agent(concept, kb) is None:
        return None
    return medication_id


def named_in_order_text(mr: Mapping[str, Any], kb: Knowledge) -> bool:
    """Whether a MedicationRequest's own words name blinatumomab (``dosageInstruction.text``, ``note``): used only
    for a draft whose Medication cannot be resolved, to give it the "cannot verify" card rather than no answer."""
    words = [d.get("text") for d in mr.get("dosageInstruction") or () if isinstance(d, Mapping)]
    words += [n.get("text") for n in mr.get("note") or () if isinstance(n, Mapping)]
    return any(is_blinatumomab({"text": w}, kb) for w in words if isinstance(w, str) and w.strip())


def is_blinatumomab(concept: Mapping[str, Any], kb: Knowledge) -> bool:
    return bool(concept) and _drug_of(concept, kb)[0]


def steroid_agent(concept: Mapping[str, Any], kb: Knowledge) -> str | None:
    if not concept:
        return None
    return _drug_of(concept, kb)[1]


def _drug_of(concept: Mapping[str, Any], kb: Knowledge) -> tuple[bool, str | None]:
    """(names blinatumomab, the steroid it names) for a CodeableConcept, judged once per distinct concept.

    Every builder asks this of the same few drugs on hundreds of records; :func:`concept_matches` reads only the
    codings' (system, code) and the texts, so these are the memo's key.
    """
    all_text = tuple(texts(concept))
    key = (tuple((c.get("system"), c.get("code")) for c in codings(concept)
                 if isinstance(c.get("system"), str) and isinstance(c.get("code"), str)), all_text)
    return kb.codes.drug_verdicts.get(key, sum(map(len, all_text)), lambda: (
        concept_matches(concept, kb.codes, "blinatumomab"),
        next((name for name in STEROIDS if concept_matches(concept, kb.codes, name)), None)))


def explicit_cycle_day(texts: Iterable[str]) -> tuple[int, int] | None:
    """"Cycle 2 Day 1", "C2D1", "cycle 1, day 8" in an order's text or note."""
    for text in texts:
        m = _CYCLE_DAY.search(text)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


@dataclass(frozen=True)
class RateUnit:
    mass: str | None
    """A key of ``mass_to_ug``, or ``None`` for a volume rate (``mL/h``)."""
    per_day: float
    """Multiply a per-time value by this to get per day."""
    basis: str | None = None
    """``m2`` or ``kg`` for a body-size-based rate."""
    per_hour: bool = False


_RATE_UNITS: dict[str, tuple[object, RateUnit | None]] = {}
"""Unit text → (the ``Units`` it was read with, :func:`parse_rate_unit`'s answer), for this process; emptied at
``_RATE_UNITS_MAX`` entries. A chart writes the same few units on every dose."""
_RATE_UNITS_MAX = 1024


def parse_rate_unit(unit: str, kb: Knowledge) -> RateUnit | None:
    """``"mcg/day"``, ``"ug/h"``, ``"ug/(m2.d)"``, ``"mg/d"``, ``"mL/h"``, ``"ug/(24.h)"`` → :class:`RateUnit`."""
    units = kb.dosing.units
    known = _RATE_UNITS.get(unit)
    if known is not None and known[0] is units:
        return known[1]
    parsed = _parse_rate_unit(unit, kb)
    if len(unit) <= MEMO_MAX_KEY_CHARS:  # a long unit text is not kept (service/memo.py)
        if len(_RATE_UNITS) >= _RATE_UNITS_MAX:
            _RATE_UNITS.clear()
        _RATE_UNITS[unit] = (units, parsed)
    return parsed


def _parse_rate_unit(unit: str, kb: Knowledge) -> RateUnit | None:
    units = kb.dosing.units
    mass, _, rest = units.norm(unit).partition("/")
    tokens = [units.norm(t) for t in _UNIT_SEPARATOR.split(rest) if t]
    count, basis, time = 1.0, None, None
    for token in tokens:
        m = _UNIT_TOKEN.fullmatch(token)
        if not m or not (m.group(1) or m.group(2)):
            return None
        if m.group(1):
            count *= float(m.group(1))
        name = units.norm(m.group(2)) if m.group(2) else None  # "24hr" → 24 × "h"
        if name is None:
            continue
        if name in ("m2", "kg") and basis is None and time is None:
            basis = name
        elif name in units.per_time_to_per_day and time is None:
            time = name
        else:
            return None
    if time is None or not 0 < count < math.inf:  # "ug/(0.h)" is no rate; "ug/1e999h" none either
        return None
    per_day = units.per_time_to_per_day[time] / count
    per_hour = time == "h" and count == 1
    if mass == "ml" and basis is None:
        return RateUnit(None, per_day, per_hour=per_hour)
    if mass not in units.mass_to_ug:
        return None
    return RateUnit(mass, per_day, basis, per_hour=per_hour)


def quantity_unit(q: Mapping[str, Any]) -> str | None:
    """The unit of a Quantity: the UCUM ``code`` when given, else the ``unit`` text."""
    for key in ("code", "unit"):
        value = q.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _num(q: Any) -> float | None:
    if not isinstance(q, Mapping):
        return None
    v = q.get("value")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _fmt(value: float, unit: str) -> str:
    return f"{value:g} {unit}"


@dataclass(frozen=True)
class BodyBasis:
    """What a body-size-based dose is multiplied by (``None`` when unknown)."""

    bsa_m2: float | None = None
    weight_kg: float | None = None


def daily_dose(
    dose_and_rate: Sequence[Mapping[str, Any]],
    *,
    kb: Knowledge,
    timing: Mapping[str, Any] | None = None,
    text: str | None = None,
    body: BodyBasis = BodyBasis(),
    concentration_ug_per_ml: float | None = None,
    period_hours: float | None = None,
) -> DailyDose:
    """The first usable pattern, in the order of clinical-rules.md §5.3:

    1. ``rateQuantity`` mass/time (µg/d, µg/h, mg/d, µg/m²/d, µg/kg/d); 2. ``rateRatio``;
    3. ``doseQuantity`` per bag ÷ bag duration (``timing.repeat.duration`` or ``boundsDuration``;
    ``period_hours`` for an administration's effective period); 4. ``doseQuantity`` with per-day timing;
    5. ``rateQuantity`` mL/h × concentration (none → ``rate-without-concentration``); 6. the text.
    """
    rates = [e["rateQuantity"] for e in dose_and_rate if isinstance(e.get("rateQuantity"), Mapping)]
    ratios = [e["rateRatio"] for e in dose_and_rate if isinstance(e.get("rateRatio"), Mapping)]
    doses = [e["doseQuantity"] for e in dose_and_rate if isinstance(e.get("doseQuantity"), Mapping)]
    unconvertible: str | None = None

    volume_rate: tuple[float, RateUnit, str] | None = None
    for q in rates:
        value, unit = _num(q), quantity_unit(q)
        parsed = parse_rate_unit(unit, kb) if unit else None
        if value is None or parsed is None:
            unconvertible = unconvertible or _fmt(value or 0, unit or "?")
            continue
        if parsed.mass is None:
            volume_rate = volume_rate or (value, parsed, _fmt(value, unit or ""))
            continue
        return _mass_rate(value, parsed, display=_fmt(value, unit or ""), basis="rateQuantity", kb=kb, body=body)

    for r in ratios:
        num, den = r.get("numerator"), r.get("denominator")
        nv, dv = _num(num), _num(den)
        nu = quantity_unit(num) if isinstance(num, Mapping) else None
        du = quantity_unit(den) if isinstance(den, Mapping) else None
        parsed = parse_rate_unit(f"{nu}/{du}", kb) if nu and du else None
        if nv is None or not dv or parsed is None:
            unconvertible = unconvertible or f"{nv} {nu} / {dv} {du}"
            continue
        display = f"{nv:g} {nu}/{dv:g} {du}"
        if parsed.mass is None:
            volume_rate = volume_rate or (nv / dv, parsed, display)
            continue
        return _mass_rate(nv / dv, parsed, display=display, basis="rateRatio", kb=kb, body=body)

    units = kb.dosing.units
    for q in doses:
        value, unit = _num(q), quantity_unit(q)
        if value is None or unit is None:
            continue
        norm = units.norm(unit)
        mass, _, basis_part = norm.partition("/")
        if mass not in units.mass_to_ug or basis_part not in ("", "m2", "kg"):
            unconvertible = unconvertible or _fmt(value, unit)
            continue
        hours = bag_hours(timing, kb) or period_hours
        if hours:
            per_day = 24.0 / hours
            parsed = RateUnit(mass, per_day, basis_part or None)
            return _mass_rate(value, parsed, display=f"{_fmt(value, unit)} per {hours:g} h", kb=kb, body=body,
                              basis="doseQuantity/duration")
        per_day_factor = _per_day_timing(timing, kb)
        if per_day_factor is not None:
            parsed = RateUnit(mass, per_day_factor, basis_part or None)
            return _mass_rate(value, parsed, display=_fmt(value, unit), basis="doseQuantity/day", kb=kb, body=body)

    if volume_rate is not None:
        value, parsed, display = volume_rate
        if concentration_ug_per_ml is None:
            return DailyDose(None, "rateQuantity/volume", display, problem="rate-without-concentration")
        ug = value * parsed.per_day * concentration_ug_per_ml
        return DailyDose(ug, "rateQuantity/volume", display)

    stated = text_dose(text, kb=kb, body=body)
    if stated is not None:
        return stated
    if unconvertible:
        return DailyDose(None, "unconvertible", unconvertible, problem="unit-not-convertible")
    return DailyDose(None, "none", text or "", problem="no-dose")


def text_dose(text: str | None, *, kb: Knowledge, body: BodyBasis) -> DailyDose | None:
    """A dose per time written in text (``dosing.toml [dose_text]``), or ``None``."""
    found = kb.dosing.dose_text.find(text) if text else None
    parsed = parse_rate_unit(found.unit, kb) if found else None
    if text is None or found is None or parsed is None or parsed.mass is None:
        return None
    return _mass_rate(found.value, parsed, display=text[found.span[0]:found.span[1]], basis="text", kb=kb, body=body)


def _mass_rate(
    value: float, parsed: RateUnit, *, display: str, basis: str, kb: Knowledge, body: BodyBasis
) -> DailyDose:
    assert parsed.mass is not None
    factor = kb.dosing.units.mass_to_ug[parsed.mass]
    per_day = value * factor * parsed.per_day
    limit = kb.dosing.limits.absolute_max_ug_per_day
    if parsed.basis == "m2":
        ug = per_day * body.bsa_m2 if body.bsa_m2 else None
        return DailyDose(ug, basis, display, ug_per_m2_per_day=per_day)
    if parsed.basis == "kg":
        ug = per_day * body.weight_kg if body.weight_kg else None
        return DailyDose(ug, basis, display, per_kg=True)
    slip = None
    if round(per_day, kb.dosing.limits.fixed_dose_compare_decimals) > limit:
        if parsed.mass == "mg" and value * parsed.per_day <= limit:
            slip = "mg-for-ug"
        elif parsed.per_hour and value * factor <= limit:
            slip = "per-hour-for-per-day"
    return DailyDose(per_day, basis, display, unit_slip=slip)


def bag_hours(timing: Mapping[str, Any] | None, kb: Knowledge) -> float | None:
    """A bag's duration from ``timing.repeat.duration``/``durationUnit`` or ``boundsDuration``."""
    repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
    if not isinstance(repeat, Mapping):
        return None
    hours = kb.dosing.units.duration_to_hours
    value, unit = _num({"value": repeat.get("duration")}), repeat.get("durationUnit")
    if value and isinstance(unit, str) and kb.dosing.units.norm(unit) in hours:
        return value * hours[kb.dosing.units.norm(unit)]
    bounds = repeat.get("boundsDuration")
    if isinstance(bounds, Mapping):
        bv, bu = _num(bounds), quantity_unit(bounds)
        if bv and bu and kb.dosing.units.norm(bu) in hours:
            return bv * hours[kb.dosing.units.norm(bu)]
    return None


def _per_day_timing(timing: Mapping[str, Any] | None, kb: Knowledge) -> float | None:
    """Administrations per day from ``frequency``/``period``/``periodUnit`` (1 per 1 d → 1.0)."""
    repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
    if not isinstance(repeat, Mapping):
        return None
    freq, period, unit = repeat.get("frequency", 1), _num({"value": repeat.get("period")}), repeat.get("periodUnit")
    hours = kb.dosing.units.duration_to_hours
    if not isinstance(freq, int) or not period or not isinstance(unit, str):
        return None
    norm = kb.dosing.units.norm(unit)
    if norm not in hours:
        return None
    return freq * 24.0 / (period * hours[norm])


def concentration_ug_per_ml(medication: Mapping[str, Any] | None, kb: Knowledge) -> float | None:
    """µg/mL of a blinatumomab Medication, if stated: its blinatumomab ingredient's ``strength`` as mass / volume;
    else that strength as mass per product (denominator a count: ``1 bag``) over the product's volume in
    ``amount``; else ``amount`` itself as mass / volume. Never from the bag's name or a typical bag."""
    if not medication:
        return None
    package_ml = None
    amount = medication.get("amount")
    if isinstance(amount, Mapping):
        ratio = _ratio(amount, kb)
        if ratio is not None and ratio[1] == "volume":
            return ratio[0]
        package_ml = ratio[0] if ratio is not None and ratio[1] == "package-volume" else None
    ingredients = medication.get("ingredient")
    for ing in ingredients if isinstance(ingredients, list) else ():
        if not isinstance(ing, Mapping):
            continue
        item = ing.get("itemCodeableConcept")
        if isinstance(item, Mapping) and item and not is_blinatumomab(item, kb):
            continue
        ref = ing.get("itemReference")
        display = ref.get("display") if isinstance(ref, Mapping) else None
        if isinstance(display, str) and display.strip() and not is_blinatumomab({"text": display}, kb):
            continue
        strength = ing.get("strength")
        ratio = _ratio(strength, kb) if isinstance(strength, Mapping) else None
        if ratio is None:
            continue
        if ratio[1] == "volume":
            return ratio[0]
        if ratio[1] == "per-package" and package_ml:
            return ratio[0] / package_ml
    return None


def _ratio(ratio: Mapping[str, Any], kb: Knowledge) -> tuple[float, str] | None:
    """A Ratio read as (µg/mL, ``volume``), (µg per product, ``per-package``: a count denominator such as ``1 bag``)
    or (mL per product, ``package-volume``: ``amount`` = 240 mL / 1 bag); ``None`` for anything else."""
    units = kb.dosing.units
    num, den = ratio.get("numerator"), ratio.get("denominator")
    nv = _num(num)
    nu = quantity_unit(num) if isinstance(num, Mapping) else None
    if nv is None or not nu:
        return None
    top = units.norm(nu)
    if isinstance(den, Mapping):
        dv, du = _num(den), quantity_unit(den)
    else:  # FHIR allows a Ratio without a denominator only in theory; read it as "per 1 product"
        dv, du = 1.0, None
    if not dv:
        return None
    bottom = units.norm(du) if du else None
    per_volume = {"ml": 1.0, "l": 1000.0}
    if top in units.mass_to_ug and bottom in per_volume:
        return nv * units.mass_to_ug[top] / (dv * per_volume[bottom]), "volume"
    if bottom is not None and not _COUNT_UNIT.fullmatch(bottom):
        return None  # per hour, per kg, per mL of something else…: not "per product"
    if top in units.mass_to_ug:
        return nv * units.mass_to_ug[top] / dv, "per-package"
    if top in per_volume:
        return nv * per_volume[top] / dv, "package-volume"
    return None
