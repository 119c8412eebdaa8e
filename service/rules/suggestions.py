"""Builders for the CDS Hooks suggestion actions our rules attach to findings.

Rules decide *that* a suggestion applies; these functions build the action (the card file words it via
``[actions.<key>]``). Shared by the medication and threshold rule families.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from pydantic import ValidationError

from service.knowledge import Knowledge
from service.rules.base import Action
from service.rules.medication import num
from service.timeline.model import BlinOrder, Timeline


def remove_order(order: BlinOrder) -> Action:
    """Delete the draft blinatumomab order (the EHR removes it from the order session).

    CDS Hooks: a ``delete`` action names the resource by ``resourceId`` (``MedicationRequest/<id>``).
    """
    return Action(type="delete", key="remove-order", resource_id=order.ref)


def update_dose(order: BlinOrder, ug_per_day: float, *, kb: Knowledge) -> Action | None:
    """Update the draft blinatumomab order to ``ug_per_day``: ``doseAndRate`` becomes one ``rateQuantity``
    in UCUM ``ug/d`` and the dose inside ``dosageInstruction.text`` is rewritten (the rest is kept).

    ``None`` when the corrected order would not be a valid R4 MedicationRequest (never send one).
    """
    resource: dict[str, Any] = copy.deepcopy(dict(order.resource))
    dosages = [d for d in resource.get("dosageInstruction") or () if isinstance(d, dict)] or [{}]
    first = dosages[0]
    value = num(ug_per_day, 1)
    ucum = kb.codes.uri("ucum")
    first["doseAndRate"] = [{"rateQuantity": {"value": value, "unit": "ug/d", "system": ucum, "code": "ug/d"}}]
    dose_text = kb.dosing.order_text.dose.format(dose=value)
    text = first["text"] if isinstance(first.get("text"), str) else ""
    found = kb.dosing.dose_text.find(text)
    if found is not None:
        first["text"] = text[:found.span[0]] + dose_text + text[found.span[1]:]
    else:
        first["text"] = f"{text}; {dose_text}" if text else dose_text
    resource["dosageInstruction"] = [first, *dosages[1:]]
    checked = _validated(resource)
    return Action(type="update", key="update-dose", resource=checked) if checked else None


def create_steroid(
    timeline: Timeline, *, agent: str, dose_mg: float | None, dose_mg_per_m2: float | None, kb: Knowledge,
    before: dt.datetime | None,
) -> Action | None:
    """Create a draft steroid premedication order for the patient (intent ``order``, IV, ``before`` − 60 min).

    ``dose_mg`` when known (a per-m² dose is converted with the BSA by the caller); else ``dose_mg_per_m2``.
    ``None`` without a patient to order for.
    """
    if timeline.patient_ref is None or (dose_mg is None and dose_mg_per_m2 is None):
        return None
    concept = kb.codes.concepts[agent]
    coding = concept.codings[0]
    premed = kb.premedication
    ucum = kb.codes.uri("ucum")
    unit = "mg" if dose_mg is not None else "mg/m2"
    value = num(dose_mg if dose_mg is not None else dose_mg_per_m2, 1)
    route = premed.iv_route
    dosage: dict[str, Any] = {
        "text": premed.suggested_order.text.format(agent=coding.display or agent, dose=f"{value} {unit}",
                                                   route="IV"),
        "route": {"coding": [{"system": kb.codes.uri(route.system), "code": route.code, "display": route.display}]},
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "system": ucum, "code": unit}}],
    }
    if before is not None:
        start = before - dt.timedelta(minutes=premed.timing.window_minutes)
        dosage["timing"] = {"event": [start.isoformat()]}
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": kb.codes.uri(coding.system), "code": coding.code, "display": coding.display}],
            "text": coding.display or agent,
        },
        "subject": {"reference": timeline.patient_ref},
        "dosageInstruction": [dosage],
    }
    checked = _validated(resource)
    return Action(type="create", key="create-steroid", resource=checked) if checked else None


def _validated(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The resource as ``fhir.resources`` R4B serialises it after validation, or ``None`` if invalid."""
    try:
        model = MedicationRequest.model_validate(resource)
    except ValidationError:
        return None
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return dumped
