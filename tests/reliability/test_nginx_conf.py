"""``deploy/nginx/blina-cds.conf``: its limits agree with the service's settings, and nginx retries exactly what
README "Deploying" says — run by Debian's nginx in front of two stand-in replicas (no service, about a second).

A stand-in replica reads each request whole, then either answers or dies mid-call (the connection reset with no
answer, as a replica killed with SIGKILL does). What each one received shows whether nginx sent a call twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.fhir_server import free_port
from tests.reliability.cluster import NGINX_SITE, nginx_executable, render_site, running_nginx

JSON = {"Content-Type": "application/json"}
HOOK = "/cds-services/blinatumomab-order-sign"
FEEDBACK = "/cds-services/blinatumomab-order-sign/feedback"


def _nginx() -> str:
    binary = nginx_executable()
    if binary is None:
        message = "nginx is not installed (make nginx installs Debian's)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


class Replica:
    """A stand-in replica on 127.0.0.1 speaking HTTP/1.1 with keep-alive; ``dies`` resets after reading a call."""

    def __init__(self, name: str, *, dies: bool) -> None:
        self.name = name
        self.dies = dies
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Replica:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1)) if (  # type: ignore[union-attr]
                    re.search(rb"(?im)^content-length:", head)) else 0
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests.append(head.split(b"\r\n", 1)[0].decode())
                if self.dies:  # reset, no answer: what nginx sees when the replica is killed mid-call
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                body = b'{"served_by": "%s"}' % self.name.encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))


@contextlib.contextmanager
def nginx_before(tmp_path: Path, a: str, b: str) -> Iterator[str]:
    port = free_port()
    with running_nginx(_nginx(), tmp_path / "nginx", port, [a, b], ready_path=None):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("path", [HOOK, FEEDBACK], ids=["hook call", "feedback"])
def test_a_post_cut_off_mid_call_is_not_sent_again(tmp_path: Path, path: str) -> None:
    """Not a hook call either: the resent call would carry the same JWT, which the first replica has claimed."""
    with Replica("a", dies=True) as a, Replica("b", dies=False) as b, nginx_before(tmp_path, a.address,
                                                                                 b.address) as base:
        responses = [httpx.post(base + path, content=b"{}", headers=JSON, timeout=10) for _ in range(2)]
    assert sorted(r.status_code for r in responses) == [200, 502]  # the EHR sees the 502 and decides
    assert a.requests == [f"POST {path} HTTP/1.1"]
    assert b.requests == [f"POST {path} HTTP/1.1"]  # only the call nginx sent b in the first place


@pytest.mark.parametrize("path", [HOOK, FEEDBACK, "/cds-services"], ids=["hook call", "feedback", "discovery"])
def test_a_call_that_reached_no_replica_goes_to_the_other(tmp_path: Path, path: str) -> None:
    refused = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused, the request was never sent
    with Replica("b", dies=False) as b, nginx_before(tmp_path, refused, b.address) as base:
        responses = [httpx.request("GET" if path == "/cds-services" else "POST", base + path,
                                   content=None if path == "/cds-services" else b"{}", headers=JSON, timeout=10)
                     for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert len(b.requests) == 4


def test_a_get_cut_off_mid_call_is_answered_by_the_other_replica(tmp_path: Path) -> None:
    with Replica("a", dies=True) as a, Replica("b", dies=False) as b, nginx_before(tmp_path, a.address,
                                                                                 b.address) as base:
        responses = [httpx.get(base + "/cds-services", timeout=10) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert a.requests == ["GET /cds-services HTTP/1.1"]
    assert len(b.requests) == 4


def test_metrics_are_not_served_through_the_balancer(tmp_path: Path) -> None:
    with Replica("a", dies=False) as a, Replica("b", dies=False) as b, nginx_before(tmp_path, a.address,
                                                                                  b.address) as base:
        assert httpx.get(base + "/metrics", timeout=10).status_code == 404
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200
    assert not any("/metrics" in r for r in a.requests + b.requests)


def _directive(name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_SITE.read_text(encoding="utf-8"), re.M)
    assert values, f"{name} missing from {NGINX_SITE}"
    return str(values[0])


def _seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def test_limits_match_the_service_settings() -> None:
    defaults = Settings(auth="off")
    assert _directive("client_max_body_size") == f"{defaults.max_body_bytes // (1024 * 1024)}m"
    assert defaults.max_body_bytes % (1024 * 1024) == 0
    assert _seconds(_directive("client_header_timeout")) == defaults.header_timeout_s
    count, size = _directive("large_client_header_buffers").split()
    assert int(size.rstrip("k")) * 1024 == defaults.max_header_bytes
    assert _seconds(_directive("keepalive_timeout")) < defaults.keepalive_timeout_s
    assert _seconds(_directive("proxy_read_timeout")) > defaults.fhir_timeout_s + defaults.cpu_deadline_s


def test_every_placeholder_is_filled() -> None:
    filled = render_site(listen="127.0.0.1:8080", replicas=["127.0.0.1:8001", "127.0.0.1:8002"])
    assert "@@" not in filled
    assert "server 127.0.0.1:8001 max_fails=1" in filled and "listen 127.0.0.1:8080;" in filled
