"""Findings depend on what the chart says, not on how the prefetch happens to be laid out.

A chart is a drawn course (:mod:`tests.properties.courses`) seen at one of its hook calls, sometimes with something
wrong added so there are cards to compare (a missing premedication, an ALT above 5 × ULN, a grade 3 CRS, a seizure,
a draft in mg/day, no weight). Its prefetch is filled as the service's templates would be answered (searchset
Bundles per key, ``fhir_examples/build.py``), resolved by ``prefetch.from_prefetch``, and evaluated. The findings
(rule id, indicator, every fact, every suggested action; never card uuids) must be the same when

- the entries of every Bundle (prefetch and ``draftOrders``) come in another order;
- entries are duplicated, within a Bundle and across prefetch keys;
- unrelated records are added: other drugs' orders and administrations, normal labs of other analytes, vital signs,
  and negative nursing checks ("Seizure activity: Not observed", "No CRS", ICE 10/10) charted before any toxicity.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from fhir_examples.build import ABSENT, EPIC_FLO, LOINC, RXNORM, SCORE, UCUM, prefetch_for
from service.catalog import build_catalog
from service.fhir.prefetch import from_prefetch
from service.rules import evaluate
from service.rules.base import Finding
from service.schemas import HookRequest
from service.timeline import build_timeline
from tests.builders import bundle
from tests.properties.courses import Course, courses
from tests.properties.profiles import knowledge, scaled

kb = knowledge()
CATALOG = build_catalog(kb)
SERVICES = {"order-sign": "blinatumomab-order-sign", "patient-view": "blinatumomab-patient-view"}
HOUR = dt.timedelta(hours=1)
TEMPLATES = {key: template for service in CATALOG.values() for key, template in service.prefetch.items()}


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- the chart and call


@st.composite
def charts(draw: st.DrawFn) -> tuple[Course, str, dt.datetime, list[dict[str, Any]], list[dict[str, Any]], str]:
    """(course, hook, now, stored records, drafts, what was spoiled)."""
    course = draw(courses())
    calls = list(course.calls())
    hook, now, drafts, _ = draw(st.sampled_from(calls))
    stored, draft = course.snapshot(now, drafts=drafts)
    spoil = draw(st.sampled_from(["none", "none", "premed", "alt", "crs", "seizure", "mg", "weight"]))
    pid = course.chart.pid
    subject = {"reference": f"Patient/{pid}"}
    if spoil == "premed":
        steroid = ("dexamethasone", "prednisone", "methylpred")
        draft = [d for d in draft if not any(s in json.dumps(d).lower() for s in steroid)]
        stored = [r for r in stored if not (r["resourceType"] in ("MedicationAdministration", "MedicationRequest")
                                             and any(s in json.dumps(r).lower() for s in steroid))]
    elif spoil == "alt":
        stored.append({"resourceType": "Observation", "id": f"{pid}-alt-high", "status": "final", "subject": subject,
                       "code": {"coding": [{"system": LOINC, "code": "1742-6"}], "text": "ALT"},
                       "effectiveDateTime": iso(now - 2 * HOUR), "issued": iso(now - HOUR),
                       "valueQuantity": {"value": 260, "unit": "U/L", "system": UCUM, "code": "U/L"},
                       "referenceRange": [{"high": {"value": 40, "unit": "U/L", "system": UCUM, "code": "U/L"}}]})
    elif spoil == "crs":
        stored.append({"resourceType": "Observation", "id": f"{pid}-crs3", "status": "final", "subject": subject,
                       "code": {"coding": [{"system": EPIC_FLO, "code": "3040131", "display": "CRS grade"}],
                                "text": "CRS grade"}, "method": {"text": "ASTCT"},
                       "effectiveDateTime": iso(now - 3 * HOUR), "valueString": "Grade 3"})
    elif spoil == "seizure":
        stored.append({"resourceType": "Condition", "id": f"{pid}-seizure", "subject": subject,
                       "verificationStatus": {"coding": [{"code": "confirmed"}]},
                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91175000",
                                            "display": "Seizure (finding)"}], "text": "Seizure"},
                       "onsetDateTime": iso(now - 5 * HOUR)})
    elif spoil == "mg" and draft:
        for d in draft:
            for entry in d.get("dosageInstruction", [{}])[0].get("doseAndRate", []):
                if "rateQuantity" in entry and entry["rateQuantity"].get("code") == "ug/d":
                    entry["rateQuantity"] = {"value": 28, "unit": "mg/d", "system": UCUM, "code": "mg/d"}
    elif spoil == "weight":
        stored = [r for r in stored if "29463-7" not in json.dumps(r.get("code", {}))]
    return course, hook, now, stored, draft, spoil


def request(course: Course, hook: str, stored: list[dict[str, Any]], drafts: list[dict[str, Any]]) -> dict[str, Any]:
    pid = course.chart.pid
    context: dict[str, Any] = {"userId": "Practitioner/1", "patientId": pid}
    if hook == "order-sign":
        context["draftOrders"] = bundle(*drafts)
    prefetch = prefetch_for(pid, stored, {k: TEMPLATES[k] for k in CATALOG[SERVICES[hook]].prefetch})
    return {"hook": hook, "hookInstance": "d1f1f6c6-property", "context": context, "prefetch": prefetch}


def findings(body: Mapping[str, Any], now: dt.datetime) -> list[Finding]:
    service = CATALOG[SERVICES[body["hook"]]]
    hook_request = HookRequest.model_validate(body)
    resolved, missing, paged = from_prefetch(service.prefetch, hook_request)
    assert not missing and not paged
    timeline = build_timeline(hook=service.hook, context=hook_request.context, data=resolved.data, kb=kb,
                              now=now)  # type: ignore[arg-type]
    return evaluate(timeline, kb, rule_ids=service.rule_ids)


def canonical(found: list[Finding]) -> list[str]:
    """Every finding as one comparable string: rule, indicator, facts, actions (no uuid exists at this step)."""
    return sorted(json.dumps({"rule": f.rule_id, "indicator": f.indicator, "facts": f.facts, "about": f.about,
                              "actions": [(a.type, a.key, a.resource_id, a.resource) for a in f.actions]},
                             sort_keys=True, default=str) for f in found)


def entries_of(body: dict[str, Any]) -> list[list[Any]]:
    """Every Bundle entry list of a request (each prefetch key and ``draftOrders``)."""
    bundles = [v for v in body["prefetch"].values() if isinstance(v, dict) and v.get("resourceType") == "Bundle"]
    if "draftOrders" in body["context"]:
        bundles.append(body["context"]["draftOrders"])
    return [b["entry"] for b in bundles if b.get("entry")]


def baseline(chart: Any) -> tuple[dict[str, Any], dt.datetime, list[str]]:
    """The chart's request, its ``now`` and its findings as they are."""
    course, hook, now, stored, drafts, spoil = chart
    note(f"{course!r} {hook} at {now} spoiled: {spoil}")
    body = request(course, hook, stored, drafts)
    return body, now, canonical(findings(body, now))


