"""State that must agree across processes lives in the store: the JWT replay cache, the record of issued cards,
feedback — on SQLite (several workers, one file) and PostgreSQL (several replicas) alike.

Two ``create_app()`` instances on one database stand for two replicas (or two workers); ``shared_db`` can take
the database away for real (a TCP proxy in front of PostgreSQL that drops every connection; another SQLite
connection holding the write lock) and give it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from service import examples, metrics
from service.store import IssuedCard, IssuedCardWriter, SqlFeedbackStore, StorePurger, engine_url, open_store
from tests.conftest import BASE_URL, PATIENT_VIEW, AppFactory
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair, sign
from tests.pg import SKIP_REASON, isolated_schema, postgres_param, postgres_url
from tests.tcp_proxy import TcpProxy

ISS = "https://ehr.example.org"
DISCOVERY = "/cds-services"
HOOK = f"/cds-services/{PATIENT_VIEW}"
FEEDBACK = f"/cds-services/{PATIENT_VIEW}/feedback"
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


# ---------------------------------------------------------------- a database that can go away


@dataclass
class SharedDb:
    url: str
    backend: str
    sqlite_path: Path | None = None
    proxy: TcpProxy | None = None

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The database is unavailable inside the block: PostgreSQL unreachable; SQLite locked by another writer."""
        if self.proxy is not None:
            self.proxy.cut()
            try:
                yield
            finally:
                self.proxy.restore()
            return
        assert self.sqlite_path is not None
        holder = sqlite3.connect(self.sqlite_path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # a long write by another process: nobody else may write
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()


@pytest.fixture(params=["sqlite", postgres_param()])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedDb]:
    if request.param == "sqlite":
        path = tmp_path / "shared.db"
        yield SharedDb(url=f"sqlite:///{path}", backend="sqlite", sqlite_path=path)
        return
    base = postgres_url()
    if base is None:
        pytest.fail(SKIP_REASON, pytrace=False)
    with isolated_schema(base) as url, TcpProxy(os.environ.get("PGHOST", "localhost"),
                                                int(os.environ.get("PGPORT", "5432"))) as proxy:
        routed = engine_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield SharedDb(url=routed, backend="postgres", proxy=proxy)


@pytest.fixture
def keys() -> tuple[Any, dict[str, Any]]:
    return make_es384_keypair()


@pytest.fixture
def replicas(make_app: AppFactory, tmp_path: Path, keys: tuple[Any, dict[str, Any]], shared_db: SharedDb) -> Any:
    """``await replicas(n, **settings)``: n apps (JWT auth) sharing ``shared_db``."""
    path = issuers_file(tmp_path, issuers=[issuer_entry(ISS, keys=[keys[1]])])

    async def start(n: int = 2, **overrides: Any) -> list[tuple[FastAPI, httpx.AsyncClient]]:
        settings: dict[str, Any] = {"auth": "jwt", "trusted_issuers_file": path, "database_url": shared_db.url,
                                    "sqlite_busy_timeout_ms": 200, "store_timeout_s": 1.0, "store_retry_s": 1.0,
                                    **overrides}
        return [await make_app(**settings) for _ in range(n)]

    return start


def auth(keys: tuple[Any, dict[str, Any]], path: str, **claims: Any) -> dict[str, str]:
    private, jwk = keys
    return {"Authorization": f"Bearer {sign(private, kid=jwk['kid'], iss=ISS, aud=BASE_URL + path, **claims)}"}


def crs_request() -> dict[str, Any]:
    """Grade 3 CRS charted an hour ago: a critical ``crs-interrupt`` card and a ``therapy-status`` card."""
    return examples.request_for("crs", "obs-grade3-view", now=datetime.now(UTC))


def overridden(card: dict[str, Any], at: str = "2026-03-10T10:06:00Z") -> dict[str, Any]:
    return {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": at,
                          "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "watching"}}]}


def store_of(app: FastAPI) -> SqlFeedbackStore:
    store: SqlFeedbackStore = app.state.store
    return store


def counter(value: Any) -> float:
    return float(value._value.get())


# ---------------------------------------------------------------- the replay cache across replicas


async def test_a_token_used_on_one_replica_is_refused_on_the_other(replicas: Any,
                                                                    keys: tuple[Any, dict[str, Any]]) -> None:
    (a, client_a), (b, client_b) = await replicas(2)
    token = auth(keys, DISCOVERY)

    assert (await client_a.get(DISCOVERY, headers=token)).status_code == 200
    replayed_b = await client_b.get(DISCOVERY, headers=token)
    assert replayed_b.status_code == 401
    assert replayed_b.json()["issue"][0]["code"] == "login"
    assert (await client_a.get(DISCOVERY, headers=token)).status_code == 401  # and on the first, of course
    assert (await client_b.get(DISCOVERY, headers=auth(keys, DISCOVERY))).status_code == 200  # a fresh token passes

    rows = await store_of(b).fetch_replays()
    assert len(rows) == 2 and all(len(r["key"]) == 64 for r in rows)  # hashed: no token text in the database
    assert all(r["expires_at"] > datetime.now(UTC) for r in rows)


async def test_the_same_token_sent_to_two_replicas_at_once_is_accepted_once(
        replicas: Any, keys: tuple[Any, dict[str, Any]]) -> None:
    (_, client_a), (_, client_b) = await replicas(2)
    token = auth(keys, DISCOVERY)
    answers = await asyncio.gather(*(c.get(DISCOVERY, headers=token) for c in (client_a, client_b) * 3))
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401, 401, 401]


