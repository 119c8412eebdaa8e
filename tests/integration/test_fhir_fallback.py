"""Prefetch fallback against a real FHIR server (sekmet-fhir), and bearer forwarding through our proxy.

What is proven here, on the wire:

* with no prefetch the service fetches every advertised key itself — exactly one request per key, the
  rendered template, no ``Authorization`` header when the EHR sent no ``fhirAuthorization`` — and ends up
  with the same data (and the same cards) as with full prefetch;
* with partial prefetch only the absent / OperationOutcome keys are fetched, ``null`` is "no data";
* ``fhirAuthorization.access_token`` reaches the FHIR server as ``Bearer <token>`` on every request, a
  401 from the server becomes a 412 OperationOutcome, and the token is in no log record and no response;
* a prefetched first page is completed by following its ``next`` links to the end.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI

from service.catalog import prefetch_templates
from service.fhir.prefetch import render_template
from service.knowledge import Knowledge
from tests.conftest import AppFactory, outcome_fields
from tests.ehr import MiniEhr
from tests.fhir_server import FhirServer
from tests.integration.dataset import SERVICES, Dataset, TimelineInputs, rule_ids
from tests.token_proxy import SeenRequest, TokenProxy

pytestmark = pytest.mark.fhir_server

TOKEN = "tok-123"
FHIR_AUTHORIZATION = {
    "access_token": TOKEN,
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "user/*.read",
    "subject": "blina-cds",
}


@pytest.fixture
async def app_client(make_app: AppFactory) -> tuple[FastAPI, httpx.AsyncClient]:
    return await make_app()


def _ehr(client: httpx.AsyncClient, fhir_base: str, ehr_key: tuple[Any, dict[str, Any]], **kw: Any) -> MiniEhr:
    private_key, jwk = ehr_key
    return MiniEhr(client, fhir_base, private_key=private_key, kid=jwk["kid"], **kw)


def _expected_requests(kb: Knowledge, dataset: Dataset, keys: set[str] | None = None) -> list[tuple[str, list]]:
    """(path, sorted query pairs) of each template the service must fetch, rendered for the dataset."""
    context = {"patientId": dataset.patient_id, "userId": "Practitioner/dr-blina-1"}
    out = []
    for key, template in prefetch_templates(kb).items():
        if keys is not None and key not in keys:
            continue
        rendered = render_template(template, context)
        assert rendered is not None
        path, _, query = rendered.partition("?")
        out.append((path, sorted(parse_qsl(query))))
    return sorted(out)


def _seen(requests: list[SeenRequest]) -> list[tuple[str, list]]:
    return sorted((r.path, sorted(r.params())) for r in requests)


def _assert_secret_absent(secret: str, caplog: pytest.LogCaptureFixture, *responses: httpx.Response) -> None:
    assert caplog.records, "no log records captured: the check below would prove nothing"
    for record in caplog.records:
        assert secret not in record.getMessage(), record.name
        assert secret not in repr(record.args), record.name
        assert secret not in repr(record.__dict__), record.name
    for response in responses:
        assert secret not in response.text
        assert secret not in repr(dict(response.headers))


@pytest.mark.parametrize("service_id", sorted(SERVICES))
async def test_no_prefetch_gives_the_same_data_and_cards_as_full_prefetch(
    service_id: str, app_client: tuple[FastAPI, httpx.AsyncClient], fhir_server: FhirServer, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], timeline_inputs: TimelineInputs,
) -> None:
    _, client = app_client
    hook = SERVICES[service_id]
    async with _ehr(client, fhir_server.base, ehr_key) as ehr:
        assert (await ehr.discover()).status_code == 200
        with_prefetch = await ehr.call(service_id, hook, dataset.context(hook))
        assert set(ehr.last_request["prefetch"]) == set(dataset.expected)  # the harness filled every key
        without = await ehr.call(service_id, hook, dataset.context(hook), prefetch=False)
        assert "prefetch" not in ehr.last_request

    assert with_prefetch.status_code == 200, with_prefetch.text
    assert without.status_code == 200, without.text
    assert rule_ids(without.json()) == rule_ids(with_prefetch.json())
    assert len(timeline_inputs) == 2
    prefetched, fetched = timeline_inputs
    assert fetched == dataset.expected  # every advertised key fetched, each holding exactly this patient's data
    assert prefetched == dataset.expected


@pytest.mark.parametrize("service_id", sorted(SERVICES))
async def test_no_prefetch_fetches_each_advertised_key_once_without_auth(
    service_id: str, app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], kb: Knowledge, timeline_inputs: TimelineInputs,
) -> None:
    _, client = app_client
    hook = SERVICES[service_id]
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        response = await ehr.call(service_id, hook, dataset.context(hook), prefetch=False)

    assert response.status_code == 200, response.text
    assert isinstance(response.json()["cards"], list)
    seen = token_proxy.requests()
    assert _seen(seen) == _expected_requests(kb, dataset)
    assert {r.method for r in seen} == {"GET"}
    assert {r.authorization for r in seen} == {None}  # no fhirAuthorization → no Authorization header
    assert timeline_inputs == [dataset.expected]


async def test_order_hook_without_blinatumomab_draft_fetches_nothing(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], timeline_inputs: TimelineInputs,
) -> None:
    _, client = app_client
    context = dataset.context("order-sign")
    draft = context["draftOrders"]["entry"][0]["resource"]
    draft["medicationCodeableConcept"] = {"coding": [{
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3264", "display": "dexamethasone"}]}
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        response = await ehr.call("blinatumomab-order-sign", "order-sign", context, prefetch=False)

    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}
    assert token_proxy.requests() == []
    assert timeline_inputs == []


async def test_partial_prefetch_fetches_only_the_missing_keys(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], kb: Knowledge, timeline_inputs: TimelineInputs,
) -> None:
    _, client = app_client
    service_id, hook = "blinatumomab-patient-view", "patient-view"
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        await ehr.discover()
        full = await ehr.prefetch_for(service_id, dataset.context(hook))
        assert full is not None and set(full) == set(dataset.expected)
        partial = dict(full)
        del partial["labs"], partial["adverseEvents"]  # absent → fetched
        partial["conditions"] = {  # the client hit an error → fetched
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "timeout", "diagnostics": "upstream timeout"}],
        }
        partial["bodySize"] = None  # "no data": not fetched, not an error
        token_proxy.reset()
        response = await ehr.call(service_id, hook, dataset.context(hook), prefetch=partial)

    assert response.status_code == 200, response.text
    assert isinstance(response.json()["cards"], list)
    assert _seen(token_proxy.requests()) == _expected_requests(kb, dataset, {"labs", "adverseEvents", "conditions"})
    assert timeline_inputs == [{**dataset.expected, "bodySize": set()}]


async def test_bearer_token_is_forwarded_on_every_request_and_never_logged(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], kb: Knowledge, timeline_inputs: TimelineInputs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, client = app_client
    token_proxy.reset(expected_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        response = await ehr.call("blinatumomab-order-sign", "order-sign", dataset.context("order-sign"),
                                  prefetch=False, fhir_authorization=FHIR_AUTHORIZATION)

    assert response.status_code == 200, response.text
    assert isinstance(response.json()["cards"], list)
    seen = token_proxy.requests()
    assert _seen(seen) == _expected_requests(kb, dataset)
    assert [r.authorization for r in seen] == [f"Bearer {TOKEN}"] * len(seen)
    assert {r.status for r in seen} == {200}
    assert timeline_inputs == [dataset.expected]
    assert any(r.name == "blina_cds.fhir" for r in caplog.records)  # the fetches were logged, without the token
    _assert_secret_absent(TOKEN, caplog, response)


async def test_fhir_server_refusing_the_token_is_a_412_and_the_token_stays_secret(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], timeline_inputs: TimelineInputs, caplog: pytest.LogCaptureFixture,
) -> None:
    _, client = app_client
    wrong = "tok-wrong-456"
    token_proxy.reset(expected_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        response = await ehr.call(
            "blinatumomab-patient-view", "patient-view", dataset.context("patient-view"), prefetch=False,
            fhir_authorization={**FHIR_AUTHORIZATION, "access_token": wrong},
        )

    assert response.status_code == 412, response.text
    assert response.json()["issue"][0]["code"] == "incomplete"
    assert set(outcome_fields(response)) <= {f"prefetch.{k}" for k in dataset.expected}
    assert outcome_fields(response)
    seen = token_proxy.requests()
    assert seen and {r.status for r in seen} == {401}
    assert {r.authorization for r in seen} == {f"Bearer {wrong}"}
    assert timeline_inputs == []  # no rule ran on partial data
    _assert_secret_absent(wrong, caplog, response)
    _assert_secret_absent(TOKEN, caplog, response)


async def test_prefetched_first_page_is_completed_through_next_links(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, dataset: Dataset,
    ehr_key: tuple[Any, dict[str, Any]], kb: Knowledge, timeline_inputs: TimelineInputs,
) -> None:
    _, client = app_client
    service_id, hook = "blinatumomab-patient-view", "patient-view"
    token_proxy.reset(expected_token=TOKEN)
    template = prefetch_templates(kb)["toxicityObservations"]
    assert "_count=200" in template
    async with _ehr(client, token_proxy.base, ehr_key, fhir_token=TOKEN) as ehr:
        await ehr.discover()
        prefetch = await ehr.prefetch_for(service_id, dataset.context(hook))
        assert prefetch is not None
        first_page = await ehr.fill(template.replace("_count=200", "_count=3"), dataset.context(hook))
        assert first_page is not None and len(first_page["entry"]) == 3
        assert any(link["relation"] == "next" and link["url"].startswith(token_proxy.base)
                   for link in first_page["link"])
        prefetch["toxicityObservations"] = first_page
        # sekmet ignores AdverseEvent?subject= and says so with a warning OperationOutcome entry: a warning is a
        # note on the data, not a failed prefetch, so the service does not fetch that key again.
        assert any(e["resource"]["resourceType"] == "OperationOutcome" for e in prefetch["adverseEvents"]["entry"])
        token_proxy.reset(expected_token=TOKEN)
        response = await ehr.call(service_id, hook, dataset.context(hook), prefetch=prefetch,
                                  fhir_authorization=FHIR_AUTHORIZATION)

    assert response.status_code == 200, response.text
    seen = token_proxy.requests()
    pages = [r for r in seen if r.resource_type == "Observation"]
    assert [(dict(r.params())["_offset"], dict(r.params())["_count"]) for r in pages] == [("3", "3"), ("6", "3")]
    assert all(dict(r.params())["patient"] == dataset.patient_id for r in pages)
    assert [r.resource_type for r in seen if r not in pages] == []
    assert {r.authorization for r in seen} == {f"Bearer {TOKEN}"}
    assert timeline_inputs == [dataset.expected]  # all 8 observations, not just the first page


async def test_paging_cap_on_a_newest_first_search_keeps_the_newest_pages(
    make_app: AppFactory, token_proxy: TokenProxy, dataset: Dataset, ehr_key: tuple[Any, dict[str, Any]],
    kb: Knowledge, timeline_inputs: TimelineInputs,
) -> None:
    _, client = await make_app(fhir_max_pages=1)
    template = prefetch_templates(kb)["toxicityObservations"]
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        await ehr.discover()
        prefetch = await ehr.prefetch_for("blinatumomab-patient-view", dataset.context("patient-view"))
        assert prefetch is not None
        prefetch["toxicityObservations"] = await ehr.fill(template.replace("_count=200", "_count=2"),
                                                          dataset.context("patient-view"))
        token_proxy.reset(expected_token=None)
        response = await ehr.call("blinatumomab-patient-view", "patient-view", dataset.context("patient-view"),
                                  prefetch=prefetch)

    # toxicityObservations is sorted newest first: past the cap only the oldest records go unread (and a
    # warning is logged); an unsorted search past the cap is a 412 (tests/test_prefetch.py).
    assert response.status_code == 200, response.text
    observation_pages = [r for r in token_proxy.requests() if r.resource_type == "Observation"]
    assert [dict(r.params())["_offset"] for r in observation_pages] == ["2"]
