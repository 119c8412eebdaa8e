"""``BLINA_CDS_CA_BUNDLE``: a hospital CA trusted for every outbound TLS call (FHIR server and ``jku``).

A JWK Set and a FHIR server are served over https on 127.0.0.1 with a certificate from a throw-away CA
(``trustme``); the service reaches both only when that CA is in its bundle.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from service.main import create_app
from service.settings import Settings
from tests.conftest import BASE_URL, PATIENT_VIEW, AppFactory
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair, sign
from tests.live import StandIn, Write
from tests.test_limits_live import fallback_request

ISS = "https://ehr.hospital.example"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "hospital-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


class Hospital:
    """The hospital's https endpoints: ``/jwks.json`` and a FHIR server answering ``Patient/<id>``."""

    def __init__(self, jwk: dict[str, Any], patient: dict[str, Any], *, jwks_body: bytes | None = None,
                 trickle: bool = False) -> None:
        self.jwk, self.patient, self.jwks_body, self.trickle = jwk, patient, jwks_body, trickle

    def __call__(self, path: str, write: Write) -> None:
        if path.endswith("/jwks.json"):
            body = self.jwks_body if self.jwks_body is not None else orjson.dumps({"keys": [self.jwk]})
            if not self.trickle:
                write(body)
                return
            for byte in body:
                write(bytes([byte]))
                time.sleep(0.05)
        else:
            assert path.startswith(f"/fhir/Patient/{self.patient['id']}"), path
            write(orjson.dumps(self.patient))


def hook_call(fhir_base: str) -> dict[str, Any]:
    request = fallback_request(fhir_base, missing="patient")
    request["fhirAuthorization"] = {"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 300,
                                    "scope": "patient/*.read", "subject": "blina-cds"}
    return request


def patient_of(request: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": request["context"]["patientId"], "birthDate": "1970-01-01",
            "gender": "female"}


async def call_with_jku(make_app: AppFactory, tmp_path: Path, server_tls: ssl.SSLContext, *,
                        ca_bundle: Path | None, **hospital: Any) -> tuple[int, dict[str, Any], list[str]]:
    private, jwk = make_es384_keypair()
    probe = hook_call("https://127.0.0.1:1/fhir")
    with StandIn(Hospital(jwk, patient_of(probe), **hospital), tls=server_tls) as https:
        jku = https.base.removesuffix("/fhir") + "/jwks.json"
        issuers = issuers_file(tmp_path, [issuer_entry(ISS, jku=[jku], fhir_servers=[https.base])])
        _, client = await make_app(auth="jwt", trusted_issuers_file=issuers, ca_bundle=ca_bundle)
        path = f"/cds-services/{PATIENT_VIEW}"
        token = sign(private, kid=jwk["kid"], iss=ISS, aud=BASE_URL + path, extra_headers={"jku": jku})
        request = hook_call(https.base)
        request["context"] = probe["context"]
        request["prefetch"] = probe["prefetch"]
        response = await client.post(path, json=request, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.json(), list(https.requests)


async def test_jwk_set_and_fhir_server_behind_a_hospital_ca_are_reached_with_the_bundle(
    make_app: AppFactory, tmp_path: Path, server_tls: ssl.SSLContext, ca_bundle: Path
) -> None:
    status, body, requests = await call_with_jku(make_app, tmp_path, server_tls, ca_bundle=ca_bundle)
    assert status == 200, body
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == ["therapy-status"]
    assert requests[0] == "/jwks.json"
    assert requests[1].startswith("/fhir/Patient/")


async def test_without_the_bundle_the_hospital_jwk_set_is_not_trusted(
    make_app: AppFactory, tmp_path: Path, server_tls: ssl.SSLContext
) -> None:
    status, body, requests = await call_with_jku(make_app, tmp_path, server_tls, ca_bundle=None)
    assert status == 401, body
    assert requests == []  # the TLS handshake failed: nothing was asked


async def test_without_the_bundle_the_hospital_fhir_server_is_a_412(
    make_app: AppFactory, server_tls: ssl.SSLContext
) -> None:
    request = hook_call("https://127.0.0.1:1/fhir")
    with StandIn(Hospital({}, patient_of(request)), tls=server_tls) as https:
        request["fhirServer"] = https.base
        _, client = await make_app()
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["prefetch.patient"]


async def test_a_jwk_set_over_the_size_cap_is_refused(
    make_app: AppFactory, tmp_path: Path, server_tls: ssl.SSLContext, ca_bundle: Path
) -> None:
    padding = [{"kty": "oct", "kid": f"junk-{i}", "k": "A" * 200} for i in range(2000)]  # about 500 KB
    status, body, requests = await call_with_jku(make_app, tmp_path, server_tls, ca_bundle=ca_bundle,
                                                 jwks_body=orjson.dumps({"keys": padding}))
    assert status == 401, body
    assert requests == ["/jwks.json"]


async def test_a_jwk_set_that_trickles_in_is_cut_at_the_fetch_deadline(
    make_app: AppFactory, tmp_path: Path, server_tls: ssl.SSLContext, ca_bundle: Path
) -> None:
    started = time.monotonic()
    status, body, _ = await call_with_jku(make_app, tmp_path, server_tls, ca_bundle=ca_bundle, trickle=True)
    assert status == 401, body
    assert time.monotonic() - started < 8  # the 5 s jku deadline; a byte every 50 ms would take minutes


def test_a_ca_bundle_that_is_not_pem_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="BLINA_CDS_CA_BUNDLE .*not-a-ca.pem"):
        create_app(Settings(auth="off", ca_bundle=bad, database_url=f"sqlite:///{tmp_path}/x.db"))
