"""The bench workloads (tests/bench/workloads.py): their sizes and the cards the service gives for each.

Every call goes through the app in-process (``make_app``); the no-prefetch workload's FHIR server is faked at the
transport with respx, answering from ``workloads.fhir_data()`` (nothing leaves the process).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
import respx

from tests.bench import workloads
from tests.conftest import AppFactory

JSON = {"content-type": "application/json"}


def rule_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text[:500]
    return sorted(c["source"]["topic"]["code"] for c in response.json()["cards"])


def indicators(response: httpx.Response) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.json()["cards"]}


def entries(w: workloads.Workload, key: str) -> list[dict[str, Any]]:
    value = w.request["prefetch"][key]
    return [e["resource"] for e in (value or {}).get("entry", ())]


def test_order_sign_full_is_a_hundred_resources_of_about_110_kb() -> None:
    w = workloads.order_sign_full()
    assert w.path == "/cds-services/blinatumomab-order-sign"
    assert 90 <= w.resources <= 110
    assert 90_000 <= len(w.body) <= 130_000
    assert orjson.loads(w.body)["hook"] == "order-sign"
    assert w.expected == ("treatment-free-interval",)


def test_small_chart_is_about_ten_resources() -> None:
    w = workloads.small_chart()
    assert 8 <= w.resources <= 12
    assert len(w.body) < 20_000
    assert w.expected == ()


@pytest.mark.parametrize("observations", [500, 5000])
def test_history_holds_exactly_the_observations_and_administrations_asked(observations: int) -> None:
    w = workloads.patient_view_history(observations)
    assert w.path == "/cds-services/blinatumomab-patient-view"
    obs = entries(w, "toxicityObservations")
    administrations = entries(w, "medicationAdministrations")
    assert len(obs) == observations
    assert len({o["id"] for o in obs}) == observations
    assert len(administrations) == 200
    # _count ignored: every liver test and weight, not the templates' 100 and 50
    liver = [o for o in obs if {c.get("code") for c in o["code"].get("coding", ())} & {"1742-6", "1920-8", "1975-2"}]
    assert len(entries(w, "labs")) == len(liver) > (100 if observations == 5000 else 50)
    # the mix: labs, vital signs, nursing checks and notes; blinatumomab bags, Rate Verify points, dexamethasone
    categories = Counter(c["code"] for o in obs for cat in o.get("category", ()) for c in cat["coding"])
    assert categories["laboratory"] > observations // 3
    assert categories["vital-signs"] > observations // 4
    assert sum(o["code"]["text"] == "Nursing note" for o in obs) > observations // 30
    drugs = Counter(a["medicationCodeableConcept"]["coding"][0]["display"] for a in administrations)
    assert drugs["dexamethasone"] == 5  # cycle starts 1–4 and the cycle 1 day 8 step
    assert drugs["blinatumomab 0.035 MG Injection [Blincyto]"] == 195
    assert sum("effectiveDateTime" in a and a["medicationCodeableConcept"]["coding"][0]["code"] == "1597267"
               for a in administrations) > 100  # Rate Verify point records
    assert sum(a["status"] == "in-progress" for a in administrations) == 1  # the running bag
    size = len(w.body)
    assert (500_000 <= size <= 1_000_000) if observations == 500 else (4_000_000 <= size <= 8_000_000)


def test_history_refuses_counts_it_cannot_chart() -> None:
    with pytest.raises(ValueError, match="observations must be at least"):
        workloads.patient_view_history(10)
    with pytest.raises(ValueError, match="administrations must be between"):
        workloads.patient_view_history(500, administrations=5)


@pytest.mark.parametrize("make", [workloads.order_sign_full, workloads.small_chart,
                                  lambda: workloads.patient_view_history(500),
                                  lambda: workloads.patient_view_history(5000)],
                         ids=["order-sign-full", "small-chart", "history-500", "history-5000"])
async def test_the_service_gives_the_expected_cards(make_app: AppFactory, make: Any) -> None:
    w: workloads.Workload = make()
    _, client = await make_app()
    response = await client.post(w.path, content=w.body, headers=JSON)
    assert rule_ids(response) == list(w.expected)
    expected_indicators = {"treatment-free-interval": "warning", "therapy-status": "info"}
    assert indicators(response) == {r: expected_indicators[r] for r in w.expected}


async def test_no_prefetch_fetches_every_key_from_the_stand_in_and_gives_the_same_card(make_app: AppFactory) -> None:
    base = "http://127.0.0.1:8091/fhir"
    w = workloads.order_sign_no_prefetch(base)
    data = workloads.fhir_data()
    assert "prefetch" not in orjson.loads(w.body)
    assert w.expected == workloads.order_sign_full().expected
    assert len(data.searches) == 7
    assert len(data.resources) == 62
    pid = workloads.order_sign_full().request["context"]["patientId"]
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        relative = str(request.url).removeprefix(base + "/")
        asked.append(relative)
        body = data.answer(relative)
        return httpx.Response(404) if body is None else httpx.Response(200, content=body, headers=JSON)

    _, client = await make_app()
    with respx.mock(assert_all_called=True) as mock:
        mock.get(url__startswith=base + "/").mock(side_effect=answer)
        response = await client.post(w.path, content=w.body, headers=JSON)
    assert rule_ids(response) == list(w.expected)
    assert len(asked) == 8
    assert f"Patient/{pid}" in asked
    assert all(data.answer(a) is not None for a in asked)  # every search the service made is one the data answers


def test_fhir_data_answers_whatever_the_encoding_and_order() -> None:
    data = workloads.fhir_data()
    pid = workloads.order_sign_full().request["context"]["patientId"]
    labs = next(s for s in data.searches if "1742-6" in s)
    assert data.answer(labs) is not None
    reordered = "Observation?" + "&".join(reversed(labs.split("?", 1)[1].split("&")))
    assert data.answer(reordered.replace("|", "%7C")) == data.answer(labs)
    assert orjson.loads(data.answer(f"Patient/{pid}") or b"{}")["id"] == pid
    assert data.answer("Patient/someone-else") is None
