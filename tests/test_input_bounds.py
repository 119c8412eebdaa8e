"""Every value from outside is bounded and validated before it is used: sizes, ids that go into URLs,
``fhirServer``, media types, the ``Authorization`` header, and the resource type a read answers with."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from service.auth import Caller
from service.fhir.prefetch import _client_for, render_template
from service.routes import MAX_PROBLEMS, get_caller
from service.schemas import HookRequest
from tests.conftest import ORDER_SIGN, PATIENT_VIEW, AppFactory, outcome_fields
from tests.test_feedback import accepted, overridden
from tests.test_prefetch import FHIR, PATIENT, body, route_all, searchset

FEEDBACK = f"/cds-services/{ORDER_SIGN}/feedback"
HOOK = f"/cds-services/{PATIENT_VIEW}"


# ---------------------------------------------------------------- feedback


async def test_a_feedback_batch_over_the_item_limit_is_413_and_nothing_is_stored(make_app: AppFactory) -> None:
    app, client = await make_app(max_feedback_items=100)
    items = [accepted(card=f"card-{i}") for i in range(101)]
    response = await client.post(FEEDBACK, json={"feedback": items})
    assert response.status_code == 413
    assert outcome_fields(response) == ["feedback"]
    assert await app.state.store.count() == 0
    ok = await client.post(FEEDBACK, json={"feedback": items[:100]})
    assert ok.status_code == 200 and ok.json() == {"received": 100, "stored": 100}


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (overridden(userComment="x" * 2001), "feedback[0].overrideReason.userComment"),
        (overridden(reason={"system": "urn:x", "code": "c", "display": "d" * 2001}),
         "feedback[0].overrideReason.reason.display"),
        (overridden(reason={"system": "urn:x", "code": "c" * 2001}), "feedback[0].overrideReason.reason.code"),
        (accepted(card="c" * 2001), "feedback[0].card"),
        ({**accepted(), "acceptedSuggestions": [{"id": f"s{i}"} for i in range(101)]},
         "feedback[0].acceptedSuggestions"),
        ({**accepted(), "extension": {"x": ["y" * 2001]}}, "feedback[0].extension.x[0]"),
    ],
)
async def test_a_feedback_text_over_its_limit_is_400_naming_it_and_nothing_is_stored(
    make_app: AppFactory, item: dict[str, Any], field: str
) -> None:
    app, client = await make_app(max_feedback_text_chars=2000, max_feedback_items=100)
    response = await client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400
    assert outcome_fields(response) == [field]
    assert await app.state.store.count() == 0


async def test_a_feedback_comment_at_the_limit_is_stored_whole(make_app: AppFactory) -> None:
    app, client = await make_app(max_feedback_text_chars=2000)
    response = await client.post(FEEDBACK, json={"feedback": [overridden(userComment="x" * 2000)]})
    assert response.status_code == 200
    [row] = await app.state.store.fetch_all()
    assert row["user_comment"] == "x" * 2000


async def test_deeply_nested_feedback_extension_is_not_a_500(make_app: AppFactory) -> None:
    app, client = await make_app()
    nested: Any = "leaf"
    for _ in range(900):
        nested = [nested]
    response = await client.post(FEEDBACK, json={"feedback": [{**accepted(), "extension": {"deep": nested}}]})
    assert response.status_code in (200, 400)
    assert response.json() == {"received": 1, "stored": 1}  # the extension is not kept: the feedback itself is
    assert await app.state.store.count() == 1


# ---------------------------------------------------------------- hook request


async def test_a_hook_instance_over_128_characters_is_400(make_app: AppFactory) -> None:
    _, client = await make_app()
    response = await client.post(HOOK, json=body({}, hookInstance="h" * 129))
    assert response.status_code == 400
    assert outcome_fields(response) == ["hookInstance"]
    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)
        at_limit = await client.post(HOOK, json=body(None, hookInstance="h" * 128, fhirServer=FHIR))
    assert at_limit.status_code == 200


async def test_a_request_with_many_invalid_entries_names_only_the_first_ones(make_app: AppFactory) -> None:
    """A 400 lists at most ``MAX_PROBLEMS`` invalid fields and counts the rest: it never grows with the input."""
    _, client = await make_app()
    request = body(None, fhirServer=FHIR)
    request["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [1] * 5000}
    response = await client.post(f"/cds-services/{ORDER_SIGN}", json={**request, "hook": "order-sign"})
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert [i["expression"] for i in issues[:MAX_PROBLEMS]] == [
        [f"context.draftOrders.entry.{i}"] for i in range(MAX_PROBLEMS)]
    assert issues[MAX_PROBLEMS:] == [{"severity": "error", "code": "invalid", "expression": ["context"],
                                      "diagnostics": f"context: {5000 - MAX_PROBLEMS} more problems"}]


BAD_IDS = ["p1,p2", "p1\n", "p1&_count=1000", "../Observation", "..", ".", "p 1", "p1?x=1", "p%2F1", "é", "p" * 65, ""]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_patient_id_that_is_not_a_fhir_id_is_400_naming_it_before_any_fetch(
    make_app: AppFactory, bad: str
) -> None:
    _, client = await make_app()
    request = body(None, fhirServer=FHIR)
    request["context"]["patientId"] = bad
    with respx.mock(assert_all_called=False) as mock:
        routes = route_all(mock)
        anything = mock.get(url__regex=r".*").mock(return_value=httpx.Response(200, json=searchset()))
        response = await client.post(HOOK, json=request)
    assert response.status_code == 400
    assert outcome_fields(response) == ["context.patientId"]
    assert not anything.called and not any(r.called for r in routes.values())


async def test_an_encounter_id_that_is_not_a_fhir_id_is_400_naming_it(make_app: AppFactory) -> None:
    _, client = await make_app()
    request = body({})
    request["context"]["encounterId"] = "e1&patient=other"
    response = await client.post(HOOK, json=request)
    assert response.status_code == 400
    assert outcome_fields(response) == ["context.encounterId"]


def test_every_template_token_must_be_a_fhir_id() -> None:
    from service.errors import InvalidRequest

    assert render_template("Patient/{{context.patientId}}", {"patientId": "A-z.9"}) == "Patient/A-z.9"
    with pytest.raises(InvalidRequest) as refused:
        render_template("Encounter/{{context.encounterId}}", {"encounterId": "e1,e2"})
    assert refused.value.expression == ["context.encounterId"]
    with pytest.raises(InvalidRequest) as user:
        render_template("Practitioner/{{userPractitionerId}}", {"userId": "Practitioner/u1&_count=9"})
    assert user.value.expression == ["context.userId"]


@pytest.mark.parametrize(
    "server",
    [
        f"{FHIR}?_type=Patient&x=",  # the attack: every fetch became a system-wide search
        f"{FHIR}?",
        f"{FHIR}#frag",
        "https://user:pw@ehr.example.org/fhir",
        "https://ehr.example.org@evil.example.org/fhir",
        "https://ehr.example.org:notaport/fhir",
        "https:///fhir",
        f"{FHIR}\n",
        "https://ehr.example.org/fhir/a b",
    ],
)
async def test_a_fhir_server_with_query_fragment_or_userinfo_is_400_and_nothing_is_fetched(
    make_app: AppFactory, server: str
) -> None:
    app, client = await make_app()
    app.dependency_overrides[get_caller] = lambda: Caller(iss="https://ehr.example.org", fhir_servers=(FHIR,))
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.get(url__regex=r".*").mock(return_value=httpx.Response(200, json=searchset()))
        response = await client.post(HOOK, json=body(None, fhirServer=server))
    assert response.status_code == 400
    assert outcome_fields(response) == ["fhirServer"]
    assert not anything.called


async def test_the_url_fetched_is_the_allow_listed_entry_not_the_request_string() -> None:
    allowed = "https://ehr.example.org:443/fhir"
    request = HookRequest.model_validate(body(None, fhirServer="https://EHR.Example.org/fhir/"))
    async with httpx.AsyncClient() as http:
        client = _client_for(request, http=http, allowed_servers=(allowed,), max_pages=1, max_response_bytes=1024,
                             max_total_bytes=1024, keys=["k"])
    assert client.base == allowed


async def test_a_read_answered_with_another_resource_type_is_412_naming_the_key(make_app: AppFactory) -> None:
    _, client = await make_app()
    with respx.mock(assert_all_called=False) as mock:
        route_all(mock)
        mock.get(f"{FHIR}/Patient/p1").mock(return_value=httpx.Response(200, json=searchset(PATIENT)))
        response = await client.post(HOOK, json=body(None, fhirServer=FHIR))
    assert response.status_code == 412
    assert outcome_fields(response) == ["prefetch.patient"]


async def test_a_prefetched_read_of_another_resource_type_is_400_naming_the_key(make_app: AppFactory) -> None:
    _, client = await make_app()
    wrong = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}
    response = await client.post(HOOK, json=body({"patient": wrong}))
    assert response.status_code == 400
    assert outcome_fields(response) == ["prefetch.patient"]


# ---------------------------------------------------------------- media type and headers


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", [HOOK, FEEDBACK])
async def test_a_body_not_declared_json_is_415(client: httpx.AsyncClient, content_type: str | None,
                                              path: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(path, content=b'{"feedback": []}', headers=headers)
    assert response.status_code == 415
    assert response.json()["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize("content_type", ["application/json", "application/fhir+json",
                                          "application/json; charset=utf-8", "Application/FHIR+JSON;charset=UTF-8"])
async def test_json_media_types_with_parameters_are_accepted(make_app: AppFactory, content_type: str) -> None:
    app, client = await make_app()
    import orjson

    response = await client.post(FEEDBACK, content=orjson.dumps({"feedback": [accepted()]}),
                                 headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert await app.state.store.count() == 1


@pytest.mark.parametrize("auth", ["off", "jwt"])
async def test_two_authorization_headers_are_400(make_app: AppFactory, tmp_path: Any, auth: str) -> None:
    settings: dict[str, Any] = {"auth": auth}
    if auth == "jwt":
        issuers = tmp_path / "issuers.json"
        issuers.write_text('{"issuers": [{"iss": "https://ehr.example.org", "jku": '
                           '["https://ehr.example.org/jwks.json"], "fhir_servers": []}]}')
        settings["trusted_issuers_file"] = issuers
    _, client = await make_app(**settings)
    headers = [("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer d.e.f")]
    for response in (await client.get("/cds-services", headers=headers),
                     await client.post(FEEDBACK, json={"feedback": [accepted()]}, headers=headers)):
        assert response.status_code == 400
        assert outcome_fields(response) == ["header.Authorization"]
