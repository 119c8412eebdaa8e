"""Bad input is a clear 4xx or a quiet read, never a 500: mutated example requests, and the unreadable-data path."""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import pytest

from service import examples
from tests.conftest import PATIENT_VIEW, AppFactory, outcome_fields

JUNK: list[Any] = [None, "x", "", 12, -1, 0, 1e308, [], {}, [1], {"a": 1}, True, "2026-13-45", "Patient/", "1e999"]


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaf_paths(v, (*path, i))


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set the value at ``path``; nothing when an earlier mutation already replaced a parent of it."""
    for p in path[:-1]:
        if not isinstance(doc, dict | list) or (isinstance(doc, list) and not isinstance(p, int)):
            return
        try:
            doc = doc[p]
        except (KeyError, IndexError):
            return
    if isinstance(doc, dict) or (isinstance(doc, list) and isinstance(path[-1], int) and path[-1] < len(doc)):
        doc[path[-1]] = value


async def test_mutated_example_requests_never_give_a_server_error(make_app: AppFactory) -> None:
    """Junk anywhere in prefetch or context (400 mutated requests): a 200 or a 4xx, never a 5xx."""
    _, client = await make_app()
    rng = random.Random(20261122)
    now = dt.datetime.now(dt.UTC)
    calls = [(n, c["id"], c["service"]) for n in examples.names() for c in examples.load_manifest(n)["calls"]]
    statuses: dict[int, int] = {}
    for _ in range(400):
        name, call_id, service = rng.choice(calls)
        request = examples.request_for(name, call_id, now=now)
        paths = [p for p in leaf_paths(request) if p[0] in ("prefetch", "context")]
        for _ in range(rng.randint(1, 3)):
            chosen = rng.choice(paths)
            put(request, chosen, copy.deepcopy(rng.choice(JUNK)))
            # what was under the replaced element is gone: never mutate inside the junk
            paths = [p for p in paths if len(p) <= len(chosen) or p[:len(chosen)] != chosen]
        response = await client.post(f"/cds-services/{service}", json=request)
        assert response.status_code < 500, (name, call_id, response.text[:300])
        if response.status_code >= 400:
            assert response.json()["resourceType"] == "OperationOutcome"
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0  # both kinds of answer were exercised


def _request_with(labs: list[dict[str, Any]]) -> dict[str, Any]:
    request = examples.request_for("hepatic", "c1d10-bili-view", now=dt.datetime.now(dt.UTC))
    request["prefetch"]["labs"] = {"resourceType": "Bundle", "type": "searchset",
                                   "entry": [{"resource": r} for r in labs]}
    return request


async def test_data_the_timeline_cannot_read_is_a_400_naming_the_resource(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The builders read junk quietly (see above); this forces the last line of defence: a builder that
    # trips over an invalid resource is answered with a 400 naming it, found by fhir.resources (and blamed
    # because the analysis succeeds without it: tests/test_pipeline_blame.py).
    import service.pipeline

    real = service.pipeline.build_timeline

    def trips(**kwargs: Any) -> Any:
        if any(r.get("id") == "alt-bad" for resources in kwargs["data"].values() for r in resources):
            raise TypeError("builder tripped")
        return real(**kwargs)

    monkeypatch.setattr(service.pipeline, "build_timeline", trips)
    _, client = await make_app()
    broken = {"resourceType": "Observation", "id": "alt-bad", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]},
              "referenceRange": "<40 U/L"}
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=_request_with([broken]))
    assert response.status_code == 400
    assert outcome_fields(response) == ["prefetch.labs"]
    assert "Observation/alt-bad" in response.json()["issue"][0]["diagnostics"]
    assert "referenceRange" in response.json()["issue"][0]["diagnostics"]


async def test_valid_data_our_code_cannot_read_is_a_500_not_blamed_on_the_caller(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.pipeline

    def trips(**_: Any) -> None:
        raise TypeError("builder tripped")

    monkeypatch.setattr(service.pipeline, "build_timeline", trips)
    _, client = await make_app()
    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=_request_with([]))
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "builder tripped" not in response.text
