"""Blinatumomab orders on the timeline: drafts from ``draftOrders`` and the patient's other MedicationRequests.

The hook asks about the orders in focus: every blinatumomab draft at order-sign, only the drafts named
in ``context.selections`` at order-select ("decision support should focus on the 'selected' orders").
Each order's dose is normalised to µg/day once, here (see :func:`service.timeline.dose.daily_dose`), and an
explicit "Cycle N Day D" / "CnDd" in its text or note is kept: it wins over the derived course position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.fhir.extract import Instant, parse_instant, relative_ref
from service.knowledge import Knowledge
from service.timeline.dose import (
    BodyBasis,
    bag_hours,
    concentration_ug_per_ml,
    daily_dose,
    explicit_cycle_day,
    is_blinatumomab,
    medication_concept,
    medication_reference_id,
    named_in_order_text,
    referenced_medication,
)
from service.timeline.model import BlinOrder, BodySize, HookName


def build_orders(
    drafts: Sequence[Mapping[str, Any]],
    others: Iterable[Mapping[str, Any]],
    *,
    hook: HookName,
    selections: Sequence[str] | None,
    medications: Mapping[str, Mapping[str, Any]],
    body: BodySize,
    kb: Knowledge,
) -> tuple[BlinOrder, ...]:
    """Blinatumomab orders, drafts first; a draft shadows a stored copy with the same id."""
    basis = BodyBasis(bsa_m2=body.bsa_m2, weight_kg=body.weight_kg)
    wanted = set(selections) if hook == "order-select" and selections is not None else None
    out: list[BlinOrder] = []
    seen: set[str] = set()
    for draft, resources in ((True, drafts), (False, others)):
        for mr in resources:
            if mr.get("resourceType") != "MedicationRequest" or mr.get("status") == "entered-in-error":
                continue
            ref = relative_ref(mr)
            if ref in seen:
                continue
            concept = medication_concept(mr, medications)
            unresolved = None
            if not is_blinatumomab(concept, kb):
                unresolved = _unresolved_but_named(mr, concept, medications, kb) if draft else None
                if unresolved is None:
                    continue
            seen.add(ref)
            in_focus = draft and hook in ("order-sign", "order-select") and (wanted is None or ref in wanted)
            out.append(_order(mr, draft=draft, in_focus=in_focus, medications=medications, basis=basis, kb=kb,
                              medication_unresolved=unresolved))
    return tuple(out)


def _unresolved_but_named(
    mr: Mapping[str, Any], concept: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]], kb: Knowledge
) -> str | None:
    """``Medication/<id>`` of a draft that names its drug only by a Medication that could not be had (not contained,
    not prefetched, not on ``fhirServer``), when the order's own text names blinatumomab — a draft that must get
    the "cannot verify" card, never an empty answer. A reference naming nothing, in words neither, is not taken for
    blinatumomab (nothing says it is); a reference whose display names another drug is that drug."""
    medication_id = medication_reference_id(mr)
    if concept or medication_id is None or medication_id in medications or not named_in_order_text(mr, kb):
        return None
    return f"Medication/{medication_id}"


def _order(
    mr: Mapping[str, Any], *, draft: bool, in_focus: bool, medications: Mapping[str, Mapping[str, Any]],
    basis: BodyBasis, kb: Knowledge, medication_unresolved: str | None = None,
) -> BlinOrder:
    dosage = first_dosage(mr)
    timing = dosage.get("timing") if isinstance(dosage.get("timing"), Mapping) else None
    text = dosage.get("text") if isinstance(dosage.get("text"), str) else None
    entries = [e for e in dosage.get("doseAndRate") or () if isinstance(e, Mapping)]
    dose = daily_dose(
        entries,
        kb=kb,
        timing=timing,
        text=text,
        body=basis,
        concentration_ug_per_ml=concentration_ug_per_ml(referenced_medication(mr, medications), kb),
    )
    texts = [t for t in (text, *_note_texts(mr)) if t]
    explicit = explicit_cycle_day(texts)
    start = order_start(mr)
    canon = mr.get("instantiatesCanonical")
    return BlinOrder(
        ref=relative_ref(mr),
        resource=mr,
        status=str(mr.get("status", "")),
        draft=draft,
        in_focus=in_focus,
        start=start.at if start else None,
        start_date_only=start.date_only if start else False,
        dose=dose,
        explicit_cycle=explicit[0] if explicit else None,
        explicit_day=explicit[1] if explicit else None,
        instantiates=tuple(c for c in canon if isinstance(c, str)) if isinstance(canon, list) else (),
        bag_hours=bag_hours(timing, kb),
        medication_unresolved=medication_unresolved,
    )


def first_dosage(mr: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first ``dosageInstruction`` of a MedicationRequest (``{}`` without one)."""
    for d in mr.get("dosageInstruction") or ():
        if isinstance(d, Mapping):
            return d
    return {}


def _note_texts(mr: Mapping[str, Any]) -> list[str]:
    return [n["text"] for n in mr.get("note") or () if isinstance(n, Mapping) and isinstance(n.get("text"), str)]


def order_start(mr: Mapping[str, Any]) -> Instant | None:
    """When an order's administration starts: ``boundsPeriod.start``, ``timing.event``, else ``authoredOn``."""
    timing = first_dosage(mr).get("timing")
    if isinstance(timing, Mapping):
        repeat = timing.get("repeat")
        if isinstance(repeat, Mapping) and isinstance(repeat.get("boundsPeriod"), Mapping):
            start = parse_instant(repeat["boundsPeriod"].get("start"))
            if start:
                return start
        for event in timing.get("event") or ():
            start = parse_instant(event)
            if start:
                return start
    return parse_instant(mr.get("authoredOn"))
