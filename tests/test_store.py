"""The feedback store — idempotent, atomic per batch, durable, on SQLite and PostgreSQL alike —
and the card map that tells it which rule issued a card."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from service.store import CardMap, FeedbackRecord, FeedbackStore, SqlFeedbackStore, engine_url, open_store

RECEIVED_AT = datetime(2025, 3, 4, 10, 0, 5, tzinfo=UTC)
DAY = 24 * 3600.0
COLUMNS = {
    "id", "dedupe_key", "service_id", "card_uuid", "rule_id", "outcome", "accepted_suggestions",
    "override_reason_system", "override_reason_code", "override_reason_display", "user_comment",
    "outcome_timestamp", "received_at",
}


def accepted(**changes: Any) -> FeedbackRecord:
    record = FeedbackRecord(
        service_id="blinatumomab-order-sign",
        card_uuid="4e0a3a1e-3283-4575-ab82-028d55fe2719",
        rule_id="premed-missing",
        outcome="accepted",
        accepted_suggestions=("e56e1945-20b3-4393-8503-a1a20fd73152",),
        override_reason_system=None,
        override_reason_code=None,
        override_reason_display=None,
        user_comment=None,
        outcome_timestamp=datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC),
    )
    return dataclasses.replace(record, **changes)


def overridden(**changes: Any) -> FeedbackRecord:
    record = accepted(
        card_uuid="9368d37b-283f-44a0-93ea-547cebab93ed",
        rule_id="crs-interrupt",
        outcome="overridden",
        accepted_suggestions=(),
        override_reason_system="https://example.org/cds-hooks/override-reason",
        override_reason_code="patient-monitored",
        override_reason_display="Patient is being monitored",
        user_comment="Discussed with attending.",
    )
    return dataclasses.replace(record, **changes)


# --- idempotency -------------------------------------------------------------------------------


async def test_same_feedback_twice_is_stored_once(store: FeedbackStore) -> None:
    assert await store.save([accepted()], received_at=RECEIVED_AT) == 1
    assert await store.save([accepted()], received_at=RECEIVED_AT + timedelta(seconds=3)) == 0

    rows = await store.fetch_all()
    assert len(rows) == 1
    assert rows[0]["received_at"] == RECEIVED_AT  # the first arrival is kept


async def test_batch_of_three_with_one_duplicate_stores_two(store: FeedbackStore) -> None:
    batch = [accepted(), overridden(), accepted()]

    assert await store.save(batch, received_at=RECEIVED_AT) == 2
    assert await store.save(batch, received_at=RECEIVED_AT) == 0
    assert await store.count() == 2
    assert [r["outcome"] for r in await store.fetch_all()] == ["accepted", "overridden"]


async def test_retry_landing_on_another_replica_is_still_a_duplicate(store: FeedbackStore) -> None:
    """The other replica's card map does not know the card, and the EHR may re-render the timestamp."""
    await store.save([accepted()], received_at=RECEIVED_AT)
    retry = accepted(
        rule_id=None,
        outcome_timestamp=datetime(2025, 3, 4, 11, 0, 0, tzinfo=timezone(timedelta(hours=1))),
    )

    assert await store.save([retry], received_at=RECEIVED_AT) == 0
    assert [r["rule_id"] for r in await store.fetch_all()] == ["premed-missing"]


async def test_suggestion_order_does_not_make_a_new_record(store: FeedbackStore) -> None:
    await store.save([accepted(accepted_suggestions=("a", "b"))], received_at=RECEIVED_AT)

    assert await store.save([accepted(accepted_suggestions=("b", "a"))], received_at=RECEIVED_AT) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"service_id": "blinatumomab-patient-view"},
        {"card_uuid": "0b6e-another-card"},
        {"outcome_timestamp": datetime(2025, 3, 4, 10, 0, 1, tzinfo=UTC)},
        {"override_reason_code": "not-applicable"},
        {"override_reason_system": "https://example.org/other-system"},
        {"user_comment": "Second thoughts: CRS grade 1 only."},
        {"outcome": "accepted", "accepted_suggestions": ("s-1",), "override_reason_code": None,
         "override_reason_system": None, "override_reason_display": None, "user_comment": None},
    ],
    ids=["service", "card", "timestamp", "reason-code", "reason-system", "comment", "outcome"],
)
async def test_a_different_decision_is_a_new_record(store: FeedbackStore, change: dict[str, Any]) -> None:
    await store.save([overridden()], received_at=RECEIVED_AT)

    assert await store.save([overridden(**change)], received_at=RECEIVED_AT) == 1
    assert await store.count() == 2


async def test_concurrent_identical_saves_store_one_row(store: FeedbackStore) -> None:
    results = await asyncio.gather(*(store.save([overridden()], received_at=RECEIVED_AT) for _ in range(6)))

    assert sorted(results) == [0, 0, 0, 0, 0, 1]
    assert await store.count() == 1


