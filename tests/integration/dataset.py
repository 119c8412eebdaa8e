"""A small, realistic chart for one adult on blinatumomab, as a FHIR transaction bundle.

Loaded once into sekmet-fhir and removed afterwards (``tests/integration/conftest.py``). Every resource has a
client-chosen id (``PUT``), so the expected content of each prefetch key is known without asking the
server, and the same bundle can be loaded again without creating duplicates.

The chart, relative to ``now``: cycle 1 of blinatumomab 9 µg/day started 3 days ago (order RxNorm
1597267 and a running infusion), dexamethasone 20 mg given 1 h before it, weight and height, three
ALT results with a reference range, one AST and one bilirubin, a B-ALL Condition and a grade 2 CRS
AdverseEvent; plus a second patient with a few resources of the same kinds, so every expectation also
proves the patient filter. Times are relative so the chart stays current whatever day the suite runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.builders import (
    BLIN_SBD,
    DEXAMETHASONE,
    LOINC,
    SNOMED,
    blin_infusion,
    height,
    iso,
    medication_request,
    observation,
    patient,
    rate_quantity,
    steroid_given,
    weight,
)

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
MEDDRA = "https://www.meddra.org"


SERVICES: dict[str, str] = {
    "blinatumomab-order-sign": "order-sign",
    "blinatumomab-order-select": "order-select",
    "blinatumomab-patient-view": "patient-view",
}
"""Service id → hook."""

TimelineInputs = list[dict[str, set[str]]]
"""What the ``timeline_inputs`` spy records: per hook call, prefetch key → {``Type/id``} the service had."""


def rule_ids(body: Mapping[str, Any]) -> list[str]:
    """Sorted rule ids of a hook response's cards (``card.source.topic.code``)."""
    assert isinstance(body.get("cards"), list), body
    return sorted(card["source"]["topic"]["code"] for card in body["cards"])


@dataclass(frozen=True)
class Dataset:
    """The bundle to load, and which resource ids each prefetch key must yield."""

    patient_id: str
    now: dt.datetime
    resources: tuple[Mapping[str, Any], ...]
    expected: dict[str, set[str]] = field(default_factory=dict)
    """Prefetch key → ``Type/id`` of every resource its template matches."""

    def transaction(self) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"{r['resourceType']}/{r['id']}",
                    "resource": dict(r),
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in self.resources
            ],
        }

    def context(self, hook: str, *, user_id: str = "Practitioner/dr-blina-1") -> dict[str, Any]:
        """The hook context an EHR sends for this patient (order hooks carry ``draft_order()``)."""
        ctx: dict[str, Any] = {"userId": user_id, "patientId": self.patient_id}
        if hook in ("order-sign", "order-select"):
            draft = self.draft_order()
            ctx["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": draft}]}
            if hook == "order-select":
                ctx["selections"] = [f"MedicationRequest/{draft['id']}"]
        return ctx

    def draft_order(self, order_id: str = "blina-draft-1") -> dict[str, Any]:
        """A draft blinatumomab order for the next cycle (order-select / order-sign context)."""
        return medication_request(
            order_id,
            codings=(BLIN_SBD,),
            status="draft",
            authored_on=self.now,
            start=self.now + dt.timedelta(days=1),
            dose_and_rate=[rate_quantity(28, "ug/d")],
            text="blinatumomab 28 mcg/day continuous IV infusion",
            patient_id=self.patient_id,
        )


