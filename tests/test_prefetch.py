"""Prefetch resolution and the FHIR fallback (service/fhir/prefetch.py, service/fhir/client.py).

The EHR's FHIR server is faked at the transport with respx; every outbound URL is checked.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx

from service.fhir.client import is_within, normalise_base
from service.fhir.prefetch import find_missing_prefetch, render_template
from tests.conftest import PATIENT_VIEW, AppFactory, outcome_fields

FHIR = "https://ehr.example.org/fhir"
TOKEN = "opaque-access-token-Zq9"
AUTH = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
        "subject": "blina-cds"}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": r} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}


async def keys_of(client: httpx.AsyncClient) -> dict[str, str]:
    services = (await client.get("/cds-services")).json()["services"]
    prefetch: dict[str, str] = next(s for s in services if s["id"] == PATIENT_VIEW)["prefetch"]
    return prefetch


def body(prefetch: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"hook": "patient-view", "hookInstance": "hi-1",
                         "context": {"userId": "Practitioner/u1", "patientId": "p1"}, **extra}
    if prefetch is not None:
        b["prefetch"] = prefetch
    return b


def route_all(mock: respx.MockRouter, *, status: int = 200) -> dict[str, respx.Route]:
    """One route per resource type on the fake EHR, each answering an empty searchset (or the patient)."""
    routes = {}
    for rtype in ("MedicationRequest", "MedicationAdministration", "Observation", "Condition", "AdverseEvent"):
        routes[rtype] = mock.get(url__regex=rf"^{FHIR}/{rtype}\?").mock(
            return_value=httpx.Response(status, json=searchset())
        )
    routes["Patient"] = mock.get(f"{FHIR}/Patient/p1").mock(return_value=httpx.Response(status, json=PATIENT))
    return routes


# ---------------------------------------------------------------- units


def test_null_is_not_missing_but_absent_and_operation_outcome_are() -> None:
    templates = {"a": "Patient/{{context.patientId}}", "b": "Observation?patient={{context.patientId}}",
                 "c": "Condition?patient={{context.patientId}}", "d": "AdverseEvent?subject=Patient/x"}
    prefetch = {"a": None, "b": OUTCOME, "c": searchset(OUTCOME)}
    # Spec: "If the CDS Client has no data to populate a template prefetch key, the prefetch template key MUST
    # have a value of null" — so null is answered data, not a missing key.
    assert find_missing_prefetch(templates, prefetch) == ["b", "c", "d"]


def test_render_template_substitutes_context_and_user_tokens() -> None:
    ctx = {"patientId": "p-1.a", "userId": "PractitionerRole/r9"}
    assert render_template("Patient/{{context.patientId}}", ctx) == "Patient/p-1.a"
    assert render_template("PractitionerRole?_id={{userPractitionerRoleId}}", ctx) == "PractitionerRole?_id=r9"
    assert render_template("Practitioner/{{userPractitionerId}}", ctx) is None  # user is a PractitionerRole
    assert render_template("Encounter/{{context.encounterId}}", ctx) is None
    assert render_template("X?draft={{context.draftOrders}}", {"draftOrders": {"a": 1}}) is None


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        (f"{FHIR}/Observation?patient=1", True),
        ("https://EHR.example.org:443/fhir/Patient/1", True),
        ("https://ehr.example.org/fhir", True),
        ("https://ehr.example.org/fhirx/Patient/1", False),
        ("https://ehr.example.org/other/Patient/1", False),
        ("http://ehr.example.org/fhir/Patient/1", False),
        ("https://ehr.example.org:8443/fhir/Patient/1", False),
        ("https://evil.example.org/fhir/Patient/1", False),
        ("https://user:pw@ehr.example.org/fhir/Patient/1", False),
        ("file:///etc/passwd", False),
        ("https://ehr.example.org/fhir/../admin/export", False),
        ("https://ehr.example.org/fhir/Patient/../../admin", False),
        ("https://ehr.example.org/fhir/Patient/%2e%2E/%2E%2e/admin", False),
    ],
)
def test_is_within_checks_origin_and_base_path(url: str, inside: bool) -> None:
    assert is_within(url, FHIR) is inside


def test_normalise_base() -> None:
    assert normalise_base("HTTPS://EHR.Example.org:443/fhir/") == "https://ehr.example.org/fhir"
    assert normalise_base("http://127.0.0.1:8091/fhir") == "http://127.0.0.1:8091/fhir"


# ---------------------------------------------------------------- the four prefetch states, through the API


async def test_full_prefetch_makes_no_fhir_request(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = {k: searchset() for k in keys}
    prefetch["patient"] = PATIENT
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR))
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert not any(r.called for r in routes.values())


async def test_null_and_empty_bundle_mean_no_data_even_without_fhir_server(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["labs"] = searchset()
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


async def test_only_missing_keys_are_fetched_with_the_bearer_token(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    del prefetch["labs"]                       # absent → fetch
    prefetch["conditions"] = OUTCOME           # OperationOutcome → unavailable → fetch
    prefetch["adverseEvents"] = searchset(OUTCOME)  # Bundle holding one → fetch
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        response = await client.post(
            f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR, fhirAuthorization=AUTH)
        )
    assert response.status_code == 200
    assert routes["Observation"].call_count == 1
    assert routes["Condition"].call_count == 1
    assert routes["AdverseEvent"].call_count == 1
    for name in ("MedicationRequest", "MedicationAdministration", "Patient"):
        assert not routes[name].called, name
    lab_request = routes["Observation"].calls[0].request
    assert lab_request.headers["authorization"] == f"Bearer {TOKEN}"
    assert lab_request.url.params["patient"] == "p1"
    assert "http://loinc.org|1742-6" in lab_request.url.params["code"]
    assert routes["AdverseEvent"].calls[0].request.url.params["subject"] == "Patient/p1"


async def test_absent_prefetch_fetches_every_key_without_auth_header_when_no_token(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
    assert response.status_code == 200
    calls = [c for r in routes.values() for c in r.calls]
    assert len(calls) == len(keys)  # one request per advertised key, no more
    assert all("authorization" not in c.request.headers for c in calls)


async def test_next_links_are_followed(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]}}
    prefetch["labs"] = searchset(obs, next_url=f"{FHIR}/Observation?page=2")
    with respx.mock() as mock:
        page2 = mock.get(f"{FHIR}/Observation?page=2").mock(
            return_value=httpx.Response(200, json=searchset(obs, next_url=f"{FHIR}/Observation?page=3"))
        )
        page3 = mock.get(f"{FHIR}/Observation?page=3").mock(return_value=httpx.Response(200, json=searchset(obs)))
        response = await client.post(
            f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR, fhirAuthorization=AUTH)
        )
    assert response.status_code == 200
    assert page2.called and page3.called
    assert page3.calls[0].request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_unsorted_search_past_the_page_cap_is_412(make_app: AppFactory) -> None:
    """Conditions are not sorted newest first: an unread page could hold the seizure that matters."""
    _, client = await make_app(fhir_max_pages=2)
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    del prefetch["conditions"]
    with respx.mock(assert_all_called=False) as mock:
        endless = mock.get(url__regex=rf"^{FHIR}/Condition\?").mock(
            side_effect=lambda request: httpx.Response(200, json=searchset(next_url=f"{FHIR}/Condition?p=more"))
        )
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR))
    assert response.status_code == 412
    assert "BLINA_CDS_FHIR_MAX_PAGES" in response.json()["issue"][0]["diagnostics"]
    assert outcome_fields(response) == ["prefetch.conditions"]  # the key that failed, not every fetched key
    assert endless.call_count == 2


async def test_warning_outcome_inside_a_prefetched_bundle_is_data_not_failure(make_app: AppFactory) -> None:
    """A searchset noting "parameter ignored" (severity warning) is used as is: no refetch, no 412."""
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    note = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "not-supported"}]}
    prefetch["adverseEvents"] = searchset(note)
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch))  # no fhirServer
    assert response.status_code == 200  # a refetch would have been a 412: there is no fhirServer
    assert response.json() == {"cards": []}


async def test_sorted_search_past_the_page_cap_keeps_the_newest_pages(make_app: AppFactory) -> None:
    _, client = await make_app(fhir_max_pages=2)
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    del prefetch["labs"]
    with respx.mock(assert_all_called=False) as mock:
        endless = mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(
            side_effect=lambda request: httpx.Response(200, json=searchset(next_url=f"{FHIR}/Observation?p=more"))
        )
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR))
    assert response.status_code == 200
    assert endless.call_count == 2


# ---------------------------------------------------------------- SSRF guard


async def test_foreign_next_link_is_refused_and_never_requested(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["labs"] = searchset(next_url="https://attacker.example.net/steal?x=1")
    with respx.mock(assert_all_called=False) as mock:
        attacker = mock.get(url__regex=r"^https://attacker\.example\.net/").mock(return_value=httpx.Response(200))
        response = await client.post(
            f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR, fhirAuthorization=AUTH)
        )
    assert response.status_code == 412
    assert not attacker.called
    assert "prefetch.labs" in outcome_fields(response)


async def test_next_link_on_another_path_of_the_same_host_is_refused(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        routes["Observation"].mock(
            return_value=httpx.Response(200, json=searchset(next_url="https://ehr.example.org/admin/export"))
        )
        admin = mock.get("https://ehr.example.org/admin/export").mock(return_value=httpx.Response(200))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(dict.fromkeys(
            [k for k in keys if not k.startswith(("labs", "bodySize", "toxicity"))]), fhirServer=FHIR))
    assert response.status_code == 412
    assert not admin.called


@pytest.mark.parametrize("escape", ["https://ehr.example.org/fhir/../admin/export",
                                    "https://ehr.example.org/fhir/%2e%2e/admin/export"])
async def test_next_link_climbing_out_of_the_base_path_is_refused(make_app: AppFactory, escape: str) -> None:
    """httpx resolves ``..`` before sending: the guard must judge the URL that would really be requested."""
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["labs"] = searchset(next_url=escape)
    with respx.mock(assert_all_called=False) as mock:
        admin = mock.get(url__regex=r"^https://ehr\.example\.org/(admin|fhir/%2e%2e)/").mock(
            return_value=httpx.Response(200, json=searchset()))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch, fhirServer=FHIR))
    assert response.status_code == 412
    assert "prefetch.labs" in outcome_fields(response)
    assert not admin.called


async def test_patient_id_cannot_steer_a_fetch_out_of_the_base_path(make_app: AppFactory) -> None:
    _, client = await make_app()
    request = body(None, fhirServer=FHIR)
    request["context"]["patientId"] = "../../admin"
    with respx.mock(assert_all_called=False) as mock:
        admin = mock.get(url__regex=r"^https://ehr\.example\.org/admin").mock(
            return_value=httpx.Response(200, json=PATIENT))
        route_all(mock)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 400
    assert outcome_fields(response) == ["context.patientId"]
    assert not admin.called


async def test_fhir_server_not_allowed_for_the_issuer_is_412_before_any_request(make_app: AppFactory) -> None:
    from service.auth import Caller
    from service.routes import get_caller

    app, client = await make_app()
    app.dependency_overrides[get_caller] = lambda: Caller(iss="https://ehr.example.org",
                                                           fhir_servers=("https://ehr.example.org/fhir",))
    with respx.mock(assert_all_called=False) as mock:
        other = mock.get(url__regex=r"^https://elsewhere\.example\.org/").mock(return_value=httpx.Response(200))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}",
                                     json=body(None, fhirServer="https://elsewhere.example.org/fhir"))
        allowed = route_all(mock)
        ok = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR + "/"))
    assert response.status_code == 412
    assert not other.called
    assert ok.status_code == 200
    assert allowed["Patient"].called


# ---------------------------------------------------------------- 412 when data cannot be had


async def test_no_fhir_server_and_missing_keys_is_412(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["patient"] = OUTCOME
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch))
    assert response.status_code == 412
    assert outcome_fields(response) == ["prefetch.patient"]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(401, json=OUTCOME),
        httpx.Response(403, json=OUTCOME),
        httpx.Response(500, text="boom"),
        httpx.Response(503),
        httpx.Response(200, text="<html>login</html>"),
        httpx.Response(200, json=["not", "fhir"]),
        httpx.Response(200, json=searchset(OUTCOME)),
        httpx.Response(302, headers={"location": "https://elsewhere.example.org/"}),
        httpx.ConnectError("unreachable"),
        httpx.ReadTimeout("slow"),
    ],
    ids=["401", "403", "500", "503", "html", "json-array", "error-outcome", "redirect", "unreachable", "timeout"],
)
async def test_fhir_failures_are_412_never_500(make_app: AppFactory, answer: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, client = await make_app()
    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)
        failing = mock.get(url__regex=rf"^{FHIR}/Observation\?")
        if isinstance(answer, Exception):
            failing.mock(side_effect=answer)
        else:
            failing.mock(return_value=answer)
        response = await client.post(
            f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR, fhirAuthorization=AUTH)
        )
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert TOKEN not in response.text
    assert all(TOKEN not in repr(r.__dict__) for r in caplog.records)
    assert all("patient=p1" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("dropped", [httpx.RemoteProtocolError("Server disconnected without sending a response"),
                                     httpx.ReadError("Connection reset by peer")], ids=["closed", "reset"])
async def test_a_fhir_get_cut_off_by_a_dropped_connection_is_sent_once_more(make_app: AppFactory,
                                                                             dropped: Exception) -> None:
    """A server that closes an idle kept-alive connection just as we reuse it (seen under load against sekmet-fhir,
    whose keep-alive timeout equals httpx's default): the GET is sent again, the hook call answers with its data."""
    _, client = await make_app()
    seen: list[str] = []

    def first_dropped(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if seen.count(str(request.url)) == 1:
            raise dropped
        return httpx.Response(200, json=searchset())

    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)["Observation"].mock(side_effect=first_dropped)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
    assert response.status_code == 200, response.text
    assert seen and all(seen.count(url) == 2 for url in seen)  # every Observation search: dropped, then sent again


async def test_a_fhir_get_dropped_twice_or_refused_is_412_without_more_attempts(make_app: AppFactory) -> None:
    _, client = await make_app()
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        routes["Observation"].mock(side_effect=httpx.ReadError("reset"))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
    assert response.status_code == 412
    assert "unreachable or too slow (ReadError)" in response.json()["issue"][0]["diagnostics"]
    urls = [str(call.request.url) for call in routes["Observation"].calls]
    assert urls and all(urls.count(url) <= 2 for url in urls)

    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        routes["Condition"].mock(side_effect=httpx.ConnectError("refused"))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
    assert response.status_code == 412
    assert routes["Condition"].call_count == 1  # a refused connection is not a dropped one: not sent again


async def test_slow_fhir_server_gives_412_within_the_timeout(make_app: AppFactory) -> None:
    import asyncio

    _, client = await make_app(fhir_timeout_s=0.2)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=searchset())

    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)
        mock.get(url__regex=rf"^{FHIR}/Condition\?").mock(side_effect=slow)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
    assert response.status_code == 412
    assert "did not answer within 0.2 s" in response.json()["issue"][0]["diagnostics"]


async def test_prefetch_value_of_wrong_shape_is_400(make_app: AppFactory) -> None:
    _, client = await make_app()
    keys = await keys_of(client)
    prefetch: dict[str, Any] = dict.fromkeys(keys)
    prefetch["labs"] = "Observation/1"
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(prefetch))
    assert response.status_code == 400
    assert outcome_fields(response) == ["prefetch.labs"]


async def test_first_failure_cancels_the_other_fetches(make_app: AppFactory) -> None:
    import asyncio

    _, client = await make_app()
    finished: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        finished.append(request.url.path)
        return httpx.Response(200, json=searchset())

    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)
        mock.get(url__regex=rf"^{FHIR}/Condition\?").mock(side_effect=slow)
        mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(500))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=body(None, fhirServer=FHIR))
        await asyncio.sleep(0.5)  # long enough for a fetch left running to finish
    assert response.status_code == 412
    assert finished == []
