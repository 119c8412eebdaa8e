"""``/preview``: the example patients' cards as an EHR shows them, and an order-entry form for testers.

Mounted only when ``Settings.preview_enabled`` (development by default, ``BLINA_CDS_PREVIEW=on`` in
production), so a deployment without it answers 404. Two ways cards reach the page:

* the examples (``GET /preview``): every call of ``fhir_examples/`` runs through :func:`service.pipeline.run`
  with a card renderer loaded from the card files **on this page load**, so an analyst edits a card file
  and refreshes. The hook endpoint keeps its own renderer, loaded once at start-up: nothing here touches
  the hot path.
* the order form (``POST /preview/order``): the composed request is sent to the real
  ``POST /cds-services/{id}`` through the app's full middleware stack (in-process, no socket), so
  authentication and validation apply exactly as for an EHR, and feedback clicks go from the browser to the
  real ``POST /cds-services/{id}/feedback``.

Pages are Jinja2 templates with autoescape on; the one script is a static file (the CSP allows no other).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from service import examples
from service.auth import Caller
from service.errors import CdsServiceError, KnowledgeError, PayloadTooLarge
from service.pipeline import Engine, run
from service.preview.cards import CardView, card_view
from service.preview.orders import (
    BAG_HOURS,
    DOSE_UNITS,
    ROUTES,
    FormError,
    OrderForm,
    build_request,
    patient_choices,
    steroid_agents,
)
from service.render import CardRenderer
from service.rules import RULE_IDS
from service.schemas import HookRequest
from service.settings import DEFAULT_CARDS_DIR, Settings
from service.store import CardMap

log = logging.getLogger("blina_cds.preview")

_HERE = Path(__file__).resolve().parent
_STATIC = {"preview.js": "text/javascript", "preview.css": "text/css"}
_PAGES = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                     trim_blocks=True, lstrip_blocks=True)
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the browser send the form with "Origin: null"
    "Cache-Control": "no-store",
}
_NO_FHIR_SERVER = Caller(iss=None, fhir_servers=())
"""The examples carry their whole prefetch: the preview never lets them fetch from a FHIR server."""


@dataclass(frozen=True)
class CallView:
    id: str
    title: str
    hook: str
    service: str
    expected: tuple[str, ...]
    quiet: bool
    cards: tuple[CardView, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ExampleView:
    name: str
    title: str
    description: str
    calls: tuple[CallView, ...]


def mount(app: FastAPI, settings: Settings) -> None:
    """Add the /preview routes when the settings allow them (else the paths stay 404)."""
    if settings.preview_enabled:
        app.include_router(build_router(settings))


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/preview", include_in_schema=False)

    @router.get("")
    async def overview(request: Request) -> Response:
        return await _examples_page(request, settings, examples.names())

    @router.get("/examples/{name}")
    async def one_example(name: str, request: Request) -> Response:
        if name not in examples.names():
            return _page("error.html", status=404, message=f"No example named '{name}'.")
        return await _examples_page(request, settings, [name])

    @router.get("/order")
    async def order_form(request: Request, patient: str | None = None) -> Response:
        engine: Engine = request.app.state.engine
        form = OrderForm.defaults(kb=engine.kb, now=_now())
        if patient in {value for _, calls in patient_choices() for value, _ in calls}:
            form.patient = patient
        return _order_page(form, engine=engine)

    @router.post("/order")
    async def send_order(request: Request) -> Response:
        engine: Engine = request.app.state.engine
        if not _same_origin(request):
            return _page("error.html", status=403, message="Orders are sent from this page only (cross-site form).")
        try:
            fields = await _form_fields(request, settings.preview_max_form_bytes)
        except PayloadTooLarge as exc:
            return _page("error.html", status=413, message=exc.message)
        form = OrderForm.from_fields(fields)
        try:
            service, hook_request = build_request(form, kb=engine.kb, catalog=engine.catalog, now=_now())
        except FormError as exc:
            form.problems = exc.problems
            return _order_page(form, engine=engine, status=400)
        public = urlsplit(settings.public_base_url)  # the app routes on the path alone: no base path prefix
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=request.app),
                                     base_url=f"{public.scheme}://{public.netloc}") as client:
            answer = await client.post(f"/cds-services/{service.id}", content=json.dumps(hook_request),
                                       headers={"Content-Type": "application/json"})
        body = _json_or_text(answer)
        cards = body.get("cards") if isinstance(body, dict) and answer.status_code == 200 else None
        result = {
            "service": service.id,
            "status": answer.status_code,
            "cards": [card_view(c, cards_dir=settings.cards_dir, shipped_cards_dir=DEFAULT_CARDS_DIR)
                      for c in cards or () if isinstance(c, dict)],
            "problem": None if cards is not None else _diagnostics(body),
            "request_json": json.dumps(hook_request, indent=2, ensure_ascii=False),
            "response_json": json.dumps(body, indent=2, ensure_ascii=False) if not isinstance(body, str) else body,
        }
        return _order_page(form, engine=engine, result=result)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            return _page("error.html", status=404, message="No such file.")
        return Response((_HERE / "static" / name).read_bytes(), media_type=_STATIC[name], headers=_HEADERS)

    return router


async def _examples_page(request: Request, settings: Settings, names: list[str]) -> Response:
    engine: Engine = request.app.state.engine
    now = _now()
    renderer: CardRenderer | None = None
    problem: str | None = None
    try:
        renderer = _fresh_renderer(settings, knowledge_hash=engine.renderer.knowledge_hash)
    except KnowledgeError as exc:  # a broken card file: say which, show the examples without cards
        problem = str(exc)
    preview_engine = _preview_engine(engine, renderer) if renderer is not None else None
    views = []
    for name in names:
        manifest = examples.load_manifest(name)
        calls = []
        for call in manifest["calls"]:
            view = CallView(id=call["id"], title=call.get("title", ""), hook=call["hook"], service=call["service"],
                            expected=tuple(call.get("expect_rule_ids", ())), quiet=bool(call.get("quiet")))
            if preview_engine is not None:
                view = await _run_call(view, name, settings=settings, engine=preview_engine, now=now)
            calls.append(view)
        views.append(ExampleView(name=name, title=manifest.get("title", ""),
                                 description=manifest.get("description", ""), calls=tuple(calls)))
    return _page("examples.html", examples=views, card_problem=problem, cards_dir=str(settings.cards_dir),
                 examples_dir=str(examples.examples_dir()), single=len(names) == 1)


async def _run_call(view: CallView, name: str, *, settings: Settings, engine: Engine, now: dt.datetime) -> CallView:
    service = engine.catalog.get(view.service)
    if service is None:
        return dataclasses.replace(view, error=f"unknown service '{view.service}'")
    try:
        request = HookRequest.model_validate(examples.request_for(name, view.id, now=now))
        response = await run(service, request, caller=_NO_FHIR_SERVER, engine=engine, now=now)
    except CdsServiceError as exc:
        return dataclasses.replace(view, error=f"HTTP {exc.status_code}: {exc.message}")
    except (KnowledgeError, TemplateError) as exc:  # a card that fails to render (a placeholder no rule gives)
        return dataclasses.replace(view, error=f"card file: {exc}")
    except Exception:
        log.exception("preview: example call failed", extra={"example": name, "call": view.id})
        return dataclasses.replace(view, error="internal error (the traceback is in the service log)")
    cards = [card.model_dump(mode="json", exclude_none=True) for card in response.cards]
    return dataclasses.replace(view, cards=tuple(
        card_view(c, cards_dir=settings.cards_dir, shipped_cards_dir=DEFAULT_CARDS_DIR) for c in cards
    ))


def _preview_engine(engine: Engine, renderer: CardRenderer) -> Engine:
    """The service's engine with the freshly loaded cards, remembering nothing of what it renders.

    The example calls are not cards shown to a clinician: their uuids stay out of the feedback map, and any
    record the engine keeps of cards issued (for override analytics) is switched off for them.
    """
    return dataclasses.replace(engine, renderer=renderer, card_map=CardMap(ttl_s=60), issued=None)


def _fresh_renderer(settings: Settings, *, knowledge_hash: str) -> CardRenderer:
    """The card files as they are on disk now (the start-up renderer is never reloaded): a site folder over the
    shipped cards, as at start-up."""
    return CardRenderer.load(settings.cards_dir, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR,
                             knowledge_hash=knowledge_hash)


def _order_page(form: OrderForm, *, engine: Engine, status: int = 200,
                result: Mapping[str, Any] | None = None) -> Response:
    regimens = [(rid, spec.label) for rid, spec in engine.kb.regimens.regimens.items()]
    return _page("order.html", status=status, form=form, result=result, patients=patient_choices(),
                 dose_units=DOSE_UNITS, bag_hours=BAG_HOURS, regimens=regimens, agents=steroid_agents(engine.kb),
                 routes=ROUTES)


def _page(template: str, *, status: int = 200, **values: Any) -> Response:
    html = _PAGES.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


async def _form_fields(request: Request, limit: int) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body of at most ``limit`` bytes (the last value of a name wins)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(limit=limit)
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def _same_origin(request: Request) -> bool:
    """A form posted from another site (a page the tester has open elsewhere) must not reach the hook endpoint.

    Browsers say where a form came from (``Sec-Fetch-Site``, ``Origin``); a client that sends neither (curl, a
    test) is not a browser being misused.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _diagnostics(body: Any) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics", "")) for i in body.get("issue", ()) if isinstance(i, dict))
    return "the service did not answer with cards"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
