"""/preview in-process (no browser): when it is mounted, what its pages escape, how the form builds a request.

The browser tests (``test_browser.py``) drive the same pages in Chromium; these check the rules around them
cheaply: off in production unless ``BLINA_CDS_PREVIEW=on``, chart and card text never becomes markup, the
order form's fields become the FHIR an EHR would send, and a bad form is a 400 naming the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.catalog import build_catalog
from service.examples import request_for
from service.knowledge import Knowledge
from service.preview.orders import FormError, OrderForm, build_request
from service.settings import DEFAULT_CARDS_DIR, Settings
from tests.conftest import ORDER_SIGN, AppFactory
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair
from tests.preview.test_browser import set_summary

NOW = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)


def jwt_settings(tmp_path: Path) -> dict[str, Any]:
    _, jwk = make_es384_keypair()
    return {"auth": "jwt", "trusted_issuers_file": issuers_file(tmp_path, [issuer_entry(keys=[jwk])])}


def form_fields(**overrides: str) -> dict[str, str]:
    fields = {
        "patient": "rr-adult-course/c1d1-sign", "hook": "order-sign", "dose_value": "9", "dose_unit": "ug/d",
        "bag_hours": "48", "start": "2026-03-10T10:00", "infusion_days": "7", "cycle_day": "Cycle 1 Day 1",
        "regimen": "relapsed-refractory", "steroid": "on", "steroid_agent": "dexamethasone", "steroid_mg": "20",
        "steroid_time": "2026-03-10T09:15", "steroid_route": "iv", "request_json": "",
    }
    fields.update(overrides)
    return fields


def record_issued(app: Any) -> list[Any]:
    """The cards the hook endpoint records as issued from now on (the service's issued-card writer replaced)."""
    recorded: list[Any] = []

    class Recorder:
        async def record(self, cards: Any) -> None:
            recorded.extend(cards)

    app.state.engine = dataclasses.replace(app.state.engine, issued=Recorder())
    return recorded


@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    path = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, path)
    return path


# ---------------------------------------------------------------- on and off


@pytest.mark.parametrize("path", ["/preview", "/preview/order", "/preview/examples/premed-missing",
                                  "/preview/static/preview.js"])
async def test_production_has_no_preview_unless_asked(make_app: AppFactory, tmp_path: Path, path: str) -> None:
    _, client = await make_app(**jwt_settings(tmp_path))
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.post("/preview/order", data=form_fields())).status_code == 404


async def test_development_can_turn_the_preview_off(make_app: AppFactory) -> None:
    _, client = await make_app(auth="off", preview="off")
    assert (await client.get("/preview")).status_code == 404


def test_the_preview_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings(auth="off").preview_enabled
    assert not Settings(**jwt_settings(tmp_path)).preview_enabled
    monkeypatch.setenv("BLINA_CDS_PREVIEW", "on")
    assert Settings(**jwt_settings(tmp_path)).preview_enabled
    monkeypatch.setenv("BLINA_CDS_PREVIEW", "off")
    assert not Settings(auth="off").preview_enabled


async def test_preview_on_in_production_still_sends_orders_through_authentication(
    make_app: AppFactory, tmp_path: Path
) -> None:
    _, client = await make_app(preview="on", **jwt_settings(tmp_path))
    page = await client.get("/preview/examples/premed-missing")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert 'data-rule-id="premed-missing"' in page.text
    answer = await client.post("/preview/order", data=form_fields())
    assert answer.status_code == 200
    assert 'data-status="401"' in answer.text  # the real hook endpoint refused the unsigned call
    assert "<article" not in answer.text


