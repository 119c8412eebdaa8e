"""Drugs named by ``Medication/<id>``, through the API (issue 7 items 2 and 3): the Medication comes from the medication
keys' ``_include`` or is read from ``fhirServer`` (faked at the transport with respx); a draft that cannot be
identified or dosed gets the "cannot verify" card, never an empty answer; the fallback searches by patient.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
import respx

from service.routes import now_utc
from tests.builders import (
    BLIN_SCD,
    DEXAMETHASONE,
    at,
    height,
    iso,
    medication_administration,
    medication_request,
    patient,
    quantity,
    rate_quantity,
    steroid_given,
    weight,
)
from tests.conftest import AppFactory, outcome_fields

FHIR = "https://ehr.example.org/fhir"
ORDER_SIGN = "blinatumomab-order-sign"
PATIENT_VIEW = "blinatumomab-patient-view"
NOW = at(2026, 3, 10, 8)
START = NOW + dt.timedelta(hours=2)

BAG = {"resourceType": "Medication", "id": "blin-bag", "code": {"coding": [dict(BLIN_SCD)]},
       "ingredient": [{"itemCodeableConcept": {"coding": [dict(BLIN_SCD)]},
                       "strength": {"numerator": quantity(28, "ug"), "denominator": quantity(240, "mL")}}]}
SEVEN_DAY = {"resourceType": "Medication", "id": "blin-7d", "code": {"text": "blinatumomab 196 mcg in 100.8 mL"},
             "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                             "strength": {"numerator": quantity(196, "ug"), "denominator": quantity(100.8, "mL")}}]}
"""A 7-day bag: 0.6 mL/h × 168 h = 100.8 mL, 28 µg/day (clinical-rules.md §5.3)."""
DEX = {"resourceType": "Medication", "id": "dex-20", "code": {"coding": [dict(DEXAMETHASONE)]}}


def searchset(*resources: dict[str, Any], included: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]
            + [{"resource": r, "search": {"mode": "include"}} for r in included]}


def by_reference(id: str, ref: str, **kw: Any) -> dict[str, Any]:
    return medication_request(id, medication_reference=ref, **kw)


def draft(ref: str = "Medication/blin-bag", **kw: Any) -> dict[str, Any]:
    kw.setdefault("dose_and_rate", [rate_quantity(84, "ug/d")])
    return by_reference("d1", ref, authored_on=NOW, start=START, **kw)


def premedication() -> dict[str, Any]:
    return steroid_given("dx", START - dt.timedelta(minutes=45))


def sign_request(*drafts: dict[str, Any], medication_requests: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """order-sign for an adult (weight, height, premedication charted), every key prefetched."""
    body_size = [weight("w", 72, NOW - dt.timedelta(days=1)), height("h", 175, NOW - dt.timedelta(days=1))]
    prefetch: dict[str, Any] = {
        "patient": patient(birth_date="1980-01-01"),
        "medicationRequests": medication_requests,
        "medicationAdministrations": searchset(premedication()),
        "bodySize": searchset(*body_size),
        "labs": None, "toxicityObservations": None, "conditions": None, "adverseEvents": None,
    }
    return {"hook": "order-sign", "hookInstance": "hi-ref-1", "prefetch": prefetch, **extra,
            "context": {"userId": "Practitioner/1", "patientId": "p1",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": d} for d in drafts]}}}


async def client_at(make_app: AppFactory, **settings: Any) -> httpx.AsyncClient:
    app, client = await make_app(**settings)
    app.dependency_overrides[now_utc] = lambda: NOW
    return client


def alerts(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return sorted((c["source"]["topic"]["code"], c["indicator"]) for c in response.json()["cards"]
                  if c["indicator"] != "info")


def card(response: httpx.Response, rule_id: str) -> dict[str, Any]:
    (found,) = [c for c in response.json()["cards"] if c["source"]["topic"]["code"] == rule_id]
    return dict(found)


# ---------------------------------------------------------------- order hooks: the draft's Medication


async def test_an_overdose_named_only_by_medication_id_is_read_and_found(make_app: AppFactory) -> None:
    """Symptom: a 3× overdose naming only ``Medication/<id>`` (no display, not contained) returned no cards."""
    client = await client_at(make_app)
    with respx.mock() as mock:
        read = mock.get(f"{FHIR}/Medication/blin-bag").mock(return_value=httpx.Response(200, json=BAG))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(draft(), fhirServer=FHIR))
    assert alerts(response) == [("dose-limit", "critical")]
    assert read.call_count == 1  # the only FHIR request: every key was prefetched


async def test_a_medication_the_prefetch_included_needs_no_request_and_no_fhir_server(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    earlier = by_reference("mr0", "Medication/blin-bag", status="completed", authored_on=NOW - dt.timedelta(days=60),
                           dose_and_rate=[rate_quantity(10, "mL/h")])
    request = sign_request(draft(), medication_requests=searchset(earlier, included=(BAG,)))
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().mock(return_value=httpx.Response(500))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=request)
    assert ("dose-limit", "critical") in alerts(response)
    assert not anything.called


async def test_a_draft_medication_that_cannot_be_read_without_fhir_server_is_a_412(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(draft()))
    assert response.status_code == 412
    assert outcome_fields(response) == ["context.draftOrders"]
    assert "no fhirServer to read it from" in response.json()["issue"][0]["diagnostics"]


async def test_a_failed_medication_read_is_a_412_naming_where_it_was_named(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Medication/blin-bag").mock(return_value=httpx.Response(503))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(draft(), fhirServer=FHIR))
    assert response.status_code == 412
    assert outcome_fields(response) == ["context.draftOrders"]
    assert "503" in response.json()["issue"][0]["diagnostics"]


async def test_a_missing_medication_with_blinatumomab_in_the_order_text_gets_the_cannot_verify_card(
    make_app: AppFactory,
) -> None:
    client = await client_at(make_app)
    named = draft("Medication/gone", text="blinatumomab 28 mcg/day continuous IV infusion",
                  dose_and_rate=[rate_quantity(10, "mL/h")])
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Medication/gone").mock(return_value=httpx.Response(404))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(named, fhirServer=FHIR))
    assert alerts(response) == [("dose-unverifiable", "warning")]
    unverifiable = card(response, "dose-unverifiable")
    detail = " ".join(unverifiable["detail"].split())
    assert "the order's Medication could not be found" in detail and "(Medication/gone)" in detail
    assert "pump rate without a concentration" in detail


async def test_a_missing_medication_with_an_overdose_in_the_text_gets_both_cards(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    named = draft("Medication/gone", text="BLINCYTO 84 mcg/day continuous infusion", dose_and_rate=[])
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Medication/gone").mock(return_value=httpx.Response(404))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(named, fhirServer=FHIR))
    assert alerts(response) == [("dose-limit", "critical"), ("dose-unverifiable", "warning")]


async def test_a_missing_medication_named_nowhere_gives_no_cards(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    with respx.mock() as mock:
        read = mock.get(f"{FHIR}/Medication/gone").mock(return_value=httpx.Response(404))
        response = await client.post(f"/cds-services/{ORDER_SIGN}",
                                     json=sign_request(draft("Medication/gone"), fhirServer=FHIR))
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert read.call_count == 1


async def test_a_draft_whose_medication_is_another_drug_gives_no_cards(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Medication/dex-20").mock(return_value=httpx.Response(200, json=DEX))
        response = await client.post(f"/cds-services/{ORDER_SIGN}",
                                     json=sign_request(draft("Medication/dex-20"), fhirServer=FHIR))
    assert response.json() == {"cards": []}


async def test_a_draft_whose_reference_display_names_another_drug_fetches_nothing(make_app: AppFactory) -> None:
    client = await client_at(make_app)
    other = draft("Medication/ondansetron-4")
    other["medicationReference"]["display"] = "ondansetron 4 mg IV"
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().mock(return_value=httpx.Response(500))
        request = sign_request(other, fhirServer=FHIR)
        del request["prefetch"]
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=request)
    assert response.json() == {"cards": []}
    assert not anything.called


async def test_more_medications_to_read_than_the_setting_allows_is_a_412_before_any_request(
    make_app: AppFactory,
) -> None:
    client = await client_at(make_app, fhir_max_medication_reads=1)
    stored = by_reference("mr0", "Medication/blin-old", status="completed")
    request = sign_request(draft(), medication_requests=searchset(stored), fhirServer=FHIR)
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().mock(return_value=httpx.Response(200, json=BAG))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=request)
    assert response.status_code == 412
    assert "BLINA_CDS_FHIR_MAX_MEDICATION_READS" in response.json()["issue"][0]["diagnostics"]
    assert sorted(outcome_fields(response)) == ["context.draftOrders", "prefetch.medicationRequests"]
    assert not anything.called


async def test_a_large_call_reads_its_medications_here_and_finishes_in_a_worker(make_app: AppFactory) -> None:
    client = await client_at(make_app, cpu_inline_max_bytes=0)
    with respx.mock() as mock:
        read = mock.get(f"{FHIR}/Medication/blin-bag").mock(return_value=httpx.Response(200, json=BAG))
        response = await client.post(f"/cds-services/{ORDER_SIGN}", json=sign_request(draft(), fhirServer=FHIR))
    assert alerts(response) == [("dose-limit", "critical")]
    assert read.call_count == 1


# ---------------------------------------------------------------- the fallback: searches by patient, then reads


def running_seven_day_bag(rate_ml_per_h: float) -> list[dict[str, Any]]:
    """Cycle 1, day 10 of an adult's course: 9 µg/day for a week, then a 7-day bag named only by its Medication."""
    c1 = NOW - dt.timedelta(days=9)
    step = c1 + dt.timedelta(days=7)
    first = medication_administration("ma1", start=c1, end=step, rate=quantity(9, "ug/d"))
    bag = medication_administration("ma2", start=step, status="in-progress",
                                    rate=quantity(rate_ml_per_h, "mL/hr", code="mL/h"))
    del bag["medicationCodeableConcept"]
    bag["medicationReference"] = {"reference": "Medication/blin-7d"}
    return [first, steroid_given("dx1", c1 - dt.timedelta(minutes=40)),
            steroid_given("dx2", step - dt.timedelta(minutes=40)), bag]


