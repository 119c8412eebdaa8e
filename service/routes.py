"""HTTP surface: discovery, service calls, feedback, health. Thin: validate, then call the pipeline.

``redirect_slashes`` is off in the app: a 307 on a preflighted cross-origin POST fails in browsers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from service import logs, metrics, pipeline
from service.auth import AUTH_OFF_CALLER, Caller
from service.catalog import CdsService
from service.errors import InvalidRequest, PayloadTooLarge, StoreUnavailable, UnknownService
from service.pipeline import Engine
from service.schemas import FeedbackRequest, HookRequest
from service.store import FeedbackRecord, FeedbackStore

router = APIRouter()
log = logging.getLogger("blina_cds.routes")
M = TypeVar("M", bound=BaseModel)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_store(request: Request) -> FeedbackStore:
    store: FeedbackStore = request.app.state.store
    return store


async def get_caller(request: Request) -> Caller:
    """The authenticated caller: the JWT is checked on every discovery, hook and feedback call."""
    verifier = request.app.state.verifier
    if verifier is None:  # BLINA_CDS_AUTH=off (development)
        return AUTH_OFF_CALLER
    audience = request.app.state.public_base_url + request.url.path
    caller: Caller = await verifier.verify(request.headers.get("authorization"), audience=audience)
    return caller


def now_utc() -> dt.datetime:
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


@router.get("/cds-services")
async def discovery(caller: CallerDep, engine: EngineDep) -> JSONResponse:
    return JSONResponse({"services": [s.discovery() for s in engine.catalog.values()]})


@router.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request, caller: CallerDep, engine: EngineDep,
                       now: ClockDep) -> JSONResponse:
    service = _service(engine, service_id)
    logs.service_id.set(service.id)
    raw = await _read_body(request)
    response = await pipeline.call(service, raw, parse=hook_request, caller=caller, engine=engine, now=now)
    return JSONResponse(response.model_dump(mode="json", exclude_none=True))


def hook_request(service: CdsService, raw: bytes) -> HookRequest:
    """The validated hook request from a raw body (runs where the call is evaluated: here, or in a worker)."""
    body = _validated(HookRequest, _parse_json(raw))
    logs.hook_instance.set(body.hookInstance)
    if body.hook != service.hook:
        raise InvalidRequest(
            f"hook '{body.hook}' does not match service '{service.id}' (hook '{service.hook}')", expression=["hook"]
        )
    _validated(service.context_model, body.context, prefix="context")
    return body


@router.post("/cds-services/{service_id}/feedback")
async def feedback(service_id: str, request: Request, caller: CallerDep, engine: EngineDep,
                   store: StoreDep, now: ClockDep) -> JSONResponse:
    service = _service(engine, service_id)
    logs.service_id.set(service.id)
    raw = await _read_body(request)
    if engine.cpu is not None and len(raw) > engine.cpu.inline_max_bytes:
        body = await engine.cpu.submit(feedback_request, raw)  # a large batch is parsed off the event loop
    else:
        body = feedback_request(raw)
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
        log.exception("feedback store failed", extra={"count": len(records)})
        raise StoreUnavailable() from None
    for r in records:
        metrics.FEEDBACK.labels(service=service.id, outcome=r.outcome).inc()
    return JSONResponse({"received": len(records), "stored": stored})


def feedback_request(raw: bytes) -> FeedbackRequest:
    return _validated(FeedbackRequest, _parse_json(raw))


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz(store: StoreDep) -> JSONResponse:
    """Alive and able to store feedback (a replica that cannot is taken out of rotation)."""
    try:
        await store.ping()
    except Exception:
        log.exception("health check: feedback store unreachable")
        return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _service(engine: Engine, service_id: str) -> CdsService:
    try:
        return engine.catalog[service_id]
    except KeyError:
        raise UnknownService(service_id=service_id) from None


async def _read_body(request: Request) -> bytes:
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


def _validated(model: type[M], value: Any, *, prefix: str | None = None) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
            field = ".".join(p for p in (prefix, loc) if p) or (prefix or "body")
            problems.append({"field": field, "message": f"{field}: {err['msg']}"})
        raise InvalidRequest(problems[0]["message"], problems=problems) from None
