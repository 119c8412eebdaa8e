"""The pieces of ``make bench`` (tests/bench/harness.py), without load: the floor app, the FHIR stand-in, reading
wrk's report, and the verdicts. No timing is asserted here; ``make bench`` measures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pytest

from service.settings import Settings
from tests.bench import floor, workloads
from tests.bench.fhir_standin import FhirData, FhirStandIn
from tests.bench.harness import Case, Compared, MemoryFigures, Side, memory_verdicts, verdicts, workers_verdicts
from tests.bench.wrk import Request, WrkError, WrkResult, parse_wrk, write_request_list
from tests.conftest import AppFactory

JSON = {"content-type": "application/json"}


@pytest.fixture
async def floor_client() -> AsyncIterator[httpx.AsyncClient]:
    app = floor.create_app(Settings(auth="off"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        yield client


# --- the floor -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [workloads.order_sign_full, workloads.small_chart,
                                   lambda: workloads.patient_view_history(500),
                                   lambda: workloads.order_sign_no_prefetch("http://127.0.0.1:9/fhir")],
                         ids=["order-sign-full", "small-chart", "history-500", "no-prefetch"])
async def test_the_floor_answers_no_cards_at_each_workloads_path(
        floor_client: httpx.AsyncClient, build: Callable[[], workloads.Workload]) -> None:
    workload = build()
    response = await floor_client.post(workload.path, content=workload.body, headers=JSON)
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert response.headers["content-type"] == "application/json"


async def test_the_floor_parses_the_body_it_is_sent(floor_client: httpx.AsyncClient) -> None:
    response = await floor_client.post(workloads.small_chart().path, content=b"[1, 2]", headers=JSON)
    assert response.status_code == 400  # JSON, but not a hook request's object


async def test_the_floor_answers_discovery_with_the_services_own_document(
        floor_client: httpx.AsyncClient, make_app: AppFactory) -> None:
    _, service = await make_app()
    ours = await service.get(workloads.DISCOVERY_PATH)
    theirs = await floor_client.get(workloads.DISCOVERY_PATH)
    assert theirs.status_code == ours.status_code == 200
    assert theirs.json() == ours.json()
    assert {s["id"] for s in theirs.json()["services"]} == {
        "blinatumomab-order-sign", "blinatumomab-order-select", "blinatumomab-patient-view"}


# --- the FHIR stand-in ---------------------------------------------------------------------------------------------

def normalised(target: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(target)
    return parts.path.removeprefix("/fhir/"), tuple(sorted(parse_qsl(parts.query)))


async def test_through_the_stand_in_the_service_gives_the_no_prefetch_workloads_cards(make_app: AppFactory) -> None:
    data = workloads.fhir_data()
    _, client = await make_app()
    with FhirStandIn(data.resources, delay_s=0) as fhir:
        workload = workloads.order_sign_no_prefetch(fhir.base)
        response = await client.post(workload.path, content=workload.body, headers=JSON)
        asked = sorted(normalised(p) for p in fhir.paths)
    assert response.status_code == 200, response.text[:500]
    assert tuple(sorted(c["source"]["topic"]["code"] for c in response.json()["cards"])) == workload.expected
    patient = orjson.loads(workload.body)["context"]["patientId"]
    # every prefetch search once, and the Patient read: all there is (the Medications came by _include)
    assert asked == sorted([normalised("/fhir/" + s) for s in data.searches] + [(f"Patient/{patient}", ())])


def test_the_stand_in_answers_searches_as_the_workload_says_a_server_would() -> None:
    data = workloads.fhir_data()
    served = FhirData(data.resources, "http://127.0.0.1:1/fhir")
    for search, expected in data.searches.items():
        path, _, query = search.partition("?")
        status, bundle = served.answer(path, query)
        ids = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"])
        wanted = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}"
                        for e in orjson.loads(expected).get("entry") or [])
        assert (status, ids) == (200, wanted), search


def test_the_stand_in_pages_includes_and_reads() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    medication = {"resourceType": "Medication", "id": "m1"}
    records = [{"resourceType": "MedicationAdministration", "id": f"a{i}", "subject": {"reference": "Patient/p1"},
                "medicationReference": {"reference": "Medication/m1"}, "effectiveDateTime": f"2026-01-0{i}"}
               for i in range(1, 6)]
    other = {"resourceType": "MedicationAdministration", "id": "x", "subject": {"reference": "Patient/p2"}}
    served = FhirData([patient, medication, *records, other], "http://127.0.0.1:1/fhir")
    status, page = served.answer("MedicationAdministration",
                                 "patient=p1&_include=MedicationAdministration:medication&_count=2")
    assert status == 200 and page["total"] == 5
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in page["entry"]] == [
        ("a1", "match"), ("a2", "match"), ("m1", "include")]
    seen = [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]
    while (link := next((x["url"] for x in page["link"] if x["relation"] == "next"), None)) is not None:
        parts = urlsplit(link)
        status, page = served.answer(parts.path.removeprefix("/fhir"), parts.query)
        seen += [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]
    assert seen == ["a1", "a2", "a3", "a4", "a5"]
    assert served.answer("Patient/p1", "") == (200, patient)
    status, outcome = served.answer("Medication/nope", "")
    assert (status, outcome["resourceType"]) == (404, "OperationOutcome")


# --- wrk ------------------------------------------------------------------------------------------------------------

WRK_OK = """\
Running 5s test @ http://127.0.0.1:41707
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    27.93ms   10.40ms 120.44ms   86.02%
    Req/Sec   288.46     52.84   404.00     71.00%
  Latency Distribution
     50%   25.81ms
     75%   30.12ms
     90%  612.00us
     99%    1.13s
  2879 requests in 5.01s, 313.45KB read
