"""The OpenAPI document tells the truth: schemathesis drives the app in-process (ASGI) from ``/openapi.json``.

Every generated request — valid and invalid bodies, headers and paths, with auth off and with JWT auth
(a fresh valid token per call) — must get a documented status with a body of the documented shape and
media type, and never a 5xx. Generation is seeded, so a run is repeatable; explore further with
``BLINA_CDS_TEST_SCHEMATHESIS_SEED=<n>``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import respx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from service.main import create_app
from service.settings import Settings
from tests.conftest import BASE_URL, PATIENT_VIEW
from tests.jwt_tools import EHR_ISS, issuer_entry, issuers_file, make_es384_keypair, sign

CASES_PER_OPERATION = 60
_SETTINGS = settings(
    max_examples=CASES_PER_OPERATION, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)
_KEY, _JWK = make_es384_keypair()


# Built at import: schemathesis's lazy (fixture) loader does not work with this pytest. The feedback store
# lives in a directory removed when the module's tests are done.
_TMP = tempfile.TemporaryDirectory(prefix="blina-openapi-")


# A valid request may still be answered 412 (its data cannot be had: no prefetch and no fhirServer); an invalid
# one may be answered 413 (a feedback batch over its item limit). Both are documented on the operation.
_CONFIG = f"""
seed = {int(os.environ.get("BLINA_CDS_TEST_SCHEMATHESIS_SEED", "1"))}
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "412"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415"]
"""


def _schema(name: str, **overrides: Any) -> Any:
    db = f"sqlite:///{_TMP.name}/{name}.db"
    app = create_app(Settings(database_url=db, public_base_url=BASE_URL, **overrides))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_str(_CONFIG))
    # Any other service id is a 404 whatever the body: its operation overlaps the real ones, so it is left out
    # here (a path parameter generated to break its "not one of the catalog ids" rule would hit a real one).
    # The analytics report's `since` is a date or an instant with a zone; its schema says "string" (JSON Schema
    # formats cannot say "either"), so generated strings that are not dates would count as valid requests refused.
    return schema.exclude(path_regex=r"\{service_id\}").exclude(path="/analytics/feedback")


OPEN_API = _schema("open", auth="off")
JWT_API = _schema("jwt", auth="jwt", trusted_issuers_file=issuers_file(Path(_TMP.name), issuers=[
    issuer_entry(keys=[_JWK])]))


def _ehr(request: httpx.Request) -> httpx.Response:
    """Every outbound request stays in the process: a search finds nothing, a read finds no resource."""
    if request.url.query:
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
    return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-found"}]})


@pytest.fixture(scope="module", autouse=True)
def _offline_and_cleanup() -> Iterator[None]:
    with respx.mock(assert_all_called=False) as router:
        router.route().mock(side_effect=_ehr)
        yield
        schemathesis.python.asgi.shutdown_lifespans()
    _TMP.cleanup()


def _token_for(case: Any) -> dict[str, str]:
    audience = BASE_URL + unquote(case.formatted_path)
    return {"Authorization": f"Bearer {sign(_KEY, kid=_JWK['kid'], iss=EHR_ISS, aud=audience)}"}


@OPEN_API.parametrize()
@_SETTINGS
def test_the_document_holds_without_auth(case: Any) -> None:
    case.call_and_validate()


@JWT_API.parametrize()
@_SETTINGS
def test_the_document_holds_with_jwt_auth(case: Any) -> None:
    case.call_and_validate(headers=_token_for(case))


def test_the_document_declares_every_status_and_the_limits(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/f.db", auth="off", max_hook_instance_chars=64,
                              max_feedback_items=7, max_feedback_text_chars=500))
    doc = app.openapi()
    hook = doc["paths"][f"/cds-services/{PATIENT_VIEW}"]["post"]
    feedback = doc["paths"][f"/cds-services/{PATIENT_VIEW}/feedback"]["post"]
    assert set(hook["responses"]) == {"200", "400", "412", "413", "415", "503"}  # no 401 with auth off
    assert set(feedback["responses"]) == {"200", "400", "413", "415", "503"}
    unknown = doc["paths"]["/cds-services/{service_id}"]["post"]
    assert set(unknown["responses"]) == {"400", "404"}
    assert PATIENT_VIEW in unknown["parameters"][0]["schema"]["not"]["enum"]
    body = hook["requestBody"]["content"]["application/json"]["schema"]["allOf"][1]["properties"]
    assert body["hook"] == {"const": "patient-view"}
    assert body["context"] == {"$ref": "#/components/schemas/PatientViewContext"}
    for operation in (hook, feedback):
        assert set(operation["requestBody"]["content"]) == {"application/json", "application/fhir+json"}
        for status, answer in operation["responses"].items():
            if status != "200":
                assert answer["content"] == {"application/fhir+json": {
                    "schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
    schemas = doc["components"]["schemas"]
    assert schemas["HookRequest"]["properties"]["hookInstance"]["maxLength"] == 64
    assert schemas["FeedbackRequest"]["properties"]["feedback"]["maxItems"] == 7
    comment = schemas["OverrideReason"]["properties"]["userComment"]["anyOf"][0]
    assert comment["maxLength"] == 500
    assert schemas["PatientViewContext"]["properties"]["patientId"]["pattern"] == r"^(?!\.+$)[A-Za-z0-9\-.]{1,64}$"
    assert "HTTPValidationError" not in schemas and "securitySchemes" not in doc["components"]


def test_with_jwt_auth_every_cds_operation_declares_the_bearer_token_and_401(tmp_path: Path) -> None:
    issuers = issuers_file(tmp_path, issuers=[issuer_entry(keys=[_JWK])])
    doc = create_app(Settings(database_url=f"sqlite:///{tmp_path}/f.db", trusted_issuers_file=issuers)).openapi()
    assert doc["components"]["securitySchemes"]["ehrJwt"] == {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}
    for path in ("/cds-services", f"/cds-services/{PATIENT_VIEW}", f"/cds-services/{PATIENT_VIEW}/feedback",
                 "/cds-services/{service_id}"):
        for operation in doc["paths"][path].values():
            assert operation["security"] == [{"ehrJwt": []}] and "401" in operation["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "security" not in doc["paths"]["/livez"]["get"]
