"""The feedback store: clinicians' accept/override decisions, kept durably and exactly once.

CDS Hooks 2.0 lets an EHR send the same feedback "multiple times for a card or suggestion",
in batches, and gives no response codes; a load balancer or the EHR may retry a POST. So the
store is idempotent — every record has a ``dedupe_key`` (sha256 over what makes it the same
decision) under a UNIQUE constraint, and inserts skip conflicts — and a batch is committed in
one transaction before ``save()`` returns, so the route answers 200 only for feedback that is
on disk.

Two backends behind one small interface, chosen by ``BLINA_CDS_DATABASE_URL``::

    open_store("sqlite:///./var/blina-cds.db")   # default; WAL + synchronous=FULL per connection
    open_store("sqlite:///:memory:")              # tests
    open_store("postgresql://cds@db/cds")         # replicas share it; driver is psycopg 3
    open_store("postgresql://")                   # no host: libpq's PGHOST, PGPORT, … apply

Rows hold the service, card uuid, rule id, outcome, suggestion uuids, override reason and
comment, and two timestamps. Nothing identifies a patient: feedback carries none and none is
added. SQLAlchemy Core with a sync engine runs in a worker thread so the event loop never
blocks on the disk or the network.

``CardMap`` (below) is the short-lived card uuid → rule id map that fills ``rule_id``.

Issued cards (``issued_cards``): card uuid → service id, rule id, indicator, issue time — no patient data.
``IssuedCardWriter`` records them in the background in batches, so a hook call never waits on the disk; feedback
takes its rule id from there when the in-process card map does not know the card (another replica, a restart),
and ``feedback_report()`` counts cards issued per rule beside accepted and overridden ones, so an override rate
can be computed. Feedback that arrives before its card's record is written is stored without a rule id and given
it when the record lands. Records expire after ``BLINA_CDS_ISSUED_CARD_TTL_S``.

JWT replay cache (``jwt_replays``): one row per ``(iss, jti)`` seen (a sha256 of the pair, never the token),
claimed with an insert-if-absent (``INSERT … ON CONFLICT DO NOTHING``, SQLite's ``INSERT OR IGNORE``), so a token
used on one replica or worker is refused on every other; the row expires with the token.

``StorePurger`` removes expired issued cards and replay rows in the background, in small batches, each its own
transaction, so neither a hook call nor a feedback write waits behind a long delete.

The store's database work runs on its own small thread pool, so a database that hangs ties up those threads and
never the event loop's default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    distinct,
    event,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import Label
from sqlalchemy.types import TypeDecorator

from service import metrics

_log = logging.getLogger("blina_cds.store")
P = ParamSpec("P")
T = TypeVar("T")

OUTCOMES = frozenset({"accepted", "overridden"})

DEFAULT_CARD_MAP_MAX_ENTRIES = 100_000
DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000
DEFAULT_CONNECT_TIMEOUT_S = 3
STORE_THREADS = 4
"""Threads that run the store's database calls (per server process)."""

