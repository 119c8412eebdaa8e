"""How ``blina-cds serve`` sets up each connection (service/server.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.server import ServerState

from service.server import GuardedH11Protocol
from service.settings import get_settings


@pytest.fixture
def dev_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BLINA_CDS_AUTH", "off")  # the protocol reads its head timeout from the settings
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def no_content(scope: dict[str, object], receive: object, send: object) -> None:
    raise AssertionError("no request is sent")


async def test_connections_get_tcp_nodelay_on_a_socket_bound_as_uvicorn_binds_it_for_several_workers(
        dev_settings: None) -> None:
    # uvicorn binds the socket itself for --workers > 1 without naming IPPROTO_TCP, and asyncio then leaves Nagle
    # on: each answer (head and body are two writes) would wait out the client's delayed ACK.
    config = uvicorn.Config(no_content, http=GuardedH11Protocol, log_config=None)
    config.load()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn.Config.bind_socket does
    listener.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    made: list[GuardedH11Protocol] = []

    def factory() -> GuardedH11Protocol:
        protocol = GuardedH11Protocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        made.append(protocol)
        return protocol

    server = await loop.create_server(factory, sock=listener)
    _, writer = await asyncio.open_connection(*listener.getsockname())
    try:
        while not made or made[0].transport is None:
            await asyncio.sleep(0.01)
        accepted = made[0].transport.get_extra_info("socket")
        assert accepted.proto != socket.IPPROTO_TCP  # the case asyncio skips
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        writer.close()
        made[0].transport.close()
        server.close()
        await server.wait_closed()
