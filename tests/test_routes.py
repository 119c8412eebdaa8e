"""The HTTP surface: discovery, request validation (400/404), response shape, slashes, health, metrics."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.conftest import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, AppFactory, outcome_fields

USER = "Practitioner/example"


def null_prefetch(keys: list[str]) -> dict[str, None]:
    return dict.fromkeys(keys)


async def service_keys(client: httpx.AsyncClient, service_id: str) -> list[str]:
    services = (await client.get("/cds-services")).json()["services"]
    return list(next(s for s in services if s["id"] == service_id)["prefetch"])


def hook_body(hook: str = "patient-view", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": USER, "patientId": "p1"},
    }
    body.update(overrides)
    return body


# ---------------------------------------------------------------- discovery


async def test_discovery_lists_the_three_services(client: httpx.AsyncClient) -> None:
    response = await client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {sid: s["hook"] for sid, s in services.items()} == {
        ORDER_SIGN: "order-sign",
        ORDER_SELECT: "order-select",
        PATIENT_VIEW: "patient-view",
    }
    for s in services.values():
        assert s["title"] and s["description"]
        assert set(s) <= {"hook", "id", "title", "description", "prefetch", "usageRequirements"}


_TOKEN = re.compile(r"\{\{(.*?)\}\}")
_ALLOWED_TOKENS = {"context.patientId", "context.userId", "context.encounterId", "userPractitionerId",
                   "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
_SEARCH_PARAMS = {"patient", "subject", "code", "_sort", "_count", "category", "status", "date"}


async def test_prefetch_templates_are_valid_cds_hooks_2_0(client: httpx.AsyncClient) -> None:
    """Only root-level context tokens and the four user tokens; no FHIRPath, no today(); the query subset."""
    for service in (await client.get("/cds-services")).json()["services"]:
        for key, template in service["prefetch"].items():
            tokens = set(_TOKEN.findall(template))
            assert tokens and tokens <= _ALLOWED_TOKENS, (key, tokens)
            assert "today" not in template and "%" not in template and "ofType" not in template
            path, _, query = template.partition("?")
            resource_type = path.split("/")[0]
            assert resource_type in {"Patient", "MedicationRequest", "MedicationAdministration", "Observation",
                                     "Condition", "AdverseEvent"}
            if not query:
                assert path == "Patient/{{context.patientId}}"
                continue
            params = parse_qsl(query, keep_blank_values=True)
            for name, value in params:
                assert ":" not in name, f"{key}: modifier {name} is outside the prefetch query subset"
                if name == "_include":  # the one step outside the subset: a record's Medication, in the same answer
                    assert value == f"{resource_type}:medication", (key, value)
                    continue
                assert name in _SEARCH_PARAMS, (key, name)
                if name == "_sort":
                    assert value.lstrip("-") == "date"  # R4 syntax, not the spec example's sort:desc
            assert {"patient", "subject"} & {n for n, _ in params}, key


async def test_prefetch_searches_by_code_where_rules_use_specific_codes(client: httpx.AsyncClient) -> None:
    prefetch = (await client.get("/cds-services")).json()["services"][0]["prefetch"]
    # FHIR's `code` on these searches reads medicationCodeableConcept only: a record that points at a Medication
    # would be lost. They search by patient, with the referenced Medications included, and are filtered locally.
    assert prefetch["medicationRequests"] == (
        "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication&_count=200")
    assert prefetch["medicationAdministrations"] == (
        "MedicationAdministration?patient={{context.patientId}}&_include=MedicationAdministration:medication"
        "&_count=200")
    assert "http://loinc.org|1742-6" in prefetch["labs"] and "http://loinc.org|1975-2" in prefetch["labs"]
    assert "http://loinc.org|29463-7" in prefetch["bodySize"]
    # toxicity records carry local codes or only text: no code filter may drop them
    for key in ("toxicityObservations", "conditions", "adverseEvents"):
        assert "code=" not in prefetch[key]


# ---------------------------------------------------------------- 400 / 404


async def test_malformed_json_is_400_with_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", content=b'{"hook": ',
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert outcome_fields(response) == ["body"]
    assert "not valid JSON" in response.json()["issue"][0]["diagnostics"]


async def test_body_that_is_not_an_object_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=["hook"])
    assert response.status_code == 400
    assert outcome_fields(response) == ["body"]


@pytest.mark.parametrize("field", ["hook", "hookInstance", "context"])
async def test_missing_required_field_is_400_naming_it(client: httpx.AsyncClient, field: str) -> None:
    body = hook_body()
    del body[field]
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 400
    assert outcome_fields(response) == [field]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hookInstance": 12345}, "hookInstance"),
        ({"hook": ["patient-view"]}, "hook"),
        ({"context": "p1"}, "context"),
        ({"prefetch": ["x"]}, "prefetch"),
        ({"fhirServer": 42}, "fhirServer"),
        ({"fhirServer": "ftp://ehr.example.org/fhir"}, "fhirServer"),
        ({"context": {"userId": USER, "patientId": 7}}, "context.patientId"),
        ({"context": {"userId": USER}}, "context.patientId"),
        ({"context": {"patientId": "p1"}}, "context.userId"),
    ],
)
async def test_wrong_types_and_missing_context_fields_are_400(
    client: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_body(**overrides))
    assert response.status_code == 400
    assert field in outcome_fields(response)


@pytest.mark.parametrize(
    ("service", "hook", "context", "field"),
    [
        (ORDER_SIGN, "order-sign", {"userId": USER, "patientId": "p1"}, "context.draftOrders"),
        (ORDER_SIGN, "order-sign", {"userId": USER, "patientId": "p1", "draftOrders": {"resourceType": "Patient"}},
         "context.draftOrders.resourceType"),
        (ORDER_SELECT, "order-select", {"userId": USER, "patientId": "p1",
                                        "draftOrders": {"resourceType": "Bundle", "entry": []}},
         "context.selections"),
        (ORDER_SELECT, "order-select", {"userId": USER, "patientId": "p1", "selections": "MedicationRequest/1",
                                        "draftOrders": {"resourceType": "Bundle"}}, "context.selections"),
    ],
)
async def test_hook_specific_context_is_validated(
    client: httpx.AsyncClient, service: str, hook: str, context: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/cds-services/{service}", json=hook_body(hook, context=context))
    assert response.status_code == 400
    assert field in outcome_fields(response)


async def test_fhir_authorization_without_fhir_server_is_400(client: httpx.AsyncClient) -> None:
    auth = {"access_token": "secret-token", "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
            "subject": "blina-cds"}
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_body(fhirAuthorization=auth))
    assert response.status_code == 400
    assert "fhirServer" in response.json()["issue"][0]["diagnostics"]
    assert "secret-token" not in response.text


async def test_hook_that_does_not_match_the_service_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_body("order-sign"))
    assert response.status_code == 400
    assert outcome_fields(response) == ["hook"]


async def test_unknown_service_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/cds-services/not-a-service", json=hook_body())
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"
    feedback = await client.post("/cds-services/not-a-service/feedback", json={"feedback": []})
    assert feedback.status_code == 404


@pytest.mark.parametrize("path", [f"/cds-services/{PATIENT_VIEW}/", "/cds-services/"])
async def test_no_redirect_on_trailing_slash(client: httpx.AsyncClient, path: str) -> None:
    response = await client.request("POST" if path.count("/") > 2 else "GET", path, json=hook_body())
    assert response.status_code == 404  # never a 307: a redirected preflighted POST fails in browsers
    assert "location" not in response.headers


async def test_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    _, client = await make_app(max_body_bytes=2048)
    body = hook_body(prefetch={"patient": {"resourceType": "Patient", "id": "p1", "text": {"div": "x" * 4096}}})
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 413
    assert outcome_fields(response) == ["body"]


# ---------------------------------------------------------------- accepted requests


async def test_unknown_fields_and_extensions_are_accepted(client: httpx.AsyncClient) -> None:
    keys = await service_keys(client, PATIENT_VIEW)
    body = hook_body(
        prefetch=null_prefetch(keys),
        extension={"com.example.ehr": {"anything": [1, 2]}},
        somethingNew=True,
        context={"userId": USER, "patientId": "p1", "futureField": {"x": 1}, "extension": {"com.example": 1}},
    )
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


async def test_order_sign_without_blinatumomab_draft_needs_no_data(client: httpx.AsyncClient) -> None:
    """Not a blinatumomab order: no cards, and nothing to fetch (so no fhirServer is needed, no 412)."""
    draft = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                       "code": "197361", "display": "amlodipine 5 MG Oral Tablet"}]},
             "subject": {"reference": "Patient/p1"}}
    context = {"userId": USER, "patientId": "p1",
               "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]}}
    response = await client.post(f"/cds-services/{ORDER_SIGN}", json=hook_body("order-sign", context=context))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


async def test_health_says_degraded_but_stays_200_when_the_store_is_gone(make_app: AppFactory) -> None:
    """Hook calls answer without the store: a database outage must not take every replica out of rotation."""
    app, client = await make_app()
    await app.state.store.close()
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "degraded", "store": "unreachable"})
    live = await client.get("/livez")  # the liveness probe never asks the database
    assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "store": "ok"}
    await client.get("/cds-services")
    await client.post("/cds-services/nope", json={})
    metrics = (await client.get("/metrics")).text
    assert 'blina_cds_requests_total{method="GET",route="/cds-services",status="2xx"}' in metrics
    assert 'route="/cds-services/{id}",status="4xx"' in metrics
    assert "blina_cds_fhir_fetches_total" in metrics
    assert "blina_cds_cards_total" in metrics
