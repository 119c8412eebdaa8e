"""HTTP surface: discovery, service calls, feedback, health. Thin: validate, then call the pipeline.

``redirect_slashes`` is off in the app: a 307 on a preflighted cross-origin POST fails in browsers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import time
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from service import logs, metrics, openapi, pipeline
from service.auth import AUTH_OFF_CALLER, Caller
from service.catalog import CdsService
from service.errors import (
    InvalidRequest,
    PayloadTooLarge,
    StoreUnavailable,
    UnknownService,
    UnsupportedMediaType,
    clip,
)
from service.fhir import prefetch
from service.pipeline import Engine
from service.schemas import FeedbackRequest, HookRequest
from service.settings import Settings
from service.store import FeedbackRecord, FeedbackStore

router = APIRouter()
log = logging.getLogger("blina_cds.routes")
M = TypeVar("M", bound=BaseModel)


# Dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
# dependency per request for what is an attribute read.
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_store(request: Request) -> FeedbackStore:
    store: FeedbackStore = request.app.state.store
    return store


async def get_caller(request: Request) -> Caller:
    """The authenticated caller: the JWT is checked on every discovery, hook and feedback call."""
    if len(request.headers.getlist("authorization")) > 1:  # which one would count? refuse rather than guess
        raise InvalidRequest("More than one Authorization header", expression=["header.Authorization"])
    verifier = request.app.state.verifier
    if verifier is None:  # BLINA_CDS_AUTH=off (development)
        return AUTH_OFF_CALLER
    audience = request.app.state.public_base_url + request.url.path
    caller: Caller = await verifier.verify(request.headers.get("authorization"), audience=audience)
    return caller


async def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[FeedbackStore, Depends(get_store)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ClockDep = Annotated[dt.datetime, Depends(now_utc)]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # an integer past 64 bits echoed from the request: the standard library copes
            return json.dumps(content, separators=(",", ":")).encode()


@router.get("/cds-services", openapi_extra=openapi.DISCOVERY)
async def discovery(caller: CallerDep, engine: EngineDep) -> JSONResponse:
    return JSONResponse({"services": [s.discovery() for s in engine.catalog.values()]})


@router.post("/cds-services/{service_id}", openapi_extra=openapi.HOOK_CALL)
async def call_service(service_id: str, request: Request, caller: CallerDep, engine: EngineDep,
                       now: ClockDep) -> JSONResponse:
    service = _service(engine, service_id)
    logs.service_id.set(service.id)
    raw = await _read_body(request)
    parse = functools.partial(hook_request, max_hook_instance_chars=request.app.state.settings.max_hook_instance_chars)
    response = await pipeline.call(service, raw, parse=parse, caller=caller, engine=engine, now=now)
    return JSONResponse(response.model_dump(mode="json", exclude_none=True))


def hook_request(service: CdsService, raw: bytes, *, max_hook_instance_chars: int) -> HookRequest:
    """The validated hook request from a raw body (runs where the call is evaluated: here, or in a worker)."""
    body = _validated(HookRequest, _parse_json(raw))
    if len(body.hookInstance) > max_hook_instance_chars:
        raise InvalidRequest(f"hookInstance is longer than {max_hook_instance_chars} characters",
                             expression=["hookInstance"])
    logs.hook_instance.set(body.hookInstance)
    if body.hook != service.hook:
        raise InvalidRequest(
            f"hook '{clip(body.hook)}' does not match service '{service.id}' (hook '{service.hook}')",
            expression=["hook"],
        )
    _validated(service.context_model, body.context, prefix="context")
    prefetch.check_request(service.prefetch, body)  # even when the pipeline answers without reading the chart
    return body


@router.post("/cds-services/{service_id}/feedback", openapi_extra=openapi.FEEDBACK)
async def feedback(service_id: str, request: Request, caller: CallerDep, engine: EngineDep,
                   store: StoreDep, now: ClockDep) -> JSONResponse:
    service = _service(engine, service_id)
    logs.service_id.set(service.id)
    raw = await _read_body(request)
    settings: Settings = request.app.state.settings
    parse = functools.partial(feedback_request, max_items=settings.max_feedback_items,
                              max_text_chars=settings.max_feedback_text_chars)
    if engine.cpu is not None and len(raw) > engine.cpu.inline_max_bytes:
        body = await engine.cpu.submit(parse, raw)  # a large batch is parsed off the event loop
    else:
        body = parse(raw)
    mono = time.monotonic()
    records = []
    for item in body.feedback:
        reason = item.overrideReason.reason if item.overrideReason else None
        records.append(
            FeedbackRecord(
                service_id=service.id,
                card_uuid=item.card,
                rule_id=engine.card_map.rule_for(item.card, mono),
                outcome=item.outcome,
                accepted_suggestions=tuple(s.id for s in item.acceptedSuggestions or ()),
                override_reason_system=reason.system if reason else None,
                override_reason_code=reason.code if reason else None,
                override_reason_display=reason.display if reason else None,
                user_comment=item.overrideReason.userComment if item.overrideReason else None,
                outcome_timestamp=item.outcomeTimestamp,
            )
        )
    try:
        stored = await store.save(records, received_at=now)  # committed before we answer
    except Exception:
        metrics.STORE_FAILURES.labels(operation="feedback").inc()
        log.exception("feedback store failed", extra={"count": len(records)})
        raise StoreUnavailable(retry_after_s=settings.store_retry_s) from None
    for r in records:
        metrics.FEEDBACK.labels(service=service.id, outcome=r.outcome).inc()
    return JSONResponse({"received": len(records), "stored": stored})


def feedback_request(raw: bytes, *, max_items: int, max_text_chars: int) -> FeedbackRequest:
    return _validated(FeedbackRequest, _bounded_feedback(_parse_json(raw), max_items=max_items,
                                                         max_text_chars=max_text_chars))


@router.get("/metrics", openapi_extra=openapi.METRICS)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/livez", openapi_extra=openapi.LIVE)
async def livez() -> JSONResponse:
    """This process answers HTTP; the store is not asked, so a database outage never restarts a replica."""
    return JSONResponse({"status": "ok"})


@router.get("/healthz", openapi_extra=openapi.HEALTH)
async def healthz(store: StoreDep, request: Request) -> JSONResponse:
    """Alive and answering hook calls: 200 even when the store is unreachable (``"status": "degraded"``).

    Hook calls keep answering without the database, so a database outage must not take every replica out of
    rotation (or make Kubernetes restart them); feedback meanwhile answers 503 with ``Retry-After``.
    """
    settings: Settings = request.app.state.settings
    try:
        await asyncio.wait_for(store.ping(), settings.store_timeout_s)
    except Exception:
        log.warning("health check: store unreachable; hook calls answer, feedback is refused with 503")
        return JSONResponse({"status": "degraded", "store": "unreachable"})
    return JSONResponse({"status": "ok", "store": "ok"})


def _service(engine: Engine, service_id: str) -> CdsService:
    try:
        return engine.catalog[service_id]
    except KeyError:
        raise UnknownService(service_id=service_id) from None


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/fhir+json``, with any parameters (``; charset=utf-8``)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in ("application/json", "application/fhir+json")


def _bounded_feedback(value: Any, *, max_items: int, max_text_chars: int) -> Any:
    """Refuse a feedback batch past its limits before any item is parsed (parsing 100,000 items takes seconds).

    Too many items → 413; a text field (anywhere in an item) or a list inside an item past its limit → 400.
    """
    items = value.get("feedback") if isinstance(value, dict) else None
    if not isinstance(items, list):
        return value  # the model names the problem
    if len(items) > max_items:
        raise PayloadTooLarge(f"feedback holds more than {max_items} items",
                              limit=max_items, expression=["feedback"])
    for i, item in enumerate(items):
        _check_sizes(item, f"feedback[{i}]", max_items=max_items, max_text_chars=max_text_chars)
    return value


def _check_sizes(item: Any, where: str, *, max_items: int, max_text_chars: int) -> None:
    """Every string and list inside ``item``, however deep (an explicit stack: no recursion limit to hit)."""
    stack: list[tuple[Any, str]] = [(item, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) > max_text_chars:
                raise InvalidRequest(f"{path} is longer than {max_text_chars} characters",
                                     expression=[path])
        elif isinstance(value, dict):
            stack.extend((inner, f"{path}.{clip(str(key))}") for key, inner in value.items())
        elif isinstance(value, list):
            if len(value) > max_items:
                raise InvalidRequest(f"{path} holds more than {max_items} items",
                                     expression=[path])
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(value))


async def _read_body(request: Request) -> bytes:
    if not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType()
    limit: int = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON", expression=["body"]) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object", expression=["body"])
    return value


MAX_PROBLEMS = 20
"""Invalid fields named in one 400 (a list of 200,000 invalid entries must not answer with 200,000 issues)."""


def _validated(model: type[M], value: Any, *, prefix: str | None = None) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        problems = []
        for err in errors[:MAX_PROBLEMS]:
            loc = ".".join(clip(str(p)) for p in err["loc"] if p != "__root__")
            field = ".".join(p for p in (prefix, loc) if p) or (prefix or "body")
            problems.append({"field": field, "message": f"{field}: {err['msg']}"})
        if len(errors) > MAX_PROBLEMS:
            where = prefix or "body"
            problems.append({"field": where, "message": f"{where}: {len(errors) - MAX_PROBLEMS} more problems"})
        raise InvalidRequest(problems[0]["message"], problems=problems) from None
