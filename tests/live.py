"""A real running service and a misbehaving FHIR server, for the limit tests that must not run in-process.

    with live_service(tmp_path, BLINA_CDS_FHIR_TIMEOUT_S="2") as service:   # `blina-cds serve` on a free port
        service.base, service.rss_mb()
    with StandIn(handler) as fhir:                                           # an HTTP(S) server in a thread
        fhir.base                                                            # http://127.0.0.1:<port>/fhir

Only 127.0.0.1 is used. ``StandIn`` takes a function ``(path, write) -> status`` that writes the body itself,
chunk by chunk, so a test can send a body that never ends or is far larger than anything it holds in memory.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fhir_server import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
Write = Callable[[bytes], None]
Handler = Callable[[str, Write], None]


@dataclass
class LiveService:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def rss_mb(self) -> float:
        """Resident memory of the server process now (from /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


SERVE = [sys.executable, "-m", "service.cli", "serve"]
"""``blina-cds serve``: the live servers and the reliability replicas start with it."""


@functools.cache
def _checked_here() -> str:
    """Check the shipped card files in this process once (as every in-process app does); their start-up mark."""
    from service.offload import load_evaluator
    from service.settings import Settings
    from service.tools.cards_check import check_at_start_up, start_up_mark

    loaded = load_evaluator(Settings(auth="off"))
    check_at_start_up(loaded.renderer, loaded.kb)
    return start_up_mark(loaded.renderer, loaded.kb)


def serve_environment(environment: dict[str, str], *, recheck_cards: bool = False) -> dict[str, str]:
    """``environment`` for a :data:`SERVE` process. Start-up checks every card against its examples (seconds of CPU);
    a server on the shipped files skips the check this process has passed (``PASSED_ENV``, as uvicorn's workers do
    after ``serve`` checked), and a server on any other file (a site overlay, a broken card) is checked in full.
    ``recheck_cards`` keeps the full check (``make chaos`` and ``make soak``: a restart costs what it costs)."""
    from service.tools.cards_check import PASSED_ENV

    base = {k: v for k, v in environment.items() if k != PASSED_ENV}
    return base if recheck_cards else {**base, PASSED_ENV: _checked_here()}


def _lower_open_file_limit(soft: int) -> Callable[[], None]:
    def apply() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


@contextlib.contextmanager
def live_service(tmp_path: Path, *, open_files: int | None = None, port: int | None = None,
                 start_timeout_s: float = 120.0, **env: str) -> Iterator[LiveService]:
    """``blina-cds serve`` (auth off, SQLite in ``tmp_path``) with extra ``BLINA_CDS_*`` settings; stopped after.

    ``open_files`` starts it with that soft open-file limit (as a default systemd or shell limit of 1,024 would);
    ``port`` is for a caller that must know the URL before the start (a free one is chosen otherwise);
    ``start_timeout_s`` bounds the wait for ``/healthz``: start-up loads and checks every card file (13 s on a
    loaded 2-core machine, twice with two workers), so a busy CI machine needs far more than the usual few seconds.
    """
    port = port or free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BLINA_CDS_")}
    environment.update({"BLINA_CDS_AUTH": "off", "BLINA_CDS_PORT": str(port), "BLINA_CDS_LOG_LEVEL": "WARNING",
                        "BLINA_CDS_DATABASE_URL": f"sqlite:///{tmp_path / f'live-{port}.db'}", **env})
    log_path = tmp_path / f"live-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            SERVE, cwd=REPO, env=serve_environment(environment), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_lower_open_file_limit(open_files) if open_files else None,
        )
    service = LiveService(base=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        wait_healthy(process, service.base, timeout_s=start_timeout_s, log_tail=service.log_tail)
        yield service
    finally:
        stop_process(process)


def wait_healthy(process: subprocess.Popen[bytes], base: str, *, timeout_s: float,
                 log_tail: Callable[[], str]) -> None:
    """Until ``GET {base}/healthz`` answers 200; AssertionError (with the log's tail) if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{base}: the service exited with {process.returncode}:\n{log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{base}: the service did not answer /healthz within {timeout_s:g} s:\n{log_tail()}")
        time.sleep(0.1)


class Sampler:
    """Samples a value in a thread until stopped (RSS of the server, latency of /healthz...)."""

    def __init__(self, sample: Any, every_s: float) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                self.values.append(sample())
                self._stop.wait(every_s)

        self._thread = threading.Thread(target=loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def latency(client: httpx.Client, url: str) -> Any:
    def measure() -> float:
        started = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    return measure


@dataclass
class Polled:
    response: httpx.Response
    took_s: float
    latencies: dict[str, list[float]]
    """Path polled → the time each of its GETs took, in seconds."""


def post_while_polling(base: str, path: str, body: bytes, *, poll: list[str], every_s: float = 0.05) -> Polled:
    """POST ``body`` to ``path`` while GETting each of ``poll`` every ``every_s`` (each on its own connection)."""
    with contextlib.ExitStack() as stack:
        samplers = {}
        for polled in poll:
            client = stack.enter_context(httpx.Client(timeout=30))
            samplers[polled] = stack.enter_context(Sampler(latency(client, base + polled), every_s))
        time.sleep(0.3)
        started = time.perf_counter()
        response = httpx.post(base + path, content=body, headers={"Content-Type": "application/json"}, timeout=120)
        took = time.perf_counter() - started
        time.sleep(0.2)
    return Polled(response, took, {p: s.values for p, s in samplers.items()})


class StandIn:
    """A FHIR server stand-in on 127.0.0.1 that answers every GET with ``handler`` (HTTPS given ``tls``)."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None,
                 content_type: str = "application/fhir+json") -> None:
        self.requests: list[str] = []
        self.disconnected = threading.Event()
        outer = self

        class Handle(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def write(data: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

                try:
                    handler(self.path, write)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    outer.disconnected.set()
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.base = f"{scheme}://127.0.0.1:{self._server.server_address[1]}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def raise_own_open_file_limit(need: int) -> None:
    """The test process itself needs ``need`` descriptors (idle-connection tests); skip where the host forbids it."""
    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"open-file hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def idle_connections(port: int, count: int, *, partial_header_every: int = 2) -> list[socket.socket]:
    """``count`` TCP connections that send nothing, or (every ``partial_header_every``-th) half a request head."""
    sockets = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if partial_header_every and i % partial_header_every == 0:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(s)
    return sockets
