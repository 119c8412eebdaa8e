"""Benchmark: memory of one server process and its helpers — where deploy/k8s's memory request and limit come from.

    .venv/bin/python -m tests.bench.memory

Starts ``blina-cds serve`` as the Kubernetes manifest runs it (one server process, ``BLINA_CDS_CPU_WORKERS=1``;
SQLite in a temp dir, auth off) and reads the whole process tree from /proc — the server, the forkserver and the
worker for large calls — idle, under load (three example calls, ``BENCH_REQUESTS`` each from ``BENCH_CONCURRENCY``
concurrent clients), and
while ``BENCH_MAXIMAL_CALLS`` (default 2) maximal (20 MiB) hook calls are sent at once. It prints the sum of RSS
(an upper bound: forked processes share pages) and the sum of PSS (shared pages divided among their users: close
to what the container's memory cgroup is charged, before page cache). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from service import examples
from tests.conftest import PATIENT_VIEW
from tests.live import Sampler, live_service
from tests.test_limits_live import maximal_request

MAXIMAL_CALLS = int(os.environ.get("BENCH_MAXIMAL_CALLS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "800"))
SCENARIOS = [
    ("patient-view, cycle 1 day 18 history", "rr-adult-course", "c1d18-view"),
    ("order-sign, cycle 1 day 8 step dose", "rr-adult-course", "c1d8-step-sign"),
    ("order-sign, not blinatumomab (early exit)", None, None),
]


def other_order() -> dict[str, object]:
    draft = {"resourceType": "MedicationRequest", "id": "amlo", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/bench"},
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                       "code": "197361"}]}}
    return {"hook": "order-sign", "hookInstance": "bench",
            "context": {"userId": "Practitioner/1", "patientId": "bench",
                        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]}}}


async def run_scenario(base: str, body: dict[str, object]) -> tuple[list[float], float]:
    """``REQUESTS`` calls from ``CONCURRENCY`` clients (after 20 to warm up): their latencies (ms) and the time."""
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


def tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def memory_mb(pid: int) -> tuple[float, float, int]:
    """(sum of RSS, sum of PSS, processes) over the tree of ``pid``, in MiB."""
    rss = pss = 0
    pids = tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024, len(pids)


def report(title: str, samples: list[tuple[float, float, int]]) -> None:
    rss, pss, count = max(samples, key=lambda s: s[1])
    print(f"{title:42} peak PSS {pss:6.0f} MiB  (RSS {rss:6.0f} MiB, {count} processes)", flush=True)


def main() -> int:
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp, live_service(Path(tmp), BLINA_CDS_WORKERS="1",
                                                            BLINA_CDS_CPU_WORKERS="1") as service:
        pid = service.process.pid
        report("idle after start-up", [memory_mb(pid)])
        for title, name, call in SCENARIOS:
            body = examples.request_for(name, call, now=now) if name and call else other_order()
            with Sampler(lambda: memory_mb(pid), 0.2) as sampler:
                asyncio.run(run_scenario(service.base, body))
            report(f"under load: {title}", sampler.values)
        big = maximal_request()
        statuses: list[int] = []

        def post() -> None:
            response = httpx.post(f"{service.base}/cds-services/{PATIENT_VIEW}", content=big, timeout=120,
                                  headers={"Content-Type": "application/json"})
            statuses.append(response.status_code)

        with Sampler(lambda: memory_mb(pid), 0.1) as sampler:
            calls = [threading.Thread(target=post) for _ in range(MAXIMAL_CALLS)]
            for thread in calls:
                thread.start()
            for thread in calls:
                thread.join()
        report(f"{MAXIMAL_CALLS} maximal calls at once ({len(big) >> 20} MiB each)", sampler.values)
        report("after", [memory_mb(pid)])
        print(f"maximal calls answered {statuses}; CPU count {os.cpu_count()}")
        return 0 if statuses == [200] * MAXIMAL_CALLS else 1


if __name__ == "__main__":
    sys.exit(main())
