"""Override analytics: the durable record of issued cards, the per-rule report, ``GET /analytics/feedback`` and
``blina-cds feedback report`` — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service import cli, examples
from service.store import IssuedCard, IssuedCardWriter, SqlFeedbackStore
from tests.conftest import ORDER_SIGN, PATIENT_VIEW, AppFactory, outcome_fields
from tests.test_store import accepted, overridden

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ISSUED_COLUMNS = {"card_uuid", "service_id", "rule_id", "indicator", "issued_at"}


def issued(card: str, rule: str = "premed-missing", at: datetime = T0, indicator: str = "critical") -> IssuedCard:
    return IssuedCard(card_uuid=card, service_id=ORDER_SIGN, rule_id=rule, indicator=indicator, issued_at=at)


# ---------------------------------------------------------------- the store


async def test_issued_cards_are_stored_once_with_no_patient_data(store: SqlFeedbackStore) -> None:
    assert await store.save_issued([issued("c1"), issued("c2", "crs-interrupt", indicator="warning")]) == 2
    assert await store.save_issued([issued("c1")]) == 0  # a retry of the same batch
    rows = await store.fetch_issued()
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(ISSUED_COLUMNS))}
    assert [(r["card_uuid"], r["rule_id"], r["indicator"], r["issued_at"]) for r in rows] == [
        ("c1", "premed-missing", "critical", T0), ("c2", "crs-interrupt", "warning", T0)]


async def test_feedback_takes_its_rule_id_from_the_issued_card_record(store: SqlFeedbackStore) -> None:
    """Feedback that reaches a replica whose card map does not know the card still gets its rule id."""
    await store.save_issued([issued("card-x", "crs-interrupt")])
    await store.save([overridden(card_uuid="card-x", rule_id=None)], received_at=T0)
    [row] = await store.fetch_all()
    assert row["rule_id"] == "crs-interrupt"


async def test_report_counts_issued_accepted_overridden_reasons_and_comments(store: SqlFeedbackStore) -> None:
    await store.save_issued([issued(f"p{i}") for i in range(4)] + [issued("c1", "crs-interrupt")]
                            + [issued("old", at=T0 - timedelta(days=30))])
    later = T0 + timedelta(hours=1)
    reason = {"override_reason_system": "urn:blina-cds:override-reason", "override_reason_display": "Given elsewhere"}
    await store.save([
        accepted(card_uuid="p0", rule_id=None),
        overridden(card_uuid="p1", rule_id=None, override_reason_code="given-elsewhere", user_comment="first",
                   **reason),
        # the same card overridden twice (two reasons): one overridden card, two reason counts
        overridden(card_uuid="p2", rule_id=None, override_reason_code="given-elsewhere", user_comment="second",
                   outcome_timestamp=later, **reason),
        overridden(card_uuid="p2", rule_id=None, override_reason_code="per-protocol", user_comment=None,
                   override_reason_display="Per protocol", outcome_timestamp=later + timedelta(minutes=1)),
        overridden(card_uuid="never-issued", rule_id=None, override_reason_code="other", user_comment=None),
    ], received_at=T0 + timedelta(hours=2))

    report = {r.rule_id: r for r in await store.feedback_report(reasons_max=1, comments_max=1)}
    premed = report["premed-missing"]
    assert (premed.issued, premed.accepted, premed.overridden, premed.override_rate) == (5, 1, 2, 0.4)
    assert premed.top_override_reasons == (("given-elsewhere", "Given elsewhere", 2),)  # bounded to 1
    assert len(premed.comments) == 1 and premed.comments[0] in {"first", "second"}
    assert (report["crs-interrupt"].issued, report["crs-interrupt"].overridden) == (1, 0)
    assert report["crs-interrupt"].override_rate == 0.0
    assert (report["unknown"].issued, report["unknown"].overridden, report["unknown"].override_rate) == (0, 1, None)

    recent = {r.rule_id: r for r in await store.feedback_report(since=T0 - timedelta(days=1))}
    assert recent["premed-missing"].issued == 4  # the card issued 30 days ago is left out
    none = await store.feedback_report(since=T0 + timedelta(days=1))
    assert none == []


async def test_report_keeps_the_most_frequent_reasons_and_newest_comments_per_rule(store: SqlFeedbackStore) -> None:
    """Each rule's list is cut on its own: a busy rule's reasons and comments never crowd out another rule's."""
    await store.save_issued([issued(f"p{i}") for i in range(6)] + [issued("c0", "crs-interrupt")])
    for i, (code, comment) in enumerate([("per-protocol", "oldest"), ("given-elsewhere", "older"),
                                         ("given-elsewhere", "newer"), ("other", "newest")]):
        await store.save([overridden(card_uuid=f"p{i}", rule_id=None, override_reason_code=code,
                                     user_comment=comment)], received_at=T0 + timedelta(minutes=i))
    await store.save([overridden(card_uuid="c0", rule_id=None, override_reason_code="other", user_comment="crs")],
                     received_at=T0)

    report = {r.rule_id: r for r in await store.feedback_report(reasons_max=2, comments_max=2)}
    premed = report["premed-missing"]
    assert [(code, n) for code, _, n in premed.top_override_reasons] == [("given-elsewhere", 2), ("other", 1)]
    assert premed.comments == ("newest", "newer")
    assert [(code, n) for code, _, n in report["crs-interrupt"].top_override_reasons] == [("other", 1)]
    assert report["crs-interrupt"].comments == ("crs",)


# ---------------------------------------------------------------- the background writer