async def test_example_cards_are_not_recorded_as_issued_but_a_sent_order_s_are(
    make_app: AppFactory
) -> None:
    app, client = await make_app()
    recorded = record_issued(app)
    page = await client.get("/preview/examples/premed-missing")
    assert 'data-rule-id="premed-missing"' in page.text
    assert recorded == []
    answer = await client.post("/preview/order", data=form_fields(steroid=""))  # a real hook call is recorded
    assert 'data-rule-id="premed-missing"' in answer.text
    assert "premed-missing" in [card.rule_id for card in recorded]
    assert {card.card_uuid for card in recorded} == set(re.findall(r'data-card-uuid="([^"]+)"', answer.text))


# ---------------------------------------------------------------- card files, escaping


async def test_examples_reread_card_files_but_the_hook_endpoint_keeps_its_startup_cards(
    make_app: AppFactory, cards_copy: Path
) -> None:
    _, client = await make_app(cards_dir=cards_copy)
    set_summary(cards_copy / "premed-missing.toml", "Edited premedication sentence.")
    page = await client.get("/preview/examples/premed-missing")
    summaries = re.findall(r'<span class="summary">([^<]*)</span>', page.text)
    assert summaries.count("Edited premedication sentence.") == 4  # the four calls with a premed-missing card
    answer = await client.post("/preview/order", data=form_fields(steroid=""))
    assert 'data-rule-id="premed-missing"' in answer.text
    assert "Edited premedication sentence." not in answer.text


