"""Small builders for FHIR R4 dicts used across unit tests (shared by the medication and threshold sides).

Each builder returns a plain dict shaped like what an EHR sends; keyword arguments cover the fields the
timeline reads. Times are ISO strings or aware datetimes. Keep builders dumb: no clinical defaults beyond
what makes a resource valid.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

BLIN_SCD = {"system": RXNORM, "code": "1597262", "display": "blinatumomab 0.035 MG Injection"}
BLIN_SBD = {"system": RXNORM, "code": "1597267", "display": "blinatumomab 0.035 MG Injection [Blincyto]"}
DEXAMETHASONE = {"system": RXNORM, "code": "3264", "display": "dexamethasone"}
PREDNISONE = {"system": RXNORM, "code": "8640", "display": "prednisone"}
PREDNISOLONE = {"system": RXNORM, "code": "8638", "display": "prednisolone"}
METHYLPREDNISOLONE = {"system": RXNORM, "code": "6902", "display": "methylprednisolone"}

WEIGHT = "29463-7"
HEIGHT = "8302-2"
BSA = "8277-6"

UTC = dt.UTC


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """An aware UTC datetime (tests pass ``now`` and times explicitly)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def iso(value: dt.datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat().replace("+00:00", "Z")


def concept(*codings: Mapping[str, Any], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = [dict(c) for c in codings]
    if text is not None:
        out["text"] = text
    return out


def quantity(value: float, unit: str, *, code: str | None = None, system: str | None = UCUM) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if system is not None:
        q["system"] = system
        q["code"] = code if code is not None else unit
    return q


def rate_quantity(value: float, unit: str, **kw: Any) -> dict[str, Any]:
    """A ``doseAndRate`` entry with ``rateQuantity``."""
    return {"rateQuantity": quantity(value, unit, **kw)}


def rate_ratio(num: float, num_unit: str, den: float, den_unit: str) -> dict[str, Any]:
    return {"rateRatio": {"numerator": quantity(num, num_unit), "denominator": quantity(den, den_unit)}}


def dose_quantity(value: float, unit: str, **kw: Any) -> dict[str, Any]:
    return {"doseQuantity": quantity(value, unit, **kw)}


def patient(id: str = "p1", *, birth_date: str | None = "1980-01-01") -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient", "id": id}
    if birth_date is not None:
        out["birthDate"] = birth_date
    return out


def medication_request(
    id: str = "mr1",
    *,
    medication: Mapping[str, Any] | None = None,
    codings: Sequence[Mapping[str, Any]] = (BLIN_SCD,),
    medication_text: str | None = None,
    status: str = "draft",
    intent: str = "order",
    dose_and_rate: Iterable[Mapping[str, Any]] | None = None,
    text: str | None = None,
    note: str | None = None,
    timing: Mapping[str, Any] | None = None,
    start: dt.datetime | str | None = None,
    authored_on: dt.datetime | str | None = None,
    instantiates: Sequence[str] = (),
    reason_codes: Sequence[Mapping[str, Any]] = (),
    contained: Sequence[Mapping[str, Any]] = (),
    medication_reference: str | None = None,
    patient_id: str = "p1",
) -> dict[str, Any]:
    """A MedicationRequest; blinatumomab SCD by default. ``start`` → ``timing.repeat.boundsPeriod.start``."""
    out: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": intent,
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if medication_reference is not None:
        out["medicationReference"] = {"reference": medication_reference}
    else:
        out["medicationCodeableConcept"] = (
            dict(medication) if medication is not None else concept(*codings, text=medication_text)
        )
    if contained:
        out["contained"] = [dict(c) for c in contained]
    if authored_on is not None:
        out["authoredOn"] = iso(authored_on)
    if instantiates:
        out["instantiatesCanonical"] = list(instantiates)
    if reason_codes:
        out["reasonCode"] = [dict(r) for r in reason_codes]
    if note is not None:
        out["note"] = [{"text": note}]
    dosage: dict[str, Any] = {}
    if text is not None:
        dosage["text"] = text
    tim: dict[str, Any] = dict(timing) if timing is not None else {}
    if start is not None:
        rep = dict(tim.get("repeat", {}))
        rep["boundsPeriod"] = {"start": iso(start)}
        tim["repeat"] = rep
    if tim:
        dosage["timing"] = tim
    if dose_and_rate is not None:
        dosage["doseAndRate"] = [dict(d) for d in dose_and_rate]
    if dosage:
        out["dosageInstruction"] = [dosage]
    return out


def blin_order(id: str = "mr1", ug_per_day: float = 28, *, unit: str = "ug/d", **kw: Any) -> dict[str, Any]:
    """A blinatumomab order with a ``rateQuantity`` in ``unit`` (default µg/day)."""
    return medication_request(id, dose_and_rate=[rate_quantity(ug_per_day, unit)], **kw)


def steroid_order(
    id: str, coding: Mapping[str, Any] = DEXAMETHASONE, *, dose: float = 20, unit: str = "mg", **kw: Any
) -> dict[str, Any]:
    return medication_request(id, codings=(coding,), dose_and_rate=[dose_quantity(dose, unit)], **kw)


def medication_administration(
    id: str = "ma1",
    *,
    codings: Sequence[Mapping[str, Any]] = (BLIN_SCD,),
    medication_text: str | None = None,
    status: str = "completed",
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    effective: dt.datetime | str | None = None,
    rate: Mapping[str, Any] | None = None,
    rate_ratio_: Mapping[str, Any] | None = None,
    dose: Mapping[str, Any] | None = None,
    route_text: str | None = None,
    status_reason: str | None = None,
    patient_id: str = "p1",
) -> dict[str, Any]:
    """A MedicationAdministration: ``start``/``end`` → ``effectivePeriod``; ``effective`` → ``effectiveDateTime``."""
    out: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": id,
        "status": status,
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": concept(*codings, text=medication_text),
    }
    if effective is not None:
        out["effectiveDateTime"] = iso(effective)
    else:
        period: dict[str, Any] = {}
        if start is not None:
            period["start"] = iso(start)
        if end is not None:
            period["end"] = iso(end)
        out["effectivePeriod"] = period
    dosage: dict[str, Any] = {}
    if rate is not None:
        dosage["rateQuantity"] = dict(rate)
    if rate_ratio_ is not None:
        dosage["rateRatio"] = dict(rate_ratio_)
    if dose is not None:
        dosage["dose"] = dict(dose)
    if route_text is not None:
        dosage["route"] = {"text": route_text}
    if dosage:
        out["dosage"] = dosage
    if status_reason is not None:
        out["statusReason"] = [{"text": status_reason}]
    return out


def blin_infusion(
    id: str, start: dt.datetime | str, end: dt.datetime | str | None = None, *, ug_per_day: float = 28, **kw: Any
) -> dict[str, Any]:
    """A blinatumomab infusion period at ``ug_per_day``; ``end=None`` means running (status in-progress)."""
    kw.setdefault("status", "in-progress" if end is None else "completed")
    return medication_administration(
        id, start=start, end=end, rate=quantity(ug_per_day, "ug/d"), **kw
    )


def steroid_given(
    id: str, when: dt.datetime | str, coding: Mapping[str, Any] = DEXAMETHASONE, *, dose: float = 20,
    unit: str = "mg", **kw: Any
) -> dict[str, Any]:
    return medication_administration(id, codings=(coding,), effective=when, dose=quantity(dose, unit), **kw)


def observation(
    id: str,
    code: str,
    value: float | None,
    unit: str | None,
    *,
    when: dt.datetime | str,
    system: str = LOINC,
    status: str = "final",
    ucum: bool = True,
    display: str | None = None,
    reference_high: float | None = None,
    reference_unit: str | None = None,
    issued: dt.datetime | str | None = None,
    patient_id: str = "p1",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Observation with a ``valueQuantity`` (``unit=None`` → no unit at all; ``ucum=False`` → text unit only)."""
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": status,
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": iso(when),
    }
    if issued is not None:
        out["issued"] = iso(issued)
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit is not None:
            q["unit"] = unit
            if ucum:
                q["system"] = UCUM
                q["code"] = unit
        out["valueQuantity"] = q
    if reference_high is not None:
        ru = reference_unit or unit
        high: dict[str, Any] = {"value": reference_high}
        if ru:
            high.update({"unit": ru, "system": UCUM, "code": ru})
        out["referenceRange"] = [{"high": high}]
    if extra:
        out.update(extra)
    return out


def weight(id: str, kg: float, when: dt.datetime | str, *, unit: str = "kg", **kw: Any) -> dict[str, Any]:
    return observation(id, WEIGHT, kg, unit, when=when, **kw)


def height(id: str, cm: float, when: dt.datetime | str, *, unit: str = "cm", **kw: Any) -> dict[str, Any]:
    return observation(id, HEIGHT, cm, unit, when=when, **kw)


def bsa(id: str, m2: float, when: dt.datetime | str, **kw: Any) -> dict[str, Any]:
    return observation(id, BSA, m2, "m2", when=when, **kw)


def bundle(*resources: Mapping[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": dict(r)} for r in resources]}


def order_context(*drafts: Mapping[str, Any], patient_id: str = "p1",
                  selections: Sequence[str] | None = None) -> dict[str, Any]:
    """An order-sign (or, with ``selections``, order-select) context holding ``drafts``."""
    ctx: dict[str, Any] = {"userId": "Practitioner/1", "patientId": patient_id, "draftOrders": bundle(*drafts)}
    if selections is not None:
        ctx["selections"] = list(selections)
    return ctx


def view_context(patient_id: str = "p1") -> dict[str, Any]:
    return {"userId": "Practitioner/1", "patientId": patient_id}
