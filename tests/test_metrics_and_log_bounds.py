"""Nothing a request chooses reaches a metric label, and nothing it chooses can make a log line grow unbounded.

``/metrics`` is unauthenticated and every new label value is a new series kept for the life of the process.
"""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from service import logs
from service.logs import JsonFormatter
from service.rules import RULE_IDS
from tests.conftest import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, AppFactory
from tests.test_feedback import overridden
from tests.test_prefetch import FHIR, body, searchset

SERVICES = {ORDER_SIGN, ORDER_SELECT, PATIENT_VIEW}
FIXED = {
    "route": {"/cds-services", "/cds-services/{id}", "/cds-services/{id}/feedback", "/healthz", "/livez",
              "other"},
    "method": {"GET", "POST", "OPTIONS", "HEAD", "other"},
    "service": SERVICES,
    "rule_id": set(RULE_IDS),
    "indicator": {"info", "warning", "critical"},
    "state": {"prefetched", "null", "fetched", "paged"},
    "resource_type": {"Patient", "MedicationRequest", "MedicationAdministration", "Observation", "Condition",
                      "AdverseEvent", "Medication"},  # Medication: the reads of Medications named by reference
    "operation": {"jti", "issued_cards", "feedback", "purge"},
    "table": {"issued_cards", "jwt_replays"},
}

def _series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        if family.name.startswith("blina_cds")
        for sample in family.samples
    }


async def _hostile_round(client: httpx.AsyncClient, tag: str) -> None:
    """Requests whose every free-form value carries ``tag``."""
    await client.post(f"/cds-services/svc-{tag}", json=body({}))
    await client.get(f"/cds-services/svc-{tag}/feedback")
    await client.request(f"X{tag.upper()}", f"/cds-services/{PATIENT_VIEW}")
    await client.post(f"/{tag}/cds-services", json={})
    await client.post(f"/cds-services/{PATIENT_VIEW}/feedback",
                      json={"feedback": [overridden(card=f"card-{tag}", userComment=tag)]})
    request = body(None, fhirServer=FHIR, hookInstance=f"hi-{tag}")
    request["context"]["patientId"] = f"pid-{tag}"
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__regex=rf"^{FHIR}/Patient/").mock(
            return_value=httpx.Response(200, json={"resourceType": "Patient", "id": f"pid-{tag}"}))
        mock.get(url__regex=rf"^{FHIR}/Observation").mock(return_value=httpx.Response(int(tag[-3:]) % 200 + 400))
        mock.get(url__regex=rf"^{FHIR}/").mock(return_value=httpx.Response(200, json=searchset()))
        await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)


async def test_metrics_never_show_a_request_value_and_the_label_set_is_bounded(make_app: AppFactory) -> None:
    _, client = await make_app()
    for n in range(1, 6):
        await _hostile_round(client, f"secret{n:03d}")
    text = (await client.get("/metrics")).text
    assert "secret" not in text.lower()
    assert "pid-" not in text and "hi-" not in text and "card-" not in text
    seen: dict[str, set[str]] = {}
    for _name, labels in _series(text):
        for key, value in labels:
            seen.setdefault(key, set()).add(value)
    # (the registry is the process's: other tests' requests are in it too)
    assert seen["status"] <= {"1xx", "2xx", "3xx", "4xx", "5xx", "other"}  # classes, never codes
    assert "other" in seen["method"] and "other" in seen["route"]
    assert "http-4xx" in seen["outcome"]  # 401…405 from the FHIR server
    assert all(re.fullmatch(r"http-([1-5]xx|other)", o) for o in seen["outcome"] if o.startswith("http-"))
    for key, values in seen.items():
        if key in FIXED:
            assert values <= FIXED[key], (key, values - FIXED[key])
        else:
            assert key in ("status", "outcome", "le"), key
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", o) for o in seen["outcome"] if not o.startswith("http-"))


def test_a_fhir_status_code_becomes_a_status_class() -> None:
    from service.metrics import method_label, status_class

    assert [status_class(s) for s in (200, 404, 418, 503, 999, 42)] == ["2xx", "4xx", "4xx", "5xx", "other", "other"]
    assert [method_label(m) for m in ("GET", "POST", "PROPFIND", "get")] == ["GET", "POST", "other", "other"]


async def test_a_10000_character_hook_instance_is_refused_and_never_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, client = await make_app()
    huge = "H" * 10_000
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body({}, hookInstance=huge, hook=huge))
    assert response.status_code == 400
    unknown = await client.post("/cds-services/" + "S" * 10_000, json=body({}))
    assert unknown.status_code == 404
    assert len(unknown.text) < 500
    formatter = JsonFormatter(max_field_chars=512)
    lines = [formatter.format(r) for r in caplog.records]
    assert lines and all("H" * 100 not in line and "S" * 100 not in line for line in lines)


def test_every_string_in_a_log_line_is_cut_to_the_limit() -> None:
    record = logging.LogRecord("blina_cds.x", logging.INFO, __file__, 1, "m" * 5000, None, None)
    record.__dict__["reason"] = "r" * 5000
    token = logs.hook_instance.set("h" * 5000)
    try:
        line = json.loads(JsonFormatter(max_field_chars=100).format(record))
    finally:
        logs.hook_instance.reset(token)
    assert len(line["msg"]) == len(line["reason"]) == len(line["hookInstance"]) == 100
    assert line["msg"].startswith("m" * 99) and line["msg"].endswith("…")
