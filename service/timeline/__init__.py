"""Build the patient timeline once per hook call (pipeline step 2).

``build_timeline`` normalises the resolved FHIR data (dicts) into :class:`Timeline`; rules read only
the timeline. Sub-builders live beside this file, one per kind of record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from service.fhir.extract import bundle_resources, reference_id, relative_ref
from service.knowledge import Knowledge
from service.timeline.administrations import build_infusions, build_steroids
from service.timeline.bags import build_bags
from service.timeline.body import build_body
from service.timeline.course import build_positions
from service.timeline.dose import is_blinatumomab, medication_concept, medication_reference_id, medication_to_read
from service.timeline.labs import build_labs
from service.timeline.model import HookName, Timeline
from service.timeline.orders import build_orders
from service.timeline.regimen import determine_regimen
from service.timeline.toxicity import build_toxicities

__all__ = ["Timeline", "build_timeline", "draft_resources", "has_blinatumomab_draft", "medications_to_read"]


def draft_resources(context: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The resources of ``context.draftOrders`` (order-sign, order-select); empty for patient-view."""
    draft = context.get("draftOrders")
    return bundle_resources(draft) if isinstance(draft, Mapping) else []


def has_blinatumomab_draft(context: Mapping[str, Any], kb: Knowledge, *, selections_only: bool = False) -> bool:
    """Whether a draft MedicationRequest is, or may be, blinatumomab (neither → the order hooks return no cards,
    having fetched nothing).

    It may be when it names its drug only by ``Medication/<id>`` with no display: the Medication is looked up
    (prefetch, else ``fhirServer``) and the timeline decides (:func:`service.pipeline.evaluate_cards`). With
    ``selections_only`` (order-select) only the drafts named in ``context.selections`` count: "Decision support
    should focus on the 'selected' orders".
    """
    selections = context.get("selections") if selections_only else None
    wanted = {s for s in selections if isinstance(s, str)} if isinstance(selections, list) else None
    for resource in draft_resources(context):
        if resource.get("resourceType") != "MedicationRequest":
            continue
        if wanted is not None and relative_ref(resource) not in wanted:
            continue
        # The drug may be coded on the order, in a contained Medication, or only named by the reference.
        concept = medication_concept(resource, {})
        if is_blinatumomab(concept, kb) or (not concept and medication_reference_id(resource) is not None):
            return True
    return False


def medications_to_read(
    context: Mapping[str, Any], data: Mapping[str, Sequence[Mapping[str, Any]]], kb: Knowledge, *,
    known: Collection[str] = (),
) -> dict[str, str]:
    """Medications to read from ``fhirServer`` (id → where the first record naming it came from: a prefetch key or
    ``context.draftOrders``): those a draft, MedicationRequest or MedicationAdministration of this chart points at
    that are in neither the data nor ``known`` (:func:`service.timeline.dose.medication_to_read` says which are
    needed). Drafts first, then the other records in the order the data holds them."""
    patient_id = context.get("patientId")
    # Only these types matter: skip the rest (thousands of Observations) before pooling, on the event loop.
    wanted = ("MedicationRequest", "MedicationAdministration", "Medication", "Bundle")
    pools = {key: _pool({key: [r for r in resources if isinstance(r, Mapping) and r.get("resourceType") in wanted]},
                        patient_id=patient_id) for key, resources in data.items()}
    empty: Mapping[str, Any] = {}
    medications = dict.fromkeys(known, empty)
    medications.update((str(m.get("id")), m) for pool in pools.values() for m in pool.get("Medication", []))
    sources = [("context.draftOrders", draft_resources(context))]
    sources += [(f"prefetch.{key}", [r for rs in pool.values() for r in rs]) for key, pool in pools.items()]
    out: dict[str, str] = {}
    judged: set[tuple[str, Any]] = set()  # (id, display) already judged: a chart names few Medications many times
    for where, resources in sources:
        for resource in resources:
            ref = resource.get("medicationReference")
            seen = (str(ref.get("reference")), ref.get("display")) if isinstance(ref, Mapping) else None
            if seen is None or seen in judged:
                continue
            judged.add(seen)
            medication_id = medication_to_read(resource, medications, kb)
            if medication_id is not None and medication_id not in out:
                out[medication_id] = where
    return out


