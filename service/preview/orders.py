"""The order-entry form of /preview: the fields a tester fills → a CDS Hooks order-select/order-sign request.

The chart is an example patient's (``fhir_examples/``, dates shifted to now, its prefetch kept); the draft
orders are the ones composed in the form, written the way an EHR's order entry writes them: a blinatumomab
MedicationRequest (dose as a rate or a dose per bag with the bag's duration, the start in
``timing.repeat.boundsPeriod``, "Cycle N Day D" in the dosage text, the regimen as ``instantiatesCanonical``)
and optionally a steroid MedicationRequest. Every code comes from the knowledge files; none is written here.
A pasted request is sent as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service import examples
from service.catalog import CdsService
from service.knowledge import Knowledge
from service.timeline.dose import STEROIDS

ORDER_HOOKS = ("order-select", "order-sign")
DOSE_UNITS: Mapping[str, tuple[str, bool, str]] = {
    # form value (UCUM) → (label in the form, a dose per bag?, as the order's text writes it)
    "ug/d": ("µg/day", False, "mcg/day"),
    "ug/m2/d": ("µg/m²/day", False, "mcg/m2/day"),
    "ug/h": ("µg/hour", False, "mcg/hour"),
    "mg/d": ("mg/day", False, "mg/day"),
    "mL/h": ("mL/hour (pump rate)", False, "mL/hour"),
    "ug": ("µg per bag", True, "mcg per bag"),
    "mg": ("mg per bag", True, "mg per bag"),
}
BAG_HOURS = (24, 48, 72, 96, 168)
ROUTES = {"iv": "IV", "oral": "oral"}
DEFAULT_PATIENT = "rr-adult-course/c1d1-sign"


class FormError(ValueError):
    """The form cannot be turned into a request; ``problems`` name each field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class OrderForm:
    """The form's values as typed (strings), so a refused form comes back filled in as it was sent."""

    patient: str = DEFAULT_PATIENT
    request_json: str = ""
    hook: str = "order-sign"
    dose_value: str = "9"
    dose_unit: str = "ug/d"
    bag_hours: str = "48"
    start: str = ""
    infusion_days: str = "7"
    cycle_day: str = "Cycle 1 Day 1"
    regimen: str = ""
    steroid: bool = True
    steroid_agent: str = "dexamethasone"
    steroid_mg: str = "20"
    steroid_time: str = ""
    steroid_route: str = "iv"
    problems: list[str] = field(default_factory=list)

    @classmethod
    def defaults(cls, *, kb: Knowledge, now: dt.datetime) -> OrderForm:
        start = now.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(hours=1)
        return cls(start=_local(start), steroid_time=_local(start - dt.timedelta(minutes=45)),
                   regimen=kb.regimens.default_regimen)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> OrderForm:
        def get(name: str) -> str:
            return fields.get(name, "").strip()

        return cls(
            patient=get("patient"), request_json=fields.get("request_json", ""), hook=get("hook"),
            dose_value=get("dose_value"), dose_unit=get("dose_unit"), bag_hours=get("bag_hours"), start=get("start"),
            infusion_days=get("infusion_days"), cycle_day=get("cycle_day"), regimen=get("regimen"),
            steroid=fields.get("steroid") == "on", steroid_agent=get("steroid_agent"), steroid_mg=get("steroid_mg"),
            steroid_time=get("steroid_time"), steroid_route=get("steroid_route"),
        )


def steroid_agents(kb: Knowledge) -> list[str]:
    return [name for name in sorted(STEROIDS) if name in kb.codes.concepts and kb.codes.concepts[name].codings]


def patient_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """(example title, [(value "example/call", label)]) for every example call, in the examples' order."""
    groups = []
    for name in examples.names():
        manifest = examples.load_manifest(name)
        calls = [(f"{name}/{c['id']}", f"{name} / {c['id']}: {c.get('title', '')}") for c in manifest["calls"]]
        groups.append((f"{name}: {manifest.get('title', '')}", calls))
    return groups


def build_request(form: OrderForm, *, kb: Knowledge, catalog: Mapping[str, CdsService],
                  now: dt.datetime) -> tuple[CdsService, dict[str, Any]]:
    """The service to call and the hook request to send; :class:`FormError` names every bad field."""
    if form.request_json.strip():
        return _pasted(form.request_json, catalog)
    problems: list[str] = []
    service = next((s for s in catalog.values() if s.hook == form.hook and form.hook in ORDER_HOOKS), None)
    if service is None:
        problems.append(f"hook: choose one of {', '.join(ORDER_HOOKS)}")
    name, _, call_id = form.patient.partition("/")
    base: dict[str, Any] = {}
    try:
        base = examples.request_for(name, call_id, now=now)
    except (examples.ExampleError, OSError, ValueError):
        problems.append(f"patient: no example call '{form.patient}'")
    dose = _number(form.dose_value, "dose", problems)
    if form.dose_unit not in DOSE_UNITS:
        problems.append(f"dose unit: choose one of {', '.join(DOSE_UNITS)}")
    per_bag = form.dose_unit in DOSE_UNITS and DOSE_UNITS[form.dose_unit][1]
    bag_hours = _number(form.bag_hours, "bag duration", problems) if per_bag or form.bag_hours else None
    start = _instant(form.start, "start", problems)
    days = _number(form.infusion_days, "infusion days", problems)
    if start is not None and days is not None:
        try:
            start + dt.timedelta(days=days)
        except OverflowError:
            problems.append(f"infusion days: {days:g} days from the start is past any date")
            days = None
    if form.regimen and form.regimen not in kb.regimens.regimens:
        problems.append(f"regimen: choose one of {', '.join(kb.regimens.regimens)}, or none")
    steroid_mg = steroid_at = None
    if form.steroid:
        if form.steroid_agent not in steroid_agents(kb):
            problems.append(f"steroid: choose one of {', '.join(steroid_agents(kb))}")
        if form.steroid_route not in ROUTES:
            problems.append(f"steroid route: choose one of {', '.join(ROUTES)}")
        steroid_mg = _number(form.steroid_mg, "steroid dose", problems)
        steroid_at = _instant(form.steroid_time, "steroid time", problems)
    if problems or service is None or dose is None or start is None or days is None:
        raise FormError(problems)

    pid = str(base["context"]["patientId"])
    blin = _blinatumomab_order(form, kb=kb, pid=pid, now=now, dose=dose, bag_hours=bag_hours, start=start, days=days)
    drafts = [blin]
    if form.steroid and steroid_mg is not None and steroid_at is not None:
        drafts.append(_steroid_order(form, kb=kb, pid=pid, now=now, mg=steroid_mg, at=steroid_at))
    context: dict[str, Any] = {
        "userId": base["context"].get("userId", "Practitioner/preview-tester"),
        "patientId": pid,
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": d} for d in drafts]},
    }
    if base["context"].get("encounterId"):
        context["encounterId"] = base["context"]["encounterId"]
    if service.hook == "order-select":
        context["selections"] = [f"MedicationRequest/{blin['id']}"]
    request = {"hookInstance": str(uuid.uuid4()), "hook": service.hook, "context": context}
    if "prefetch" in base:
        request["prefetch"] = base["prefetch"]
    return service, request


