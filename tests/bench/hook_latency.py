"""Benchmark: hook-call latency and throughput of a running service (``make bench``).

Starts ``blina-cds serve`` on a free 127.0.0.1 port (development mode, SQLite in a temp dir), then sends
example hook requests with full prefetch — a patient-view with a cycle's history and an order-sign step dose —
from ``CONCURRENCY`` concurrent clients, ``REQUESTS`` requests per scenario (bounded; it stops by itself).
Prints requests/s and latency percentiles, and exits 1 when a scenario misses its target.

Target: p95 under ``TARGET_P95_MS`` per hook call with complete prefetch (CDS Hooks: "CDS Services SHOULD
respond quickly (on the order of 500 ms.)" — most of that budget belongs to the EHR and the network).
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service import examples

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "800"))
TARGET_P95_MS = float(os.environ.get("BENCH_TARGET_P95_MS", "150"))
SCENARIOS = [
    ("patient-view, cycle 1 day 18 history", "rr-adult-course", "c1d18-view"),
    ("order-sign, cycle 1 day 8 step dose", "rr-adult-course", "c1d8-step-sign"),
    ("order-sign, not blinatumomab (early exit)", None, None),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def other_order() -> dict[str, object]:
    draft = {"resourceType": "MedicationRequest", "id": "amlo", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/bench"},
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                       "code": "197361"}]}}
    return {"hook": "order-sign", "hookInstance": "bench",
            "context": {"userId": "Practitioner/1", "patientId": "bench",
                        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]}}}


async def run_scenario(base: str, body: dict[str, object]) -> tuple[list[float], float]:
    service = {"patient-view": "blinatumomab-patient-view", "order-sign": "blinatumomab-order-sign",
               "order-select": "blinatumomab-order-select"}[str(body["hook"])]
    url = f"{base}/cds-services/{service}"
    latencies: list[float] = []
    remaining = REQUESTS
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(20):  # warm-up
            (await client.post(url, json=body)).raise_for_status()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{service}: HTTP {response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return latencies, time.perf_counter() - started


def main() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BLINA_CDS_AUTH": "off", "BLINA_CDS_PORT": str(port), "BLINA_CDS_LOG_LEVEL": "WARNING",
               "BLINA_CDS_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("bench: the service did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            now = dt.datetime.now(dt.UTC)
            failed = False
            print(f"{REQUESTS} requests per scenario, {CONCURRENCY} concurrent clients, "
                  f"target p95 < {TARGET_P95_MS} ms")
            for title, name, call in SCENARIOS:
                body = examples.request_for(name, call, now=now) if name and call else other_order()
                latencies, elapsed = asyncio.run(run_scenario(base, body))
                q = statistics.quantiles(latencies, n=100)
                p50, p95, p99 = q[49], q[94], q[98]
                ok = p95 < TARGET_P95_MS
                failed |= not ok
                print(f"{'ok  ' if ok else 'SLOW'} {title}: {len(latencies) / elapsed:7.1f} req/s  "
                      f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms")
            return 1 if failed else 0
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