async def test_replay_row_expires_with_the_token_plus_leeway(replicas: Any, keys: tuple[Any, dict[str, Any]]) -> None:
    [(app, client)] = await replicas(1, jwt_leeway_s=30)
    exp = int(datetime.now(UTC).timestamp()) + 120
    assert (await client.get(DISCOVERY, headers=auth(keys, DISCOVERY, exp=exp))).status_code == 200
    [row] = await store_of(app).fetch_replays()
    assert row["expires_at"] == datetime.fromtimestamp(exp + 30, UTC)


# ---------------------------------------------------------------- issued cards across replicas


async def test_a_card_issued_by_one_replica_and_acknowledged_on_the_other_keeps_its_rule(
        replicas: Any, keys: tuple[Any, dict[str, Any]]) -> None:
    # The first replica writes its issued-card record late (a long flush interval): the feedback overtakes it.
    (a, client_a), (b, client_b) = await replicas(2, issued_cards_flush_s=30.0)
    answer = await client_a.post(HOOK, json=crs_request(), headers=auth(keys, HOOK))
    assert answer.status_code == 200
    crs = next(c for c in answer.json()["cards"] if c["source"]["topic"]["code"] == "crs-interrupt")

    stored = await client_b.post(FEEDBACK, json=overridden(crs), headers=auth(keys, FEEDBACK))
    assert stored.json() == {"received": 1, "stored": 1}
    [row] = await store_of(b).fetch_all()
    assert (row["card_uuid"], row["rule_id"]) == (crs["uuid"], None)  # the record has not landed yet

    await a.state.engine.issued.close()  # writes what is queued, as at the end of the flush interval
    [row] = await store_of(b).fetch_all()
    assert row["rule_id"] == "crs-interrupt"

    # A retry of the same feedback, through the first replica this time, is the same decision: still one row.
    again = await client_a.post(FEEDBACK, json=overridden(crs), headers=auth(keys, FEEDBACK))
    assert again.json() == {"received": 1, "stored": 0}
    assert [(r["card_uuid"], r["rule_id"]) for r in await store_of(a).fetch_all()] == [(crs["uuid"], "crs-interrupt")]


# ---------------------------------------------------------------- expiry


def issued(card: str, at: datetime) -> IssuedCard:
    return IssuedCard(card_uuid=card, service_id=PATIENT_VIEW, rule_id="crs-interrupt", indicator="critical",
                      issued_at=at)


async def test_purge_removes_expired_rows_in_batches_and_keeps_the_rest(store: SqlFeedbackStore) -> None:
    now = T0
    await store.save_issued([issued(f"old-{i}", now - timedelta(days=91)) for i in range(5)]
                            + [issued("recent", now - timedelta(days=89))])
    for i in range(3):
        assert await store.claim_jti(f"{i:064x}", expires_at=now - timedelta(seconds=1), now=now - timedelta(hours=1))
    assert await store.claim_jti("f" * 64, expires_at=now + timedelta(minutes=5), now=now)

    assert await store.purge_expired(issued_before=now - timedelta(days=90), now=now, batch=2) == (2, 2)
    purger = StorePurger(store, issued_card_ttl_s=90 * 86400, interval_s=3600, batch=2, pause_s=0, clock=lambda: now)
    assert await purger.purge_once() == (3, 1)  # batch after batch until nothing expired is left

    assert [r["card_uuid"] for r in await store.fetch_issued()] == ["recent"]
    assert [r["key"] for r in await store.fetch_replays()] == ["f" * 64]


async def test_an_expired_replay_row_not_yet_purged_does_not_hold_its_key(store: SqlFeedbackStore) -> None:
    key = "a" * 64
    assert await store.claim_jti(key, expires_at=T0, now=T0 - timedelta(minutes=5))
    assert not await store.claim_jti(key, expires_at=T0 + timedelta(minutes=5), now=T0 - timedelta(seconds=1))
    assert await store.claim_jti(key, expires_at=T0 + timedelta(minutes=5), now=T0)


