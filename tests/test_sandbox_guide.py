"""The README's Sandbox guide matches the code: its issuers file loads, its links open the example patients,
and the log lines it tells a tester to look for are the ones the service writes."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from service import examples
from service.auth import TrustedIssuers
from tests.conftest import PATIENT_VIEW, AppFactory
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair, sign

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GUIDE = README[README.index("## Trying it in the CDS Hooks Sandbox"):README.index("## Analyst tools")]
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"  # cds-hooks-2.0.md §8.2


def test_sandbox_issuers_file_loads_and_is_marked_local_testing_only() -> None:
    path = ROOT / "deploy" / "sandbox-issuers.json"
    issuers = TrustedIssuers.from_file(path)
    issuer = issuers.get(SANDBOX_ISS)
    assert issuer is not None and len(issuers) == 1
    assert issuer.jku == (SANDBOX_JKU,)
    assert issuer.fhir_servers == ("http://127.0.0.1:8091/fhir",)  # `make fhir-dev`
    assert "LOCAL TESTING ONLY" in json.loads(path.read_text())["comment"]
    assert "deploy/sandbox-issuers.json" in GUIDE and "local testing only" in GUIDE


def test_an_issuers_file_comment_must_be_text() -> None:
    with pytest.raises(ValueError, match="comment: expected a string"):
        TrustedIssuers.from_dict({"comment": 1, "issuers": [issuer_entry(keys=[make_es384_keypair()[1]])]})


def _sandbox_links(text: str) -> dict[str, str]:
    links = {}
    for url in re.findall(r"\[open\]\((http://127\.0\.0\.1:8080/\?[^)]+)\)", text):
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["fhirServiceUrl"] == "http://127.0.0.1:8091/fhir"
        assert query["serviceDiscoveryURL"] == "http://127.0.0.1:8000/cds-services"
        links[query["patientId"]] = url
    return links


def test_every_example_patient_view_has_a_sandbox_link() -> None:
    """The generated examples README links every patient-view call; the guide's own example link is one of them."""
    links = _sandbox_links((examples.examples_dir() / "README.md").read_text())
    guide_links = _sandbox_links(GUIDE)
    assert guide_links and set(guide_links) <= set(links)
    assert "fhir_examples/README.md" in GUIDE
    expected = set()
    for name in examples.names():
        for call in examples.load_manifest(name)["calls"]:
            if call["hook"] == "patient-view":
                request = json.loads((examples.examples_dir() / name / call["request"]).read_text())
                expected.add(request["context"]["patientId"])
    assert set(links) == expected


@pytest.fixture
def sandbox_keys() -> tuple[Any, dict[str, Any]]:
    return make_es384_keypair(kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")


async def test_localhost_audience_is_a_401_logged_as_jwt_rejected(
        make_app: AppFactory, tmp_path: Path, sandbox_keys: tuple[Any, dict[str, Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    private, jwk = sandbox_keys
    path = issuers_file(tmp_path, [issuer_entry(SANDBOX_ISS, keys=[jwk], fhir_servers=[])])
    _, client = await make_app(auth="jwt", trusted_issuers_file=path, public_base_url="http://127.0.0.1:8000")
    typed = "http://localhost:8000/cds-services"  # what the tester typed in the Sandbox
    token = sign(private, kid=jwk["kid"], iss=SANDBOX_ISS, aud=typed)
    with caplog.at_level(logging.WARNING, logger="blina_cds.auth"):
        response = await client.get("/cds-services", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    [message] = [r.getMessage() for r in caplog.records if r.name == "blina_cds.auth"]
    assert message.startswith("JWT rejected: aud 'http://localhost:8000/cds-services' does not equal "
                              "'http://127.0.0.1:8000/cds-services'")
    assert "`JWT rejected: <reason> (iss=… jti=…)`" in GUIDE

    good = sign(private, kid=jwk["kid"], iss=SANDBOX_ISS, aud="http://127.0.0.1:8000/cds-services")
    assert (await client.get("/cds-services", headers={"Authorization": f"Bearer {good}"})).status_code == 200


async def test_a_refused_preflight_is_logged_as_cors_refused(make_app: AppFactory,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    _, client = await make_app(cors_origins="http://127.0.0.1:8080")
    preflight = {"Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with caplog.at_level(logging.WARNING, logger="blina_cds.cors"):
        refused = await client.options(f"/cds-services/{PATIENT_VIEW}", headers=preflight)
        allowed = await client.options(f"/cds-services/{PATIENT_VIEW}",
                                       headers={**preflight, "Origin": "http://127.0.0.1:8080"})
    assert (refused.status_code, allowed.status_code) == (400, 200)
    messages = [r.getMessage() for r in caplog.records if r.name == "blina_cds.cors"]
    assert messages == ["CORS refused: Disallowed CORS origin (origin=http://localhost:8080)"]
    assert "`CORS refused: Disallowed CORS origin (origin=…)`" in GUIDE


def test_the_guide_sends_order_hooks_elsewhere() -> None:
    assert "Order hooks cannot be tested from the Sandbox" in GUIDE
    for command in ("blina-cds examples request premed-missing c2d1-sign", "curl", "/preview", "blina-cds preview"):
        assert command in GUIDE
    assert "make fhir-dev FHIR_PORT=" in GUIDE
    makefile = (ROOT / "Makefile").read_text()
    assert "FHIR_PORT ?= 8091" in makefile and "port: $(FHIR_PORT)" in makefile
