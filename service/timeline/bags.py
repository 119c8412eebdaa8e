"""How each blinatumomab bag is prepared: its duration, and whether it holds the preservative (benzyl alcohol).

The label offers 24 h and 48 h bags without preservative, and 72 h, 96 h and 7-day bags prepared with
Bacteriostatic 0.9% Sodium Chloride (0.9% benzyl alcohol), not recommended below a weight (clinical-rules.md
§5.3, E32; ``dosing.toml [preservative_bags]``). A record says which in one of two ways:

* its **duration** is a preservative bag's: an order's ``timing.repeat.duration`` / ``boundsDuration``, an
  instant administration's infuse-over-time extension (Oracle Health), the order an administration names in
  ``request``, or a duration in text ("over 7 days", "7-day bag", "96-h bag");
* its **text** names the preservative ("Bacteriostatic 0.9% Sodium Chloride", "benzyl alcohol", "with
  preservative"): dosage text and notes, instructions, and the medication's names and ingredients (a contained or
  referenced Medication too). "Preservative-free" vetoes a text match, never a duration of 72 h or more.

An administration that says nothing itself takes what its order says. The pump rate is never evidence (0.6 mL/h
is the 7-day rate only for the label's bag volume).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from service.fhir.extract import reference_id, relative_ref, texts
from service.knowledge import Knowledge
from service.timeline.administrations import infuse_over
from service.timeline.dose import is_blinatumomab, medication_concept, referenced_medication
from service.timeline.model import BagPreparation, BlinOrder
from service.timeline.orders import first_dosage

Evidence = Literal["timing", "infuse-over-time", "duration-text"]
_IGNORED = ("not-done", "entered-in-error")
_TEXT_LIMIT = 160
"""Characters of chart text kept as evidence (a card prints it)."""


def build_bags(
    orders: Sequence[BlinOrder],
    administrations: Iterable[Mapping[str, Any]],
    *,
    medications: Mapping[str, Mapping[str, Any]],
    kb: Knowledge,
) -> dict[str, BagPreparation]:
    """The bag preparation of every blinatumomab order and administration whose record states a duration or
    names the preservative, by ref."""
    out: dict[str, BagPreparation] = {}
    memo = _Words()
    for order in orders:
        bag = _order_bag(order, medications, kb, memo)
        if bag is not None:
            out[order.ref] = bag
    for ma in administrations:
        if ma.get("resourceType") != "MedicationAdministration" or ma.get("status") in _IGNORED:
            continue
        if not is_blinatumomab(medication_concept(ma, medications), kb):
            continue
        request_id = reference_id(ma.get("request"), "MedicationRequest")
        bag = _administration_bag(ma, out.get(f"MedicationRequest/{request_id}") if request_id else None,
                                  medications, kb, memo)
        if bag is not None:
            out[relative_ref(ma)] = bag
    return out


@dataclass
class _Words:
    """What each text of this call says (every bag of a chart repeats the drug's and the diluent's names)."""

    preservative: dict[str, bool] = field(default_factory=dict)
    """Text → whether it names the preservative."""
    hours: dict[str, tuple[float, str] | None] = field(default_factory=dict)
    """Text → the bag duration it states and the words it was read in, if any."""


def _order_bag(order: BlinOrder, medications: Mapping[str, Mapping[str, Any]], kb: Knowledge,
               memo: _Words) -> BagPreparation | None:
    mr = order.resource
    dosage = first_dosage(mr)
    words = [*_strings(dosage.get("text"), dosage.get("patientInstruction")),
             *(t for c in dosage.get("additionalInstruction") or () if isinstance(c, Mapping) for t in texts(c)),
             *_notes(mr), *_extension_strings(mr), *_medication_texts(mr, medications)]
    hours, said = (order.bag_hours, None) if order.bag_hours else _text_hours(words, kb, memo)
    return _bag(order.ref, hours, "timing" if order.bag_hours else "duration-text", said, words, kb, memo)


def _administration_bag(ma: Mapping[str, Any], ordered: BagPreparation | None,
                        medications: Mapping[str, Mapping[str, Any]], kb: Knowledge, memo: _Words
                        ) -> BagPreparation | None:
    dosage = ma.get("dosage") if isinstance(ma.get("dosage"), Mapping) else {}
    assert isinstance(dosage, Mapping)
    words = [*_strings(dosage.get("text")), *_notes(ma), *_medication_texts(ma, medications)]
    over = infuse_over(ma, kb)
    if over is not None:
        own = _bag(relative_ref(ma), over.total_seconds() / 3600, "infuse-over-time", None, words, kb, memo)
    else:
        hours, said = _text_hours(words, kb, memo)
        own = _bag(relative_ref(ma), hours, "duration-text", said, words, kb, memo)
    if ordered is None or (own is not None and (own.preservative or own.hours is not None)):
        return own  # the bag hung says what it is (a 24-h bag on a 7-day order is a 24-h bag)
    return replace(ordered, ref=relative_ref(ma), from_order=ordered.ref)


def _bag(ref: str, hours: float | None, source: Evidence, said: str | None, words: Sequence[str],
         kb: Knowledge, memo: _Words) -> BagPreparation | None:
    """``source`` says where ``hours`` came from (``said``: the text it was read in)."""
    rule = kb.dosing.preservative_bags
    known = memo.preservative
    named = None
    for word in words:
        says = known.get(word)
        if says is None:
            says = known[word] = rule.names_preservative(word)
        if says:
            named = word
            break
    if named is not None:
        return BagPreparation(ref, hours, True, "preservative-text", " ".join(named.split())[:_TEXT_LIMIT])
    if hours is None:
        return None
    if rule.is_preservative_duration(hours):
        return BagPreparation(ref, hours, True, source, said)
    return BagPreparation(ref, hours, False)


def _text_hours(words: Sequence[str], kb: Knowledge, memo: _Words) -> tuple[float | None, str | None]:
    """A bag duration written in text ("over 7 days", "96-h bag"), in hours, and the text it came from."""
    for word in words:
        if word not in memo.hours:
            memo.hours[word] = _word_hours(word, kb)
        found = memo.hours[word]
        if found is not None:
            return found
    return None, None


def _word_hours(word: str, kb: Knowledge) -> tuple[float, str] | None:
    units = kb.dosing.units
    for pattern in kb.dosing.preservative_bags.duration_res:
        match = pattern.search(word)
        factor = units.duration_to_hours.get(units.norm(match.group("unit"))) if match else None
        if match is not None and factor:
            return float(match.group("value")) * factor, " ".join(match.group(0).split())
    return None


def _medication_texts(resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]) -> Iterator[str]:
    """The drug's names and, for a contained or referenced Medication, its ingredients' names (the diluent)."""
    yield from texts(medication_concept(resource, medications))
    med = referenced_medication(resource, medications)
    for ingredient in (med or {}).get("ingredient") or ():
        if isinstance(ingredient, Mapping):
            yield from texts(ingredient.get("itemCodeableConcept"))
            reference = ingredient.get("itemReference")
            yield from _strings(reference.get("display") if isinstance(reference, Mapping) else None)


def _notes(resource: Mapping[str, Any]) -> list[str]:
    return [n["text"] for n in resource.get("note") or () if isinstance(n, Mapping) and isinstance(n.get("text"), str)]


def _extension_strings(resource: Mapping[str, Any]) -> list[str]:
    """String extensions (Oracle Health's ``clinical-instruction``: "Total Volume (mL): 250, IV, …")."""
    return [e["valueString"] for e in resource.get("extension") or ()
            if isinstance(e, Mapping) and isinstance(e.get("valueString"), str)]


def _strings(*values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.strip()]
