"""Mixed load against the reference deployment (tests/reliability/cluster.py): ``make chaos`` and ``make soak``.

    make chaos    # = pg_virtualenv -t sh -c 'BLINA_CDS_TEST_POSTGRES_URL=postgresql:// \
                  #       .venv/bin/python -m tests.reliability.harness chaos [--seconds 90]'
    make soak     # ... -m tests.reliability.harness soak [--seconds 600]

The load is what an EHR sends, signed with a fresh ES384 JWT per request (a test issuer the replicas trust):

* hook calls of the three hooks, built from ``fhir_examples/`` (dates shifted to the start of the run), each
  sent with its prefetch or without it (``fhirServer`` = sekmet-fhir, which holds the same charts); every answer
  must be a 200 whose warning and critical cards are exactly the rule ids the example's manifest names;
* discovery;
* feedback on about half of the warning and critical cards, one second after the card came back (a clinician
  clicks), accepted with a suggestion or overridden with a reason; a feedback not answered 200 is sent again
  (a new JWT, the same item), as an EHR does, and some acknowledged ones are sent a second time on purpose;
* replays: a token used once (on replica A directly) is sent again to A, to B, and through nginx; tokens of
  hook calls are replayed through nginx; after a restart, tokens used before the kill go to the restarted replica.

**chaos**: one replica is killed with SIGKILL at ``--kill-at`` and started
again at ``--restart-at``. Checks: 0 failed hook calls and discovery calls through nginx; every feedback
acknowledged with 200 is in PostgreSQL exactly once (queried directly); 0 replays accepted.

Both start with a calibration (``--calibrate`` seconds of the same mix from 8 clients back to back: the throughput
the deployment gives on this shared machine right now; ``make bench`` measures single scenarios on one replica
without JWT or nginx), unless ``--rate`` is given. chaos holds 40 % of it (after the kill one replica carries it
all), soak 70 %.

**soak**: 70 % of the calibrated throughput for ``--seconds``. Per minute: errors (must be 0), p50/p99 of hook
calls, RSS and open file descriptors of each replica. Checks: 0 errors, RSS of each replica within 10 % of its
first minute (after warm-up), open fds within ``FD_SLACK`` of the first minute, every feedback with its rule id.

The full runs write their figures to ``tests/reliability/RESULTS.md`` (each its own section); the short versions
in ``make test`` (tests/reliability/test_reliability.py) write to ``tests/artifacts/`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from service import examples
from service.store import engine_url
from tests.jwt_tools import sign
from tests.reliability.cluster import ISSUER, REPO, Cluster

RESULTS = Path(__file__).with_name("RESULTS.md")
ARTIFACTS = Path(os.environ.get("BLINA_CDS_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
INFO_RULES = frozenset({"therapy-status"})
SERVICES = frozenset({"blinatumomab-order-select", "blinatumomab-order-sign", "blinatumomab-patient-view"})
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
FD_SLACK = 40
"""Open fds may vary by connections coming and going (nginx keeps up to 32 idle ones per replica)."""
RSS_FLAT = 0.10
IDLE_FD_SLACK = 25
"""Idle, a replica may still hold its pooled FHIR connections (up to 20, closed lazily) beside its listening socket,
log and database connections; a descriptor leaked per request would be hundreds."""

# Example calls sent under load, each with and without prefetch. Chosen for breadth: the three hooks, warning and
# critical cards from five rule families, quiet courses, and one 313 KB call that goes to the CPU worker pool.
# Their cards were checked not to change when the service's clock runs 30 minutes past the run's start.
CALLS = [
    ("premed-missing", "c2d1-sign"), ("dose-schedule", "c1d1-28ug-sign"), ("charting-mrd-premed", "no-steroid-sign"),
    ("hepatic", "c1d8-alt-sign"), ("premed-timing", "c2d1-sign"), ("rr-adult-course", "c1d8-step-sign"),
    ("dose-limit", "c2d1-mg-select"), ("rr-adult-course", "c3d1-select"),
    ("rr-adult-course", "c1d18-view"), ("hepatic", "c1d10-bili-view"), ("chart-crs", "grade-field-3-view"),
    ("neurotoxicity", "icans-g3-at-9-view"), ("charting-running-pump", "c1d3-28-view"),
    ("premed-timing", "c2d2-view"),
]
WITHOUT_PREFETCH_SHARE = 0.25
DISCOVERY_SHARE = 0.10
FEEDBACK_SHARE = 0.5
FEEDBACK_DELAY_S = 1.0
RESEND_ACKNOWLEDGED_SHARE = 0.1
FEEDBACK_ATTEMPTS = 6


@dataclass(frozen=True)
class HookCall:
    label: str
    service: str
    hook: str
    prefetch: bool
    body: bytes
    alerts: frozenset[str]

    @property
    def kind(self) -> str:
        return "hook, prefetch" if self.prefetch else "hook, fetched from FHIR"


def build_calls(cluster: Cluster, now: dt.datetime) -> list[HookCall]:
    """Each call of ``CALLS`` twice: with its prefetch, and without it (its chart loaded into sekmet)."""
    calls = []
    for name, call_id in CALLS:
        call = examples._call(name, call_id)
        request = examples.request_for(name, call_id, now=now)
        request["hookInstance"] = PLACEHOLDER
        alerts = frozenset(call["expect_rule_ids"]) - INFO_RULES
        label = f"{name}/{call_id}"
        calls.append(HookCall(label, call["service"], call["hook"], True, orjson.dumps(request), alerts))
        cluster.fhir.load(examples.bundle_for(name, call_id, now=now))
        without = {k: v for k, v in request.items() if k != "prefetch"}
        without["fhirServer"] = cluster.fhir.base
        calls.append(HookCall(label, call["service"], call["hook"], False, orjson.dumps(without), alerts))
    return calls


@dataclass
class Outcome:
    t: float
    """Seconds since the load started."""
    kind: str
    status: int | None
    ms: float
    ok: bool
    detail: str = ""


CUT_MID_ANSWER = frozenset({"RemoteProtocolError", "ReadError"})
"""httpx's errors for a connection closed part-way through an answer (nginx, when the replica died after its status
line)."""


@dataclass
class SentFeedback:
    card: str
    service: str
    rule_id: str
    item: dict[str, Any]
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)
    acknowledged: bool = False
    resent_after_ack: bool = False
    resend_stored: int | None = None


@dataclass
class Replay:
    t: float
    kind: str
    """same replica / other replica / through nginx / hook call through nginx / restarted replica."""
    status: int | None


@dataclass
class Sample:
    t: float
    replica: str
    pid: int
    rss_mb: float
    fds: int


class Load:
    """Sends the mixed load through nginx at a set rate, and records every outcome."""

    def __init__(self, cluster: Cluster, calls: list[HookCall], *, seed: int = 7, concurrency: int = 32,
                 replay_every_s: float = 2.0, sample_every_s: float = 5.0) -> None:
        self.cluster = cluster
        self.calls = calls
        self.rng = random.Random(seed)
        self.concurrency = concurrency
        self.replay_every_s = replay_every_s
        self.sample_every_s = sample_every_s
        self.outcomes: list[Outcome] = []
        self.feedback: dict[str, SentFeedback] = {}
        self.replays: list[Replay] = []
        self.samples: list[Sample] = []
        self.events: list[tuple[float, str]] = []
        self.down: set[str] = set()
        self.recent: deque[tuple[str, bytes, str]] = deque(maxlen=64)
        """(path, body, token) of recent hook calls, for replays through nginx."""
        self.used_before_kill: list[tuple[str, bytes, str]] = []
        """(path, body, token) of hook calls answered before a replica was killed."""
        self.killed = False
        self.started = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None
        return self._client

    def now(self) -> float:
        return time.monotonic() - self.started

    def token(self, path: str) -> str:
        return sign(self.cluster.private_key, kid=self.cluster.kid, iss=ISSUER, aud=self.cluster.base + path)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def event(self, what: str) -> None:
        self.events.append((self.now(), what))

    async def __aenter__(self) -> Load:
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency)
        self._client = httpx.AsyncClient(timeout=60, limits=limits, trust_env=False)
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def drain(self, timeout_s: float = 90) -> None:
        """Wait for every request in flight and every feedback still to be sent (or acknowledged)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=1)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ requests

    async def _send(self, kind: str, method: str, url: str, *, token: str,
                    body: bytes | None = None) -> tuple[httpx.Response | None, Outcome]:
        t = self.now()
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self.client.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            outcome = Outcome(t, kind, None, (time.perf_counter() - started) * 1000, False, type(exc).__name__)
            return None, outcome
        outcome = Outcome(t, kind, response.status_code, (time.perf_counter() - started) * 1000,
                          response.status_code == 200)
        if not outcome.ok:
            outcome.detail = f"HTTP {response.status_code}: {response.text[:200]}"
        return response, outcome

    async def hook(self, call: HookCall, *, record: bool = True, feedback: bool = True) -> bool:
        path = f"/cds-services/{call.service}"
        body = call.body.replace(PLACEHOLDER.encode(), str(uuid.uuid4()).encode(), 1)
        token = self.token(path)
        response, outcome = await self._send(call.kind, "POST", self.cluster.base + path, token=token, body=body)
        if response is not None and outcome.ok:
            cards = response.json()["cards"]
            alerts = {c["source"]["topic"]["code"] for c in cards if c["indicator"] in ("warning", "critical")}
            if alerts != call.alerts:
                outcome.ok = False
                outcome.detail = f"{call.label}: alerts {sorted(alerts)}, expected {sorted(call.alerts)}"
            elif feedback:
                alert_cards = [c for c in cards if c["indicator"] in ("warning", "critical")]
                if alert_cards and self.rng.random() < FEEDBACK_SHARE:
                    self.spawn(self.send_feedback(call.service, self.rng.choice(alert_cards)))
            self.recent.append((path, body, token))
            if not self.killed and len(self.used_before_kill) < 20:
                self.used_before_kill.append((path, body, token))
        elif outcome.detail:
            outcome.detail = f"{call.label}: {outcome.detail}"
        if record:
            self.outcomes.append(outcome)
        return outcome.ok

    async def discovery(self, *, record: bool = True) -> bool:
        response, outcome = await self._send("discovery", "GET", self.cluster.base + "/cds-services",
                                             token=self.token("/cds-services"))
        if response is not None and outcome.ok:
            ids = {s["id"] for s in response.json()["services"]}
            if ids != SERVICES:
                outcome.ok = False
                outcome.detail = f"services {sorted(ids)}"
        if record:
            self.outcomes.append(outcome)
        return outcome.ok

    def _feedback_item(self, card: dict[str, Any]) -> dict[str, Any]:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        reasons = card.get("overrideReasons") or []
        suggestions = card.get("suggestions") or []
        if suggestions and (not reasons or self.rng.random() < 0.4):
            return {"card": card["uuid"], "outcome": "accepted",
                    "acceptedSuggestions": [{"id": suggestions[0]["uuid"]}], "outcomeTimestamp": stamp}
        item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": stamp}
        if reasons:
            item["overrideReason"] = {"reason": {k: reasons[0][k] for k in ("code", "system", "display")},
                                      "userComment": f"load test, card {card['uuid'][:8]}"}
        return item

    async def send_feedback(self, service: str, card: dict[str, Any]) -> None:
        await asyncio.sleep(FEEDBACK_DELAY_S)
        sent = SentFeedback(card["uuid"], service, card["source"]["topic"]["code"], self._feedback_item(card))
        self.feedback[sent.card] = sent
        body = orjson.dumps({"feedback": [sent.item]})
        path = f"/cds-services/{service}/feedback"
        while sent.attempts < FEEDBACK_ATTEMPTS:
            sent.attempts += 1
            kind = "feedback" if sent.attempts == 1 else "feedback, sent again"
            response, outcome = await self._send(kind, "POST", self.cluster.base + path, token=self.token(path),
                                                 body=body)
            sent.statuses.append(str(outcome.status or outcome.detail))
            if response is not None and outcome.ok:
                reply = response.json()
                if reply.get("received") != 1:
                    outcome.ok = False
                    outcome.detail = f"feedback answer {reply}"
                else:
                    sent.acknowledged = True
            self.outcomes.append(outcome)
            if sent.acknowledged:
                break
            await asyncio.sleep(0.5 * sent.attempts)  # the EHR waits a little before it sends it again
        if sent.acknowledged and self.rng.random() < RESEND_ACKNOWLEDGED_SHARE:
            await asyncio.sleep(0.5)
            sent.resent_after_ack = True
            response, outcome = await self._send("feedback, duplicate", "POST", self.cluster.base + path,
                                                 token=self.token(path), body=body)
            if response is not None and outcome.ok:
                sent.resend_stored = int(response.json().get("stored", -1))
                if sent.resend_stored != 0:
                    outcome.ok = False
                    outcome.detail = f"a duplicate was stored again ({response.json()})"
            self.outcomes.append(outcome)

    async def replay_round(self) -> None:
        """A token used once on one replica, sent again to it, to the other one and through nginx."""
        live = [r for name, r in self.cluster.replicas.items() if name not in self.down and r.alive]
        if not live:
            return
        origin = self.rng.choice(live)
        token = self.token("/cds-services")
        first, outcome = await self._send("replay origin", "GET", origin.base + "/cds-services", token=token)
        if first is None or not outcome.ok:
            self.outcomes.append(outcome)
            return
        targets = [("same replica", origin.base), ("through nginx", self.cluster.base)]
        targets += [("other replica", r.base) for r in live if r is not origin]
        for kind, base in targets:
            await self._replay(kind, "GET", base + "/cds-services", token)
        if self.recent:
            path, body, hook_token = self.rng.choice(list(self.recent))
            await self._replay("hook call through nginx", "POST", self.cluster.base + path, hook_token, body)

    async def _replay(self, kind: str, method: str, url: str, token: str, body: bytes | None = None) -> None:
        t = self.now()
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self.client.request(method, url, content=body, headers=headers)
            self.replays.append(Replay(t, kind, response.status_code))
        except httpx.HTTPError:
            self.replays.append(Replay(t, kind, None))

    async def replay_on_restarted(self, name: str) -> None:
        """Tokens used before the kill, sent to the restarted replica (its memory is new; the store is not)."""
        replica = self.cluster.replicas[name]
        for path, body, token in self.used_before_kill[:10]:
            await self._replay("restarted replica", "POST", replica.base + path, token, body)

    def sample(self) -> None:
        for name, replica in self.cluster.replicas.items():
            if name in self.down or not replica.alive or replica.process is None:
                continue
            with contextlib.suppress(OSError, LookupError):
                self.samples.append(Sample(self.now(), name, replica.process.pid, replica.rss_mb(),
                                           replica.open_fds()))

    # ------------------------------------------------------------------ driving

    async def one(self) -> None:
        roll = self.rng.random()
        if roll < DISCOVERY_SHARE:
            await self.discovery()
            return
        with_prefetch = self.rng.random() >= WITHOUT_PREFETCH_SHARE
        call = self.rng.choice([c for c in self.calls if c.prefetch == with_prefetch])
        await self.hook(call)

    async def run(self, *, rate: float, seconds: float,
                  at: list[tuple[float, Callable[[], Awaitable[None]]]] | None = None,
                  until: Callable[[], bool] | None = None) -> None:
        """Hold ``rate`` requests/s (hook calls and discovery; feedback and replays come on top) for ``seconds``,
        and past them until ``until()`` is true.

        At most ``concurrency`` are in flight: when the cluster cannot keep up the rate held drops (it is reported)
        rather than requests piling up. ``at`` runs actions (kill, restart) at given seconds, beside the load.
        """
        semaphore = asyncio.Semaphore(self.concurrency)
        begin = self.now()

        def going() -> bool:
            return self.now() < begin + seconds or (until is not None and not until())

        async def guarded() -> None:
            try:
                await self.one()
            finally:
                semaphore.release()

        async def ticker() -> None:
            i = 0
            while True:
                delay = begin + i / rate - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not going():
                    return
                await semaphore.acquire()
                self.spawn(guarded())
                i += 1

        async def replays() -> None:
            while going():
                await asyncio.sleep(self.replay_every_s)
                await self.replay_round()

        async def sampler() -> None:
            while going():
                self.sample()
                await asyncio.sleep(self.sample_every_s)
            self.sample()

        async def scheduled(when: float, action: Callable[[], Awaitable[None]]) -> None:
            await asyncio.sleep(max(0.0, begin + when - self.now()))
            await action()

        await asyncio.gather(ticker(), replays(), sampler(), *(scheduled(w, a) for w, a in (at or [])))

    async def closed_loop(self, *, clients: int, seconds: float) -> tuple[float, int]:
        """(requests/s, failures) with ``clients`` sending back to back (no feedback; outcomes not recorded)."""
        done = 0
        failures = 0
        end = self.now() + seconds

        async def client() -> None:
            nonlocal done, failures
            while self.now() < end:
                roll = self.rng.random()
                if roll < DISCOVERY_SHARE:
                    ok = await self.discovery(record=False)
                else:
                    call = self.rng.choice([c for c in self.calls
                                            if c.prefetch == (self.rng.random() >= WITHOUT_PREFETCH_SHARE)])
                    ok = await self.hook(call, record=False, feedback=False)
                done += ok
                failures += not ok

        started = self.now()
        await asyncio.gather(*(client() for _ in range(clients)))
        return done / (self.now() - started), failures


