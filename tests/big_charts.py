"""Large, realistic FHIR payloads for the limit tests: a lab Observation as a hospital server returns it.

``lab_observation(i)`` is one ALT result the way an EHR's FHIR API sends it (meta, identifier, category,
LOINC with a local code beside it, subject and encounter with display, performer, reference range,
interpretation). ``searchset(resources)`` wraps resources as a server's search page; ``padded_request``
fills a hook request's ``labs`` prefetch until the body reaches a given size.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from service import examples

_LATEST = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)


def lab_observation(i: int, *, patient: str = "p-0012345", latest: dt.datetime = _LATEST) -> dict[str, Any]:
    """The ``i``-th newest ALT result, one every 6 hours back from ``latest``."""
    when = latest - dt.timedelta(hours=6 * i)
    stamp = when.isoformat().replace("+00:00", "Z")
    return {
        "resourceType": "Observation",
        "id": f"lab-alt-{i:07d}",
        "meta": {"versionId": "1", "lastUpdated": stamp,
                 "source": "#lis-interface-7",
                 "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"]},
        "identifier": [{"use": "official", "system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.798268",
                        "value": f"LAB-{when:%Y%m%d}-{i:07d}"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory", "display": "Laboratory"}], "text": "Laboratory"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6",
                             "display": "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"},
                            {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "code": "1525870",
                             "display": "ALT (SGPT)"}],
                 "text": "ALT (SGPT)"},
        "subject": {"reference": f"Patient/{patient}", "display": "Doe, Jane"},
        "encounter": {"reference": f"Encounter/enc-{i // 20:05d}", "display": "Hematology Oncology Inpatient"},
        "effectiveDateTime": stamp,
        "issued": (when + dt.timedelta(minutes=47)).isoformat().replace("+00:00", "Z"),
        "performer": [{"reference": "Organization/lab-main", "display": "Central Laboratory"}],
        "valueQuantity": {"value": 20 + i % 17, "unit": "U/L", "system": "http://unitsofmeasure.org",
                          "code": "U/L"},
        "interpretation": [{"coding": [{"system":
                                        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                        "code": "N", "display": "Normal"}], "text": "Normal"}],
        "referenceRange": [{"low": {"value": 7, "unit": "U/L", "system": "http://unitsofmeasure.org",
                                    "code": "U/L"},
                            "high": {"value": 56, "unit": "U/L", "system": "http://unitsofmeasure.org",
                                     "code": "U/L"},
                            "text": "7-56 U/L"}],
    }


def searchset(resources: list[dict[str, Any]], *, base: str = "https://ehr.example.org/fhir",
              next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": f"{base}/Observation?patient=p-0012345&_count={len(resources)}"}],
        "entry": [{"fullUrl": f"{base}/Observation/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }
    if next_url is not None:
        bundle["link"].append({"relation": "next", "url": next_url})
    return bundle


def observation_page_bytes(count: int) -> bytes:
    """A searchset page of ``count`` lab Observations, serialised as a server sends it (compact JSON)."""
    return orjson.dumps(searchset([lab_observation(i) for i in range(count)]))


def padded_request(target_bytes: int, *, now: dt.datetime) -> dict[str, Any]:
    """The rr-adult-course example's patient-view call with its ``labs`` prefetch grown to about ``target_bytes``."""
    request = examples.request_for("rr-adult-course", "c1d18-view", now=now)
    patient, latest = request["context"]["patientId"], now - dt.timedelta(days=1)
    base = len(orjson.dumps(request))
    per = len(orjson.dumps({"resource": lab_observation(0, patient=patient, latest=latest)})) + 1  # and a comma
    count = max(1, (target_bytes - base) // per)
    request["prefetch"]["labs"].setdefault("entry", []).extend(
        {"resource": lab_observation(i, patient=patient, latest=latest)} for i in range(count)
    )
    return request
