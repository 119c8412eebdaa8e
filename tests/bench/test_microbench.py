"""Micro-benchmarks, one per stage of a hook call (service/pipeline.py), on the bench workloads 1–3.

    make microbench            # real timings: pytest-benchmark's table, grouped by workload, saved under var/
    make test                  # the same tests once each, untimed (``--benchmark-disable`` in pyproject addopts)

Stages, each fed the previous stage's output (computed once per workload, outside the timing):

1. ``parse``     — ``routes.hook_request``: raw bytes → JSON → validated ``HookRequest`` (context model, prefetch
                   shape and ids);
2. ``prefetch``  — ``prefetch.resolve`` on the complete prefetch: resources per key, states, Medications to read
                   (no FHIR request: none is needed);
3. ``timeline``  — ``build_timeline``: orders, infusions, steroids, labs, body size, toxicity, course positions;
4. ``rules``     — ``rules.evaluate`` on the timeline;
5. ``render``    — ``CardRenderer.render`` of each finding (the card files);
6. ``end-to-end`` — a POST through the whole app in-process (``httpx.ASGITransport``, no socket): routing, body
                   reading, everything above (a body over ``BLINA_CDS_CPU_INLINE_MAX_BYTES`` in a worker process, as
                   in production), the card map and issued-card record, the JSON answer.

Each benchmark also asserts what its stage produced (counts, course position, rule ids, indicators), so a stage that
becomes fast by doing less fails here. No timing is ever asserted: timing goals live in ``make bench``.
Workload 3 runs with 500 Observations only, to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.catalog import CdsService
from service.fhir import prefetch
from service.main import create_app
from service.offload import Evaluator, load_evaluator
from service.routes import hook_request
from service.rules import evaluate
from service.rules.base import Finding
from service.schemas import HookRequest
from service.settings import Settings
from service.timeline import build_timeline, medications_to_read
from service.timeline.model import Timeline
from tests.bench import workloads
from tests.conftest import BASE_URL

WORKLOADS: dict[str, Callable[[], workloads.Workload]] = {
    "order-sign-full": workloads.order_sign_full,
    "small-chart": workloads.small_chart,
    "history-500": lambda: workloads.patient_view_history(500),
}


@dataclass(frozen=True)
class Expect:
    """What each stage must produce for a workload."""

    position: tuple[str, int, int]
    """(key in ``Timeline.positions``: ``focus`` for the signed order, or ``current``; cycle; day)."""
    focus_orders: int
    infusions: int
    steroids: int


EXPECT = {
    # cycle 3 ordered 8 days after cycle 2; 15 bag records in cycles 1–2; 3 dexamethasone orders and their 3
    # administrations plus the draft
    "order-sign-full": Expect(("focus", 3, 1), focus_orders=1, infusions=15, steroids=7),
    # cycle 1 day 1, nothing given yet; the dexamethasone draft
    "small-chart": Expect(("focus", 1, 1), focus_orders=1, infusions=0, steroids=1),
    # cycle 4 day 10 running; 5 dexamethasone orders and their 5 administrations
    "history-500": Expect(("current", 4, 10), focus_orders=0, infusions=24, steroids=10),
}


@dataclass(frozen=True)
class Staged:
    """A workload and the output of every stage, computed once (the input of the next stage's benchmark)."""

    name: str
    workload: workloads.Workload
    service: CdsService
    request: HookRequest
    resolved: prefetch.Resolved
    timeline: Timeline
    findings: list[Finding]


@pytest.fixture(scope="module")
def ev() -> Evaluator:
    return load_evaluator(Settings(auth="off"))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of its own: the benchmark fixture times synchronous calls."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def parse(service: CdsService, body: bytes) -> HookRequest:
    return hook_request(service, body, max_hook_instance_chars=Settings(auth="off").max_hook_instance_chars)


@pytest.fixture(scope="module")
def http(loop: asyncio.AbstractEventLoop) -> Iterator[httpx.AsyncClient]:
    """The shared FHIR client, as the engine holds one (never used: every prefetch here is complete)."""
    client = httpx.AsyncClient(trust_env=False)
    yield client
    loop.run_until_complete(client.aclose())


async def resolve(service: CdsService, request: HookRequest, ev: Evaluator, http: httpx.AsyncClient
                  ) -> prefetch.Resolved:
    """Step 1 as ``pipeline.run`` calls it."""
    return await prefetch.resolve(
        service.prefetch, request, http=http, allowed_servers=None, timeout_s=5, max_pages=20,
        max_response_bytes=16 << 20, max_total_bytes=32 << 20, max_medication_reads=50,
        medications_to_read=lambda data: medications_to_read(request.context, data, ev.kb))


def timeline_of(service: CdsService, request: HookRequest, resolved: prefetch.Resolved, ev: Evaluator,
                now: dt.datetime) -> Timeline:
    return build_timeline(hook=service.hook, context=request.context, data=resolved.data, kb=ev.kb, now=now)


@pytest.fixture(scope="module", params=list(WORKLOADS))
def staged(request: pytest.FixtureRequest, ev: Evaluator, loop: asyncio.AbstractEventLoop,
           http: httpx.AsyncClient) -> Staged:
    """One workload through every stage once (module scope: the tests run workload by workload)."""
    name = request.param
    w = WORKLOADS[name]()
    service = ev.catalog[w.service]
    request = parse(service, w.body)
    resolved = loop.run_until_complete(resolve(service, request, ev, http))
    timeline = timeline_of(service, request, resolved, ev, w.now)
    findings = evaluate(timeline, ev.kb, rule_ids=service.rule_ids)
    return Staged(name, w, service, request, resolved, timeline, findings)


def prefetched_entries(request: HookRequest) -> int:
    return sum(len(v.get("entry") or ()) if v.get("resourceType") == "Bundle" else 1
               for v in (request.prefetch or {}).values() if v is not None)


def test_1_parse(benchmark: Any, staged: Staged) -> None:
    benchmark.group = staged.name
    request: HookRequest = benchmark(parse, staged.service, staged.workload.body)
    assert request.hook == staged.service.hook
    assert request.context["patientId"] == staged.workload.request["context"]["patientId"]
    assert prefetched_entries(request) == staged.workload.resources


def test_2_prefetch(benchmark: Any, staged: Staged, ev: Evaluator, loop: asyncio.AbstractEventLoop,
                    http: httpx.AsyncClient) -> None:
    benchmark.group = staged.name
    resolved: prefetch.Resolved = benchmark(lambda: loop.run_until_complete(
        resolve(staged.service, staged.request, ev, http)))
    assert set(resolved.states) == set(staged.service.prefetch)
    assert set(resolved.states.values()) <= {"prefetched", "null"}  # nothing fetched, no Medication read
    assert sum(len(v) for v in resolved.data.values()) == staged.workload.resources


def test_3_timeline(benchmark: Any, staged: Staged, ev: Evaluator) -> None:
    benchmark.group = staged.name
    tl: Timeline = benchmark(timeline_of, staged.service, staged.request, staged.resolved, ev,
                             staged.workload.now)
    expect = EXPECT[staged.name]
    assert tl.regimen.id == "relapsed-refractory"
    assert len(tl.focus_orders) == expect.focus_orders
    assert len(tl.infusions) == expect.infusions
    assert len(tl.steroids) == expect.steroids
    key, cycle, day = expect.position
    position = tl.positions[tl.focus_orders[0].ref if key == "focus" else key]
    assert (position.cycle, position.day) == (cycle, day)


def test_4_rules(benchmark: Any, staged: Staged, ev: Evaluator) -> None:
    benchmark.group = staged.name
    findings: list[Finding] = benchmark(evaluate, staged.timeline, ev.kb, rule_ids=staged.service.rule_ids)
    assert sorted(f.rule_id for f in findings) == list(staged.workload.expected)


def test_5_render(benchmark: Any, staged: Staged, ev: Evaluator) -> None:
    benchmark.group = staged.name
    cards = benchmark(lambda: [ev.renderer.render(f) for f in staged.findings])
    assert sorted(c.source.topic.code for c in cards) == list(staged.workload.expected)
    assert [(c.source.topic.code, c.indicator) for c in cards] == [(f.rule_id, f.indicator) for f in staged.findings]
    assert all(c.summary and c.source.label for c in cards)


@pytest.fixture(scope="module")
def app_client(loop: asyncio.AbstractEventLoop,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.AsyncClient]:
    """The app with its lifespan running (worker pool, store, issued-card writer), called without a socket."""
    stack = AsyncExitStack()
    db = tmp_path_factory.mktemp("microbench") / "feedback.db"
    app = create_app(Settings(auth="off", database_url=f"sqlite:///{db}", public_base_url=BASE_URL,
                              log_level="WARNING"))

    async def start() -> httpx.AsyncClient:
        await stack.enter_async_context(app.router.lifespan_context(app))
        return await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL))

    client = loop.run_until_complete(start())
    yield client
    loop.run_until_complete(stack.aclose())


def test_6_end_to_end(benchmark: Any, staged: Staged, app_client: httpx.AsyncClient,
                      loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = staged.name
    w = staged.workload
    headers = {"content-type": "application/json"}
    response: httpx.Response = benchmark(lambda: loop.run_until_complete(
        app_client.post(w.path, content=w.body, headers=headers)))
    assert response.status_code == 200, response.text[:500]
    cards = response.json()["cards"]
    assert sorted((c["source"]["topic"]["code"], c["indicator"]) for c in cards) == sorted(
        (f.rule_id, f.indicator) for f in staged.findings)
    assert sorted(c["source"]["topic"]["code"] for c in cards) == list(w.expected)