def _ref(resource: Mapping[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def build_dataset(patient_id: str = "blina-it-1", *, now: dt.datetime | None = None) -> Dataset:
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    day = dt.timedelta(days=1)
    hour = dt.timedelta(hours=1)
    p = patient_id
    c1d1 = now - 3 * day

    pt = patient(p, birth_date="1979-06-14")
    pt.update(gender="female", name=[{"family": "Testperson", "given": ["Ada"]}])

    order = medication_request(
        f"{p}-mr-blin", codings=(BLIN_SBD,), status="active", authored_on=c1d1 - day, start=c1d1,
        dose_and_rate=[rate_quantity(9, "ug/d")], text="blinatumomab 9 mcg/day continuous IV infusion",
        patient_id=p,
    )
    infusion = blin_infusion(f"{p}-ma-blin", c1d1, ug_per_day=9, codings=(BLIN_SBD,), patient_id=p)
    infusion["request"] = {"reference": _ref(order)}
    premed = steroid_given(f"{p}-ma-dexa", c1d1 - hour, DEXAMETHASONE, dose=20, patient_id=p)

    body = [
        weight(f"{p}-obs-weight", 72.5, c1d1 - day, patient_id=p),
        height(f"{p}-obs-height", 168, c1d1 - day, patient_id=p),
    ]
    labs = [
        observation(f"{p}-obs-alt-{i}", "1742-6", value, "U/L", when=when, reference_high=40,
                    display="ALT [Enzymatic activity/volume] in Serum or Plasma", patient_id=p)
        for i, (value, when) in enumerate(((28, c1d1 - day), (35, now - day), (52, now - 2 * hour)))
    ]
    labs.append(observation(f"{p}-obs-ast", "1920-8", 31, "U/L", when=now - 2 * hour, reference_high=40,
                            patient_id=p))
    labs.append(observation(f"{p}-obs-bili", "1975-2", 0.8, "mg/dL", when=now - 2 * hour, reference_high=1.2,
                            patient_id=p))
    # A vital sign no code-filtered template asks for: only the unfiltered toxicity search returns it.
    temp = observation(f"{p}-obs-temp", "8310-5", 38.4, "Cel", when=now - day, patient_id=p,
                       extra={"category": [{"coding": [{
                           "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                           "code": "vital-signs"}]}]})

    condition = {
        "resourceType": "Condition",
        "id": f"{p}-cond-ball",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "code": {"coding": [
            {"system": ICD10CM, "code": "C91.00",
             "display": "Acute lymphoblastic leukemia not having achieved remission"},
            {"system": SNOMED, "code": "91857003", "display": "Acute lymphoid leukemia"},
        ], "text": "B-cell precursor ALL"},
        "subject": {"reference": f"Patient/{p}"},
        "onsetDateTime": iso(now - 120 * day),
    }
    adverse_event = {
        "resourceType": "AdverseEvent",
        "id": f"{p}-ae-crs",
        "actuality": "actual",
        "event": {"coding": [{"system": MEDDRA, "code": "10052015", "display": "Cytokine release syndrome"}],
                  "text": "Cytokine release syndrome, grade 2"},
        "subject": {"reference": f"Patient/{p}"},
        "date": iso(now - day),
        "severity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity", "code": "moderate"}]},
        "suspectEntity": [{"instance": {"reference": _ref(infusion)}}],
    }

    # Another patient on the same server, so every expectation also proves the patient filter. No
    # AdverseEvent for them: sekmet 0.1.1 ignores AdverseEvent?subject= (see tests/fhir_server.py).
    o = f"{p}-other"
    other = (
        patient(o, birth_date="2012-02-02"),
        medication_request(f"{o}-mr-blin", codings=(BLIN_SBD,), status="active", authored_on=now - 10 * day,
                           dose_and_rate=[rate_quantity(15, "ug/m2/d")], patient_id=o),
        weight(f"{o}-obs-weight", 31, now - 10 * day, patient_id=o),
        observation(f"{o}-obs-alt", "1742-6", 20, "U/L", when=now - 10 * day, reference_high=40, patient_id=o),
        {**condition, "id": f"{o}-cond-ball", "subject": {"reference": f"Patient/{o}"}},
    )

    resources: tuple[Mapping[str, Any], ...] = (
        pt, order, infusion, premed, *body, *labs, temp, condition, adverse_event, *other,
    )
    all_obs = {_ref(o) for o in (*body, *labs, temp)}
    expected = {
        "patient": {_ref(pt)},
        "medicationRequests": {_ref(order)},
        "medicationAdministrations": {_ref(infusion), _ref(premed)},
        "bodySize": {_ref(o) for o in body},
        "labs": {_ref(o) for o in labs},
        "toxicityObservations": all_obs,
        "conditions": {_ref(condition)},
        "adverseEvents": {_ref(adverse_event)},
    }
    return Dataset(patient_id=p, now=now, resources=resources, expected=expected)


__all__ = ["LOINC", "RXNORM", "SERVICES", "Dataset", "TimelineInputs", "build_dataset", "rule_ids"]
