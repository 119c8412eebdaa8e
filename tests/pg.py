"""PostgreSQL for tests: a parameter that skips without a server, and a clean schema per test.

Also the ``store_url`` / ``store`` fixtures (a pytest plugin, see ``tests/conftest.py``): every test that takes
them runs once on SQLite and once on PostgreSQL.

The server comes from ``pg_virtualenv`` (Debian postgresql-common), which creates a throw-away
cluster and exports PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE to the command it runs::

    pg_virtualenv sh -c 'BLINA_CDS_TEST_POSTGRES_URL=postgresql:// .venv/bin/python -m pytest -m postgres'

``postgresql://`` has no host, so libpq takes everything from those variables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _pytest.mark import ParameterSet
from sqlalchemy import create_engine, text

from service.store import SqlFeedbackStore, engine_url, open_store

ENV_VAR = "BLINA_CDS_TEST_POSTGRES_URL"
SKIP_REASON = f"needs {ENV_VAR} (run under pg_virtualenv; see tests/pg.py)"


def postgres_url() -> str | None:
    """The test server's URL, or None when PostgreSQL tests should be skipped."""
    return os.environ.get(ENV_VAR) or None


def postgres_param(value: object = "postgres") -> ParameterSet:
    """A ``pytest.param`` marked ``postgres`` and skipped, with the reason, when no server is set.

    Under CI (``$CI`` set) it is never skipped: the fixture then fails with the reason, so CI cannot go
    green without exercising the PostgreSQL backend (as ``tests/fhir_server.py`` does for sekmet).
    """
    skip = postgres_url() is None and not os.environ.get("CI")
    return pytest.param(
        value,
        marks=[pytest.mark.postgres, pytest.mark.skipif(skip, reason=SKIP_REASON)],
        id="postgres",
    )


@contextmanager
def isolated_schema(base_url: str) -> Iterator[str]:
    """Yield a URL whose connections use a fresh, empty schema; drop it afterwards.

    The schema is chosen through libpq's ``options`` (``-csearch_path=…``), so the code under test
    sees an ordinary URL and creates its tables there.
    """
    schema = f"blina_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(engine_url(base_url))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = engine_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", postgres_param()])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'feedback.db'}"
    else:
        base = postgres_url()
        if base is None:  # skipped locally; under CI a missing server is a failure
            pytest.fail(SKIP_REASON, pytrace=False)
        with isolated_schema(base) as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlFeedbackStore]:
    opened = open_store(store_url)
    yield opened
    await opened.close()