async def test_concurrent_claims_of_one_key_succeed_once(store: SqlFeedbackStore) -> None:
    results = await asyncio.gather(*(store.claim_jti("b" * 64, expires_at=T0, now=T0 - timedelta(minutes=1))
                                     for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]


async def test_the_running_service_purges_expired_rows_in_the_background(replicas: Any) -> None:
    [(app, _)] = await replicas(1, store_purge_interval_s=0.1, issued_card_ttl_s=3600)
    store = store_of(app)
    now = datetime.now(UTC)
    await store.save_issued([issued("stale", now - timedelta(hours=2)), issued("fresh", now)])
    await store.claim_jti("c" * 64, expires_at=now - timedelta(seconds=1), now=now - timedelta(minutes=5))
    for _ in range(100):
        if [r["card_uuid"] for r in await store.fetch_issued()] == ["fresh"] and not await store.fetch_replays():
            break
        await asyncio.sleep(0.1)
    assert [r["card_uuid"] for r in await store.fetch_issued()] == ["fresh"]
    assert await store.fetch_replays() == []


# ---------------------------------------------------------------- the database briefly unavailable


async def test_database_down_hooks_answer_feedback_is_refused_and_nothing_acknowledged_is_lost(
        replicas: Any, keys: tuple[Any, dict[str, Any]], shared_db: SharedDb) -> None:
    (a, client_a), (b, client_b) = await replicas(2, issued_cards_flush_s=0.05)
    before = await client_a.post(HOOK, json=crs_request(), headers=auth(keys, HOOK))
    card_before = before.json()["cards"][0]
    first = await client_a.post(FEEDBACK, json=overridden(card_before), headers=auth(keys, FEEDBACK))
    assert first.json() == {"received": 1, "stored": 1}
    local_before = counter(metrics.JTI_LOCAL_ONLY)

    with shared_db.outage():
        # Hook calls keep answering, with their cards.
        during_token = auth(keys, HOOK)
        during = await client_a.post(HOOK, json=crs_request(), headers=during_token)
        assert during.status_code == 200
        assert {c["source"]["topic"]["code"] for c in during.json()["cards"]} == {"crs-interrupt", "therapy-status"}
        # The in-process cache still refuses a replay to the same replica.
        assert (await client_a.post(HOOK, json=crs_request(), headers=during_token)).status_code == 401
        assert counter(metrics.JTI_LOCAL_ONLY) >= local_before + 1

        # Feedback is not acknowledged: 503, an OperationOutcome, and when to come back.
        card_during = during.json()["cards"][0]
        refused = await client_b.post(FEEDBACK, json=overridden(card_during), headers=auth(keys, FEEDBACK))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/fhir+json"
        assert refused.json()["issue"][0]["code"] == "transient"

        if shared_db.backend == "postgres":  # health says degraded but stays 200: replicas stay in rotation
            health = await client_a.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "degraded", "store": "unreachable"})

    # Back: replica a writes the issued-card record it queued during the outage (here at once; in service, at its
    # next flush), then the EHR retries the refused feedback, which the record gives its rule. Without the explicit
    # flush the retry can overtake a's flusher on a busy machine (then it is stored without its rule id, as the
    # README says for a card whose record is still queued).
    await asyncio.sleep(1.1)  # store_retry_s: the replay check tries the store again
    await asyncio.wait_for(a.state.engine.issued.flush(), timeout=10)
    retried = await client_b.post(FEEDBACK, json=overridden(card_during), headers=auth(keys, FEEDBACK))
    assert retried.json() == {"received": 1, "stored": 1}
    rows = await store_of(b).fetch_all()
    assert sorted((r["card_uuid"], r["rule_id"]) for r in rows) == sorted([
        (card_before["uuid"], card_before["source"]["topic"]["code"]),
        (card_during["uuid"], card_during["source"]["topic"]["code"]),
    ])  # each acknowledged item exactly once, none that was refused
    assert {r["card_uuid"] for r in await store_of(b).fetch_issued()} >= {
        c["uuid"] for c in before.json()["cards"] + during.json()["cards"]}

    # The token accepted while the store was down is claimed there with the replica's next call: from then on
    # the other replica refuses it too.
    assert (await client_a.get(DISCOVERY, headers=auth(keys, DISCOVERY))).status_code == 200
    for _ in range(50):
        if not a.state.verifier._unshared:
            break
        await asyncio.sleep(0.05)
    assert (await client_b.post(HOOK, json=crs_request(), headers=during_token)).status_code == 401
    assert (await client_a.get("/healthz")).json() == {"status": "ok", "store": "ok"}


