"""The application factory: ``create_app(settings)``.

Knowledge and card files are loaded and validated here, before the server accepts a request, so a
bad file stops start-up with the file and key named. The lifespan opens what must be closed: the one
``httpx.AsyncClient`` of the process, the store (feedback, issued cards, the JWT replay cache), the issued-card
writer, the purge of expired rows and the worker pool for large calls (``service.offload``).

Middleware, outermost first: CORS (so preflights pass without a token and every response — 4xx and
5xx included — carries the CORS headers), then request logging/metrics, then a last-resort handler
that turns any unexpected exception into a 500 OperationOutcome (inside CORS, unlike Starlette's own).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import certifi
import httpx
import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, logs, metrics, openapi
from service.analytics import router as analytics_router
from service.auth import JwtVerifier, TrustedIssuers
from service.cors import LoggedCORSMiddleware
from service.errors import AuthError, CdsServiceError, InvalidRequest
from service.offload import CpuPool, load_evaluator
from service.pipeline import Engine
from service.preview import mount as mount_preview
from service.routes import router
from service.server import freeze_startup_heap
from service.settings import Settings, get_settings
from service.store import CardMap, IssuedCardWriter, StorePurger, open_store
from service.tools.cards_check import check_at_start_up

log = logging.getLogger("blina_cds")


def _outcome(status: int, code: str, message: str) -> Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": message}]}
    return Response(orjson.dumps(body), status_code=status, media_type="application/fhir+json")


def outbound_tls(ca_bundle: Path | None) -> ssl.SSLContext:
    """Trust for every outbound TLS call (FHIR servers, jku): the public CAs (certifi), plus ``ca_bundle``'s.

    A bundle that is missing or holds no usable PEM certificate stops start-up with the file named.
    """
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"BLINA_CDS_CA_BUNDLE {ca_bundle}: not a readable PEM CA bundle ({exc})") from None
    return context


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    loaded = load_evaluator(settings)  # site folders hold only what they change, over the shipped files
    kb, catalog, renderer = loaded.kb, loaded.catalog, loaded.renderer
    check_at_start_up(renderer, kb)  # as `blina-cds cards check`: every card renders for its rule's examples
    issuers = (
        TrustedIssuers.from_file(settings.trusted_issuers_file)
        if settings.auth == "jwt" and settings.trusted_issuers_file is not None
        else None
    )
    tls = outbound_tls(settings.ca_bundle)
    if settings.auth == "off":
        log.warning(
            "AUTHENTICATION IS OFF (BLINA_CDS_AUTH=off): any caller is trusted and any fhirServer is fetched. "
            "Development only — never run this way with patient data."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cpu = CpuPool(settings)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fhir_timeout_s),
            limits=httpx.Limits(max_connections=settings.fhir_max_connections,
                                max_keepalive_connections=settings.fhir_max_idle_connections,
                                keepalive_expiry=settings.fhir_keepalive_s),
            follow_redirects=False,
            trust_env=False,
            verify=tls,
        ) as http:
            store = open_store(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                               connect_timeout_s=settings.database_connect_timeout_s)
            app.state.store = store
            issued = IssuedCardWriter(store, queue_max=settings.issued_cards_queue_max,
                                      batch_max=settings.issued_cards_batch_max,
                                      flush_interval_s=settings.issued_cards_flush_s)
            issued.start()
            purger = StorePurger(store, issued_card_ttl_s=settings.issued_card_ttl_s,
                                 interval_s=settings.store_purge_interval_s, batch=settings.store_purge_batch)
            purger.start()
            app.state.purger = purger
            app.state.analytics_limits = (settings.analytics_reasons_max, settings.analytics_comments_max)
            app.state.verifier = (
                JwtVerifier(
                    issuers,
                    http=http,
                    leeway_s=settings.jwt_leeway_s,
                    jku_cache_ttl_s=settings.jku_cache_ttl_s,
                    max_lifetime_s=settings.jwt_max_lifetime_s,
                    replays=store,  # the jti replay cache every worker and replica shares
                    store_timeout_s=settings.store_timeout_s,
                    store_retry_s=settings.store_retry_s,
                )
                if issuers is not None
                else None
            )
            app.state.engine = Engine(
                kb=kb,
                catalog=catalog,
                renderer=renderer,
                http=http,
                card_map=CardMap(ttl_s=settings.card_map_ttl_s),
                fhir_timeout_s=settings.fhir_timeout_s,
                fhir_max_pages=settings.fhir_max_pages,
                fhir_max_medication_reads=settings.fhir_max_medication_reads,
                issued=issued,
                fhir_max_response_bytes=settings.fhir_max_response_bytes,
                fhir_max_total_bytes=settings.fhir_max_total_bytes,
                cpu=cpu,
            )
            if app.state.start_cpu_workers:
                await cpu.start()  # a served app has its workers ready before the first large call
                freeze_startup_heap()
            try:
                yield
            finally:
                cpu.close()
                await purger.close()
                await issued.close()  # every issued card queued so far is written first
                await store.close()

    app = FastAPI(
        title="blina-cds",
        version=__version__,
        description="CDS Hooks 2.0 service for blinatumomab (Blincyto) safety",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )
    app.state.public_base_url = settings.public_base_url
    app.state.max_body_bytes = settings.max_body_bytes
    app.state.settings = settings
    app.state.start_cpu_workers = False
    app.include_router(router)
    app.include_router(analytics_router)
    mount_preview(app, settings)  # /preview: development, or BLINA_CDS_PREVIEW=on
    openapi.install(app, settings, services=list(catalog.values()))

    @app.exception_handler(CdsServiceError)
    async def _service_error(request: Request, exc: CdsServiceError) -> Response:
        if not isinstance(exc, AuthError):  # the verifier already logged which JWT check failed
            log.info("request refused", extra={"status": exc.status_code, "reason": exc.message})
        return Response(
            orjson.dumps(exc.operation_outcome()), status_code=exc.status_code, media_type="application/fhir+json",
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"])
        return await _service_error(request, InvalidRequest(f"{field}: {first['msg']}", expression=[field]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        response = _outcome(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # a 405 names the allowed methods (Allow, RFC 9110)
        return response

    app.add_middleware(_LastResort)
    app.add_middleware(_AccessLog)
    origins = settings.cors_origin_list
    app.add_middleware(
        LoggedCORSMiddleware,  # CORSMiddleware that logs a refused preflight ("CORS refused: …")
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept"],
        allow_credentials=False,
        max_age=600,
    )
    return app


class _LastResort:
    """Any exception that escaped the handlers → 500 OperationOutcome, still inside CORS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error")
            if started:
                raise
            await _outcome(500, "exception", "Internal error; the event was logged")(scope, receive, send)


class _AccessLog:
    """One log line and the request metrics per HTTP request, by route (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/metrics"):
            await self.app(scope, receive, send)
            return
        route = _route_of(scope["path"])
        status = 500
        begin = time.perf_counter()
        logs.hook_instance.set(None)
        logs.service_id.set(None)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - begin
            metrics.observe_request(route=route, method=scope["method"], status=status, seconds=elapsed)
            log.info("request", extra={"method": metrics.method_label(scope["method"]), "route": route,
                                       "status": status,
                                       "ms": round(elapsed * 1000, 1)})


def _route_of(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[0] != "cds-services":
        return "/" + parts[0] if parts[0] in ("healthz", "livez") else "other"
    if len(parts) == 1:
        return "/cds-services"
    if len(parts) == 2:
        return "/cds-services/{id}"
    if len(parts) == 3 and parts[2] == "feedback":
        return "/cds-services/{id}/feedback"
    return "other"


def app_factory() -> FastAPI:
    """Entry point for uvicorn (``service.main:app_factory``, ``factory=True``): settings from the environment."""
    settings = get_settings()
    logs.configure_logging(settings.log_level, max_field_chars=settings.log_max_field_chars)
    app = create_app(settings)
    app.state.start_cpu_workers = True
    return app