def fake_ehr(mock: respx.MockRouter, administrations: list[dict[str, Any]], *,
             include: bool) -> dict[str, respx.Route]:
    """A FHIR server holding the chart; with ``include`` it honours ``_include=…:medication``, else ignores it."""
    routes = {
        "Patient": mock.get(f"{FHIR}/Patient/p1").mock(
            return_value=httpx.Response(200, json=patient(birth_date="1980-01-01"))),
        "MedicationRequest": mock.get(url__regex=rf"^{FHIR}/MedicationRequest\?").mock(
            return_value=httpx.Response(200, json=searchset())),
        "MedicationAdministration": mock.get(url__regex=rf"^{FHIR}/MedicationAdministration\?").mock(
            return_value=httpx.Response(200, json=searchset(*administrations,
                                                             included=(SEVEN_DAY,) if include else ()))),
        "Observation": mock.get(url__regex=rf"^{FHIR}/Observation\?").mock(return_value=httpx.Response(
            200, json=searchset(weight("w", 72, NOW - dt.timedelta(days=1)),
                                height("h", 175, NOW - dt.timedelta(days=1))))),
        "Condition": mock.get(url__regex=rf"^{FHIR}/Condition\?").mock(return_value=httpx.Response(
            200, json=searchset())),
        "AdverseEvent": mock.get(url__regex=rf"^{FHIR}/AdverseEvent\?").mock(return_value=httpx.Response(
            200, json=searchset())),
        "Medication": mock.get(f"{FHIR}/Medication/blin-7d").mock(return_value=httpx.Response(200, json=SEVEN_DAY)),
    }
    return routes