# --- what is stored ----------------------------------------------------------------------------


async def test_rows_hold_the_decision_and_nothing_else(store: FeedbackStore) -> None:
    local = timezone(timedelta(hours=2))
    await store.save(
        [overridden(outcome_timestamp=datetime(2025, 3, 4, 12, 0, 0, tzinfo=local)),
         accepted(accepted_suggestions=("s-1", "s-2"), rule_id=None)],
        received_at=RECEIVED_AT,
    )

    first, second = await store.fetch_all()
    assert set(first) == COLUMNS  # no patient identifier has a column to land in
    assert first["service_id"] == "blinatumomab-order-sign"
    assert first["card_uuid"] == "9368d37b-283f-44a0-93ea-547cebab93ed"
    assert first["rule_id"] == "crs-interrupt"
    assert first["outcome"] == "overridden"
    assert first["accepted_suggestions"] == []
    assert first["override_reason_system"] == "https://example.org/cds-hooks/override-reason"
    assert first["override_reason_code"] == "patient-monitored"
    assert first["override_reason_display"] == "Patient is being monitored"
    assert first["user_comment"] == "Discussed with attending."
    assert first["outcome_timestamp"] == datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)
    assert first["outcome_timestamp"].utcoffset() == timedelta(0)
    assert first["received_at"] == RECEIVED_AT
    assert len(first["dedupe_key"]) == 64

    assert second["accepted_suggestions"] == ["s-1", "s-2"]
    assert second["rule_id"] is None
    assert second["override_reason_code"] is None


# --- transactions and durability ---------------------------------------------------------------


async def test_a_failing_batch_stores_nothing(store: SqlFeedbackStore) -> None:
    inserts = 0

    def fail_on_second_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal inserts
        if statement.lstrip().upper().startswith("INSERT"):
            inserts += 1
            if inserts == 2:
                raise RuntimeError("disk on fire")

    event.listen(store.engine, "before_cursor_execute", fail_on_second_insert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await store.save([accepted(), overridden()], received_at=RECEIVED_AT)
    event.remove(store.engine, "before_cursor_execute", fail_on_second_insert)

    assert await store.count() == 0
    assert await store.save([accepted(), overridden()], received_at=RECEIVED_AT) == 2


async def test_saved_rows_are_committed_before_save_returns(store: FeedbackStore, store_url: str) -> None:
    await store.save([accepted()], received_at=RECEIVED_AT)

    other = open_store(store_url)  # a second process's view of the same database
    try:
        assert await other.count() == 1
    finally:
        await other.close()


async def test_rows_survive_closing_and_reopening(store_url: str) -> None:
    first = open_store(store_url)
    await first.save([accepted(), overridden()], received_at=RECEIVED_AT)
    await first.close()

    reopened = open_store(store_url)
    try:
        assert [r["card_uuid"] for r in await reopened.fetch_all()] == [
            accepted().card_uuid, overridden().card_uuid,
        ]
        assert await reopened.save([accepted()], received_at=RECEIVED_AT) == 0
    finally:
        await reopened.close()


async def test_a_closed_store_refuses_work(store_url: str) -> None:
    closed = open_store(store_url)
    await closed.close()

    with pytest.raises(RuntimeError, match="closed"):
        await closed.save([accepted()], received_at=RECEIVED_AT)


async def test_empty_batch_stores_nothing(store: FeedbackStore) -> None:
    assert await store.save([], received_at=RECEIVED_AT) == 0
    assert await store.count() == 0


# --- SQLite specifics --------------------------------------------------------------------------


async def test_sqlite_creates_the_parent_directory_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "nested" / "blina-cds.db"
    store = open_store(f"sqlite:///{path}")
    await store.save([accepted()], received_at=RECEIVED_AT)
    await store.close()

    with sqlite3.connect(path) as conn:  # an independent reader sees the committed row
        assert conn.execute("SELECT card_uuid, outcome FROM feedback").fetchall() == [
            (accepted().card_uuid, "accepted"),
        ]
    conn.close()


async def test_sqlite_default_url_puts_the_database_under_var(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///./var/blina-cds.db")  # the BLINA_CDS_DATABASE_URL default
    await store.save([accepted()], received_at=RECEIVED_AT)
    await store.close()

    assert (tmp_path / "var" / "blina-cds.db").is_file()


async def test_sqlite_every_connection_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'feedback.db'}")

    def weaken(dbapi_connection: Any, _record: Any) -> None:
        # FULL is this SQLite build's default; start each new connection from OFF so the test can fail.
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    event.listen(store.engine, "connect", weaken, insert=True)  # runs before the store's own listener
    store.engine.dispose()  # so the connections below are new ones
    try:
        with store.engine.connect() as one, store.engine.connect() as two:
            for conn in (one, two):
                assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
                assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
    finally:
        await store.close()


async def test_sqlite_in_memory_store_is_shared_across_worker_threads() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        assert await store.save([accepted(), overridden()], received_at=RECEIVED_AT) == 2
        counts = await asyncio.gather(*(store.count() for _ in range(4)))
        assert counts == [2, 2, 2, 2]
    finally:
        await store.close()


# --- URLs and input checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://", "postgresql+psycopg"),
        ("postgresql://cds:pw@db.example.org:5432/cds", "postgresql+psycopg"),
        ("postgresql+psycopg://cds@db/cds", "postgresql+psycopg"),
        ("sqlite:///./var/blina-cds.db", "sqlite"),
    ],
)
def test_engine_url_picks_psycopg_3_for_postgresql(given: str, driver: str) -> None:
    assert engine_url(given).drivername == driver


