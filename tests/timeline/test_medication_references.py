"""Drugs named by Medication reference (issue 7 item 2): contained ``#id`` and ``Medication/<id>`` resolved from the
data, the drug recognised by the Medication's code or ingredients, the strength from ``ingredient.strength`` or
``amount``, and which Medications are still to be read from ``fhirServer``."""

from __future__ import annotations

from typing import Any

import pytest

from service.knowledge import Knowledge
from service.timeline import has_blinatumomab_draft, medications_to_read
from service.timeline.dose import concentration_ug_per_ml, medication_reference_id, medication_to_read
from tests.builders import (
    BLIN_SCD,
    DEXAMETHASONE,
    at,
    medication_administration,
    medication_request,
    order_context,
    quantity,
    rate_quantity,
)
from tests.med_helpers import make_timeline

NOW = at(2026, 3, 10, 8)


def medication(id: str, *, code: dict[str, Any] | None = None, strength: tuple[float, str, float, str] | None = None,
               amount: tuple[float, str, float, str] | None = None, item: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A Medication resource; ``strength``/``amount`` as (numerator, unit, denominator, unit)."""
    out: dict[str, Any] = {"resourceType": "Medication", "id": id}
    if code is not None:
        out["code"] = code
    if strength is not None or item is not None:
        ing: dict[str, Any] = {"itemCodeableConcept": item or {"coding": [dict(BLIN_SCD)]}}
        if strength is not None:
            ing["strength"] = {"numerator": quantity(strength[0], strength[1]),
                               "denominator": quantity(strength[2], strength[3])}
        out["ingredient"] = [ing]
    if amount is not None:
        out["amount"] = {"numerator": quantity(amount[0], amount[1]), "denominator": quantity(amount[2], amount[3])}
    return out


def by_reference(id: str, ref: str, *, display: str | None = None, **kw: Any) -> dict[str, Any]:
    order = medication_request(id, medication_reference=ref, **kw)
    if display is not None:
        order["medicationReference"]["display"] = display
    return order


BAG = medication("blin-bag", code={"coding": [dict(BLIN_SCD)]}, strength=(28, "ug", 240, "mL"))


def test_a_medication_resource_named_only_by_id_gives_the_drug_and_the_strength(kb: Knowledge) -> None:
    """Symptom: a 3× overdose order naming only ``Medication/<id>`` gave no order at all."""
    order = by_reference("mr1", "Medication/blin-bag", dose_and_rate=[rate_quantity(84, "ug/d")])
    timeline = make_timeline(kb, now=NOW, drafts=[order], resources=[BAG])
    assert [(o.ref, o.dose.ug_per_day, o.medication_unresolved) for o in timeline.focus_orders] == [
        ("MedicationRequest/mr1", 84, None)]
    pump = by_reference("mr2", "Medication/blin-bag", dose_and_rate=[rate_quantity(10, "mL/h")])
    (order,) = make_timeline(kb, now=NOW, drafts=[pump], resources=[BAG]).orders
    assert order.dose.ug_per_day == pytest.approx(28)  # 10 mL/h × 24 h × 28 µg / 240 mL


def test_a_versioned_reference_resolves_and_an_unrelated_id_does_not(kb: Knowledge) -> None:
    versioned = by_reference("mr1", "Medication/blin-bag/_history/3", dose_and_rate=[rate_quantity(10, "mL/h")])
    (order,) = make_timeline(kb, now=NOW, drafts=[versioned], resources=[BAG]).orders
    assert order.dose.ug_per_day == pytest.approx(28)
    other = by_reference("mr1", "Medication/another-bag", dose_and_rate=[rate_quantity(10, "mL/h")])
    assert make_timeline(kb, now=NOW, drafts=[other], resources=[BAG]).orders == ()


@pytest.mark.parametrize(
    ("med", "expected"),
    [
        # coded only on the ingredient (compounded bag whose code names nothing)
        (medication("m", code={}, item={"coding": [dict(BLIN_SCD)]}), True),
        (medication("m", item={"text": "Blincyto"}), True),
        (medication("m", code={"text": "BLINCYTO 35 mcg vial"}), True),
        (medication("m", code={"coding": [{"system": "urn:oid:1.2.3", "code": "778", "display": "blinatumomab"}]}),
         True),
        # the code names the drug: an ingredient never overrides it
        (medication("m", code={"text": "sodium chloride 0.9% 250 mL"}, item={"text": "blinatumomab"}), False),
        (medication("m", code={"coding": [dict(DEXAMETHASONE)]}), False),
        (medication("m", code={"text": "BLINCYTO IV Solution Stabilizer"}), False),
    ],
)
def test_the_drug_is_recognised_by_the_medications_code_display_text_or_ingredients(
    kb: Knowledge, med: dict[str, Any], expected: bool
) -> None:
    order = by_reference("mr1", "Medication/m", dose_and_rate=[rate_quantity(9, "ug/d")])
    assert bool(make_timeline(kb, now=NOW, drafts=[order], resources=[med]).orders) is expected


@pytest.mark.parametrize(
    ("med", "ug_per_ml"),
    [
        (medication("m", strength=(28, "ug", 240, "mL")), 28 / 240),
        (medication("m", strength=(0.196, "mg", 110, "mL")), 196 / 110),
        (medication("m", strength=(28, "mcg", 0.24, "L")), 28 / 240),
        # mass per bag (a count) over the bag's volume in amount
        (medication("m", strength=(196, "ug", 1, "{bag}"), amount=(110, "mL", 1, "{bag}")), 196 / 110),
        (medication("m", strength=(196, "ug", 1, "1"), amount=(110, "mL", 1, "1")), 196 / 110),
        # amount itself as mass per volume
        (medication("m", code={"coding": [dict(BLIN_SCD)]}, amount=(28, "ug", 240, "mL")), 28 / 240),
        # nothing usable: per hour is not per bag; a mass per bag without the bag's volume; no strength at all
        (medication("m", strength=(28, "ug", 1, "h"), amount=(240, "mL", 1, "{bag}")), None),
        (medication("m", strength=(196, "ug", 1, "{bag}")), None),
        (medication("m", code={"coding": [dict(BLIN_SCD)]}), None),
    ],
)
def test_concentration_from_ingredient_strength_or_amount(kb: Knowledge, med: dict[str, Any],
                                                         ug_per_ml: float | None) -> None:
    got = concentration_ug_per_ml(med, kb)
    assert got == (pytest.approx(ug_per_ml) if ug_per_ml is not None else None)


def test_the_strength_of_another_ingredient_is_never_read_as_blinatumomab(kb: Knowledge) -> None:
    saline = medication("m", code={"text": "blinatumomab bag"}, item={"text": "sodium chloride 0.9%"},
                        strength=(0.9, "g", 100, "mL"))
    assert concentration_ug_per_ml(saline, kb) is None


def test_a_running_bag_whose_strength_lives_in_the_referenced_medication_is_dosed(kb: Knowledge) -> None:
    """Symptom: a 7-day bag at the wrong rate got "cannot verify" because its strength lived in the Medication."""
    seven_day = medication("bag7", code={"text": "blinatumomab 196 mcg in 110 mL (7-day)"},
                           strength=(196, "ug", 110, "mL"))
    bag = medication_administration("b", start=at(2026, 3, 8, 10), status="in-progress",
                                     rate=quantity(10, "mL/hr", code="mL/h"))
    del bag["medicationCodeableConcept"]
    bag["medicationReference"] = {"reference": "Medication/bag7"}
    timeline = make_timeline(kb, now=NOW, hook="patient-view", resources=[bag, seven_day])
    (infusion,) = timeline.infusions
    assert infusion.ug_per_day == pytest.approx(10 * 24 * 196 / 110)
    assert infusion.dose.problem is None


# ---------------------------------------------------------------- which Medications are still to be read


def test_medication_reference_id_reads_relative_absolute_and_versioned_references() -> None:
    def ref(r: str) -> dict[str, Any]:
        return {"medicationReference": {"reference": r}}
    assert medication_reference_id(ref("Medication/a-1.b")) == "a-1.b"
    assert medication_reference_id(ref("Medication/a/_history/2")) == "a"
    assert medication_reference_id(ref("https://ehr.example/fhir/Medication/a")) == "a"
    assert medication_reference_id(ref("https://ehr.example/fhir/Medication/a"), relative_only=True) is None
    for bad in ("#m1", "Substance/a", "Medication/", "Medication/a?x=1", "Medication/../Patient/p1"):
        assert medication_reference_id(ref(bad)) is None, bad


@pytest.mark.parametrize(
    ("display", "read"),
    [(None, True), ("BLINCYTO 28 mcg/24 hr", True), ("dexamethasone 20 mg IV", True),
     ("ondansetron 4 mg IV", False)],
)
def test_a_medication_is_read_when_the_record_names_nothing_else_or_a_drug_the_rules_read(
    kb: Knowledge, display: str | None, read: bool
) -> None:
    order = by_reference("mr1", "Medication/m1", display=display)
    assert medication_to_read(order, {}, kb) == ("m1" if read else None)
    assert medication_to_read(order, {"m1": medication("m1")}, kb) is None  # already in hand


def test_contained_coded_or_absolute_references_are_never_read(kb: Knowledge) -> None:
    contained = medication_request("mr1", medication_reference="#bag", contained=[BAG])
    coded = medication_request("mr2")
    absolute = by_reference("mr3", "https://other.example/fhir/Medication/m1")
    assert [medication_to_read(r, {}, kb) for r in (contained, coded, absolute)] == [None, None, None]


def test_medications_to_read_lists_drafts_first_then_records_without_what_the_data_holds(kb: Knowledge) -> None:
    context = order_context(by_reference("d1", "Medication/draft-med"))
    stored = by_reference("mr1", "Medication/stored-med", status="active")
    twice = by_reference("mr2", "Medication/draft-med", status="active")
    held = by_reference("mr3", "Medication/blin-bag", status="active")
    other_patient = by_reference("mr4", "Medication/theirs", status="active", patient_id="p2")
    data = {"medicationRequests": [stored, twice, held, other_patient, BAG]}
    assert medications_to_read(context, data, kb) == {"draft-med": "context.draftOrders",
                                                      "stored-med": "prefetch.medicationRequests"}
    assert medications_to_read(context, data, kb, known=["draft-med"]) == {
        "stored-med": "prefetch.medicationRequests"}


def test_a_draft_named_only_by_a_reference_may_be_blinatumomab_and_one_named_otherwise_is_not(kb: Knowledge) -> None:
    assert has_blinatumomab_draft(order_context(by_reference("d1", "Medication/m1")), kb)
    assert not has_blinatumomab_draft(order_context(by_reference("d1", "Medication/m1", display="ondansetron")), kb)
    assert has_blinatumomab_draft(order_context(by_reference("d1", "Medication/m1", display="Blincyto")), kb)


# ---------------------------------------------------------------- a draft whose Medication cannot be had


def test_an_unresolvable_draft_named_blinatumomab_in_its_text_is_an_order_that_names_what_is_missing(
    kb: Knowledge,
) -> None:
    order = by_reference("mr1", "Medication/gone", text="blinatumomab 28 mcg/day continuous IV infusion",
                         dose_and_rate=[rate_quantity(10, "mL/h")])
    (blin,) = make_timeline(kb, now=NOW, drafts=[order]).orders
    assert blin.medication_unresolved == "Medication/gone"
    assert blin.dose.problem == "rate-without-concentration"


def test_an_unresolvable_reference_naming_nothing_is_not_taken_for_blinatumomab(kb: Knowledge) -> None:
    silent = by_reference("mr1", "Medication/gone", dose_and_rate=[rate_quantity(84, "ug/d")])
    other = by_reference("mr2", "Medication/gone", display="ondansetron", text="give before blinatumomab")
    assert make_timeline(kb, now=NOW, drafts=[silent, other]).orders == ()
    # a stored record is never identified from its text: a premedication's "before blinatumomab" is not a bag
    stored = by_reference("mr3", "Medication/gone", status="active", text="blinatumomab 28 mcg/day")
    assert make_timeline(kb, now=NOW, resources=[stored]).orders == ()
