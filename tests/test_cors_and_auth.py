"""CORS on every response (errors included) and JWT auth on discovery, hook and feedback routes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BASE_URL, PATIENT_VIEW, AppFactory
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair, sign

ISS = "https://ehr.example.org"
ORIGIN = "https://sandbox.example.org"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.fixture
def keys() -> tuple[Any, dict[str, Any]]:
    return make_es384_keypair()


@pytest.fixture
async def jwt_client(make_app: AppFactory, tmp_path: Path, keys: tuple[Any, dict[str, Any]]) -> httpx.AsyncClient:
    _, jwk = keys
    path = issuers_file(tmp_path, issuers=[issuer_entry(ISS, keys=[jwk],
                                                        fhir_servers=["https://ehr.example.org/fhir"])])
    _, client = await make_app(auth="jwt", trusted_issuers_file=path, cors_origins=ORIGIN)
    return client


def token(keys: tuple[Any, dict[str, Any]], path: str, **claims: Any) -> str:
    private, jwk = keys
    claims.setdefault("aud", BASE_URL + path)
    return sign(private, kid=jwk["kid"], iss=ISS, **claims)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def hook() -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": "h1", "context": {"userId": "Practitioner/1", "patientId": "p1"}}


# ---------------------------------------------------------------- CORS


async def test_preflight_is_answered_without_a_token(jwt_client: httpx.AsyncClient) -> None:
    response = await jwt_client.options(f"/cds-services/{PATIENT_VIEW}", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed  # listed explicitly: browsers refuse "*" for Authorization
    assert "*" not in allowed
    assert set(response.headers["access-control-allow-methods"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_error_responses_carry_cors_headers(jwt_client: httpx.AsyncClient,
                                                  keys: tuple[Any, dict[str, Any]]) -> None:
    h = {"Origin": ORIGIN}
    unauthorized = await jwt_client.post(f"/cds-services/{PATIENT_VIEW}", json=hook(), headers=h)
    assert unauthorized.status_code == 401
    not_found = await jwt_client.post("/cds-services/nope", json=hook(),
                                      headers={**h, **bearer(token(keys, "/cds-services/nope"))})
    assert not_found.status_code == 404
    bad = await jwt_client.post(f"/cds-services/{PATIENT_VIEW}", content=b"{",
                                headers={**h, "Content-Type": "application/json",
                                         **bearer(token(keys, f"/cds-services/{PATIENT_VIEW}"))})
    assert bad.status_code == 400
    precondition = await jwt_client.post(f"/cds-services/{PATIENT_VIEW}", json=hook(),
                                         headers={**h, **bearer(token(keys, f"/cds-services/{PATIENT_VIEW}"))})
    assert precondition.status_code == 412
    for response in (unauthorized, not_found, bad, precondition):
        assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_unexpected_error_is_a_500_outcome_with_cors(make_app: AppFactory) -> None:
    from service.routes import get_engine

    app, client = await make_app(cors_origins="*")

    def broken() -> None:
        raise RuntimeError("boom")

    app.dependency_overrides[get_engine] = broken
    response = await client.get("/cds-services", headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "boom" not in response.text
    assert response.headers["access-control-allow-origin"] == "*"


async def test_origin_not_in_the_list_gets_no_cors_grant(jwt_client: httpx.AsyncClient) -> None:
    evil = "https://evil.example.net"
    preflight = await jwt_client.options(f"/cds-services/{PATIENT_VIEW}", headers={**PREFLIGHT, "Origin": evil})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers  # neither the origin nor "*"
    simple = await jwt_client.get("/healthz", headers={"Origin": evil})
    assert "access-control-allow-origin" not in simple.headers


# ---------------------------------------------------------------- JWT on every route


async def test_discovery_hook_and_feedback_require_a_valid_jwt(jwt_client: httpx.AsyncClient,
                                                               keys: tuple[Any, dict[str, Any]]) -> None:
    assert (await jwt_client.get("/cds-services")).status_code == 401
    ok = await jwt_client.get("/cds-services", headers=bearer(token(keys, "/cds-services")))
    assert ok.status_code == 200 and len(ok.json()["services"]) == 3

    feedback_path = f"/cds-services/{PATIENT_VIEW}/feedback"
    fb = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-03-10T10:00:00Z"}]}
    assert (await jwt_client.post(feedback_path, json=fb)).status_code == 401
    accepted = await jwt_client.post(feedback_path, json=fb, headers=bearer(token(keys, feedback_path)))
    assert accepted.status_code == 200
    assert accepted.json() == {"received": 1, "stored": 1}

    # the hook call passes auth and then needs data it cannot get (no prefetch, no fhirServer): 412, not 401
    path = f"/cds-services/{PATIENT_VIEW}"
    assert (await jwt_client.post(path, json=hook(), headers=bearer(token(keys, path)))).status_code == 412


async def test_aud_must_be_the_exact_url_called(jwt_client: httpx.AsyncClient,
                                                keys: tuple[Any, dict[str, Any]]) -> None:
    path = f"/cds-services/{PATIENT_VIEW}"
    for wrong in ("/cds-services", f"{path}/feedback", "/cds-services/blinatumomab-order-sign"):
        response = await jwt_client.post(path, json=hook(), headers=bearer(token(keys, wrong)))
        assert response.status_code == 401, wrong
    array_aud = token(keys, path, aud=[BASE_URL + path])
    assert (await jwt_client.post(path, json=hook(), headers=bearer(array_aud))).status_code == 412


async def test_401_body_does_not_say_which_check_failed(jwt_client: httpx.AsyncClient,
                                                        keys: tuple[Any, dict[str, Any]],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    expired = token(keys, "/cds-services", iat=1_000_000_000, exp=1_000_000_300)
    response = await jwt_client.get("/cds-services", headers=bearer(expired))
    assert response.status_code == 401
    text = json.dumps(response.json()).lower()
    assert "exp" not in text and "expired" not in text
    assert response.json()["issue"][0]["diagnostics"] == "Authentication failed"
    assert any("exp" in repr(r.__dict__).lower() for r in caplog.records if r.name.startswith("blina_cds"))
    assert all(expired not in repr(r.__dict__) for r in caplog.records)


async def test_token_living_longer_than_the_maximum_is_refused(jwt_client: httpx.AsyncClient,
                                                               keys: tuple[Any, dict[str, Any]]) -> None:
    import time

    now = int(time.time())
    long_lived = token(keys, "/cds-services", iat=now, exp=now + 2 * 3600)
    assert (await jwt_client.get("/cds-services", headers=bearer(long_lived))).status_code == 401
    sandbox_like = token(keys, "/cds-services", iat=now, exp=now + 300)
    assert (await jwt_client.get("/cds-services", headers=bearer(sandbox_like))).status_code == 200


async def test_replayed_token_is_refused(jwt_client: httpx.AsyncClient, keys: tuple[Any, dict[str, Any]]) -> None:
    t = token(keys, "/cds-services")
    assert (await jwt_client.get("/cds-services", headers=bearer(t))).status_code == 200
    assert (await jwt_client.get("/cds-services", headers=bearer(t))).status_code == 401


async def test_health_and_metrics_need_no_token(jwt_client: httpx.AsyncClient) -> None:
    health = await jwt_client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "store": "ok"})
    metrics = await jwt_client.get("/metrics")
    assert metrics.status_code == 200 and "blina_cds_requests_total" in metrics.text


def test_jwt_mode_without_issuers_file_refuses_to_start() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="TRUSTED_ISSUERS_FILE"):
        Settings(auth="jwt", trusted_issuers_file=None)
