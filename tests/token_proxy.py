"""A token-checking reverse proxy in front of the FHIR server, to prove bearer forwarding on the wire.

The service is told ``fhirServer = proxy.base``. Every request must carry
``Authorization: Bearer <expected_token>`` (401 OperationOutcome otherwise, as a secured EHR server
would answer); the proxy records what it saw (method, path, query, the Authorization header) and
forwards the rest to the real server without that header. Response bodies and ``Location`` headers
have the upstream base rewritten to the proxy's own base, so ``next`` links stay on the proxy origin
(exactly as if the proxy were the EHR's FHIR server).

``expected_token=None`` makes it an open server (like the Sandbox's default): nothing is refused,
everything is still recorded — used to count the service's fallback fetches.

It runs uvicorn in a background thread with its own event loop, on a socket bound before start-up
(no port race). The proxy never logs a header value.

    with TokenProxy("http://127.0.0.1:8091/fhir", expected_token="tok-123") as proxy:
        ...  # fhirServer = proxy.base
        assert {r.authorization for r in proxy.requests()} == {"Bearer tok-123"}
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "authorization",
    "accept-encoding",
})


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    """Path relative to the FHIR base, e.g. ``Observation`` or ``Patient/p1``."""
    query: str
    """The raw query string as received."""
    authorization: str | None
    status: int
    """What the proxy answered."""

    @property
    def resource_type(self) -> str:
        return self.path.split("/", 1)[0]

    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)


class TokenProxy:
    """See the module docstring. Thread-safe enough for tests: one lock around the request log."""

    def __init__(self, upstream_base: str, *, expected_token: str | None = None) -> None:
        self.upstream_base = upstream_base.rstrip("/")
        up = urlsplit(self.upstream_base)
        self._upstream_root = f"{up.scheme}://{up.netloc}"
        self._base_path = up.path  # e.g. "/fhir"
        self.expected_token = expected_token
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}{self._base_path}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ test API

    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def reset(self, *, expected_token: str | None = None) -> None:
        """Forget the log and set the token the next requests must carry (``None``: open server)."""
        with self._lock:
            self._seen.clear()
            self.expected_token = expected_token

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, timeout_s: float = 10.0) -> TokenProxy:
        config = uvicorn.Config(
            self._app(), log_config=None, access_log=False, lifespan="on", http="h11", ws="none",
            loop="asyncio",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="token-proxy", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"token proxy did not start within {timeout_s:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> TokenProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the ASGI app

    def _app(self) -> Starlette:
        state: dict[str, httpx.AsyncClient] = {}

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with httpx.AsyncClient(timeout=10.0, trust_env=False, follow_redirects=False) as client:
                state["client"] = client
                yield

        async def forward(request: Request) -> Response:
            path = request.url.path
            relative = path[len(self._base_path):].lstrip("/") if path.startswith(self._base_path) else path
            query = request.url.query
            authorization = request.headers.get("authorization")
            expected = self.expected_token
            if expected is not None and authorization != f"Bearer {expected}":
                response = _outcome(401, "login", "Bearer token missing or not valid")
                response.headers["WWW-Authenticate"] = 'Bearer realm="fhir"'
            else:
                response = await self._upstream(state["client"], request, path, query)
            with self._lock:
                self._seen.append(SeenRequest(request.method, relative, query, authorization,
                                              response.status_code))
            return response

        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)

    async def _upstream(self, client: httpx.AsyncClient, request: Request, path: str, query: str) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = f"{self._upstream_root}{path}" + (f"?{query}" if query else "")
        try:
            upstream = await client.request(request.method, url, headers=headers, content=await request.body())
        except httpx.HTTPError as exc:
            return _outcome(502, "transient", f"upstream FHIR server failed ({type(exc).__name__})")
        body = upstream.content.replace(self.upstream_base.encode(), self.base.encode())
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        for name in ("location", "content-location"):
            if name in out_headers:
                out_headers[name] = out_headers[name].replace(self.upstream_base, self.base)
        return Response(body, status_code=upstream.status_code, headers=out_headers)


def _outcome(status: int, code: str, message: str) -> Response:
    body: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    return Response(orjson.dumps(body), status_code=status, media_type="application/fhir+json")