def view_request() -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": "hi-ref-2", "fhirServer": FHIR,
            "context": {"userId": "Practitioner/1", "patientId": "p1"}}


@pytest.mark.parametrize("include", [True, False], ids=["server-includes", "server-ignores-include"])
async def test_the_fallback_finds_a_reference_style_bag_and_its_strength(make_app: AppFactory, include: bool) -> None:
    """Symptom: the fallback searched by ``code`` (medicationCodeableConcept only): the bag was lost and patient-view
    decided the patient was not on therapy. 10 mL/h of 196 µg/100.8 mL is 467 µg/day: the 7-day bag at a 24-h rate."""
    client = await client_at(make_app)
    with respx.mock(assert_all_called=False) as mock:
        routes = fake_ehr(mock, running_seven_day_bag(10), include=include)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_request())
    assert alerts(response) == [("dose-limit", "critical")]
    searches = {name: r.calls[0].request.url.params for name, r in routes.items() if name != "Medication"
                and name != "Patient"}
    for name in ("MedicationRequest", "MedicationAdministration"):
        assert searches[name]["patient"] == "p1" and "code" not in searches[name]
        assert searches[name]["_include"] == f"{name}:medication"
    # one request per key (7 searches and the Patient read), and a read of the Medication only if not included
    assert sum(r.call_count for name, r in routes.items() if name != "Medication") == 8
    assert routes["Medication"].call_count == (0 if include else 1)


async def test_the_fallback_with_the_right_rate_is_quiet(make_app: AppFactory) -> None:
    """0.6 mL/h × 24 h × 196 µg / 100.8 mL = 28 µg/day."""
    client = await client_at(make_app)
    with respx.mock(assert_all_called=False) as mock:
        fake_ehr(mock, running_seven_day_bag(0.6), include=True)
        response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=view_request())
    assert alerts(response) == []
    status = card(response, "therapy-status")
    assert status["summary"].startswith("On blinatumomab")


def test_iso_helper_is_utc() -> None:  # the fake chart's times are plain UTC instants
    assert iso(NOW) == "2026-03-10T08:00:00Z"
