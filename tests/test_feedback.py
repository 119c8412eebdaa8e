"""POST /cds-services/{id}/feedback: the 2.0 shape, batches, idempotency, what is stored."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ORDER_SIGN, PATIENT_VIEW, AppFactory, outcome_fields

URL = f"/cds-services/{ORDER_SIGN}/feedback"


def accepted(card: str = "card-1", suggestion: str = "sugg-1") -> dict[str, Any]:
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
            "outcomeTimestamp": "2026-03-10T10:05:31Z"}


def overridden(card: str = "card-2", **reason: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-03-10T10:06:00+01:00"}
    if reason:
        item["overrideReason"] = reason
    return item


async def test_batch_is_stored_with_rule_id_and_reason(make_app: AppFactory) -> None:
    app, client = await make_app()
    app.state.engine.card_map.remember("card-1", "premed-missing", time.monotonic())
    batch = {"feedback": [
        accepted(),
        overridden(reason={"system": "urn:blina-cds:override-reason", "code": "given-elsewhere",
                           "display": "Premedication given, not yet charted"}, userComment="given on the ward"),
    ]}
    response = await client.post(URL, json=batch)
    assert response.status_code == 200
    assert response.json() == {"received": 2, "stored": 2}
    rows = sorted(await app.state.store.fetch_all(), key=lambda r: r["card_uuid"])
    assert [(r["card_uuid"], r["outcome"], r["rule_id"], r["service_id"]) for r in rows] == [
        ("card-1", "accepted", "premed-missing", ORDER_SIGN),
        ("card-2", "overridden", None, ORDER_SIGN),
    ]
    assert rows[0]["accepted_suggestions"] == ["sugg-1"]
    assert rows[1]["override_reason_code"] == "given-elsewhere"
    assert rows[1]["user_comment"] == "given on the ward"
    assert rows[1]["outcome_timestamp"].isoformat() == "2026-03-10T09:06:00+00:00"


async def test_same_feedback_twice_is_stored_once_and_answered_200_both_times(make_app: AppFactory) -> None:
    app, client = await make_app()
    body = {"feedback": [accepted()]}
    first = await client.post(URL, json=body)
    second = await client.post(URL, json=body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["stored"], second.json()["stored"]) == (1, 0)
    assert await app.state.store.count() == 1


async def test_sandbox_dismiss_shape_is_accepted(make_app: AppFactory) -> None:
    """The Sandbox sends overrideReason.reason {code, system} with no display and no userComment."""
    app, client = await make_app()
    item = overridden(reason={"code": "not-indicated", "system": "urn:blina-cds:override-reason"})
    response = await client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json={"feedback": [item]})
    assert response.status_code == 200
    [row] = await app.state.store.fetch_all()
    assert row["override_reason_code"] == "not-indicated" and row["override_reason_display"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "feedback"),
        ({"feedback": []}, "feedback"),
        ({"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2026-03-10T10:05:31Z"}]}, "feedback.0.card"),
        ({"feedback": [{**accepted(), "outcome": "ignored"}]}, "feedback.0.outcome"),
        ({"feedback": [{**accepted(), "acceptedSuggestions": None}]}, "feedback.0"),
        ({"feedback": [{**accepted(), "acceptedSuggestions": [{"uuid": "x"}]}]}, "feedback.0.acceptedSuggestions.0.id"),
        ({"feedback": [{**accepted(), "outcomeTimestamp": "2026-03-10T10:05:31"}]}, "feedback.0.outcomeTimestamp"),
        ({"feedback": [{**accepted(), "outcomeTimestamp": "yesterday"}]}, "feedback.0.outcomeTimestamp"),
        ({"feedback": [overridden(reason={"system": "s"})]}, "feedback.0.overrideReason.reason.code"),
        ({"feedback": [{**accepted(), "card": 17}]}, "feedback.0.card"),
    ],
)
async def test_invalid_feedback_is_400_naming_the_field_and_stores_nothing(
    make_app: AppFactory, body: dict[str, Any], field: str
) -> None:
    app, client = await make_app()
    response = await client.post(URL, json=body)
    assert response.status_code == 400
    assert field in outcome_fields(response)
    assert await app.state.store.count() == 0


async def test_store_failure_is_503_and_nothing_is_acknowledged(make_app: AppFactory) -> None:
    app, client = await make_app()
    await app.state.store.close()  # the database goes away
    response = await client.post(URL, json={"feedback": [accepted()]})
    assert response.status_code == 503
    assert response.json()["issue"][0]["code"] == "transient"