class FlakyStore:
    """Fails the first ``failures`` writes, as a database restart would."""

    def __init__(self, inner: SqlFeedbackStore, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    async def save_issued(self, cards: Sequence[IssuedCard]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("database restarting")
        return await self.inner.save_issued(cards)


async def test_writer_batches_and_retries_without_losing_a_card(store: SqlFeedbackStore) -> None:
    flaky = FlakyStore(store, failures=2)
    writer = IssuedCardWriter(flaky, queue_max=100, batch_max=3, flush_interval_s=0.01,  # type: ignore[arg-type]
                              retry_s=0.01)
    writer.start()
    await writer.record([issued(f"w{i}") for i in range(7)])
    await asyncio.wait_for(writer.flush(), timeout=10)
    await writer.close()
    assert sorted(r["card_uuid"] for r in await store.fetch_issued()) == [f"w{i}" for i in range(7)]
    assert flaky.calls >= 3 + 2  # three batches of at most 3, two of the writes failed and were retried


async def test_writer_close_writes_what_is_still_queued(store: SqlFeedbackStore) -> None:
    writer = IssuedCardWriter(store, queue_max=100, batch_max=500, flush_interval_s=60.0)
    writer.start()
    await writer.record([issued("q1"), issued("q2")])
    await writer.close()  # long before the 60 s flush interval
    assert [r["card_uuid"] for r in await store.fetch_issued()] == ["q1", "q2"]


# ---------------------------------------------------------------- through HTTP


async def test_hook_cards_are_recorded_and_the_override_shows_in_the_report(make_app: AppFactory,
                                                                             store_url: str) -> None:
    app, client = await make_app(database_url=store_url)
    now = examples.parse_instant("2026-02-19T12:00:00Z")
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=examples.request_for(
        "crs", "obs-grade3-view", now=now))
    cards = response.json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["crs-interrupt", "therapy-status"]
    await app.state.engine.issued.flush()
    rows = await app.state.store.fetch_issued()
    assert sorted((r["card_uuid"], r["service_id"], r["rule_id"], r["indicator"]) for r in rows) == sorted(
        (c["uuid"], PATIENT_VIEW, c["source"]["topic"]["code"], c["indicator"]) for c in cards)

    # Feedback lands on another replica (same database, empty card map).
    other, other_client = await make_app(database_url=store_url)
    crs = cards[0]
    feedback = {"feedback": [{"card": crs["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-02-19T12:05:00Z",
                              "overrideReason": {"reason": crs["overrideReasons"][0], "userComment": "on it"}}]}
    assert (await other_client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json=feedback)).status_code == 200
    [stored] = await other.state.store.fetch_all()
    assert stored["rule_id"] == "crs-interrupt"

    report = await other_client.get("/analytics/feedback")
    assert report.status_code == 200
    body = {r["rule_id"]: r for r in report.json()["rules"]}
    assert body["crs-interrupt"] == {
        "rule_id": "crs-interrupt", "issued": 1, "accepted": 0, "overridden": 1, "override_rate": 1.0,
        "top_override_reasons": [{"code": crs["overrideReasons"][0]["code"],
                                  "display": crs["overrideReasons"][0]["display"], "count": 1}],
        "comments": ["on it"]}
    assert body["therapy-status"]["issued"] == 1 and body["therapy-status"]["override_rate"] == 0.0

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = await other_client.get("/analytics/feedback", params={"since": tomorrow})
    assert later.json() == {"since": f"{tomorrow}T00:00:00+00:00", "rules": []}


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-03-01T10:00:00"])
async def test_a_bad_since_is_a_400_naming_it(make_app: AppFactory, since: str) -> None:
    _, client = await make_app()
    response = await client.get("/analytics/feedback", params={"since": since})
    assert response.status_code == 400
    assert outcome_fields(response) == ["since"]


async def test_the_report_needs_the_same_jwt_as_every_endpoint(make_app: AppFactory, tmp_path: Path) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org",
                                                "jku": ["https://ehr.example.org/jwks.json"],
                                                "fhir_servers": []}]}))
    _, client = await make_app(auth="jwt", trusted_issuers_file=issuers)
    response = await client.get("/analytics/feedback")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------- the command


async def _seed(url: str) -> None:
    from service.store import open_store

    store = open_store(url)
    try:
        await store.save_issued([issued("p1"), issued("p2")])
        await store.save([overridden(card_uuid="p1", rule_id=None, override_reason_code="given-elsewhere",
                                     override_reason_display="Given elsewhere", user_comment="charted late")],
                         received_at=T0)
    finally:
        await store.close()


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_feedback_report_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 fmt: str) -> None:
    url = f"sqlite:///{tmp_path}/report.db"
    asyncio.run(_seed(url))
    monkeypatch.setenv("BLINA_CDS_DATABASE_URL", url)
    assert cli.main(["feedback", "report", "--format", fmt, "--since", "2026-02-01"]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        body = json.loads(out)
        assert body["since"] == "2026-02-01T00:00:00+00:00"
        [rule] = body["rules"]
        assert (rule["rule_id"], rule["issued"], rule["overridden"], rule["override_rate"]) == (
            "premed-missing", 2, 1, 0.5)
        assert rule["comments"] == ["charted late"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert rows == [{"rule_id": "premed-missing", "issued": "2", "accepted": "0", "overridden": "1",
                         "override_rate": "0.5", "top_override_reasons": "given-elsewhere (1)",
                         "comments": "charted late"}]
    else:
        line = next(ln for ln in out.splitlines() if ln.startswith("premed-missing"))
        assert line.split()[:6] == ["premed-missing", "2", "0", "1", "50.0", "%"]
        assert "given-elsewhere (1)" in line
        assert "  - charted late" in out


def test_feedback_report_refuses_a_bad_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["feedback", "report", "--since", "last week"]) == 2
    assert "not a date" in capsys.readouterr().err


def test_issued_card_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="issued_at"):
        dataclasses.replace(issued("c"), issued_at=datetime(2026, 3, 1, 9, 0))