def build_timeline(
    *,
    hook: HookName,
    context: Mapping[str, Any],
    data: Mapping[str, Sequence[Mapping[str, Any]]],
    kb: Knowledge,
    now: dt.datetime,
) -> Timeline:
    """``data`` maps each prefetch key to its resources (already resolved; ``null`` became ``[]``).

    Resources are pooled by ``resourceType`` whatever key brought them (an EHR may answer one query with
    several types) and de-duplicated by (type, id); the drafts of ``context.draftOrders`` stay apart.
    """
    patient_id = context.get("patientId")
    pool = _pool(data, patient_id=patient_id)
    drafts = draft_resources(context)
    draft_ids = {relative_ref(r) for r in drafts}
    # Only this chart's Patient: another patient's birth date must never drive the age-based rules.
    patient = next((p for p in pool.get("Patient", []) if p.get("id") == patient_id), None)
    medications = {str(m.get("id")): m for m in pool.get("Medication", [])}
    observations = pool.get("Observation", [])
    administrations = pool.get("MedicationAdministration", [])
    stored_requests = [r for r in pool.get("MedicationRequest", []) if relative_ref(r) not in draft_ids]

    body = build_body(observations, patient, kb=kb, now=now)
    selections = context.get("selections")
    orders = build_orders(
        drafts, stored_requests, hook=hook,
        selections=[s for s in selections if isinstance(s, str)] if isinstance(selections, list) else None,
        medications=medications, body=body, kb=kb,
    )
    infusions = build_infusions(administrations, medications=medications, body=body, kb=kb, now=now, orders=orders)
    steroids = build_steroids(
        administrations, [*((r, True) for r in drafts), *((r, False) for r in stored_requests)],
        medications=medications, body=body, kb=kb,
    )
    labs = build_labs(observations, kb=kb, now=now, patient_age_years=body.age_years)
    toxicities = build_toxicities(
        observations=observations, conditions=pool.get("Condition", []),
        adverse_events=pool.get("AdverseEvent", []), administrations=administrations, medications=medications,
        medication_requests=stored_requests, kb=kb, now=now,
    )
    bags = build_bags(orders, administrations, medications=medications, kb=kb)
    regimen = determine_regimen(orders, pool.get("Condition", []), kb=kb)
    positions = build_positions(
        orders, infusions, spec=kb.regimens.regimens[regimen.id], kb=kb, toxicities=toxicities, now=now,
    )
    return Timeline(
        now=now,
        hook=hook,
        orders=orders,
        infusions=infusions,
        steroids=steroids,
        body=body,
        regimen=regimen,
        positions=positions,
        labs=labs,
        toxicities=toxicities,
        patient_ref=f"Patient/{patient_id}" if isinstance(patient_id, str) and patient_id else None,
        bags=bags,
    )


def _pool(data: Mapping[str, Sequence[Mapping[str, Any]]], *, patient_id: Any) -> dict[str, list[Mapping[str, Any]]]:
    """Resources by type, first copy of each (type, id) kept; Bundles in the data are opened.

    A resource whose ``subject``/``patient`` names another patient is dropped: a server that ignores a
    search parameter (seen: ``AdverseEvent?subject=``) must never put another patient's record on this chart.
    """
    pool: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[str] = set()

    def add(resource: Mapping[str, Any]) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or _other_patient(resource, patient_id):
            return
        if rtype == "Bundle":
            for inner in bundle_resources(resource):
                add(inner)
            return
        ref = relative_ref(resource)
        if resource.get("id") is not None:
            if ref in seen:
                return
            seen.add(ref)
        pool.setdefault(rtype, []).append(resource)

    for resources in data.values():
        for resource in resources or ():
            if isinstance(resource, Mapping):
                add(resource)
    return pool


def _other_patient(resource: Mapping[str, Any], patient_id: Any) -> bool:
    if not isinstance(patient_id, str) or resource.get("resourceType") == "Patient":
        return False
    own = f"Patient/{patient_id}" if "/" not in patient_id else None
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if own is not None and type(ref) is dict and ref.get("reference") == own:
            continue  # the common case, without splitting the reference
        ref_id = reference_id(ref, "Patient")
        if ref_id is not None and ref_id != patient_id:
            return True
    return False
