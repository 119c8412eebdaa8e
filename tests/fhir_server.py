"""Pytest plugin: a real FHIR R4 server (sekmet-fhir 0.1.1) and our token-checking proxy in front of it.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). Fixtures:

* ``fhir_server`` (session): sekmet started from its own venv (``<repo>/.venv-fhir/bin/sekmet``, or
  ``$BLINA_CDS_TEST_SEKMET``) on a free 127.0.0.1 port, simulator off (it would otherwise react to
  MedicationRequests and change the test data), SQLite under a session tmp dir. ``.base`` is the FHIR
  base URL; ``.load(bundle)`` posts a transaction and asserts every entry succeeded.
* ``token_proxy`` (function, over one session proxy): a :class:`tests.token_proxy.TokenProxy` on its own
  port, reset before each test (log empty, open server until the test sets ``expected_token``).

sekmet gets its own venv so its dependency ranges never constrain ours (``make test`` creates it:
``python3 -m venv .venv-fhir && .venv-fhir/bin/pip install sekmet-fhir==0.1.1``). Without it the
tests that need it are skipped locally and fail under CI (``$CI`` set), so CI can never go green by
silently skipping them.

What sekmet 0.1.1 does with our prefetch templates (checked by hand, see the integration tests):
every template works except ``AdverseEvent?subject=Patient/<id>`` — sekmet defines no search
parameter for AdverseEvent, so it ignores ``subject`` (a warning OperationOutcome in the searchset)
and returns every AdverseEvent on the server. Tests that load AdverseEvents must remove them again
(``unload``) so other tests' patients do not see them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.token_proxy import TokenProxy

REPO = Path(__file__).resolve().parents[1]
SEKMET_ENV = "BLINA_CDS_TEST_SEKMET"
START_TIMEOUT_S = 20.0
MISSING_MESSAGE = (
    "sekmet-fhir is not installed at {path} (run make test, which creates it with "
    "`python3 -m venv .venv-fhir && .venv-fhir/bin/pip install sekmet-fhir==0.1.1`; "
    f"or point {SEKMET_ENV} at a sekmet executable)"
)

_SETTINGS = """\
base_url: {base}
host: 127.0.0.1
port: {port}
data_dir: {data_dir}
simulator:
  enabled: false
log_inbound: false
"""


def sekmet_executable() -> Path:
    return Path(os.environ.get(SEKMET_ENV) or REPO / ".venv-fhir" / "bin" / "sekmet")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class FhirServer:
    """A running sekmet server: its base URL and a few helpers for tests."""

    base: str
    process: subprocess.Popen[bytes]
    log_path: Path
    loaded: list[dict[str, Any]] = field(default_factory=list)

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction bundle; assert the server applied every entry. Returns the response bundle."""
        assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "transaction", "not a transaction"
        response = httpx.post(
            self.base + "/",
            json=bundle,
            headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
            timeout=30,
        )
        assert response.status_code == 200, f"transaction failed: {response.status_code} {response.text[:2000]}"
        body: dict[str, Any] = response.json()
        assert body.get("type") == "transaction-response", body
        statuses = [e.get("response", {}).get("status", "") for e in body.get("entry", [])]
        assert len(statuses) == len(bundle.get("entry", [])), statuses
        failed = [s for s in statuses if not s.startswith(("200", "201"))]
        assert not failed, f"transaction entries failed: {failed}"
        self.loaded.append(bundle)
        return body

    def unload(self, bundle: dict[str, Any]) -> None:
        """DELETE every resource a loaded transaction PUT or POSTed with a known id (leave the server as found).

        Needed because sekmet ignores ``AdverseEvent?subject=``: an AdverseEvent left behind shows up in
        every other patient's AdverseEvent search.
        """
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            if not resource.get("id"):
                continue
            url = f"{self.base}/{resource['resourceType']}/{resource['id']}"
            response = httpx.delete(url, timeout=10)
            assert response.status_code in (200, 202, 204), f"DELETE {url}: {response.status_code}"

    def get(self, relative: str, **params: Any) -> dict[str, Any]:
        """GET ``{base}/{relative}`` (a test's own view of the server); asserts 200."""
        response = httpx.get(f"{self.base}/{relative}", params=params, timeout=10,
                             headers={"Accept": "application/fhir+json"})
        assert response.status_code == 200, f"{relative}: {response.status_code} {response.text[:500]}"
        body: dict[str, Any] = response.json()
        return body

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "<no log>"


def _missing_sekmet(path: Path) -> None:
    message = MISSING_MESSAGE.format(path=path)
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _wait_ready(server: FhirServer, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"sekmet exited with code {server.process.returncode} before answering:\n{server.log_tail()}"
                )
            try:
                response = client.get(f"{server.base}/metadata")
                if response.status_code == 200 and response.json().get("resourceType") == "CapabilityStatement":
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
            time.sleep(0.1)
    raise RuntimeError(f"sekmet did not answer /metadata within {timeout_s:g} s ({last_error}):\n{server.log_tail()}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def sekmet_installed() -> bool:
    executable = sekmet_executable()
    return executable.is_file() and os.access(executable, os.X_OK)


@contextmanager
def running_sekmet(workdir: Path) -> Iterator[FhirServer]:
    """sekmet on a free 127.0.0.1 port, its SQLite and log under ``workdir``; stopped afterwards."""
    executable = sekmet_executable()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    settings = workdir / "settings.yaml"
    settings.write_text(_SETTINGS.format(base=base, port=port, data_dir=workdir / "data"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}  # they override the YAML
    log_path = workdir / "sekmet.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "serve", "-c", str(settings)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = FhirServer(base=base, process=process, log_path=log_path)
    try:
        _wait_ready(server, timeout_s=START_TIMEOUT_S)
        yield server
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    if not sekmet_installed():
        _missing_sekmet(sekmet_executable())
    with running_sekmet(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


@pytest.fixture(scope="session")
def _token_proxy_session(fhir_server: FhirServer) -> Iterator[TokenProxy]:
    with TokenProxy(fhir_server.base) as proxy:
        yield proxy


@pytest.fixture
def token_proxy(_token_proxy_session: TokenProxy) -> TokenProxy:
    """The proxy in front of ``fhir_server``: log cleared, open until the test sets ``expected_token``."""
    _token_proxy_session.reset(expected_token=None)
    return _token_proxy_session