# Arbitrary constant: serialises table creation when several replicas start at once on PostgreSQL.
_PG_DDL_LOCK_KEY = 0x626C696E61  # "blina"


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback item, as the route extracted it from the request and the card map."""

    service_id: str
    card_uuid: str
    rule_id: str | None
    """From the card map; None when unknown (e.g. the card was issued by another process)."""
    outcome: str
    """``accepted`` | ``overridden``."""
    accepted_suggestions: tuple[str, ...]
    """Suggestion uuids."""
    override_reason_system: str | None
    override_reason_code: str | None
    override_reason_display: str | None
    user_comment: str | None
    outcome_timestamp: datetime
    """Aware; the EHR's ``outcomeTimestamp``."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {self.outcome!r}")
        _require_aware(self.outcome_timestamp, name="outcome_timestamp")

    @property
    def dedupe_key(self) -> str:
        """What makes two records the same decision; the rule id is deliberately left out.

        A retry that lands on another replica (whose card map does not know the card) must still
        be recognised as the same feedback. Suggestion order and the timestamp's offset do not matter.
        """
        material = [
            self.service_id,
            self.card_uuid,
            self.outcome,
            self.outcome_timestamp.astimezone(UTC).isoformat(),
            sorted(set(self.accepted_suggestions)),
            self.override_reason_system,
            self.override_reason_code,
            self.user_comment,
        ]
        encoded = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class FeedbackStore(Protocol):
    async def save(self, records: Sequence[FeedbackRecord], *, received_at: datetime) -> int:
        """Store the batch in one transaction, durably; return how many records were new."""
        ...

    async def count(self) -> int: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached (for the health check)."""
        ...

    async def fetch_all(self) -> list[dict[str, Any]]:
        """Every row, oldest first, timestamps aware UTC; for tests and operations."""
        ...

    async def feedback_report(self, *, since: datetime | None = None, reasons_max: int = 5,
                              comments_max: int = 10) -> list[RuleReport]:
        """Per-rule override analytics (see ``SqlFeedbackStore.feedback_report``)."""
        ...

    async def close(self) -> None: ...


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both backends.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so UTC is stored naive and the
    zone is put back on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = _require_aware(value, name="timestamp").astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

feedback_table = Table(
    "feedback",
    metadata,
    # BIGINT on PostgreSQL; SQLite only auto-increments a column declared INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False),
    Column("service_id", Text, nullable=False),
    Column("card_uuid", Text, nullable=False),
    Column("rule_id", Text, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text, nullable=False),  # JSON array of suggestion uuids
    Column("override_reason_system", Text, nullable=True),
    Column("override_reason_code", Text, nullable=True),
    Column("override_reason_display", Text, nullable=True),
    Column("user_comment", Text, nullable=True),
    Column("outcome_timestamp", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    UniqueConstraint("dedupe_key", name="uq_feedback_dedupe_key"),
)


issued_cards_table = Table(
    "issued_cards",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
)
_issued_at_index = Index("ix_issued_cards_issued_at", issued_cards_table.c.issued_at)
_feedback_card_index = Index("ix_feedback_card_uuid", feedback_table.c.card_uuid)

jwt_replays_table = Table(
    "jwt_replays",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of (iss, jti): bounded, no token text stored
    Column("expires_at", UtcDateTime(), nullable=False),
)
_replays_expiry_index = Index("ix_jwt_replays_expires_at", jwt_replays_table.c.expires_at)


@dataclass(frozen=True)
class IssuedCard:
    """One card a hook call returned. Nothing here identifies a patient."""

    card_uuid: str
    service_id: str
    rule_id: str
    indicator: str
    issued_at: datetime

    def __post_init__(self) -> None:
        _require_aware(self.issued_at, name="issued_at")


@dataclass(frozen=True)
class RuleReport:
    """Per rule: what ``blina-cds feedback report`` and ``GET /analytics/feedback`` show."""

    rule_id: str
    issued: int
    accepted: int
    """Cards with at least one ``accepted`` feedback."""
    overridden: int
    """Cards with at least one ``overridden`` feedback."""
    top_override_reasons: tuple[tuple[str, str | None, int], ...]
    """(code, display, count), most frequent first."""
    comments: tuple[str, ...]
    """The newest free-text comments, at most the report's bound."""

    @property
    def override_rate(self) -> float | None:
        """Overridden / issued; None when no issued card is on record (e.g. cards issued before the record began)."""
        return round(self.overridden / self.issued, 4) if self.issued else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "issued": self.issued,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "override_rate": self.override_rate,
            "top_override_reasons": [{"code": c, "display": d, "count": n} for c, d, n in self.top_override_reasons],
            "comments": list(self.comments),
        }


