"""A 400 for unreadable chart data names the resource that caused the failure, and only on evidence:
an invalid resource that did not cause it is never blamed (the failure is then ours: a 500)."""

from __future__ import annotations

from typing import Any

import pytest

from service import pipeline
from tests.conftest import PATIENT_VIEW, AppFactory, outcome_fields
from tests.test_prefetch import PATIENT, body, keys_of, searchset

# Not valid FHIR R4 (onsetDateTime is no date), and nothing the rules need to read.
BAD_CONDITION = {"resourceType": "Condition", "id": "c-bad", "subject": {"reference": "Patient/p1"},
                 "onsetDateTime": "yesterday-ish"}


async def _request(client: Any) -> dict[str, Any]:
    prefetch: dict[str, Any] = dict.fromkeys(await keys_of(client))
    prefetch["patient"] = PATIENT
    prefetch["conditions"] = searchset(BAD_CONDITION)
    return body(prefetch)


async def test_our_own_failure_is_never_blamed_on_an_unrelated_invalid_resource(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = await make_app()
    request = await _request(client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a bug in a rule")

    monkeypatch.setattr(pipeline, "evaluate", broken)
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 500
    assert "prefetch.conditions" not in response.text and "c-bad" not in response.text


async def test_the_invalid_resource_that_breaks_the_analysis_is_named(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = await make_app()
    request = await _request(client)
    real = pipeline.build_timeline

    def reads_the_bad_date(**kwargs: Any) -> Any:
        if any(r.get("id") == "c-bad" for r in kwargs["data"].get("conditions", ())):
            raise ValueError("cannot read the onset")  # as a reader meeting that resource would
        return real(**kwargs)

    monkeypatch.setattr(pipeline, "build_timeline", reads_the_bad_date)
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 400
    assert outcome_fields(response) == ["prefetch.conditions"]
    assert "Condition/c-bad" in response.json()["issue"][0]["diagnostics"]
