"""How the HTTP server is run: uvicorn's connection limits, a request-head timeout, the open-file limit.

    blina-cds serve      # uvicorn.run(..., **serve_options(settings)) after raise_open_file_limit()

Idle connections are what exhausts a server first: each holds a file descriptor, and uvicorn (h11) never
times out a connection that has not sent a request yet. ``GuardedH11Protocol`` closes a connection whose
request head is not complete ``BLINA_CDS_HEADER_TIMEOUT_S`` after it opened (or after its previous
response); ``limit_concurrency`` answers 503 past ``BLINA_CDS_LIMIT_CONCURRENCY`` connections; and the soft
open-file limit is raised to the hard one so the process can hold that many.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings, get_settings

log = logging.getLogger("blina_cds.server")


def raise_open_file_limit() -> tuple[int, int]:
    """Soft ``RLIMIT_NOFILE`` → the hard limit (often 1,024 → 1,048,576); returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit", extra={"error": type(exc).__name__})
    return soft, hard


def freeze_startup_heap() -> None:
    """Move everything start-up made (modules, knowledge, card templates, the app) out of the collector's reach.

    They live as long as the process, yet each full collection would walk them again; after ``gc.freeze()`` a
    collection walks only what hook calls made. Called once the served app has started (``service.main``); the
    CPU workers do the same after loading (``service.offload``).
    """
    gc.collect()
    gc.freeze()


def set_no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on the connection. asyncio sets it only on sockets created with ``IPPROTO_TCP`` named; uvicorn's
    socket for ``--workers`` > 1 is not, and there every answer (head and body are two writes) waited out the
    client's delayed ACK: about 40 ms per request."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a timeout on receiving a complete request head, and TCP_NODELAY always."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_no_delay(transport)
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_head_timer()  # a request head arrived: the app (and its own limits) take over
        elif self._head_timer is None:
            self._arm_head_timer()  # bytes of a next request on a kept-alive connection: they must complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm_head_timer()  # uvicorn's keep-alive timer covers the idle time; data re-arms ours

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(get_settings().header_timeout_s, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The connection settings ``uvicorn.run`` gets (each from a ``BLINA_CDS_*`` setting)."""
    return {
        "http": "service.server:GuardedH11Protocol",
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.keepalive_timeout_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }


def serve_options(settings: Settings) -> dict[str, Any]:
    """Everything ``blina-cds serve`` passes to ``uvicorn.run`` besides the app, address and worker count (the
    benchmark's floor app, tests/bench/floor.py, runs on exactly these)."""
    return {
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "server_header": False,
        **uvicorn_options(settings),
    }