class SqlFeedbackStore:
    """``FeedbackStore`` over a SQLAlchemy engine; each call runs in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="blina-store")
        # SQLite takes one writer at a time anyway; queueing here beats spinning on SQLITE_BUSY,
        # and the shared in-memory connection must not be used by two threads at once.
        self._lock: threading.Lock | None = threading.Lock() if engine.dialect.name == "sqlite" else None
        # Statements built once: building and keying a statement costs more CPU than running it (a jti claim,
        # on every authenticated call, took 1.7 ms of CPU, 1.4 of them spent constructing the INSERT).
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        claim = insert(jwt_replays_table).values(key=bindparam("key"), expires_at=bindparam("expires_at"))
        self._claim_stmt = claim.on_conflict_do_update(
            index_elements=["key"], set_={"expires_at": claim.excluded.expires_at},
            where=jwt_replays_table.c.expires_at <= bindparam("now"),  # only an expired holder gives way
        ).execution_options(preserve_rowcount=True)

    @property
    def engine(self) -> Engine:
        return self._engine

    def create_schema(self) -> None:
        """Create the table if missing; safe when several processes start together."""
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_DDL_LOCK_KEY})
            conn.execute(CreateTable(feedback_table, if_not_exists=True))
            conn.execute(CreateTable(issued_cards_table, if_not_exists=True))
            conn.execute(CreateTable(jwt_replays_table, if_not_exists=True))
            for index in (_issued_at_index, _feedback_card_index, _replays_expiry_index):
                conn.execute(CreateIndex(index, if_not_exists=True))

    async def save(self, records: Sequence[FeedbackRecord], *, received_at: datetime) -> int:
        _require_aware(received_at, name="received_at")
        rows = [_row(r, received_at=received_at) for r in records]
        if not rows:
            return 0
        return await self._run(self._insert, rows)

    async def count(self) -> int:
        return await self._run(self._count)

    async def save_issued(self, cards: Sequence[IssuedCard]) -> int:
        """Record issued cards in one transaction; a card already recorded is skipped. Returns how many were new."""
        if not cards:
            return 0
        rows = [dataclasses.asdict(c) for c in cards]
        return await self._run(self._insert_issued, rows)

    async def claim_jti(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``key`` (the verifier's sha256 of a token's iss and jti) until ``expires_at``; False if held.

        Insert-if-absent, so two replicas claiming the same key at once get one True between them. A row that
        expired by ``now`` (not purged yet) no longer holds the key: the claim takes it over.
        """
        _require_aware(expires_at, name="expires_at")
        _require_aware(now, name="now")
        return await self._run(self._claim_jti, key, expires_at, now)

    async def purge_expired(self, *, issued_before: datetime, now: datetime, batch: int) -> tuple[int, int]:
        """Delete at most ``batch`` issued cards older than ``issued_before`` and ``batch`` replay rows expired by
        ``now``, each in its own short transaction; return how many of each went."""
        _require_aware(issued_before, name="issued_before")
        _require_aware(now, name="now")
        issued = await self._run(self._purge, issued_cards_table.c.card_uuid, issued_cards_table.c.issued_at,
                                 issued_before, batch)
        replays = await self._run(self._purge, jwt_replays_table.c.key, jwt_replays_table.c.expires_at, now, batch)
        return issued, replays

    async def fetch_replays(self) -> list[dict[str, Any]]:
        """Every replay-cache row, soonest expiry first; for tests and operations."""
        return await self._run(self._fetch_replays)

    async def fetch_issued(self) -> list[dict[str, Any]]:
        """Every issued-card row, oldest first; for tests and operations."""
        return await self._run(self._fetch_issued)

    async def feedback_report(self, *, since: datetime | None = None, reasons_max: int = 5,
                              comments_max: int = 10) -> list[RuleReport]:
        """Per rule: cards issued (since ``since``), accepted, overridden, top override reasons, newest comments.

        Feedback is counted by card (two feedback records on one card count once per outcome) and by the time
        we received it; a feedback row without a rule id takes it from the issued-card record.
        """
        if since is not None:
            _require_aware(since, name="since")
        return await self._run(self._report, since, reasons_max, comments_max)

    async def ping(self) -> None:
        await self._run(self._ping)

    async def fetch_all(self) -> list[dict[str, Any]]:
        return await self._run(self._fetch_all)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._engine.dispose)
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the feedback store is closed")
        lock = self._lock

        def call() -> T:
            if lock is None:
                return fn(*args, **kwargs)
            with lock:
                return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _insert_new(self, table: Table, key: str) -> Any:
        """An INSERT that skips a row whose ``key`` is already stored (idempotent retries)."""
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        # preserve_rowcount: PostgreSQL inserts carry an implicit RETURNING, which hides rowcount.
        return insert(table).on_conflict_do_nothing(index_elements=[key]).execution_options(preserve_rowcount=True)

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        stmt = self._insert_new(feedback_table, "dedupe_key")
        stored = 0
        issued_rule = select(issued_cards_table.c.rule_id).where(issued_cards_table.c.card_uuid == bindparam("uuid"))
        # One transaction for the batch: committed (and fsynced) when the block exits, or not at all.
        with self._engine.begin() as conn:
            for row in rows:
                if row["rule_id"] is None:  # not in this process's card map: the issued-card record knows it
                    row = {**row, "rule_id": conn.execute(issued_rule, {"uuid": row["card_uuid"]}).scalar()}
                stored += conn.execute(stmt, row).rowcount
        return stored

    def _insert_issued(self, rows: list[dict[str, Any]]) -> int:
        stmt = self._insert_new(issued_cards_table, "card_uuid")
        # Feedback that overtook its card's record (acknowledged on another replica within the flush interval)
        # was stored without a rule id: give it the rule now.
        backfill = (update(feedback_table)
                    .where(feedback_table.c.card_uuid == bindparam("uuid"), feedback_table.c.rule_id.is_(None))
                    .values(rule_id=bindparam("rule")))
        with self._engine.begin() as conn:
            new = sum(conn.execute(stmt, row).rowcount for row in rows)
            conn.execute(backfill, [{"uuid": r["card_uuid"], "rule": r["rule_id"]} for r in rows])
            return new

    def _claim_jti(self, key: str, expires_at: datetime, now: datetime) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(self._claim_stmt, {"key": key, "expires_at": expires_at, "now": now}).rowcount)

    def _purge(self, key: Column[Any], when: Column[Any], cutoff: datetime, batch: int) -> int:
        doomed = select(key).where(when < cutoff).limit(batch).scalar_subquery()
        with self._engine.begin() as conn:
            return int(conn.execute(delete(key.table).where(key.in_(doomed))
                                    .execution_options(preserve_rowcount=True)).rowcount)

    def _fetch_replays(self) -> list[dict[str, Any]]:
        t = jwt_replays_table
        with self._engine.connect() as conn:
            return [dict(m) for m in conn.execute(select(t).order_by(t.c.expires_at, t.c.key)).mappings()]

    def _fetch_issued(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            result = conn.execute(select(issued_cards_table).order_by(issued_cards_table.c.issued_at,
                                                                      issued_cards_table.c.card_uuid))
            return [dict(m) for m in result.mappings()]

    def _report(self, since: datetime | None, reasons_max: int, comments_max: int) -> list[RuleReport]:
        f, i = feedback_table, issued_cards_table
        rule = func.coalesce(f.c.rule_id, i.c.rule_id, literal("unknown")).label("rule")
        joined = f.outerjoin(i, i.c.card_uuid == f.c.card_uuid)
        fb_where = [f.c.received_at >= since] if since is not None else []
        issued_where = [i.c.issued_at >= since] if since is not None else []
        with self._engine.connect() as conn:
            issued: dict[str, int] = {r: int(n) for r, n in conn.execute(
                select(i.c.rule_id, func.count()).where(*issued_where).group_by(i.c.rule_id))}
            outcomes: dict[str, dict[str, int]] = {}
            for r, outcome, n in conn.execute(
                select(rule, f.c.outcome, func.count(distinct(f.c.card_uuid)))
                .select_from(joined).where(*fb_where).group_by(rule, f.c.outcome)
            ):
                outcomes.setdefault(r, {})[outcome] = int(n)
            # Only the first ``reasons_max`` / ``comments_max`` rows per rule leave the database (row_number):
            # a report never reads every comment ever stored.
            count = func.count()
            reasons: dict[str, list[tuple[str, str | None, int]]] = {}
            for r, code, display, n in conn.execute(_first_per_rule(
                select(rule, f.c.override_reason_code, func.max(f.c.override_reason_display), count)
                .select_from(joined)
                .where(f.c.outcome == "overridden", f.c.override_reason_code.is_not(None), *fb_where)
                .group_by(rule, f.c.override_reason_code),
                rule=rule, order_by=(count.desc(), f.c.override_reason_code), limit=reasons_max,
            )):
                reasons.setdefault(r, []).append((code, display, int(n)))
            comments: dict[str, list[str]] = {}
            for r, comment in conn.execute(_first_per_rule(
                select(rule, f.c.user_comment).select_from(joined).where(f.c.user_comment.is_not(None), *fb_where),
                rule=rule, order_by=(f.c.received_at.desc(), f.c.id.desc()), limit=comments_max,
            )):
                comments.setdefault(r, []).append(comment)
        rules = sorted(set(issued) | set(outcomes))
        return [
            RuleReport(
                rule_id=r,
                issued=int(issued.get(r, 0)),
                accepted=outcomes.get(r, {}).get("accepted", 0),
                overridden=outcomes.get(r, {}).get("overridden", 0),
                top_override_reasons=tuple(reasons.get(r, ())),
                comments=tuple(comments.get(r, ())),
            )
            for r in rules
        ]

    def _ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(feedback_table)).scalar_one())

    def _fetch_all(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            result = conn.execute(select(feedback_table).order_by(feedback_table.c.id))
            rows = [dict(m) for m in result.mappings()]
        for row in rows:
            row["accepted_suggestions"] = json.loads(row["accepted_suggestions"])
        return rows


class CardMap:
    """card uuid → rule id, with expiry after ``ttl_s`` and at most ``max_entries`` entries.

    Feedback names only the card's ``uuid``; analytics want the rule id behind it. The hook
    response is the one place that knows both, so the pipeline remembers the pair there and the
    feedback route looks it up. The map is deliberately forgetful: it lives in one process
    (feedback that lands on another replica, or after a restart, takes its rule id from the
    issued-card record, else is stored with ``rule_id=None``; never refused), entries expire
    after ``ttl_s`` (``BLINA_CDS_CARD_MAP_TTL_S``), and the oldest are dropped beyond
    ``max_entries``, so memory stays bounded. Keys are random card uuids and values rule ids:
    nothing identifies a patient.

    ``now`` is a monotonic clock reading in seconds, passed in so tests control time::

        cards = CardMap(ttl_s=7 * 24 * 3600)
        cards.remember(card_uuid, "premed-missing", time.monotonic())
        cards.rule_for(card_uuid, time.monotonic())   # "premed-missing"; None once expired
    """

    def __init__(self, *, ttl_s: float, max_entries: int = DEFAULT_CARD_MAP_MAX_ENTRIES) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # Ordered by last remember(): with a non-decreasing clock, the front expires first.
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Async routes call this from the event loop, but a sync route would run in a thread.
        self._lock = threading.Lock()

    def remember(self, card_uuid: str, rule_id: str, now: float) -> None:
        """Record that ``rule_id`` issued ``card_uuid``; remembering again restarts its TTL."""
        with self._lock:
            self._entries[card_uuid] = (rule_id, now + self.ttl_s)
            self._entries.move_to_end(card_uuid)
            self._evict(now)

    def rule_for(self, card_uuid: str, now: float) -> str | None:
        """The rule id that issued ``card_uuid``, or None if unknown, expired or evicted."""
        with self._lock:
            entry = self._entries.get(card_uuid)
            if entry is None:
                return None
            rule_id, expires_at = entry
            if now >= expires_at:
                del self._entries[card_uuid]
                return None
            return rule_id

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _evict(self, now: float) -> None:
        while self._entries:
            _, (_, expires_at) = next(iter(self._entries.items()))
            if now < expires_at:
                break
            self._entries.popitem(last=False)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _first_per_rule(query: Select[Any], *, rule: Label[Any], order_by: Sequence[Any], limit: int) -> Select[Any]:
    """The first ``limit`` rows of ``query`` per rule in ``order_by`` order, without the rank column."""
    rank = func.row_number().over(partition_by=rule.element, order_by=list(order_by)).label("rank")
    ranked = query.add_columns(rank).subquery()
    shown = [c for c in ranked.c if c.name != "rank"]
    return select(*shown).where(ranked.c.rank <= limit).order_by(ranked.c.rule, ranked.c.rank)


class IssuedCardWriter:
    """Records issued cards off the hot path: a hook call enqueues them, one task writes them in batches.

    A batch is written when ``batch_max`` cards wait or ``flush_interval_s`` has passed since its first card. A
    write that fails is retried (every ``retry_s``) with the same batch. Recording is best-effort by design: a
    hook call never waits for the store. While the database is unreachable cards queue up to ``queue_max``;
    beyond that new records are dropped, counted in ``blina_cds_issued_cards_dropped_total`` and logged (once per
    outage), and the hook call answers as usual. ``close()`` writes what is queued (a bounded number of tries).

        writer = IssuedCardWriter(store, queue_max=10_000, batch_max=500, flush_interval_s=0.2)
        writer.start()                       # in the app's lifespan
        await writer.record([IssuedCard(...)])
        await writer.close()                 # before the store closes
    """

    def __init__(self, store: SqlFeedbackStore, *, queue_max: int, batch_max: int, flush_interval_s: float,
                 retry_s: float = 1.0, close_attempts: int = 5) -> None:
        self._store = store
        self._queue: asyncio.Queue[IssuedCard | None] = asyncio.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        self._flush_interval_s = flush_interval_s
        self._retry_s = retry_s
        self._close_attempts = close_attempts
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._dropping = False  # logged once per outage, not once per card
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="issued-card-writer")

    async def record(self, cards: Sequence[IssuedCard]) -> None:
        """Queue ``cards`` for writing; never waits (a full queue drops them, counted and logged)."""
        for i, card in enumerate(cards):
            try:
                self._queue.put_nowait(card)
            except asyncio.QueueFull:
                lost = len(cards) - i
                self.dropped += lost
                metrics.ISSUED_CARDS_DROPPED.inc(lost)
                if not self._dropping:
                    self._dropping = True
                    _log.error("issued-card queue full (store unreachable): records are being dropped; "
                               "feedback on these cards will have no rule id", extra={"queued": self.pending})
                return

    async def flush(self) -> None:
        """Wait until every card recorded so far is written (for tests and shutdown)."""
        await self._queue.join()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        if self._task is None or self._closing:
            return
        self._closing = True
        await self._queue.put(None)  # after every card already queued
        await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                self._queue.task_done()
                break
            batch = [first]
            deadline = loop.time() + self._flush_interval_s
            while len(batch) < self._batch_max:
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    break
                if item is None:
                    self._queue.task_done()
                    stop = True
                    break
                batch.append(item)
            await self._write(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write(self, batch: list[IssuedCard]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._store.save_issued(batch)
            except Exception:
                metrics.STORE_FAILURES.labels(operation="issued_cards").inc()
                if self._closing and attempt >= self._close_attempts:
                    _log.exception("issued cards not recorded at shutdown", extra={"count": len(batch)})
                    return
                if attempt == 1:
                    _log.exception("issued cards: store write failed, retrying", extra={"count": len(batch)})
                await asyncio.sleep(self._retry_s)
                continue
            if attempt > 1 or self._dropping:
                _log.warning("issued cards: store writable again", extra={"count": len(batch),
                                                                           "dropped": self.dropped})
                self._dropping = False
            return


class StorePurger:
    """Removes expired rows in the background: issued cards older than ``issued_card_ttl_s``, replay-cache rows
    past their token's expiry.

    Every ``interval_s`` it deletes in batches of ``batch`` rows, each batch its own short transaction, pausing
    ``pause_s`` between batches so feedback and replay checks interleave; a failure is logged and counted and
    the next round tries again. Every replica may run one: deletes of the same rows simply find nothing.

        purger = StorePurger(store, issued_card_ttl_s=90 * 86400, interval_s=300, batch=1000)
        purger.start(); ...; await purger.close()
    """

    def __init__(self, store: SqlFeedbackStore, *, issued_card_ttl_s: float, interval_s: float, batch: int,
                 pause_s: float = 0.05, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._ttl = timedelta(seconds=issued_card_ttl_s)
        self._interval_s = interval_s
        self._batch = batch
        self._pause_s = pause_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="store-purger")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> tuple[int, int]:
        """One round: delete every expired row, batch by batch; return (issued cards, replay rows) deleted."""
        total_issued = total_replays = 0
        while True:
            now = self._clock()
            issued, replays = await self._store.purge_expired(issued_before=now - self._ttl, now=now,
                                                              batch=self._batch)
            total_issued += issued
            total_replays += replays
            metrics.STORE_PURGED.labels(table="issued_cards").inc(issued)
            metrics.STORE_PURGED.labels(table="jwt_replays").inc(replays)
            if issued < self._batch and replays < self._batch:
                return total_issued, total_replays
            await asyncio.sleep(self._pause_s)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                issued, replays = await self.purge_once()
            except Exception:
                metrics.STORE_FAILURES.labels(operation="purge").inc()
                _log.exception("expired rows not purged; next round in %.0f s", self._interval_s)
            else:
                if issued or replays:
                    _log.info("expired rows purged", extra={"issued_cards": issued, "jwt_replays": replays,
                                                            "ms": round((time.monotonic() - started) * 1000, 1)})
            await asyncio.sleep(self._interval_s)


def open_store(database_url: str, *, sqlite_busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
               connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S) -> SqlFeedbackStore:
    """Open the store named by ``database_url`` and create its tables if missing.

    Called once at start-up (it touches the database synchronously). Accepts ``sqlite:///path``,
    ``sqlite:///:memory:``, and ``postgresql://…`` (rewritten to psycopg 3; ``postgresql+psycopg://``
    is taken as is). Anything else is a configuration error. ``sqlite_busy_timeout_ms``: how long a SQLite
    connection waits for another process's write to finish; ``connect_timeout_s``: how long a PostgreSQL
    connection attempt may take (an unreachable database fails fast instead of hanging a request).
    """
    url = engine_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, busy_timeout_ms=sqlite_busy_timeout_ms)
    else:
        # pre_ping: a replica keeps working after the database restarts or drops idle connections.
        engine = create_engine(url, pool_pre_ping=True, pool_timeout=connect_timeout_s,
                               connect_args={"connect_timeout": max(2, connect_timeout_s)})
    store = SqlFeedbackStore(engine)
    try:
        store.create_schema()
    except Exception:
        engine.dispose()
        raise
    return store


def engine_url(database_url: str) -> URL:
    """The SQLAlchemy URL for ``database_url``: ``postgresql://`` gets the psycopg 3 driver."""
    try:
        url = make_url(database_url)
    except Exception as exc:  # ArgumentError; the message would echo the URL, password included
        raise ValueError("BLINA_CDS_DATABASE_URL is not a database URL") from exc
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend in ("postgresql", "postgres") and (url.drivername in ("postgresql", "postgres")
                                                 or driver == "psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and url.drivername in ("sqlite", "sqlite+pysqlite"):
        return url
    raise ValueError(
        f"unsupported database URL {url.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path or postgresql://…"
    )


def _sqlite_engine(url: URL, *, busy_timeout_ms: int) -> Engine:
    database = url.database or ":memory:"
    if database == ":memory:":
        # One connection shared by every thread, or each worker thread would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_ms=busy_timeout_ms))
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _connection_record: Any, *, busy_timeout_ms: int) -> None:
    """WAL lets readers run beside the writer (and several worker processes share the file); FULL syncs the WAL
    on every commit (durable 200s); the busy timeout makes a connection wait for another process's write.

    All are per-connection settings (WAL persists in the file, but re-asserting it is free), so they are set on
    every new connection — the busy timeout first, as switching to WAL itself needs a moment's lock.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # another process writing: wait, do not fail
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _row(record: FeedbackRecord, *, received_at: datetime) -> dict[str, Any]:
    return {
        "dedupe_key": record.dedupe_key,
        "service_id": record.service_id,
        "card_uuid": record.card_uuid,
        "rule_id": record.rule_id,
        "outcome": record.outcome,
        "accepted_suggestions": json.dumps(list(record.accepted_suggestions)),
        "override_reason_system": record.override_reason_system,
        "override_reason_code": record.override_reason_code,
        "override_reason_display": record.override_reason_display,
        "user_comment": record.user_comment,
        "outcome_timestamp": record.outcome_timestamp,
        "received_at": received_at,
    }


def _require_aware(value: datetime, *, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value
