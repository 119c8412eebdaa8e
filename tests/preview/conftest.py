"""The real service (``blina-cds serve``), for the /preview browser tests.

``live_service`` starts ``blina-cds serve`` (:func:`tests.live.live_service`) on a free 127.0.0.1 port, in
development mode (auth off, so /preview is on), with its feedback store in a temporary SQLite file and
``BLINA_CDS_CARDS_DIR`` pointing at an empty temporary site folder over the shipped ``cards/``, where a test
writes the card files it rewords. ``browser`` is Debian's Chromium driven by Playwright (never a browser
Playwright downloads). Without Chromium the browser tests skip on a developer machine and fail in CI
(``CI=true``), where ``make test`` must have installed it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import live
from tests.fhir_server import free_port

CHROMIUM = Path(os.environ.get("BLINA_CDS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("BLINA_CDS_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@dataclass(frozen=True)
class LiveService:
    base_url: str
    cards_dir: Path
    database: Path
    log: Path


@pytest.fixture(scope="module")
def _live_service_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp_path = tmp_path_factory.mktemp("preview-live")
    cards_dir = tmp_path / "cards"  # a site overlay: it holds only the card files the site rewords
    cards_dir.mkdir()
    database = tmp_path / "feedback.db"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with live.live_service(tmp_path, port=port, BLINA_CDS_DATABASE_URL=f"sqlite:///{database}",
                           BLINA_CDS_CARDS_DIR=str(cards_dir), BLINA_CDS_PUBLIC_BASE_URL=base_url) as service:
        yield LiveService(base_url=service.base, cards_dir=cards_dir, database=database, log=service.log_path)


@pytest.fixture
def live_service(_live_service_for_module: LiveService) -> LiveService:
    """One server per module (each start costs seconds), handed to each test as a fresh one would be: an empty site
    card folder (/preview rereads card files on every page load; the hook endpoint keeps the cards it started
    with, which no test changes) and no stored feedback."""
    service = _live_service_for_module
    for written in service.cards_dir.iterdir():
        written.unlink()
    conn = sqlite3.connect(service.database)
    try:
        with conn:
            conn.execute("DELETE FROM feedback")
    finally:
        conn.close()
    return service


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM}: `make chromium` installs Debian's package"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (in CI the browser tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    """Module-scoped: Playwright's sync API runs an event loop of its own while open, which the async tests
    of other modules (pytest-asyncio) cannot share, so it is closed when the browser tests' module ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page; every request it makes off 127.0.0.1 is refused, so a test never reaches the network."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1:")
                  else route.abort())
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save the page as ``tests/artifacts/<name>.png`` (git ignores the folder) and return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
