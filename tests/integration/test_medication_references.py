"""Reference-style charts against the real FHIR server (issue 7 item 3): records that name their drug by
``Medication/<id>`` (Epic-style formulary Medications) or by a contained Medication (Oracle Health style), loaded
into sekmet-fhir. With no prefetch the service finds what full prefetch holds — the same cards — because the
medication keys search by patient with ``_include`` of the Medication, and a draft's Medication is read.

Before: the searches filtered by ``code``, which a FHIR server applies to ``medicationCodeableConcept`` only, so
patient-view found no blinatumomab, decided the patient was not on therapy and dropped the hepatic critical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.builders import (
    BLIN_SBD,
    DEXAMETHASONE,
    height,
    iso,
    medication_administration,
    medication_request,
    observation,
    patient,
    quantity,
    rate_quantity,
    weight,
)
from tests.conftest import AppFactory
from tests.ehr import MiniEhr
from tests.fhir_server import FhirServer
from tests.integration.dataset import rule_ids
from tests.token_proxy import TokenProxy

pytestmark = pytest.mark.fhir_server

P = "blina-ref-1"
ORACLE_INFUSE_OVER = "https://fhir-ehr.cerner.com/r4/StructureDefinition/infuse-over-time"


def _put(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def _by_reference(resource: dict[str, Any], medication_id: str) -> dict[str, Any]:
    del resource["medicationCodeableConcept"]
    resource["medicationReference"] = {"reference": f"Medication/{medication_id}"}
    return resource


def reference_chart(now: dt.datetime) -> list[dict[str, Any]]:
    """Cycle 1 day 4 of an adult's course at 9 µg/day, every drug named by reference, and ALT at 6× ULN."""
    day, hour = dt.timedelta(days=1), dt.timedelta(hours=1)
    c1d1 = now - 3 * day
    vial = {"resourceType": "Medication", "id": f"{P}-med-vial", "code": {"coding": [dict(BLIN_SBD)]}}
    bag9 = {"resourceType": "Medication", "id": f"{P}-med-bag9",
            "code": {"text": "blinatumomab 9 mcg/24 hr in sodium chloride 0.9% 240 mL"},
            "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                            "strength": {"numerator": quantity(9, "ug"), "denominator": quantity(240, "mL")}}]}
    dex = {"resourceType": "Medication", "id": f"{P}-med-dex", "code": {"coding": [dict(DEXAMETHASONE)]}}
    order = _by_reference(medication_request(
        f"{P}-mr-blin", status="active", authored_on=c1d1 - day, start=c1d1, patient_id=P,
        dose_and_rate=[rate_quantity(9, "ug/d")], text="9 mcg/day continuous IV infusion"), vial["id"])
    first_bag = _by_reference(medication_administration(
        f"{P}-ma-bag1", start=c1d1, end=c1d1 + 2 * day, rate=quantity(10, "mL/hr", code="mL/h"), patient_id=P),
        bag9["id"])
    # Oracle Health style: an instant "Infuse" result, its bag in a contained Medication, infuse-over-time 48 h
    running = medication_administration(f"{P}-ma-bag2", effective=c1d1 + 2 * day, status="completed",
                                        rate=quantity(5, "mL/hr", code="mL/h"), dose=quantity(240, "mL"),
                                        patient_id=P)
    del running["medicationCodeableConcept"]
    running["contained"] = [{"resourceType": "Medication", "id": "m1",
                             "code": {"text": "blinatumomab 9 mcg [9 mcg/24 hr] + sodium chloride 0.9% 120 mL"},
                             "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                                             "strength": {"numerator": quantity(4.5, "mcg", code="ug"),
                                                          "denominator": quantity(60, "mL")}}]}]
    running["medicationReference"] = {"reference": "#m1"}
    running["extension"] = [{"url": ORACLE_INFUSE_OVER,
                             "valueQuantity": {"value": 2880, "unit": "minutes", "system": "http://unitsofmeasure.org",
                                               "code": "min"}}]
    premed = _by_reference(medication_administration(
        f"{P}-ma-dex", effective=c1d1 - hour, dose=quantity(20, "mg"), patient_id=P), dex["id"])
    return [
        patient(P, birth_date="1978-04-02"), vial, bag9, dex, order, first_bag, running, premed,
        weight(f"{P}-obs-weight", 74, c1d1 - day, patient_id=P), height(f"{P}-obs-height", 176, c1d1 - day,
                                                                       patient_id=P),
        observation(f"{P}-obs-alt", "1742-6", 245, "U/L", when=now - 2 * hour, reference_high=40, patient_id=P),
    ]


def draft_by_reference(now: dt.datetime, medication_id: str, **kw: Any) -> dict[str, Any]:
    """A draft naming its drug only by ``Medication/<id>``: no display, nothing contained."""
    return _by_reference(medication_request(f"{P}-draft", status="draft", authored_on=now, start=now + dt.timedelta(
        hours=1), patient_id=P, **kw), medication_id)