Requests/sec:    574.47
Transfer/sec:     62.54KB
"""

WRK_ERRORS = """\
Running 2s test @ http://127.0.0.1:18411
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.66ms   14.18ms 122.56ms   95.37%
    Req/Sec   442.95    138.60   676.00     78.95%
  Latency Distribution
     50%    4.94ms
     75%    8.65ms
     90%   13.22ms
     99%   89.72ms
  865 requests in 2.03s, 115.73KB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 865
Requests/sec:    426.74
Transfer/sec:     57.09KB
"""


def test_wrk_report_is_read_in_milliseconds_whatever_its_units() -> None:
    result = parse_wrk(WRK_OK)
    assert (result.requests, result.duration_s, result.rps) == (2879, 5.01, 574.47)
    assert (result.p50_ms, result.p75_ms, result.p90_ms, result.p99_ms) == (25.81, 30.12, 0.612, 1130.0)
    assert result.errors == 0


def test_wrk_failures_are_counted() -> None:
    result = parse_wrk(WRK_ERRORS)
    assert (result.non_2xx, result.read_errors, result.write_errors, result.timeouts) == (865, 3, 1, 2)
    assert result.errors == 871


def test_output_without_a_latency_report_is_an_error() -> None:
    with pytest.raises(WrkError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_request_list_names_each_body_file(tmp_path: Path) -> None:
    listing = write_request_list([Request("POST", "/cds-services/x", b'{"a":1}'), Request("GET", "/cds-services")],
                                 tmp_path, "mixed")
    post, get = listing.read_text().splitlines()
    method, path, body = post.split(" ")
    assert (method, path, Path(body).read_bytes()) == ("POST", "/cds-services/x", b'{"a":1}')
    assert get == "GET /cds-services -"


# --- verdicts ------------------------------------------------------------------------------------------------------

def result(rps: float, p50: float, p99: float, errors: int = 0) -> WrkResult:
    return WrkResult(requests=100, duration_s=1, rps=rps, p50_ms=p50, p75_ms=p50, p90_ms=p99, p99_ms=p99,
                     non_2xx=errors)


def compared(key: str, ours: WrkResult, floor_: WrkResult, resources: int = 0) -> Compared:
    return Compared(Case(key, key, Request("POST", "/x"), 1, 1, resources=resources), Side([ours]), Side([floor_]))


def test_order_sign_and_small_chart_verdicts_follow_the_issues_ratios() -> None:
    found = verdicts({"order-sign-full": compared("order-sign-full", result(59, 10, 40), result(100, 5, 20)),
                      "small-chart": compared("small-chart", result(100, 2.9, 5), result(300, 2.0, 4))},
                     fhir_delay_ms=50)
    assert [(v.what, v.met) for v in found] == [
        ("order-sign: throughput ≥ 60 % of the floor's", False),
        ("order-sign: p99 ≤ 2× the floor's", True),
        ("small chart: p50 ≤ floor + 1 ms", True),
    ]


def test_history_is_judged_per_resource_and_no_prefetch_against_the_fhir_delay() -> None:
    linear = verdicts({"history-500": compared("history-500", result(1, 30, 40), result(1, 20, 30), resources=800),
                       "history-5000": compared("history-5000", result(1, 165, 200), result(1, 100, 150),
                                                resources=5000),
                       "no-prefetch": compared("no-prefetch", result(1, 86, 90), result(1, 1, 2))},
                      fhir_delay_ms=50)
    assert [(v.what, v.met) for v in linear] == [
        ("history-500: p50 ≤ 1.5× the floor's", True),       # 1.5×
        ("history-5000: p50 ≤ 1.5× the floor's", False),     # 1.65×
        ("history: own cost per resource at 5,000 within 30 % of that at 500", True),  # 12.5 → 13 µs
        ("no prefetch: p50 ≤ 1.5 × 50 ms + 10 ms = 85 ms", False),
    ]
    steep = verdicts({"history-500": compared("history-500", result(1, 30, 40), result(1, 20, 30), resources=800),
                      "history-5000": compared("history-5000", result(1, 200, 250), result(1, 100, 150),
                                               resources=5000)}, fhir_delay_ms=50)
    assert steep[-1].met is False  # 12.5 → 20 µs per resource: not linear


def test_a_failed_request_misses_a_target_of_its_own() -> None:
    found = verdicts({"discovery": compared("discovery", result(1000, 1, 2, errors=3), result(1000, 1, 2))},
                     fhir_delay_ms=50)
    assert [(v.what, v.met) for v in found] == [("discovery: every request answered 2xx", False)]


def test_memory_and_workers_verdicts() -> None:
    flat = memory_verdicts(MemoryFigures([1000, 10000], [120.0, 131.0], [110.0, 112.0], errors=0))
    assert [v.met for v in flat] == [True, True]
    growing = memory_verdicts(MemoryFigures([1000, 10000], [120.0, 140.0], [110.0, 130.0], errors=0))
    assert [v.met for v in growing] == [True, False]
    assert memory_verdicts(MemoryFigures([1000, 10000], [150.0, 151.0], [1.0, 1.0], errors=0))[0].met is False
    assert [v.met for v in workers_verdicts(Side([result(100, 1, 1)]), Side([result(171, 1, 1)]))] == [True]
    assert [v.met for v in workers_verdicts(Side([result(100, 1, 1)]), Side([result(169, 1, 1)]))] == [False]