def test_engine_url_keeps_libpq_defaults_when_no_host_is_given() -> None:
    url = engine_url("postgresql://")

    assert (url.host, url.port, url.username, url.password, url.database) == (None, None, None, None, None)


@pytest.mark.parametrize("given", ["mysql://cds:s3cret@db/cds", "postgresql+psycopg2://cds:s3cret@db/cds"])
def test_unsupported_urls_are_refused_without_echoing_the_password(given: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL") as excinfo:
        open_store(given)
    assert "s3cret" not in str(excinfo.value)


def test_record_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="outcome"):
        accepted(outcome="ignored")


def test_record_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="outcome_timestamp"):
        accepted(outcome_timestamp=datetime(2025, 3, 4, 10, 0, 0))


async def test_save_refuses_a_naive_received_at() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        with pytest.raises(ValueError, match="received_at"):
            await store.save([accepted()], received_at=datetime(2025, 3, 4, 10, 0, 5))
        assert await store.count() == 0
    finally:
        await store.close()


# --- the card map ------------------------------------------------------------------------------


def test_remembers_which_rule_issued_a_card() -> None:
    cards = CardMap(ttl_s=DAY)
    cards.remember("card-1", "premed-missing", 100.0)
    cards.remember("card-2", "crs-interrupt", 100.0)

    assert cards.rule_for("card-1", 200.0) == "premed-missing"
    assert cards.rule_for("card-2", 200.0) == "crs-interrupt"
    assert cards.rule_for("card-unknown", 200.0) is None


def test_forgets_a_card_once_its_ttl_has_passed() -> None:
    cards = CardMap(ttl_s=DAY)
    cards.remember("card-1", "premed-missing", 100.0)

    assert cards.rule_for("card-1", 100.0 + DAY - 1) == "premed-missing"
    assert cards.rule_for("card-1", 100.0 + DAY) is None
    assert len(cards) == 0


def test_remembering_again_restarts_the_ttl() -> None:
    cards = CardMap(ttl_s=DAY)
    cards.remember("card-1", "premed-missing", 0.0)
    cards.remember("card-1", "premed-missing", DAY / 2)

    assert cards.rule_for("card-1", DAY + 1) == "premed-missing"


def test_expired_entries_are_dropped_when_new_cards_arrive() -> None:
    cards = CardMap(ttl_s=10.0)
    for i in range(5):
        cards.remember(f"old-{i}", "dose-limit", 0.0)
    cards.remember("new", "dose-limit", 10.0)

    assert len(cards) == 1


def test_drops_the_oldest_cards_beyond_max_entries() -> None:
    cards = CardMap(ttl_s=DAY, max_entries=3)
    for i in range(5):
        cards.remember(f"card-{i}", f"rule-{i}", float(i))

    assert len(cards) == 3
    assert cards.rule_for("card-0", 5.0) is None
    assert cards.rule_for("card-1", 5.0) is None
    assert [cards.rule_for(f"card-{i}", 5.0) for i in (2, 3, 4)] == ["rule-2", "rule-3", "rule-4"]


def test_a_recently_remembered_card_outlives_older_ones_at_the_bound() -> None:
    cards = CardMap(ttl_s=DAY, max_entries=2)
    cards.remember("card-a", "rule-a", 0.0)
    cards.remember("card-b", "rule-b", 1.0)
    cards.remember("card-a", "rule-a", 2.0)  # re-issued: now the newest
    cards.remember("card-c", "rule-c", 3.0)

    assert cards.rule_for("card-a", 4.0) == "rule-a"
    assert cards.rule_for("card-b", 4.0) is None


@pytest.mark.parametrize(("ttl_s", "max_entries"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_refuses_settings_that_would_keep_nothing(ttl_s: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        CardMap(ttl_s=ttl_s, max_entries=max_entries)