# ---------------------------------------------------------------------- figures


def stored_feedback(database_url: str) -> list[dict[str, Any]]:
    """Every feedback row, read from the database directly (not through the service)."""
    engine = create_engine(engine_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT card_uuid, rule_id, outcome FROM feedback"))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Figures:
    """What a run measured, and what it must not have seen (``problems``)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    replay_problems: list[str] = field(default_factory=list)
    """Kept apart: refusing a replay on every replica needs the replay cache shared in the database."""
    in_flight_problems: list[str] = field(default_factory=list)
    """Kept apart: hook calls cut off by the kill whose retry the shared replay cache refused (see ``chaos``)."""

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def check(self, ok: bool, problem: str, *, replay: bool = False, in_flight: bool = False) -> None:
        if not ok:
            (self.replay_problems if replay else self.in_flight_problems if in_flight else self.problems).append(
                problem)

    def markdown(self) -> str:
        failed = self.problems + self.replay_problems + self.in_flight_problems
        verdict = "**all checks passed**" if not failed else "**FAILED**: " + "; ".join(failed)
        return "\n".join([*self.lines, "", verdict, ""])


def _hooks(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.kind.startswith("hook")]


def load_figures(fig: Figures, load: Load, *, rate: float, seconds: float) -> None:
    counted = [o for o in load.outcomes if o.kind.startswith(("hook", "discovery"))]
    held = len(counted) / seconds if seconds else 0.0
    everything = len(load.outcomes) / seconds if seconds else 0.0
    fig.add(f"| load asked | {rate:.1f} hook + discovery calls/s for {seconds:.0f} s |")
    fig.add(f"| load held | {held:.1f} hook + discovery calls/s ({everything:.1f}/s with feedback) |")
    by_kind: dict[str, Counter[bool]] = {}
    for o in load.outcomes:
        by_kind.setdefault(o.kind, Counter())[o.ok] += 1
    for kind in sorted(by_kind):
        c = by_kind[kind]
        fig.add(f"| {kind} | {c[True]} ok, {c[False]} failed |")
    hooks = [o.ms for o in _hooks(load.outcomes) if o.ok]
    fig.add(f"| hook-call latency through nginx | p50 {percentile(hooks, 50):.0f} ms, "
            f"p99 {percentile(hooks, 99):.0f} ms |")


def replay_figures(fig: Figures, load: Load) -> None:
    kinds: dict[str, Counter[str]] = {}
    for r in load.replays:
        verdict = "refused" if r.status == 401 else ("no answer" if r.status is None else f"HTTP {r.status}")
        kinds.setdefault(r.kind, Counter())[verdict] += 1
    total = sum(sum(c.values()) for c in kinds.values())
    refused = sum(c["refused"] for c in kinds.values())
    fig.add(f"| replay attempts | {total}, refused (401) {refused} |")
    for kind in sorted(kinds):
        detail = ", ".join(f"{v} {n}" for n, v in sorted(kinds[kind].items()))
        fig.add(f"| replay: {kind} | {detail} |")
    accepted = [r for r in load.replays if r.status is not None and r.status < 400]
    by = Counter(r.kind for r in accepted)
    fig.check(not accepted, f"{len(accepted)} replayed tokens accepted ({dict(by)})", replay=True)
    fig.check(total > 0, "no replay was attempted")


def feedback_figures(fig: Figures, load: Load, database_url: str, *, require_rule_ids: bool) -> None:
    rows = [r for r in stored_feedback(database_url) if r["card_uuid"] in load.feedback]  # this run's cards
    per_card = Counter(r["card_uuid"] for r in rows)
    sent = list(load.feedback.values())
    acked = [s for s in sent if s.acknowledged]
    first_try = [s for s in acked if s.attempts == 1]
    missing = [s.card for s in acked if per_card[s.card] == 0]
    duplicated = [card for card, n in per_card.items() if n > 1]
    never = [s for s in sent if not s.acknowledged]
    resent = [s for s in sent if s.resent_after_ack]
    by_card = {r["card_uuid"]: r for r in rows}
    no_rule = [s.card for s in acked if s.card in by_card and by_card[s.card]["rule_id"] is None]
    wrong_rule = [s.card for s in acked if s.card in by_card and by_card[s.card]["rule_id"] not in (None, s.rule_id)]
    refused = Counter(st for s in sent for st in s.statuses if st != "200")
    fig.add(f"| feedback items sent | {len(sent)} ({len(acked)} acknowledged with 200: {len(first_try)} at the first "
            f"attempt, {len(acked) - len(first_try)} after sending again; answers other than 200: "
            f"{dict(refused) or 'none'}) |")
    fig.add(f"| feedback sent again after its 200 (as an EHR may) | {len(resent)}, stored again: "
            f"{sum(1 for s in resent if s.resend_stored)} |")
    fig.add(f"| feedback in PostgreSQL | {len(rows)} rows; acknowledged and stored once: "
            f"{sum(1 for s in acked if per_card[s.card] == 1)}; missing: {len(missing)}; duplicated: "
            f"{len(duplicated)}; never acknowledged: {len(never)} |")
    fig.add(f"| stored feedback without the issued card's rule id | {len(no_rule)} with none, {len(wrong_rule)} with "
            f"another |")
    fig.check(not wrong_rule, f"{len(wrong_rule)} feedback rows carry another card's rule id")
    if require_rule_ids:
        fig.check(not no_rule, f"{len(no_rule)} feedback rows have no rule id (card issued by the other replica?)")
    fig.check(not missing, f"{len(missing)} acknowledged feedback items are not in the database")
    fig.check(not duplicated, f"{len(duplicated)} cards have duplicated feedback rows")
    fig.check(not never, f"{len(never)} feedback items were never acknowledged after {FEEDBACK_ATTEMPTS} attempts")
    fig.check(len(rows) == len(acked) + sum(1 for s in never if per_card[s.card]),
              f"{len(rows)} rows for {len(acked)} acknowledged items")
    fig.check(bool(acked), "no feedback was acknowledged")


def resource_table(load: Load, *, window_s: float, rate_outcomes: bool = True) -> list[str]:
    """Per window: requests, errors, p50/p99 of hook calls, RSS and fds of each replica at the window's end."""
    names = sorted(load.cluster.replicas)
    head = "| window | requests | errors | hook p50 | hook p99 | " + " | ".join(
        f"RSS {n} (MB) | fds {n}" for n in names) + " |"
    rows = [head, "|" + "---|" * (5 + 2 * len(names))]
    end = max([o.t for o in load.outcomes] + [s.t for s in load.samples] + [0.0])
    start = 0.0
    while start < end:
        stop = start + window_s
        within = [o for o in load.outcomes if start <= o.t < stop]
        hooks = [o.ms for o in _hooks(within) if o.ok]
        p50, p99 = (f"{percentile(hooks, q):.0f} ms" if hooks else "-" for q in (50, 99))
        cells = [f"{start:.0f}-{stop:.0f} s", str(len(within)), str(sum(not o.ok for o in within)), p50, p99]
        for n in names:
            mine = [s for s in load.samples if s.replica == n and start <= s.t < stop]
            cells += [f"{mine[-1].rss_mb:.1f}" if mine else "-", str(mine[-1].fds) if mine else "-"]
        rows.append("| " + " | ".join(cells) + " |")
        start = stop
    return rows


def access_log_figures(fig: Figures, cluster: Cluster) -> None:
    rows = cluster.access_log()
    retried = [r for r in rows if "," in r[4]]
    by_status = Counter((("feedback" if r[3].endswith("/feedback") else "hook") if r[2] == "POST" else r[2], r[1])
                        for r in rows)
    per_replica = Counter(r[4].split(",")[-1] for r in rows)
    names = {r.address: n for n, r in cluster.replicas.items()}
    fig.add(f"| nginx: requests answered by each replica | "
            f"{', '.join(f'{names.get(a, a)} {n}' for a, n in sorted(per_replica.items()))} |")
    fig.add(f"| nginx: requests retried on the other replica | {len(retried)} "
            f"({', '.join(sorted({f'{r[2]} {r[3].rsplit(chr(47), 1)[-1]}' for r in retried})) or '-'}) |")
    non200 = {k: v for k, v in by_status.items() if k[1] != "200" and k[1] != "401"}
    fig.add(f"| nginx: answers other than 200/401 | {dict(sorted(non200.items())) or 'none'} |")


def failures_detail(load: Load, limit: int = 10) -> list[str]:
    failed = [o for o in load.outcomes if not o.ok]
    return [f"- t={o.t:.1f} s {o.kind}: {o.detail or o.status}" for o in failed[:limit]]


# ---------------------------------------------------------------------- the two runs

CALIBRATION_CLIENTS = 8
"""As ``make bench``: 8 clients sending back to back."""


@dataclass(frozen=True)
class Rate:
    """The rate a run holds, and where it came from (a calibration on this machine now, or set by hand)."""

    per_s: float
    how: str
    calibration_failures: int = 0


@dataclass(frozen=True)
class Calibration:
    capacity: float
    """Calls/s completed by 8 clients sending back to back."""
    seconds: float
    failures: int

    def rate(self, share: float) -> Rate:
        how = (f"{share:.0%} of {self.capacity:.1f} calls/s, the throughput {CALIBRATION_CLIENTS} clients sending "
               f"back to back got for {self.seconds:.0f} s just before")
        return Rate(max(1.0, round(self.capacity * share, 1)), how, self.failures)


async def calibrate(cluster: Cluster, *, seconds: float) -> Calibration:
    """What the cluster completes with 8 clients back to back, the same mix, for ``seconds``.

    ``make bench`` measures single scenarios on one replica without JWT or nginx; this is the same measurement for
    the mix and the deployment under test, taken on the machine as loaded right now (it is shared). Requests that
    fail at saturation (a 412 when the FHIR server cannot answer fast enough) are reported, not counted as errors.
    """
    calls = build_calls(cluster, dt.datetime.now(dt.UTC).replace(microsecond=0))
    async with Load(cluster, calls) as load:
        capacity, failures = await load.closed_loop(clients=CALIBRATION_CLIENTS, seconds=seconds)
    return Calibration(capacity, seconds, failures)


def rate_lines(fig: Figures, rate: Rate) -> None:
    fig.add(f"| rate | {rate.per_s:.1f} calls/s ({rate.how}) |")
    if rate.calibration_failures:
        fig.add(f"| requests failed during the calibration (saturation, not counted) | {rate.calibration_failures} |")


@dataclass
class ChaosPlan:
    seconds: float = 90.0
    kill_at: float = 30.0
    restart_at: float = 40.0
    victim: str = "b"
    tail_s: float = 10.0
    """Load continues at least this long after the restarted replica is healthy."""


CHAOS_SHARE = 0.40
"""Of the calibrated throughput of both replicas: the survivor alone then runs at about 80 % of what it can do."""


async def chaos(cluster: Cluster, plan: ChaosPlan, rate: Rate) -> Figures:
    calls = build_calls(cluster, dt.datetime.now(dt.UTC).replace(microsecond=0))
    async with Load(cluster, calls) as load:
        restarted = asyncio.Event()

        async def kill() -> None:
            load.event(f"replica {plan.victim} killed with SIGKILL (its process group)")
            load.down.add(plan.victim)
            load.killed = True
            cluster.kill(plan.victim)

        async def restart() -> None:
            load.event(f"replica {plan.victim} starting again")
            await asyncio.to_thread(cluster.restart, plan.victim)
            load.down.discard(plan.victim)
            load.event(f"replica {plan.victim} healthy again")
            restarted.set()
            await load.replay_on_restarted(plan.victim)

        def restarted_and_served() -> bool:
            return restarted.is_set() and load.now() >= load.events[-1][0] + plan.tail_s

        # A busy machine may take longer to restart the replica than the plan allows: the load stays on until it is
        # back and has served for ``tail_s``, so the run always covers the restarted replica.
        await load.run(rate=rate.per_s, seconds=plan.seconds, at=[(plan.kill_at, kill), (plan.restart_at, restart)],
                       until=restarted_and_served)
        seconds = load.now()
        await load.drain()

    fig = Figures()
    fig.add("| figure | value |")
    fig.add("|---|---|")
    fig.add(f"| timeline | {'; '.join(f'{what} at {t:.1f} s' for t, what in load.events)} |")
    rate_lines(fig, rate)
    load_figures(fig, load, rate=rate.per_s, seconds=seconds)
    hooks = _hooks(load.outcomes)
    discovery = [o for o in load.outcomes if o.kind == "discovery"]
    # A hook call in flight on the killed replica is not sent again by nginx (README "Deploying": the same JWT would
    # be refused as a replay, its jti claimed by the dead replica): a 502 — or a 401 with a configuration that
    # resends it. When the replica dies after writing its answer's status line but before the body, nginx has
    # already passed the 200 on and can only close the EHR's connection (its error log: "upstream prematurely
    # closed connection while reading upstream"): the client sees the connection end mid-answer.
    # Counted on their own: they are the calls the deployment cannot save today.
    killed_at = next((t for t, what in load.events if "killed" in what), None)
    cut_off = [o for o in hooks if (o.status in (401, 502) or o.detail in CUT_MID_ANSWER) and killed_at is not None
               and o.t <= killed_at <= o.t + o.ms / 1000]
    others = [o for o in hooks if not o.ok and o not in cut_off]
    fig.add("| hook calls in flight on the killed replica (lost: 502, connection closed mid-answer, or 401 if resent)"
            f" | {len(cut_off)} |")
    fig.check(bool(hooks) and not others, f"{len(others)} of {len(hooks)} hook calls failed through nginx")
    fig.check(not cut_off, f"{len(cut_off)} hook calls in flight on the killed replica were lost "
              f"({', '.join(sorted({str(o.status or o.detail) for o in cut_off}))})", in_flight=True)
    fig.check(all(o.ok for o in discovery), f"{sum(not o.ok for o in discovery)} discovery calls failed")
    fig.check(any(o.t > plan.kill_at for o in hooks), "no hook call was sent after the kill")
    feedback_figures(fig, load, cluster.database_url, require_rule_ids=False)
    replay_figures(fig, load)
    access_log_figures(fig, cluster)
    for name in sorted(cluster.replicas):
        mine = [s for s in load.samples if s.replica == name]
        if mine:
            fig.add(f"| replica {name}: RSS first / last / max | {mine[0].rss_mb:.0f} / {mine[-1].rss_mb:.0f} / "
                    f"{max(s.rss_mb for s in mine):.0f} MB; open fds {mine[0].fds} / {mine[-1].fds} / "
                    f"{max(s.fds for s in mine)} |")
    fig.add("")
    fig.lines += resource_table(load, window_s=max(5.0, round(seconds / 6)))
    failures_lines(fig, load)
    return fig


@dataclass
class SoakPlan:
    seconds: float = 600.0
    window_s: float = 60.0
    strict_flat: bool = True
    """RSS within 10 % and fds within FD_SLACK of the first window (the full soak); the short one bounds growth."""


SOAK_SHARE = 0.70


async def soak(cluster: Cluster, plan: SoakPlan, rate: Rate) -> Figures:
    calls = build_calls(cluster, dt.datetime.now(dt.UTC).replace(microsecond=0))
    idle: dict[str, tuple[int, int]] = {}
    async with Load(cluster, calls, sample_every_s=min(5.0, plan.window_s / 4)) as load:
        if not plan.strict_flat:
            idle = {n: (fds, 0) for n, fds in (await _idle_fds(cluster)).items()}
            load.started = time.monotonic()
        await load.run(rate=rate.per_s, seconds=plan.seconds)
        seconds = load.now()
        await load.drain()
        if not plan.strict_flat:
            idle = {n: (idle[n][0], fds) for n, fds in (await _idle_fds(cluster)).items()}

    fig = Figures()
    fig.add("| figure | value |")
    fig.add("|---|---|")
    rate_lines(fig, rate)
    load_figures(fig, load, rate=rate.per_s, seconds=seconds)
    errors = [o for o in load.outcomes if not o.ok]
    fig.check(not errors, f"{len(errors)} errors")
    feedback_figures(fig, load, cluster.database_url, require_rule_ids=True)
    replay_figures(fig, load)
    access_log_figures(fig, cluster)
    fig.add("")
    fig.lines += resource_table(load, window_s=plan.window_s)
    # Flatness: the first window is warm-up (caches, pools, the CPU worker); compare its end with the last window.
    for name in sorted(cluster.replicas):
        mine = [s for s in load.samples if s.replica == name]
        first = [s for s in mine if s.t < plan.window_s] or mine[:1]
        last = [s for s in mine if s.t >= seconds - plan.window_s] or mine[-1:]
        base_rss, end_rss = first[-1].rss_mb, max(s.rss_mb for s in last)
        base_fds, end_fds = max(s.fds for s in first), max(s.fds for s in last)
        growth = end_rss / base_rss - 1
        fig.add("")
        fig.add(f"Replica {name}: RSS {base_rss:.1f} MB at the end of the first window, at most {end_rss:.1f} MB in "
                f"the last ({growth:+.1%}); open fds at most {base_fds} in the first window, {end_fds} in the last.")
        if plan.strict_flat:
            fig.check(growth <= RSS_FLAT, f"replica {name} RSS grew {growth:+.1%} (more than {RSS_FLAT:.0%})")
            fig.check(end_fds <= base_fds + FD_SLACK, f"replica {name} open fds {base_fds} → {end_fds}")
        else:
            # Short run: bound the growth a leak per request would show over a few hundred requests. Descriptors are
            # compared idle, before and after the load (connections in use come and go with the load itself).
            before, after = idle[name]
            fig.add(f"Replica {name} idle, before and after the load: {before} → {after} open fds.")
            fig.check(end_rss <= base_rss * 1.25 + 10, f"replica {name} RSS {base_rss:.0f} → {end_rss:.0f} MB")
            fig.check(after <= before + IDLE_FD_SLACK, f"replica {name} idle open fds {before} → {after}")
    failures_lines(fig, load)
    return fig


async def _idle_fds(cluster: Cluster) -> dict[str, int]:
    """Open fds of each replica after 6 s without load (nginx drops idle connections to them after 4 s)."""
    await asyncio.sleep(6)
    return {name: r.open_fds() for name, r in cluster.replicas.items() if r.alive}


def failures_lines(fig: Figures, load: Load) -> None:
    detail = failures_detail(load)
    if detail:
        fig.add("")
        fig.add("Failed requests (first 10):")
        fig.lines += detail


# ---------------------------------------------------------------------- RESULTS.md


def machine_line() -> str:
    load1, load5, _ = os.getloadavg()
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores shared with other users "
            f"(load average {load1:.1f} / {load5:.1f} at the end), Python {sys.version.split()[0]}")


