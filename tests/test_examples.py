"""The example patients in ``fhir_examples/``: valid FHIR, up to date, dates shifted, and the cards each must give.

The scenario tests are the acceptance tests of the clinical rules: every example call goes through the HTTP API
(prefetch path) and, with the real FHIR server, through the no-prefetch path; the warning/critical rule ids must
be exactly the manifest's, and a quiet call must give no warning or critical card at all.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class

from service import examples
from service.routes import now_utc
from service.rules import RULE_IDS
from tests.conftest import AppFactory

EXAMPLES_DIR = examples.DEFAULT_EXAMPLES_DIR
INFO_RULES = {"therapy-status"}


def _calls() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in examples.names():
        for call in examples.load_manifest(name)["calls"]:
            out.append((name, call))
    return out


CALLS = _calls()
CALL_IDS = [f"{name}/{call['id']}" for name, call in CALLS]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _resources_of(request: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for value in (request.get("prefetch") or {}).values():
        if value is not None:
            yield value
    drafts = request["context"].get("draftOrders")
    if drafts is not None:
        yield drafts


def _validate(resource: Mapping[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


# ---------------------------------------------------------------- (a) valid FHIR R4 (R4B models)


@pytest.mark.parametrize(("name", "call"), CALLS, ids=CALL_IDS)
def test_example_request_and_bundle_are_valid_fhir(name: str, call: dict[str, Any]) -> None:
    now = _now()
    request = examples.request_for(name, call["id"], now=now)
    bundle = examples.bundle_for(name, call["id"], now=now)
    for resource in _resources_of(request):
        _validate(resource)
    _validate(bundle)
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        r = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}


@pytest.mark.parametrize(("name", "call"), CALLS, ids=CALL_IDS)
def test_example_call_is_self_consistent(name: str, call: dict[str, Any]) -> None:
    """Own patient id per call; drafts only in the context; the bundle holds exactly the prefetched resources."""
    request = json.loads((EXAMPLES_DIR / name / call["request"]).read_text())
    bundle = json.loads((EXAMPLES_DIR / name / call["bundle"]).read_text())
    pid = f"ex-{name}-{call['id']}"
    assert request["context"]["patientId"] == pid
    assert request["hook"] == call["hook"]
    assert request["prefetch"]["patient"]["id"] == pid
    in_bundle = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert all(rid.startswith(pid) for _, rid in in_bundle)
    prefetched = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for key, value in request["prefetch"].items()
        if value is not None and key != "patient"
        for e in value["entry"]
    } | {("Patient", pid)}
    assert prefetched == in_bundle
    drafts = request["context"].get("draftOrders", {}).get("entry", [])
    assert all(d["resource"]["status"] == "draft" for d in drafts)
    assert not {("MedicationRequest", d["resource"]["id"]) for d in drafts} & in_bundle
    if call["hook"] == "order-select":
        ids = {f"MedicationRequest/{d['resource']['id']}" for d in drafts}
        assert set(request["context"]["selections"]) <= ids


def test_every_rule_fires_in_some_example() -> None:
    fired = {rule for _, call in CALLS for rule in call["expect_rule_ids"]}
    assert set(RULE_IDS) <= fired, sorted(set(RULE_IDS) - fired)
    assert fired <= set(RULE_IDS), sorted(fired - set(RULE_IDS))


def test_manifests_are_well_formed() -> None:
    for name in examples.names():
        manifest = examples.load_manifest(name)
        assert manifest["name"] == name
        examples.parse_instant(manifest["reference_instant"])
        for call in manifest["calls"]:
            assert call["expect_rule_ids"] == sorted(set(call["expect_rule_ids"]))
            assert set(call.get("expect_indicators", {})) <= set(call["expect_rule_ids"])
            if call["quiet"]:
                assert set(call["expect_rule_ids"]) <= INFO_RULES
            else:
                assert set(call["expect_rule_ids"]) - INFO_RULES, f"{name}/{call['id']}: not quiet, expects nothing"


def test_readme_lists_every_call() -> None:
    readme = (EXAMPLES_DIR / "README.md").read_text()
    missing = [cid for cid in CALL_IDS if f"`{cid}`" not in readme]
    assert not missing, missing


# ---------------------------------------------------------------- (b) date shifting

DELTA = dt.timedelta(days=10, hours=3, minutes=30)


def test_shift_datetime_keeps_zone() -> None:
    assert examples.shift_value("2026-03-10T09:00:00Z", delta=DELTA, days=10) == "2026-03-20T12:30:00Z"
    assert examples.shift_value("2026-03-10T23:00:00+01:00", delta=DELTA, days=10) == "2026-03-21T02:30:00+01:00"
    assert examples.shift_value("2026-03-10T09:00:00.250-05:00", delta=DELTA, days=10) == (
        "2026-03-20T12:30:00.250-05:00"
    )


def test_shift_date_only_moves_whole_days_and_stays_a_date() -> None:
    assert examples.shift_value("2026-03-10", delta=DELTA, days=10) == "2026-03-20"
    assert examples.shift_value("2026-02-27", delta=DELTA, days=3) == "2026-03-02"


def test_shift_leaves_other_strings_alone() -> None:
    for value in ("1742-6", "D89.833", "2026", "2026-03", "Cycle 2 Day 1", "urn:blina-cds:regimen:mrd-positive"):
        assert examples.shift_value(value, delta=DELTA, days=10) == value


def test_shift_period_and_birth_date_in_a_resource() -> None:
    doc = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1979-05-14"}},
            {"resource": {"resourceType": "MedicationAdministration", "id": "ma", "status": "completed",
                          "effectivePeriod": {"start": "2026-03-01T09:00:00Z", "end": "2026-03-03T09:00:00Z"}}},
        ],
    }
    shifted = examples.shift_dates(doc, delta=DELTA, days=10)
    assert shifted["entry"][0]["resource"]["birthDate"] == "1979-05-24"
    assert shifted["entry"][1]["resource"]["effectivePeriod"] == {
        "start": "2026-03-11T12:30:00Z", "end": "2026-03-13T12:30:00Z"}
    assert doc["entry"][0]["resource"]["birthDate"] == "1979-05-14"  # the input is untouched


def test_request_for_makes_reference_instant_now() -> None:
    name, call = "rr-adult-course", "c1d1-sign"
    reference = examples.parse_instant(examples._call(name, call)["reference_instant"])
    now = dt.datetime(2027, 7, 1, 14, 15, 16, tzinfo=dt.UTC)
    raw = json.loads((EXAMPLES_DIR / name / f"{call}.request.json").read_text())
    first = examples.request_for(name, call, now=now)
    second = examples.request_for(name, call, now=now)
    assert first["hookInstance"] != second["hookInstance"]
    draft = first["context"]["draftOrders"]["entry"][0]["resource"]
    raw_draft = raw["context"]["draftOrders"]["entry"][0]["resource"]
    assert draft["authoredOn"] == "2027-07-01T14:15:16Z"  # authored at the reference instant → now
    raw_start = examples.parse_instant(raw_draft["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"])
    start = examples.parse_instant(draft["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"])
    assert start - now == raw_start - reference
    days = (now.date() - reference.date()).days
    birth = dt.date.fromisoformat(raw["prefetch"]["patient"]["birthDate"]) + dt.timedelta(days=days)
    assert first["prefetch"]["patient"]["birthDate"] == birth.isoformat()


def test_examples_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "only-one").mkdir()
    (tmp_path / "only-one" / "manifest.json").write_text(json.dumps({"name": "only-one", "calls": []}))
    monkeypatch.setenv("BLINA_CDS_EXAMPLES_DIR", str(tmp_path))
    assert examples.names() == ["only-one"]
    with pytest.raises(examples.ExampleError):
        examples.load_manifest("rr-adult-course")


# ---------------------------------------------------------------- (c) generator output is committed and current


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fhir_examples_build", EXAMPLES_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_generated_files_are_up_to_date(tmp_path: Path) -> None:
    build = _build_module()
    assert (EXAMPLES_DIR / "README.md").read_text() == build.readme(build.all_examples()), "run fhir_examples/build.py"
    written = build.write_all(tmp_path)
    fresh = {p.relative_to(tmp_path).as_posix() for p in written}
    committed = {p.relative_to(EXAMPLES_DIR).as_posix() for p in EXAMPLES_DIR.glob("*/*.json")}
    assert fresh == committed, "run `python fhir_examples/build.py`"
    stale = [rel for rel in sorted(fresh)
             if json.loads((tmp_path / rel).read_text()) != json.loads((EXAMPLES_DIR / rel).read_text())]
    assert not stale, f"run `python fhir_examples/build.py`: {stale[:5]}"


# ---------------------------------------------------------------- (d) and (e) scenarios through the HTTP API


def _alerts(cards: list[dict[str, Any]]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards if c["indicator"] in ("warning", "critical")}


def _empty_values(value: Any, path: str = "") -> list[str]:
    """Paths of null, "", [] or {} anywhere in a card (spec: "JSON elements SHALL NOT be null … or empty")."""
    if value is None or value == "" or value == [] or value == {}:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _empty_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _empty_values(v, f"{path}[{i}]")]
    return []


def _check_card_shape(card: Mapping[str, Any]) -> None:
    assert not _empty_values(card), _empty_values(card)
    assert card["uuid"] and len(card["summary"]) < 140 and card["source"]["label"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["topic"]["system"] == "urn:blina-cds:rule"
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            assert suggestion["uuid"] and suggestion["label"]
            for action in suggestion.get("actions", ()):
                assert action["description"]
                if action["type"] == "delete":
                    assert action["resourceId"].startswith("MedicationRequest/") and "resource" not in action
                else:
                    _validate(action["resource"])  # what a suggestion creates must be valid FHIR R4
    for reason in card.get("overrideReasons", ()):
        assert reason["display"] and reason["code"] and reason["system"]


def _check_manifest(call: Mapping[str, Any], cards: list[dict[str, Any]]) -> None:
    for card in cards:
        _check_card_shape(card)
    expected = set(call["expect_rule_ids"])
    got_all = {c["source"]["topic"]["code"] for c in cards}
    summary = sorted((c["source"]["topic"]["code"], c["indicator"]) for c in cards)
    if call["quiet"]:
        assert not _alerts(cards), f"quiet call gave {summary}"
    assert _alerts(cards) == expected - INFO_RULES, f"expected {sorted(expected)}, got {summary}"
    assert expected & INFO_RULES <= got_all, f"expected {sorted(expected & INFO_RULES)}, got {summary}"
    for rule, indicator in call.get("expect_indicators", {}).items():
        assert {c["indicator"] for c in cards if c["source"]["topic"]["code"] == rule} == {indicator}, summary


FETCH_TIMEOUT_S = 60.0


async def _client_at(make_app: AppFactory, now: dt.datetime, **settings: Any) -> httpx.AsyncClient:
    app, client = await make_app(**settings)
    app.dependency_overrides[now_utc] = lambda: now
    return client


async def _post(client: httpx.AsyncClient, call: Mapping[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(f"/cds-services/{call['service']}", json=request)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


@pytest.mark.parametrize(("name", "call"), CALLS, ids=CALL_IDS)
async def test_example_cards_through_http_api(make_app: AppFactory, name: str, call: dict[str, Any]) -> None:
    now = _now()
    client = await _client_at(make_app, now)
    cards = await _post(client, call, examples.request_for(name, call["id"], now=now))
    _check_manifest(call, cards)


@pytest.mark.fhir_server
@pytest.mark.parametrize(("name", "call"), CALLS, ids=CALL_IDS)
async def test_example_cards_without_prefetch(make_app: AppFactory, fhir_server: Any, name: str,
                                              call: dict[str, Any]) -> None:
    """Same data loaded into the real FHIR server, request sent with no prefetch: the same rule ids.

    Every example stays loaded, so the server also holds other patients' records; sekmet 0.1.1 ignores
    ``AdverseEvent?subject=`` and returns all of them — the timeline must drop those (not this chart's).
    """
    now = _now()
    fhir_server.load(examples.bundle_for(name, call["id"], now=now))
    await _compare_paths(make_app, fhir_server, name, call, now)


async def _compare_paths(make_app: AppFactory, fhir_server: Any, name: str, call: dict[str, Any],
                         now: dt.datetime) -> None:
    # These compare what the two paths read, not how fast: sekmet holds every example's records by now, and on a
    # busy machine its larger searches outran the default 5 s (a 412; the deadline has its own tests).
    client = await _client_at(make_app, now, fhir_timeout_s=FETCH_TIMEOUT_S)
    with_prefetch = examples.request_for(name, call["id"], now=now)
    without = {k: v for k, v in with_prefetch.items() if k != "prefetch"}
    without["fhirServer"] = fhir_server.base
    without["hookInstance"] = examples.request_for(name, call["id"], now=now)["hookInstance"]
    cards_fetched = await _post(client, call, without)
    cards_prefetched = await _post(client, call, with_prefetch)
    # The summary too: the therapy-status card says what the chart showed (cycle, day, dose, running or not), so a
    # fallback that lost records shows there even when no alarm changes.
    fetched = sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards_fetched)
    prefetched = sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards_prefetched)
    assert fetched == prefetched
    _check_manifest(call, cards_fetched)


# ---------------------------------------------------------------- `blina-cds examples …`


def test_cli_lists_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from service import cli

    assert cli.main(["examples", "list"]) == 0
    assert capsys.readouterr().out.split() == examples.names()


@pytest.mark.fhir_server
def test_cli_loads_an_example_with_dates_shifted_to_now(fhir_server: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from service import cli

    assert cli.main(["examples", "load", "--fhir-server", fhir_server.base, "--name", "hepatic"]) == 0
    assert capsys.readouterr().out.startswith("hepatic: ")
    call = examples.load_manifest("hepatic")["calls"][0]
    patient_id = f"ex-hepatic-{call['id']}"
    assert fhir_server.get(f"Patient/{patient_id}")["id"] == patient_id
    alt = fhir_server.get("Observation", patient=patient_id, code="http://loinc.org|1742-6", _sort="-date")
    latest = dt.datetime.fromisoformat(alt["entry"][0]["resource"]["effectiveDateTime"].replace("Z", "+00:00"))
    # authored weeks ago, but loaded as of now: the morning's ALT is from today, not from the reference instant
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - latest < dt.timedelta(days=1)


def test_cli_load_against_an_unreachable_server_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from service import cli

    assert cli.main(["examples", "load", "--fhir-server", "http://127.0.0.1:9/fhir", "--name", "hepatic"]) == 2
    assert "cannot reach FHIR server" in capsys.readouterr().err


def test_cli_prints_a_shifted_request_with_or_without_prefetch(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from service import cli

    assert cli.main(["examples", "request", "premed-missing", "c2d1-sign"]) == 0
    with_prefetch = json.loads(capsys.readouterr().out)
    assert with_prefetch["hook"] == "order-sign" and "prefetch" in with_prefetch
    fallback = ["--fhir-server", "http://127.0.0.1:1/fhir"]
    assert cli.main(["examples", "request", "premed-missing", "c2d1-sign", *fallback]) == 0
    without = json.loads(capsys.readouterr().out)
    assert "prefetch" not in without and without["fhirServer"] == "http://127.0.0.1:1/fhir"
    assert cli.main(["examples", "request", "premed-missing", "no-such-call"]) == 2
