"""Availability against a real running service (``blina-cds serve`` in a subprocess) and a misbehaving FHIR server.

No request may starve the service: an endless or huge FHIR answer is cut (412 naming the key) with memory
bounded, a maximal hook call is evaluated while ``/healthz`` and discovery keep answering, one that outruns its
deadline is a 503, and idle connections cannot keep a health check out.

The latency bounds are generous on purpose: they separate "kept answering" (milliseconds) from "starved"
(seconds), which is the behaviour asked for, not a benchmark.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service import examples
from tests.big_charts import padded_request
from tests.conftest import PATIENT_VIEW
from tests.live import (
    LiveService,
    Sampler,
    StandIn,
    Write,
    idle_connections,
    live_service,
    post_while_polling,
    raise_own_open_file_limit,
)

pytestmark = pytest.mark.alone  # latency bounds: not beside another test worker (see the Makefile)

FHIR_TIMEOUT_S = 2.0
MAX_BODY = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(tmp_path_factory.mktemp("live"), BLINA_CDS_FHIR_TIMEOUT_S=str(FHIR_TIMEOUT_S)) as s:
        yield s


def fallback_request(fhir_base: str, *, missing: str = "labs") -> dict[str, Any]:
    """A patient-view call whose ``missing`` key must be fetched from ``fhir_base``."""
    request = examples.request_for("rr-adult-course", "c1d18-view", now=dt.datetime.now(dt.UTC))
    del request["prefetch"][missing]
    request["fhirServer"] = fhir_base
    return request


def post(base: str, request: dict[str, Any], *, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{base}/cds-services/{PATIENT_VIEW}", content=orjson.dumps(request),
                      headers={"Content-Type": "application/json"}, timeout=timeout)


# --- bounded outbound reads -----------------------------------------------------------------------------------


def test_huge_fhir_answer_is_a_412_naming_the_key_and_memory_stays_bounded(service: LiveService) -> None:
    sent = {"bytes": 0}
    chunk = b'{"fullUrl":"x","resource":{"resourceType":"Observation","status":"final"}},' * 4096  # ~300 KB

    def huge(path: str, write: Write) -> None:  # 150 MB, as the server in the report sent
        write(b'{"resourceType":"Bundle","type":"searchset","entry":[')
        while sent["bytes"] < 150 * 1024 * 1024:
            write(chunk)
            sent["bytes"] += len(chunk)

    assert post(service.base, examples.request_for("rr-adult-course", "c1d18-view",
                                                   now=dt.datetime.now(dt.UTC))).status_code == 200  # warm
    baseline = service.rss_mb()
    with StandIn(huge) as fhir, Sampler(service.rss_mb, 0.02) as rss:
        response = post(service.base, fallback_request(fhir.base))
        assert fhir.disconnected.wait(5), "the service kept reading"
    assert response.status_code == 412, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["prefetch.labs"]
    assert "BLINA_CDS_FHIR_MAX_RESPONSE_BYTES" in issue["diagnostics"]
    assert sent["bytes"] < 100 * 1024 * 1024  # it stopped reading long before the end
    peak = max(rss.values)
    print(f"RSS baseline {baseline:.0f} MB, peak during a 150 MB answer {peak:.0f} MB, after {service.rss_mb():.0f} MB")
    assert peak - baseline < 120, (baseline, peak)  # the 16 MiB cap, not 150 MB (unbounded it grew by GiBs)
    assert service.rss_mb() - baseline < 40  # back to baseline


def test_fhir_answer_that_never_ends_is_cut_at_the_call_deadline(service: LiveService) -> None:
    def endless(path: str, write: Write) -> None:
        write(b'{"resourceType":"Bundle","type":"searchset","entry":[')
        for _ in range(1200):  # a minute of one space every 50 ms, unless the reader goes away
            write(b" ")
            time.sleep(0.05)

    with StandIn(endless) as fhir:
        started = time.monotonic()
        response = post(service.base, fallback_request(fhir.base, missing="toxicityObservations"))
        elapsed = time.monotonic() - started
        assert fhir.disconnected.wait(5), "the service kept the stream open"
    assert response.status_code == 412, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["prefetch.toxicityObservations"]
    assert f"{FHIR_TIMEOUT_S:g} s" in issue["diagnostics"]
    assert FHIR_TIMEOUT_S - 0.1 < elapsed < FHIR_TIMEOUT_S + 2, elapsed


# --- CPU work off the event loop ----------------------------------------------------------------------------------


def maximal_request() -> bytes:
    body = orjson.dumps(padded_request(MAX_BODY - 64 * 1024, now=dt.datetime.now(dt.UTC)))
    assert MAX_BODY - 256 * 1024 < len(body) <= MAX_BODY, len(body)
    return body


def test_health_and_discovery_keep_answering_while_a_maximal_hook_call_is_evaluated(service: LiveService) -> None:
    body = maximal_request()
    polled = post_while_polling(service.base, f"/cds-services/{PATIENT_VIEW}", body,
                                poll=["/healthz", "/cds-services"])
    response, health, discovery = polled.response, polled.latencies["/healthz"], polled.latencies["/cds-services"]
    assert response.status_code == 200, response.text[:500]
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["therapy-status"]
    print(f"maximal hook call ({len(body)} bytes) took {polled.took_s:.2f} s; /healthz max {max(health) * 1000:.0f} ms "
          f"over {len(health)} calls; discovery max {max(discovery) * 1000:.0f} ms")
    assert len(health) >= 5 and len(discovery) >= 5
    assert max(health) < 0.8, health  # evaluated on the event loop it stalls for seconds
    assert max(discovery) < 0.8, discovery


def test_a_maximal_feedback_body_does_not_freeze_the_service(service: LiveService) -> None:
    """A 20 MiB feedback body is parsed off the event loop (a 100,000-item batch is refused by the batch limit)."""
    items = [{"card": f"00000000-0000-4000-8000-{i:012d}", "outcome": "overridden",
              "overrideReason": {"userComment": "not applicable; " * 12_900},
              "outcomeTimestamp": "2026-03-10T09:00:00Z"} for i in range(100)]
    body = orjson.dumps({"feedback": items})
    assert MAX_BODY - 1024 * 1024 < len(body) < MAX_BODY
    polled = post_while_polling(service.base, f"/cds-services/{PATIENT_VIEW}/feedback", body, poll=["/healthz"])
    health = polled.latencies["/healthz"]
    print(f"feedback body of {len(body)} bytes: {polled.response.status_code}; "
          f"/healthz max {max(health) * 1000:.0f} ms")
    assert polled.response.status_code in (200, 400, 413), polled.response.text[:300]
    assert max(health) < 1.0, health


def test_a_call_past_its_cpu_deadline_is_a_503_and_the_service_recovers(tmp_path: Path) -> None:
    body = maximal_request()
    with live_service(tmp_path, BLINA_CDS_CPU_DEADLINE_S="0.2") as slow:
        response = httpx.post(f"{slow.base}/cds-services/{PATIENT_VIEW}", content=body,
                              headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 503, response.text[:300]
        issue = response.json()["issue"][0]
        assert (response.json()["resourceType"], issue["code"]) == ("OperationOutcome", "timeout")
        assert "BLINA_CDS_CPU_DEADLINE_S" in issue["diagnostics"]
        assert httpx.get(f"{slow.base}/healthz", timeout=2).status_code == 200
        small = post(slow.base, examples.request_for("hepatic", "c1d10-bili-view", now=dt.datetime.now(dt.UTC)))
        assert "hepatic-interrupt" in [c["source"]["topic"]["code"] for c in small.json()["cards"]]


# --- connections --------------------------------------------------------------------------------------------------


def test_idle_connections_do_not_keep_a_health_check_out(tmp_path: Path) -> None:
    """1,100 idle connections (half with half a request head) against a service started with 1,024 open files."""
    raise_own_open_file_limit(4096)
    with live_service(tmp_path, open_files=1024, BLINA_CDS_HEADER_TIMEOUT_S="3") as s:
        port = int(s.base.rsplit(":", 1)[1])
        sockets = idle_connections(port, 1100)
        try:
            started = time.monotonic()
            response = httpx.get(f"{s.base}/healthz", timeout=10)
            took = time.monotonic() - started
            print(f"/healthz with 1,100 idle connections open: {took * 1000:.0f} ms")
            assert response.status_code == 200
            assert took < 2.0
            # and the idle ones are closed once the request-head timeout passes
            for sock in sockets[:20]:
                sock.settimeout(8)
                assert sock.recv(1024) in (b"",), "an idle connection was answered instead of closed"
        finally:
            for sock in sockets:
                sock.close()


def test_connections_past_the_concurrency_limit_are_refused_and_request_heads_are_bounded(tmp_path: Path) -> None:
    with live_service(tmp_path, BLINA_CDS_LIMIT_CONCURRENCY="30") as s:
        port = int(s.base.rsplit(":", 1)[1])
        sockets = idle_connections(port, 40, partial_header_every=0)
        try:
            time.sleep(0.3)
            assert httpx.get(f"{s.base}/healthz", timeout=5).status_code == 503
        finally:
            for sock in sockets:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{s.base}/healthz", timeout=5).status_code == 200
        # request heads: a 16 KiB JWT fits; a head still growing past BLINA_CDS_MAX_HEADER_BYTES (64 KiB) is a 400
        assert httpx.get(f"{s.base}/healthz", headers={"X-Token": "a" * 16_384}, timeout=5).status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as endless_head:
            endless_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000)
            assert endless_head.recv(64).startswith(b"HTTP/1.1 400")