def write_section(path: Path, name: str, title: str, body: str) -> None:
    """Replace (or add) the ``name`` section of a results file, leaving the other runs' sections as they are."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n## {title}\n\n{body}\n{end}"
    current = path.read_text(encoding="utf-8") if path.exists() else (
        "# Reliability runs\n\nWritten by `make chaos` and `make soak` (tests/reliability/harness.py); the short "
        "versions in `make test` write to `tests/artifacts/` instead.\n")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated.rstrip() + "\n", encoding="utf-8")


def report(fig: Figures, *, name: str, title: str, command: str, path: Path) -> None:
    body = f"`{command}` — {machine_line()}.\n\n{fig.markdown()}"
    write_section(path, name, title, body)


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.reliability.harness")
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("chaos", help="two replicas behind nginx, one killed part-way")
    c.add_argument("--seconds", type=float, default=float(os.environ.get("BLINA_CDS_CHAOS_SECONDS", 90)))
    c.add_argument("--rate", type=float, default=float(os.environ.get("BLINA_CDS_CHAOS_RATE", 0)) or None,
                   help=f"calls/s (default: {CHAOS_SHARE:.0%} of a calibration)")
    c.add_argument("--kill-at", type=float, default=None, help="seconds (default: a third of the run)")
    c.add_argument("--restart-at", type=float, default=None, help="seconds (default: kill + 10)")
    s = sub.add_parser("soak", help="mixed load at 70%% of the calibrated throughput")
    s.add_argument("--seconds", type=float, default=float(os.environ.get("BLINA_CDS_SOAK_SECONDS", 600)))
    s.add_argument("--rate", type=float, default=float(os.environ.get("BLINA_CDS_SOAK_RATE", 0)) or None,
                   help=f"calls/s (default: {SOAK_SHARE:.0%} of a calibration)")
    for mode in (c, s):
        mode.add_argument("--calibrate", type=float, default=20.0, help="seconds of calibration")
        mode.add_argument("--results", type=Path, default=RESULTS, help="where the figures go (a section each)")
    args = parser.parse_args(argv)
    database_url = os.environ.get("BLINA_CDS_TEST_POSTGRES_URL")
    if not database_url:
        print("harness: needs BLINA_CDS_TEST_POSTGRES_URL (run under pg_virtualenv: `make chaos` / `make soak`)",
              file=sys.stderr)
        return 2
    workdir = REPO / "var" / "reliability" / f"{args.mode}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    share = CHAOS_SHARE if args.mode == "chaos" else SOAK_SHARE
    with Cluster.start(workdir, database_url=database_url) as cluster:
        rate = (Rate(args.rate, "set by hand") if args.rate
                else asyncio.run(calibrate(cluster, seconds=args.calibrate)).rate(share))
        if args.mode == "chaos":
            kill_at = args.kill_at if args.kill_at is not None else round(args.seconds / 3)
            restart_at = args.restart_at if args.restart_at is not None else kill_at + 10
            plan = ChaosPlan(seconds=args.seconds, kill_at=kill_at, restart_at=restart_at)
            fig = asyncio.run(chaos(cluster, plan, rate))
            command = f"make chaos ({plan.seconds:g} s, replica {plan.victim} killed at {plan.kill_at:g} s)"
            title = "make chaos: two replicas behind nginx, one killed with SIGKILL under load"
        else:
            fig = asyncio.run(soak(cluster, SoakPlan(seconds=args.seconds), rate))
            command = f"make soak ({args.seconds:g} s)"
            title = "make soak: mixed load at 70 % of the measured throughput"
    report(fig, name=args.mode, title=title, command=command, path=args.results)
    print(fig.markdown())
    print(f"logs: {workdir}\nfigures written to {args.results}")
    return 1 if fig.problems or fig.replay_problems or fig.in_flight_problems else 0


if __name__ == "__main__":
    sys.exit(main())