async def test_card_and_chart_text_is_never_markup(make_app: AppFactory, cards_copy: Path) -> None:
    card_file = cards_copy / "dose-schedule.toml"
    set_summary(card_file, "<script>alert(1)</script><b>bold</b> dose")
    text = card_file.read_text(encoding="utf-8")
    start = text.index("detail = '''") + len("detail = '''")
    card_file.write_text(
        text[:start] + "\n<img src=x onerror=alert(2)> [click](javascript:alert(3)) [label](https://example.org/l)\n"
        + text[start:], encoding="utf-8")
    _, client = await make_app(cards_dir=cards_copy)
    page = (await client.get("/preview/examples/dose-schedule")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; dose" in page
    assert "<script>alert" not in page and "<b>bold" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "<img" not in page
    assert 'href="javascript:' not in page
    assert '<a href="https://example.org/l">label</a>' in page


async def test_a_pasted_request_with_markup_in_it_is_shown_escaped(make_app: AppFactory) -> None:
    _, client = await make_app()
    pasted = '{"hook": "order-sign", "hookInstance": "</pre><script>x()</script>", "context": {}}'
    page = await client.post("/preview/order", data=form_fields(request_json=pasted))
    assert page.status_code == 200
    assert 'data-status="400"' in page.text  # the hook endpoint's own validation answered
    assert "<script>x()" not in page.text
    assert "&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in page.text


# ---------------------------------------------------------------- the order form


async def test_a_bad_form_is_a_400_naming_each_field(make_app: AppFactory) -> None:
    _, client = await make_app()
    page = await client.post("/preview/order", data=form_fields(dose_value="abc", start="tomorrow",
                                                                  patient="no-such/call", steroid_agent="aspirin"))
    assert page.status_code == 400
    problems = re.findall(r"<li>([^<]*)</li>", page.text.split('class="problem form-problems"')[1].split("</ul>")[0])
    assert problems == [
        "patient: no example call &#39;no-such/call&#39;",
        "dose: &#39;abc&#39; is not a number",
        "start: &#39;tomorrow&#39; is not a date and time (YYYY-MM-DDTHH:MM, UTC)",
        "steroid: choose one of dexamethasone, methylprednisolone, prednisolone, prednisone",
    ]
    assert 'name="dose_value" value="abc"' in page.text  # the form comes back as it was sent


@pytest.mark.parametrize("days", ["1e9", "1e300"])
async def test_an_infusion_too_long_for_a_date_is_a_400_not_a_500(make_app: AppFactory, days: str) -> None:
    _, client = await make_app()
    page = await client.post("/preview/order", data=form_fields(infusion_days=days))
    assert page.status_code == 400
    assert f"infusion days: {float(days):g} days from the start is past any date" in page.text


async def test_pasted_text_that_is_not_a_request_is_a_400(make_app: AppFactory) -> None:
    _, client = await make_app()
    page = await client.post("/preview/order", data=form_fields(request_json="[1, 2"))
    assert page.status_code == 400 and "pasted request: not valid JSON" in page.text
    page = await client.post("/preview/order", data=form_fields(request_json='{"hook": "encounter-start"}'))
    assert page.status_code == 400
    assert "pasted request: &#39;hook&#39; must be one of order-select, order-sign, patient-view" in page.text


async def test_a_form_larger_than_the_limit_is_a_413(make_app: AppFactory) -> None:
    _, client = await make_app(preview_max_form_bytes=2048)
    page = await client.post("/preview/order", data=form_fields(request_json="x" * 4096))
    assert page.status_code == 413
    assert "Request body is larger than 2048 bytes" in page.text


async def test_a_form_without_a_length_is_cut_at_the_limit_as_it_streams_in(make_app: AppFactory) -> None:
    _, client = await make_app(preview_max_form_bytes=2048)

    async def body() -> Any:  # chunked: no Content-Length to refuse up front
        for _ in range(8):
            yield b"request_json=" + b"x" * 1024 + b"&"

    page = await client.post("/preview/order", content=body(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert page.status_code == 413
    assert page.headers["content-type"].startswith("text/html")  # the preview's own page, not another layer's
    assert "Request body is larger than 2048 bytes" in page.text


async def test_a_pasted_example_request_gives_the_example_card(make_app: AppFactory) -> None:
    _, client = await make_app()
    pasted = json.dumps(request_for("premed-missing", "c2d1-sign", now=dt.datetime.now(dt.UTC)))
    page = await client.post("/preview/order", data=form_fields(request_json=pasted))
    assert 'data-status="200"' in page.text
    assert re.findall(r'data-rule-id="([^"]*)"', page.text) == ["premed-missing"]
    assert f'data-service="{ORDER_SIGN}"' in page.text


def test_the_form_writes_orders_as_an_ehr_does(kb: Knowledge) -> None:
    form = OrderForm.from_fields(form_fields(hook="order-select", dose_value="56", dose_unit="ug", bag_hours="48",
                                             cycle_day="Cycle 2 Day 1", regimen="mrd-positive",
                                             steroid_agent="prednisone", steroid_mg="100"))
    service, request = build_request(form, kb=kb, catalog=build_catalog(kb), now=NOW)
    assert service.id == "blinatumomab-order-select"
    assert request["context"]["patientId"] == "ex-rr-adult-course-c1d1-sign"
    assert set(request["prefetch"]) == set(service.prefetch)
    blin, steroid = (e["resource"] for e in request["context"]["draftOrders"]["entry"])
    assert request["context"]["selections"] == [f"MedicationRequest/{blin['id']}"]
    assert blin["status"] == "draft"
    assert blin["medicationCodeableConcept"]["coding"][0]["code"] == "1597258"  # codes.toml: blinatumomab
    assert blin["instantiatesCanonical"] == ["urn:blina-cds:regimen:mrd-positive"]
    dosage = blin["dosageInstruction"][0]
    assert dosage["text"] == "BLINCYTO 56 mcg per bag continuous IV infusion, Cycle 2 Day 1"
    assert dosage["doseAndRate"] == [{"doseQuantity": {"value": 56, "unit": "ug", "code": "ug",
                                                       "system": "http://unitsofmeasure.org"}}]
    assert dosage["timing"]["repeat"] == {"boundsPeriod": {"start": "2026-03-10T10:00:00Z",
                                                           "end": "2026-03-17T10:00:00Z"},
                                          "duration": 48, "durationUnit": "h"}
    assert steroid["medicationCodeableConcept"]["coding"][0]["code"] == "8640"  # codes.toml: prednisone
    assert steroid["dosageInstruction"][0]["route"]["coding"][0]["code"] == "47625008"
    assert steroid["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 100
    assert steroid["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] == "2026-03-10T09:15:00Z"


def test_without_a_steroid_or_regimen_the_form_sends_only_the_blinatumomab_order(kb: Knowledge) -> None:
    form = OrderForm.from_fields(form_fields(steroid="", regimen="", dose_unit="ug/m2/d", dose_value="15"))
    _, request = build_request(form, kb=kb, catalog=build_catalog(kb), now=NOW)
    (entry,) = request["context"]["draftOrders"]["entry"]
    assert "instantiatesCanonical" not in entry["resource"]
    assert entry["resource"]["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]["code"] == "ug/m2/d"
    assert "selections" not in request["context"]


def test_a_pasted_request_is_sent_as_it_is(kb: Knowledge) -> None:
    pasted = '{"hook": "patient-view", "hookInstance": "h-1", "context": {"patientId": "p"}}'
    service, request = build_request(OrderForm.from_fields(form_fields(request_json=pasted)), kb=kb,
                                     catalog=build_catalog(kb), now=NOW)
    assert service.id == "blinatumomab-patient-view"
    assert request == {"hook": "patient-view", "hookInstance": "h-1", "context": {"patientId": "p"}}


def test_a_negative_dose_is_refused(kb: Knowledge) -> None:
    with pytest.raises(FormError) as err:
        build_request(OrderForm.from_fields(form_fields(dose_value="-9", steroid_mg="0")), kb=kb,
                      catalog=build_catalog(kb), now=NOW)
    assert err.value.problems == ["dose: must be a number above 0", "steroid dose: must be a number above 0"]




async def test_an_example_call_links_to_the_order_form_for_its_patient(make_app: AppFactory) -> None:
    _, client = await make_app()
    page = await client.get("/preview/examples/premed-missing")
    assert '<a href="/preview/order?patient=premed-missing/c2d1-sign">' in page.text
    form = await client.get("/preview/order", params={"patient": "premed-missing/c2d1-sign"})
    assert '<option value="premed-missing/c2d1-sign" selected>' in form.text
    unknown = await client.get("/preview/order", params={"patient": "<x>"})
    assert '<option value="rr-adult-course/c1d1-sign" selected>' in unknown.text


@pytest.mark.parametrize("headers", [
    {"Origin": "https://elsewhere.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:8000"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:8000"},
])
async def test_a_form_posted_from_another_site_is_refused(make_app: AppFactory, headers: dict[str, str]) -> None:
    app, client = await make_app()
    recorded = record_issued(app)
    page = await client.post("/preview/order", data=form_fields(steroid=""), headers=headers)
    assert page.status_code == 403
    assert "cross-site form" in page.text
    assert recorded == []  # nothing reached the hook endpoint (this order gives a premed-missing card)


async def test_a_form_posted_from_the_page_itself_is_sent(make_app: AppFactory) -> None:
    app, client = await make_app()
    recorded = record_issued(app)
    page = await client.post("/preview/order", data=form_fields(steroid=""),
                             headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"})
    assert page.status_code == 200 and 'data-status="200"' in page.text
    assert "premed-missing" in [card.rule_id for card in recorded]


async def test_without_examples_the_page_says_where_it_looked(make_app: AppFactory, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLINA_CDS_EXAMPLES_DIR", str(tmp_path / "none"))
    _, client = await make_app()
    page = await client.get("/preview")
    assert page.status_code == 200
    assert f"No examples found in {tmp_path / 'none'}" in page.text
    pasted = '{"hook": "order-sign", "hookInstance": "h", "context": {"userId": "Practitioner/x", "patientId": "p"}}'
    answer = await client.post("/preview/order", data=form_fields(request_json=pasted))
    assert 'data-status="400"' in answer.text  # the endpoint's own validation
    assert '<p class="problem">context.draftOrders: Field required</p>' in answer.text
