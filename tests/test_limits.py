"""Limits in-process: FHIR byte caps per answer and per call, and where a hook call is evaluated.

The FHIR server is faked at the transport (respx). Calls larger than ``cpu_inline_max_bytes`` are parsed and
evaluated in a worker process (``service.offload``); these tests force that with a threshold of 0 and check the
worker evaluates with the app's own configuration and hands back the same answers and errors.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from service import examples
from service.settings import DEFAULT_CARDS_DIR
from tests.big_charts import lab_observation, observation_page_bytes, searchset
from tests.conftest import ORDER_SIGN, PATIENT_VIEW, AppFactory, outcome_fields

FHIR = "https://ehr.example.org/fhir"


def view_call(*missing: str) -> dict[str, Any]:
    request = examples.request_for("rr-adult-course", "c1d18-view", now=dt.datetime.now(dt.UTC))
    for key in missing:
        del request["prefetch"][key]
    request["fhirServer"] = FHIR
    return request


def codes(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["source"]["topic"]["code"] for c in response.json()["cards"]]


# --- FHIR byte caps -----------------------------------------------------------------------------------------------


def test_a_page_of_5000_realistic_observations_fits_the_default_answer_cap() -> None:
    from service.settings import Settings

    size = len(observation_page_bytes(5000))
    assert 7_000_000 < size < Settings(auth="off").fhir_max_response_bytes / 1.5, size


async def test_an_answer_over_the_cap_is_a_412_naming_the_key(make_app: AppFactory) -> None:
    _, client = await make_app(fhir_max_response_bytes=100_000)
    page = searchset([lab_observation(i) for i in range(100)], base=FHIR)  # about 170 KB
    with respx.mock() as mock:
        mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(200, json=page))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_call("labs"))
    assert response.status_code == 412
    assert outcome_fields(response) == ["prefetch.labs"]
    assert "larger than 100000 bytes (BLINA_CDS_FHIR_MAX_RESPONSE_BYTES)" in response.json()["issue"][0]["diagnostics"]


async def test_answers_of_one_call_are_capped_together(make_app: AppFactory) -> None:
    _, client = await make_app(fhir_max_response_bytes=200_000, fhir_max_total_bytes=300_000)
    page = searchset([lab_observation(i) for i in range(100)], base=FHIR)  # about 170 KB: each fits, two do not
    with respx.mock() as mock:
        mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(200, json=page))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}",
                                     json=view_call("labs", "toxicityObservations"))
    assert response.status_code == 412
    assert "BLINA_CDS_FHIR_MAX_TOTAL_BYTES" in response.json()["issue"][0]["diagnostics"]


async def test_answers_under_both_caps_are_read_and_evaluated_in_a_worker(make_app: AppFactory) -> None:
    app, client = await make_app(fhir_max_response_bytes=200_000, fhir_max_total_bytes=400_000)
    page = searchset([lab_observation(i) for i in range(100)], base=FHIR)
    with respx.mock() as mock:
        route = mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(200, json=page))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}",
                                     json=view_call("labs", "toxicityObservations"))
    assert codes(response) == ["therapy-status"]
    assert route.call_count == 2
    assert app.state.engine.cpu.started  # 340 KB fetched: more than the event loop evaluates itself


# --- where a call is evaluated ------------------------------------------------------------------------------------


async def test_an_ordinary_call_is_evaluated_on_the_event_loop_without_starting_workers(make_app: AppFactory) -> None:
    app, client = await make_app()
    assert codes(await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_call())) == ["therapy-status"]
    assert not app.state.engine.cpu.started


@pytest.fixture
async def worker_app(make_app: AppFactory, tmp_path: Path) -> tuple[Any, httpx.AsyncClient]:
    """Every call goes to a worker; the cards directory is a site copy with its own therapy-status wording."""
    cards = tmp_path / "site-cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    status = cards / "therapy-status.toml"
    wording = status.read_text(encoding="utf-8").replace("On blinatumomab: ", "Site wording, on blinatumomab: ")
    status.write_text(wording, encoding="utf-8")
    return await make_app(cards_dir=cards, cpu_inline_max_bytes=0)


async def test_a_worker_evaluates_with_the_apps_own_card_files(worker_app: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = worker_app
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_call())
    assert codes(response) == ["therapy-status"]
    assert response.json()["cards"][0]["summary"].startswith("Site wording, on blinatumomab: cycle 1 day 18")
    assert app.state.engine.cpu.started
    # the card issued in the worker is known to this process, for feedback analytics
    uuid = response.json()["cards"][0]["uuid"]
    assert app.state.engine.card_map.rule_for(uuid, 0.0) == "therapy-status"


async def test_a_worker_call_missing_a_key_fetches_it_here_then_finishes_there(
    worker_app: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = worker_app
    request = view_call("labs")
    labs = examples.request_for("rr-adult-course", "c1d18-view", now=dt.datetime.now(dt.UTC))["prefetch"]["labs"]
    with respx.mock() as mock:
        route = mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(200, json=labs))
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert codes(response) == ["therapy-status"]
    assert route.call_count == 1


async def test_errors_raised_in_a_worker_are_answered_as_usual(worker_app: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = worker_app
    request = view_call()
    request["hook"] = "order-sign"
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 400
    assert outcome_fields(response) == ["hook"]
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_call("patient") | {"fhirServer": None})
    assert response.status_code == 412
    assert "prefetch.patient" in outcome_fields(response)


async def test_a_non_blinatumomab_order_is_answered_at_once_in_a_worker_too(
    worker_app: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = worker_app
    request = examples.request_for("rr-adult-course", "c1d8-step-sign", now=dt.datetime.now(dt.UTC))
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"].pop("medicationReference", None)
        entry["resource"]["medicationCodeableConcept"] = {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]}
    response = await client.post(f"/cds-services/{ORDER_SIGN}", json=request)
    assert response.status_code == 200
    assert response.json() == {"cards": []}
