"""End to end with JWT auth on: the mini-EHR (Sandbox behaviour) against the service and sekmet-fhir.

The app trusts exactly one issuer — the harness, with its static JWKS and ``fhir_servers`` = sekmet's
base — and every call carries a fresh ES384 token with ``aud`` = the exact URL called.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import BASE_URL, AppFactory, outcome_fields
from tests.ehr import MiniEhr
from tests.fhir_server import FhirServer
from tests.integration.dataset import SERVICES, Dataset, TimelineInputs, rule_ids
from tests.jwt_tools import issuer_entry, issuers_file
from tests.token_proxy import TokenProxy

pytestmark = pytest.mark.fhir_server

ISS = "https://mini-ehr.test"
PATIENT_VIEW = "blinatumomab-patient-view"
ORDER_SELECT = "blinatumomab-order-select"


@pytest.fixture
async def jwt_app(make_app: AppFactory, tmp_path: Path, fhir_server: FhirServer,
                  ehr_key: tuple[Any, dict[str, Any]]) -> tuple[FastAPI, httpx.AsyncClient]:
    _, jwk = ehr_key
    trusted = issuers_file(tmp_path, [issuer_entry(ISS, keys=[jwk], fhir_servers=[fhir_server.base])])
    return await make_app(auth="jwt", trusted_issuers_file=trusted, public_base_url=BASE_URL)


@pytest.fixture
async def ehr(jwt_app: tuple[FastAPI, httpx.AsyncClient], fhir_server: FhirServer,
              ehr_key: tuple[Any, dict[str, Any]]) -> AsyncIterator[MiniEhr]:
    _, client = jwt_app
    private_key, jwk = ehr_key
    async with MiniEhr(client, fhir_server.base, private_key=private_key, kid=jwk["kid"], iss=ISS,
                       discovery_url=f"{BASE_URL}/cds-services") as harness:
        yield harness


async def test_discovery_with_jwt_lists_the_three_services(ehr: MiniEhr, jwt_app: tuple[FastAPI, Any]) -> None:
    _, client = jwt_app
    unsigned = await client.get("/cds-services")
    assert unsigned.status_code == 401  # auth really is on

    response = await ehr.discover()

    assert response.status_code == 200, response.text
    assert ehr.last_claims is not None and ehr.last_claims["aud"] == f"{BASE_URL}/cds-services"
    assert {s["id"]: s["hook"] for s in response.json()["services"]} == SERVICES
    assert all(s["prefetch"] for s in ehr.services.values())


async def test_patient_view_with_harness_prefetch_and_without_gives_the_same_rules(
    ehr: MiniEhr, dataset: Dataset, timeline_inputs: TimelineInputs,
) -> None:
    await ehr.discover()
    with_prefetch = await ehr.call(PATIENT_VIEW, "patient-view", dataset.context("patient-view"))
    sent = ehr.last_request
    without = await ehr.call(PATIENT_VIEW, "patient-view", dataset.context("patient-view"), prefetch=False)

    assert with_prefetch.status_code == 200, with_prefetch.text
    assert without.status_code == 200, without.text
    assert sent is not None and set(sent["prefetch"]) == set(ehr.services[PATIENT_VIEW]["prefetch"])
    assert "fhirAuthorization" not in sent  # like the Sandbox against an open server
    searches = [f for f in ehr.fhir_log if "?" not in f.url and f.url.endswith("/_search")]
    assert searches and {(f.method, f.status) for f in searches} == {("POST", 200)}  # form-body searches worked
    assert rule_ids(without.json()) == rule_ids(with_prefetch.json())
    assert timeline_inputs == [dataset.expected, dataset.expected]


async def test_order_select_with_a_draft_blinatumomab_order(
    ehr: MiniEhr, dataset: Dataset, timeline_inputs: TimelineInputs,
) -> None:
    await ehr.discover()
    context = dataset.context("order-select")

    response = await ehr.call(ORDER_SELECT, "order-select", context)

    assert response.status_code == 200, response.text
    assert ehr.last_claims is not None and ehr.last_claims["aud"] == f"{BASE_URL}/cds-services/{ORDER_SELECT}"
    assert isinstance(response.json()["cards"], list)
    assert timeline_inputs == [dataset.expected]  # the selected draft is blinatumomab: the chart was read

    other = await ehr.call(ORDER_SELECT, "order-select", {**context, "selections": ["MedicationRequest/other-1"]})
    assert other.status_code == 200, other.text
    assert other.json() == {"cards": []}
    assert len(timeline_inputs) == 1  # nothing selected is blinatumomab: nothing read, nothing checked


async def test_feedback_is_stored_once_and_read_back(
    ehr: MiniEhr, jwt_app: tuple[FastAPI, httpx.AsyncClient], dataset: Dataset,
) -> None:
    app, _ = jwt_app
    await ehr.discover()
    hook_response = await ehr.call(PATIENT_VIEW, "patient-view", dataset.context("patient-view"))
    assert hook_response.status_code == 200, hook_response.text
    cards = hook_response.json()["cards"]
    assert cards, "the dataset's patient is on blinatumomab: patient-view must give at least therapy-status"
    card_uuid = cards[0]["uuid"]
    expected_rule = cards[0]["source"]["topic"]["code"]
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body = {"feedback": [{
        "card": card_uuid,
        "outcome": "overridden",
        "overrideReason": {"reason": {"code": "patient-aware", "system": "http://example.org/override-reason"}},
        "outcomeTimestamp": when.isoformat().replace("+00:00", "Z"),
    }]}

    first = await ehr.feedback(PATIENT_VIEW, body)
    again = await ehr.feedback(PATIENT_VIEW, body)  # a retry: a fresh JWT, the same feedback

    assert first.status_code == 200, first.text
    assert ehr.last_claims is not None and ehr.last_claims["aud"] == f"{BASE_URL}/cds-services/{PATIENT_VIEW}/feedback"
    assert again.status_code == 200, again.text
    rows = await app.state.store.fetch_all()
    assert len(rows) == 1
    row = rows[0]
    assert (row["service_id"], row["card_uuid"], row["rule_id"], row["outcome"]) == (
        PATIENT_VIEW, card_uuid, expected_rule, "overridden")
    assert (row["override_reason_system"], row["override_reason_code"]) == (
        "http://example.org/override-reason", "patient-aware")
    assert row["outcome_timestamp"] == when


async def test_token_issued_in_the_future_within_the_leeway_is_accepted(
    jwt_app: tuple[FastAPI, httpx.AsyncClient], ehr_key: tuple[Any, dict[str, Any]], fhir_server: FhirServer,
) -> None:
    """The Sandbox signs ``iat`` up to 0.5 s ahead (``Math.round``); any ``iat`` inside the 60 s leeway must pass.

    The harness's clock is shifted instead of racing the wall clock, so the premise holds by construction
    (the 0.5 s case itself is pinned with an injected clock in ``tests/test_auth.py``).
    """
    _, client = jwt_app
    private_key, jwk = ehr_key

    def harness(ahead_s: float) -> MiniEhr:
        return MiniEhr(client, fhir_server.base, private_key=private_key, kid=jwk["kid"], iss=ISS,
                       discovery_url=f"{BASE_URL}/cds-services", clock=lambda: time.time() + ahead_s)

    async with harness(30) as ahead, harness(120) as too_far:
        accepted = await ahead.discover()
        refused = await too_far.discover()

    assert accepted.status_code == 200, accepted.text
    assert len(accepted.json()["services"]) == 3
    assert refused.status_code == 401  # the check is real: past the leeway the same harness is refused


async def test_fhir_server_not_listed_for_the_issuer_is_a_412_without_any_request(
    ehr: MiniEhr, dataset: Dataset, token_proxy: TokenProxy, timeline_inputs: TimelineInputs,
) -> None:
    response = await ehr.call(PATIENT_VIEW, "patient-view", dataset.context("patient-view"), prefetch=False,
                              fhir_server=token_proxy.base)

    assert response.status_code == 412, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert set(outcome_fields(response)) == {f"prefetch.{k}" for k in dataset.expected}
    assert token_proxy.requests() == []  # refused before a byte was sent
    assert timeline_inputs == []


async def test_harness_fills_templates_like_the_sandbox(ehr: MiniEhr, dataset: Dataset) -> None:
    """The harness itself: 3.0-style today() arithmetic, user tokens, skipped and failed templates."""
    context = {**dataset.context("patient-view"), "userId": "Practitioner/dr-blina-1"}
    p = dataset.patient_id

    recent = await ehr.fill("Observation?patient={{context.patientId}}&date=ge{{today() - 2 days}}", context)
    skipped = await ehr.fill("Encounter/{{context.encounterId}}", context)
    role = await ehr.fill("PractitionerRole?_id={{userPractitionerRoleId}}", context)
    requests_before_failure = len(ehr.fhir_log)
    missing = await ehr.fill("Practitioner/{{userPractitionerId}}", context)
    nothing = await ehr.prefetch_for({"prefetch": {"a": "Patient/{{context.patientId}}-absent"}}, context)

    assert recent is not None and recent["resourceType"] == "Bundle"
    assert {e["resource"]["id"] for e in recent["entry"]} == {
        f"{p}-obs-alt-1", f"{p}-obs-alt-2", f"{p}-obs-ast", f"{p}-obs-bili", f"{p}-obs-temp"}
    assert skipped is None and role is None  # unresolved tokens: skipped, never sent
    assert missing is None  # a failed read is omitted (never null, never an OperationOutcome)
    failed = ehr.fhir_log[requests_before_failure]
    assert (failed.method, failed.url, failed.status) == ("GET", f"{ehr.fhir_base}/Practitioner/dr-blina-1", 404)
    assert nothing is None  # nothing succeeded → no prefetch object at all
    assert all("encounter" not in f.url.lower() and "PractitionerRole" not in f.url for f in ehr.fhir_log)