async def test_a_full_issued_card_queue_drops_records_but_never_holds_up_a_hook(shared_db: SharedDb) -> None:
    store = open_store(shared_db.url, sqlite_busy_timeout_ms=100)
    writer = IssuedCardWriter(store, queue_max=2, batch_max=10, flush_interval_s=0.01, retry_s=0.05)
    dropped_before = counter(metrics.ISSUED_CARDS_DROPPED)
    writer.start()
    try:
        with shared_db.outage():
            await asyncio.wait_for(writer.record([issued(f"k{i}", T0) for i in range(5)]), timeout=1)
            assert writer.dropped == 3  # two fit in the queue; the hook call did not wait for room
            await asyncio.sleep(0.3)  # the writer holds those two and keeps retrying
            await asyncio.wait_for(writer.record([issued("k5", T0)]), timeout=1)
        await asyncio.wait_for(writer.flush(), timeout=10)
        await writer.close()
        assert counter(metrics.ISSUED_CARDS_DROPPED) - dropped_before == 3
        assert sorted(r["card_uuid"] for r in await store.fetch_issued()) == ["k0", "k1", "k5"]
    finally:
        await store.close()


@pytest.fixture
async def store(shared_db: SharedDb) -> AsyncIterator[SqlFeedbackStore]:
    opened = open_store(shared_db.url)
    yield opened
    await opened.close()


# ---------------------------------------------------------------- real servers: two workers, two replicas


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


@pytest.mark.parametrize("layout", ["sqlite-2-workers", postgres_param("postgres-2-replicas")])
def test_real_servers_share_the_replay_cache_and_the_issued_cards(layout: str, tmp_path: Path,
                                                                   keys: tuple[Any, dict[str, Any]]) -> None:
    """``blina-cds serve``: two uvicorn workers on one SQLite file, or two servers on one PostgreSQL database.

    Every request goes on a new connection, so the kernel (two workers) or the client (two replicas) spreads them.
    Both sit behind one public URL, as behind a load balancer: a token's ``aud`` is valid on either.
    """
    from tests.live import live_service

    public = "https://cds.example.org"
    issuers = issuers_file(tmp_path, issuers=[issuer_entry(ISS, keys=[keys[1]])])
    with contextlib.ExitStack() as stack:
        if layout == "sqlite-2-workers":
            database_url, instances = f"sqlite:///{tmp_path / 'workers.db'}", 1
        else:
            base = postgres_url()
            if base is None:
                pytest.fail(SKIP_REASON, pytrace=False)
            database_url, instances = stack.enter_context(isolated_schema(base)), 2
        bases = []
        for _ in range(instances):
            service = stack.enter_context(live_service(
                tmp_path, start_timeout_s=180, BLINA_CDS_AUTH="jwt", BLINA_CDS_TRUSTED_ISSUERS_FILE=str(issuers),
                BLINA_CDS_PUBLIC_BASE_URL=public, BLINA_CDS_DATABASE_URL=database_url,
                BLINA_CDS_WORKERS="2" if instances == 1 else "1", BLINA_CDS_ISSUED_CARDS_FLUSH_S="0.05"))
            if instances == 1:
                assert len(_children(service.process.pid)) >= 2  # the two uvicorn workers
            bases.append(service.base)

        def call(i: int, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
            with httpx.Client(timeout=30) as fresh:  # a new connection each time
                return fresh.request(method, bases[i % len(bases)] + path,
                                     headers={"Authorization": f"Bearer {token}"}, **kwargs)

        def token_for(path: str) -> str:
            private, jwk = keys
            return sign(private, kid=jwk["kid"], iss=ISS, aud=public + path)

        # One token, used once, then replayed ten times: refused every time, whichever process answers.
        token = token_for(DISCOVERY)
        assert [call(i, "GET", DISCOVERY, token).status_code for i in range(11)] == [200] + [401] * 10

        # A card issued by one process and acknowledged (then retried) through the others: one row, with its rule.
        answer = call(0, "POST", HOOK, token_for(HOOK), json=crs_request())
        assert answer.status_code == 200, answer.text
        crs = next(c for c in answer.json()["cards"] if c["source"]["topic"]["code"] == "crs-interrupt")
        stored = [call(i, "POST", FEEDBACK, token_for(FEEDBACK), json=overridden(crs)) for i in range(1, 7)]
        assert [r.status_code for r in stored] == [200] * 6
        assert sum(r.json()["stored"] for r in stored) == 1
        time.sleep(0.3)  # the issued-card record lands (BLINA_CDS_ISSUED_CARDS_FLUSH_S)
        assert _rows(database_url, "SELECT card_uuid, rule_id FROM feedback") == [(crs["uuid"], "crs-interrupt")]
        assert len(_rows(database_url, "SELECT key FROM jwt_replays")) == 1 + 1 + 6


def _rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(database_url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]
    finally:
        engine.dispose()
