"""Shared fixtures: the app under test, called through ``httpx.ASGITransport`` (no sockets).

``make_app(**settings)`` builds an app with test settings (auth off unless asked, feedback store in
``tmp_path``) and runs its lifespan; ``client`` is an ``httpx.AsyncClient`` on the default app.
Card and knowledge files are the real ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.knowledge import Knowledge, load_knowledge
from service.main import create_app
from service.settings import DEFAULT_KNOWLEDGE_DIR, Settings

pytest_plugins = ["tests.fhir_server", "tests.pg"]

BASE_URL = "http://127.0.0.1:8000"
ORDER_SIGN = "blinatumomab-order-sign"
ORDER_SELECT = "blinatumomab-order-select"
PATIENT_VIEW = "blinatumomab-patient-view"

AppFactory = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture(scope="session")
def kb() -> Knowledge:
    return load_knowledge(DEFAULT_KNOWLEDGE_DIR)


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[AppFactory]:
    """``app, client = await make_app(auth="off", cors_origins="*", ...)`` — any Settings field."""
    async with AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
            values: dict[str, Any] = {
                "auth": "off",
                "database_url": f"sqlite:///{tmp_path}/feedback-{len(stack._exit_callbacks)}.db",
                "public_base_url": BASE_URL,
            }
            values.update(overrides)
            app = create_app(Settings(**values))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
            )
            return app, client

        yield factory


@pytest.fixture
async def client(make_app: AppFactory) -> httpx.AsyncClient:
    _, c = await make_app()
    return c


def outcome_fields(response: httpx.Response) -> list[str]:
    """The ``expression`` fields named by an OperationOutcome body."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [e for issue in body["issue"] for e in issue.get("expression", [])]
