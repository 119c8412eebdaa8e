"""Structured logs: JSON lines with hookInstance and service id, never patient ids or tokens."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from service.logs import JsonFormatter
from tests.conftest import PATIENT_VIEW, AppFactory

PATIENT_ID = "patient-7f3a9c"
TOKEN = "tok-abc-123-never-log"


async def test_hook_call_logs_are_json_with_hook_instance_and_no_identifiers(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, client = await make_app()
    body = {
        "hook": "patient-view",
        "hookInstance": "hi-42",
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/*.read", "subject": "blina-cds"},
        "context": {"userId": "Practitioner/u1", "patientId": PATIENT_ID},
    }
    with respx.mock() as mock:
        mock.get(url__regex=r"^https://ehr\.example\.org/fhir/Patient/").mock(
            return_value=httpx.Response(200, json={"resourceType": "Patient", "id": PATIENT_ID})
        )
        mock.get(url__regex=r"^https://ehr\.example\.org/fhir/").mock(
            return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
        )
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 200
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name.startswith("blina_cds")]
    fetches = [line for line in lines if line["msg"] == "fhir fetch"]
    assert len(fetches) == 8
    assert {f["resource_type"] for f in fetches} >= {"Patient", "Observation", "MedicationRequest"}
    assert all(f["hookInstance"] == "hi-42" and f["service"] == PATIENT_VIEW and f["status"] == 200
               for f in fetches)
    answered = next(line for line in lines if line["msg"] == "hook answered")
    assert answered["cards"] == 0
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    assert PATIENT_ID not in everything
    assert TOKEN not in everything


def test_formatter_keeps_only_allowed_extras() -> None:
    record = logging.LogRecord("blina_cds.x", logging.INFO, __file__, 1, "msg", None, None)
    record.__dict__.update({"patientId": "p1", "url": "https://x/Patient/p1", "status": 200})
    line = json.loads(JsonFormatter().format(record))
    assert line["status"] == 200
    assert "patientId" not in line and "url" not in line