@pytest.fixture(scope="module")
def chart(fhir_server: FhirServer) -> Iterator[dt.datetime]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # a Medication only the draft names: no search can bring it, it must be read
    bag28 = {"resourceType": "Medication", "id": f"{P}-med-bag28", "code": {"text": "BLINCYTO 28 mcg/24 hr bag"},
             "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                             "strength": {"numerator": quantity(28, "ug"), "denominator": quantity(240, "mL")}}]}
    bundle = _put([*reference_chart(now), bag28])
    fhir_server.load(bundle)
    yield now
    fhir_server.unload(bundle)


@pytest.fixture
async def app_client(make_app: AppFactory) -> tuple[FastAPI, httpx.AsyncClient]:
    return await make_app()


def _ehr(client: httpx.AsyncClient, base: str, ehr_key: tuple[Any, dict[str, Any]]) -> MiniEhr:
    private_key, jwk = ehr_key
    return MiniEhr(client, base, private_key=private_key, kid=jwk["kid"])


def _context(hook: str, now: dt.datetime, draft: dict[str, Any] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"patientId": P}
    if draft is not None:
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
        if hook == "order-select":
            context["selections"] = [f"MedicationRequest/{draft['id']}"]
    return context


async def _both_paths(client: httpx.AsyncClient, base: str, ehr_key: tuple[Any, dict[str, Any]], service_id: str,
                      hook: str, context: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
    async with _ehr(client, base, ehr_key) as ehr:
        assert (await ehr.discover()).status_code == 200
        with_prefetch = await ehr.call(service_id, hook, context)
        prefetched = ehr.last_request["prefetch"]
        # the EHR's prefetch holds the referenced Medications, brought by the medication keys' _include
        included = {e["resource"]["id"] for key in ("medicationRequests", "medicationAdministrations")
                    for e in prefetched[key]["entry"] if e["resource"]["resourceType"] == "Medication"}
        assert included == {f"{P}-med-vial", f"{P}-med-bag9", f"{P}-med-dex"}
        without = await ehr.call(service_id, hook, context, prefetch=False)
    assert with_prefetch.status_code == 200, with_prefetch.text
    assert without.status_code == 200, without.text
    return with_prefetch, without


def _alerts(response: httpx.Response) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in response.json()["cards"] if c["indicator"] != "info")


async def test_patient_view_of_a_reference_style_chart_keeps_its_criticals_in_both_paths(
    app_client: tuple[FastAPI, httpx.AsyncClient], fhir_server: FhirServer, chart: dt.datetime,
    ehr_key: tuple[Any, dict[str, Any]],
) -> None:
    _, client = app_client
    with_prefetch, without = await _both_paths(client, fhir_server.base, ehr_key, "blinatumomab-patient-view",
                                               "patient-view", _context("patient-view", chart))
    assert rule_ids(without.json()) == rule_ids(with_prefetch.json())
    assert _alerts(without) == ["hepatic-interrupt"]  # on therapy: the ALT rule applies
    (status,) = [c for c in without.json()["cards"] if c["source"]["topic"]["code"] == "therapy-status"]
    assert "cycle 1 day 4" in status["summary"]


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
async def test_an_overdose_named_only_by_medication_id_is_critical_in_both_paths(
    app_client: tuple[FastAPI, httpx.AsyncClient], fhir_server: FhirServer, chart: dt.datetime,
    ehr_key: tuple[Any, dict[str, Any]], hook: str,
) -> None:
    """Symptom: a 3× overdose naming only ``Medication/<id>`` returned ``{"cards": []}``."""
    _, client = app_client
    draft = draft_by_reference(chart, f"{P}-med-vial", dose_and_rate=[rate_quantity(84, "ug/d")])
    with_prefetch, without = await _both_paths(client, fhir_server.base, ehr_key, f"blinatumomab-{hook}", hook,
                                               _context(hook, chart, draft))
    assert rule_ids(without.json()) == rule_ids(with_prefetch.json())
    assert "dose-limit" in _alerts(without) and "hepatic-interrupt" in _alerts(without)


async def test_a_draft_whose_medication_only_it_names_is_read_once_and_dosed_from_its_strength(
    app_client: tuple[FastAPI, httpx.AsyncClient], token_proxy: TokenProxy, chart: dt.datetime,
    ehr_key: tuple[Any, dict[str, Any]],
) -> None:
    """10 mL/h of 28 µg/240 mL is 28 µg/day on cycle 1 day 4 (9 due): dose-schedule, critical. Without prefetch the
    service makes one request per prefetch key (8) and one read of the draft's Medication; with full prefetch, only
    the read."""
    _, client = app_client
    draft = draft_by_reference(chart, f"{P}-med-bag28", dose_and_rate=[rate_quantity(10, "mL/h")])
    context = _context("order-sign", chart, draft)
    async with _ehr(client, token_proxy.base, ehr_key) as ehr:
        await ehr.discover()
        prefetch = await ehr.prefetch_for("blinatumomab-order-sign", context)
        token_proxy.reset()
        with_prefetch = await ehr.call("blinatumomab-order-sign", "order-sign", context, prefetch=prefetch or {})
        reads_with_prefetch = token_proxy.requests()
        token_proxy.reset()
        without = await ehr.call("blinatumomab-order-sign", "order-sign", context, prefetch=False)
        seen = token_proxy.requests()
    assert rule_ids(without.json()) == rule_ids(with_prefetch.json())
    assert "dose-schedule" in _alerts(without)
    assert [r.path for r in reads_with_prefetch] == [f"Medication/{P}-med-bag28"]
    assert len(seen) == 9
    assert [r.path for r in seen if r.resource_type == "Medication"] == [f"Medication/{P}-med-bag28"]
    searches = {r.resource_type: dict(r.params()) for r in seen if "?" not in r.path and r.params()}
    for rtype in ("MedicationRequest", "MedicationAdministration"):
        assert searches[rtype]["patient"] == P and "code" not in searches[rtype]
        assert searches[rtype]["_include"] == f"{rtype}:medication"


def test_the_chart_times_are_utc_instants() -> None:
    assert iso(dt.datetime(2026, 3, 1, tzinfo=dt.UTC)) == "2026-03-01T00:00:00Z"