def _pasted(text: str, catalog: Mapping[str, CdsService]) -> tuple[CdsService, dict[str, Any]]:
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise FormError([f"pasted request: not valid JSON ({exc})"]) from None
    if not isinstance(request, dict):
        raise FormError(["pasted request: must be a JSON object (a whole CDS Hooks request)"])
    hook = request.get("hook")
    service = next((s for s in catalog.values() if s.hook == hook), None)
    if service is None:
        hooks = ", ".join(sorted(s.hook for s in catalog.values()))
        raise FormError([f"pasted request: 'hook' must be one of {hooks}"])
    return service, request


def _blinatumomab_order(form: OrderForm, *, kb: Knowledge, pid: str, now: dt.datetime, dose: float,
                        bag_hours: float | None, start: dt.datetime, days: float) -> dict[str, Any]:
    unit = form.dose_unit
    quantity = _quantity(dose, unit, kb)
    per_bag = DOSE_UNITS[unit][1]
    repeat: dict[str, Any] = {"boundsPeriod": {"start": _iso(start), "end": _iso(start + dt.timedelta(days=days))}}
    if bag_hours:
        repeat.update(duration=bag_hours, durationUnit="h")
    text = f"BLINCYTO {dose:g} {DOSE_UNITS[unit][2]} continuous IV infusion"
    if form.cycle_day:
        text += f", {form.cycle_day}"
    order: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": f"preview-{uuid.uuid4().hex[:12]}",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [_coding(kb, "blinatumomab")],
                                      "text": "BLINCYTO (blinatumomab) for injection"},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": _iso(now),
        "requester": {"display": "Preview tester"},
        "dosageInstruction": [{
            "text": text,
            "timing": {"repeat": repeat},
            "route": _iv_route(kb),
            "doseAndRate": [{"doseQuantity": quantity} if per_bag else {"rateQuantity": quantity}],
        }],
    }
    if form.regimen:
        order["instantiatesCanonical"] = [kb.regimens.regimens[form.regimen].canonical]
    return order


def _steroid_order(form: OrderForm, *, kb: Knowledge, pid: str, now: dt.datetime, mg: float,
                   at: dt.datetime) -> dict[str, Any]:
    route = _iv_route(kb) if form.steroid_route == "iv" else {"text": ROUTES[form.steroid_route]}
    return {
        "resourceType": "MedicationRequest",
        "id": f"preview-{uuid.uuid4().hex[:12]}",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [_coding(kb, form.steroid_agent)], "text": form.steroid_agent},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": _iso(now),
        "requester": {"display": "Preview tester"},
        "dosageInstruction": [{
            "text": f"{form.steroid_agent} {mg:g} mg {ROUTES[form.steroid_route]} once (premedication)",
            "timing": {"repeat": {"count": 1, "boundsPeriod": {"start": _iso(at)}}},
            "route": route,
            "doseAndRate": [{"doseQuantity": _quantity(mg, "mg", kb)}],
        }],
    }


def _coding(kb: Knowledge, concept: str) -> dict[str, str]:
    ref = kb.codes.concepts[concept].codings[0]
    coding = {"system": kb.codes.uri(ref.system), "code": ref.code}
    if ref.display:
        coding["display"] = ref.display
    return coding


def _iv_route(kb: Knowledge) -> dict[str, Any]:
    iv = kb.premedication.iv_route
    return {"coding": [{"system": kb.codes.uri(iv.system), "code": iv.code, "display": iv.display}]}


def _quantity(value: float, unit: str, kb: Knowledge) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": kb.codes.uri("ucum"), "code": unit}


def _number(text: str, name: str, problems: list[str]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{name}: '{text}' is not a number")
        return None
    if not math.isfinite(value) or value <= 0:
        problems.append(f"{name}: must be a number above 0")
        return None
    return int(value) if value.is_integer() else value


def _instant(text: str, name: str, problems: list[str]) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{name}: '{text}' is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _local(t: dt.datetime) -> str:
    """The value of an ``<input type="datetime-local">`` (UTC on this page)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