# ------------------------------------------------------------------------------------------------------ properties


@scaled(0.5)
@given(chart=charts(), data=st.data())
def test_findings_do_not_depend_on_the_order_of_bundle_entries(chart: Any, data: st.DataObject) -> None:
    body, now, expected = baseline(chart)
    shuffled = copy.deepcopy(body)
    for entries in entries_of(shuffled):
        entries[:] = data.draw(st.permutations(entries))
    assert canonical(findings(shuffled, now)) == expected


@scaled(0.5)
@given(chart=charts(), data=st.data())
def test_duplicated_entries_change_no_finding(chart: Any, data: st.DataObject) -> None:
    body, now, expected = baseline(chart)
    doubled = copy.deepcopy(body)
    lists = entries_of(doubled)
    for entries in lists:
        for _ in range(data.draw(st.integers(1, 4))):
            entry = data.draw(st.sampled_from(entries))
            entries.insert(data.draw(st.integers(0, len(entries))), copy.deepcopy(entry))
    # the same record answered under a second key too (an EHR that ignores a search parameter)
    keys = [k for k, v in doubled["prefetch"].items() if isinstance(v, dict) and v.get("resourceType") == "Bundle"]
    source, target = data.draw(st.sampled_from(keys)), data.draw(st.sampled_from(keys))
    extra = data.draw(st.sampled_from(doubled["prefetch"][source]["entry"]))
    doubled["prefetch"][target]["entry"].append(copy.deepcopy(extra))
    assert canonical(findings(doubled, now)) == expected


OTHER_DRUGS = [("26225", "ondansetron 8 mg IV", 8, "mg"), ("161", "acetaminophen 650 mg PO", 650, "mg"),
               ("519", "allopurinol 300 mg PO", 300, "mg"), ("114477", "levetiracetam 500 mg IV", 500, "mg"),
               ("10180", "sulfamethoxazole / trimethoprim 800-160 mg PO", 1, "{tbl}")]
OTHER_LABS = [("2951-2", "Sodium", 139, "mmol/L", 145), ("2823-3", "Potassium", 4.1, "mmol/L", 5.1),
              ("2160-0", "Creatinine", 0.8, "mg/dL", 1.3), ("6690-2", "WBC", 5.2, "10*3/uL", 11),
              ("1751-7", "Albumin", 4.0, "g/dL", 5.0)]
VITALS = [("8310-5", "Body temperature", 36.8, "Cel"), ("8867-4", "Heart rate", 78, "/min"),
          ("9279-1", "Respiratory rate", 16, "/min"), ("59408-5", "SpO2", 97, "%"),
          ("8480-6", "Systolic blood pressure", 118, "mm[Hg]")]
NEGATIVE_CHECKS: list[tuple[str, str, dict[str, Any]]] = [
    ("Seizure activity", "3040110", {"valueString": "Not observed"}),
    ("Seizure activity", "3040110", {"valueString": "No seizure activity"}),
    ("Seizures this shift", "3040110", {"valueInteger": 0}),
    ("Seizure?", "3040110", {"valueBoolean": False}),
    ("Seizure activity", "3040110", {"valueCodeableConcept": ABSENT}),
    ("ICE score", "3040120", {"valueQuantity": {"value": 10, **SCORE}}),
    ("CRS assessment", "3040130", {"valueString": "No CRS - afebrile, normotensive"}),
    ("Neuro assessment", "3040123", {"valueString": "ICE 10/10 - no ICANS, A&O x4"}),
]


@st.composite
def unrelated(draw: st.DrawFn, pid: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Records that have nothing to do with blinatumomab, its premedication or a toxicity, between two times."""
    subject = {"reference": f"Patient/{pid}"}
    span = max(int((until - since).total_seconds() // 60), 1)

    def when() -> str:
        return iso(since + dt.timedelta(minutes=draw(st.integers(0, span))))

    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["order", "given", "lab", "vital", "check", "check"]))
        rid = f"{pid}-unrelated-{i}"
        if kind in ("order", "given"):
            code, text, value, unit = draw(st.sampled_from(OTHER_DRUGS))
            drug = {"coding": [{"system": RXNORM, "code": code}], "text": text}
            dose = {"value": value, "unit": unit, "system": UCUM, "code": unit}
            if kind == "order":
                out.append({"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
                            "subject": subject, "medicationCodeableConcept": drug, "authoredOn": when(),
                            "dosageInstruction": [{"text": text, "doseAndRate": [{"doseQuantity": dose}],
                                                   "timing": {"repeat": {"frequency": 1, "period": 8,
                                                                         "periodUnit": "h"}}}]})
            else:
                out.append({"resourceType": "MedicationAdministration", "id": rid, "status": "completed",
                            "subject": subject, "medicationCodeableConcept": drug, "effectiveDateTime": when(),
                            "dosage": {"dose": dose}})
        elif kind == "lab":
            code, text, value, unit, high = draw(st.sampled_from(OTHER_LABS))
            out.append({"resourceType": "Observation", "id": rid, "status": "final", "subject": subject,
                        "category": [{"coding": [{"code": "laboratory"}]}],
                        "code": {"coding": [{"system": LOINC, "code": code}], "text": text},
                        "effectiveDateTime": when(), "valueQuantity": {"value": value, "unit": unit, "system": UCUM,
                                                                       "code": unit},
                        "referenceRange": [{"high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}]})
        elif kind == "vital":
            code, text, value, unit = draw(st.sampled_from(VITALS))
            out.append({"resourceType": "Observation", "id": rid, "status": "final", "subject": subject,
                        "category": [{"coding": [{"code": "vital-signs"}]}],
                        "code": {"coding": [{"system": LOINC, "code": code}], "text": text},
                        "effectiveDateTime": when(), "valueQuantity": {"value": value, "unit": unit, "system": UCUM,
                                                                       "code": unit}})
        else:
            row, row_id, value_ = draw(st.sampled_from(NEGATIVE_CHECKS))
            out.append({"resourceType": "Observation", "id": rid, "status": "final", "subject": subject,
                        "code": {"coding": [{"system": EPIC_FLO, "code": row_id, "display": row}], "text": row},
                        "effectiveDateTime": when(), **copy.deepcopy(value_)})
    return out


@scaled(0.5)
@given(chart=charts(), data=st.data())
def test_unrelated_records_change_no_finding(chart: Any, data: st.DataObject) -> None:
    course, hook, now, stored, drafts, spoil = chart
    note(f"{course!r} {hook} at {now} spoiled: {spoil}")
    expected = canonical(findings(request(course, hook, stored, drafts), now))
    first = course.infusion_windows[0][0] - 2 * dt.timedelta(days=1)
    # a negative check after a charted toxicity says it resolved: that may rightly change a card, so none is added
    until = now - 6 * HOUR if spoil in ("crs", "seizure") else now
    more = data.draw(unrelated(course.chart.pid, first, max(until, first)))
    note(f"added {[r['resourceType'] + '/' + str(r.get('code', r.get('medicationCodeableConcept'))) for r in more]}")
    assert canonical(findings(request(course, hook, stored + more, drafts), now)) == expected
