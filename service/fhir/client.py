"""Reading the EHR's FHIR server: one shared ``httpx.AsyncClient``, origin-checked URLs, paging.

Every outbound URL — the first request and every ``next`` link — must stay on the ``fhirServer``
origin and under its base path; anything else is refused before a byte is sent (a hook request names
the server we call, so an unchecked URL would let a caller point us at arbitrary hosts).

Logs name the resource type, status and time of each request, never its URL (which holds the patient
id) and never the bearer token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import orjson

from service import metrics

log = logging.getLogger("blina_cds.fhir")
# httpx logs every request URL at INFO, and our URLs carry the patient id: keep it to warnings and above.
logging.getLogger("httpx").setLevel(logging.WARNING)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_DROPPED_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""A connection closed or reset under a request (a server closing an idle kept-alive connection as it is reused):
the GET is sent once more, within the call's FHIR deadline. Timeouts and refused connections are not retried."""


class FhirFetchError(Exception):
    """A FHIR request failed; the pipeline turns it into a 412 (``PrefetchUnavailable``)."""

    def __init__(self, reason: str, *, resource_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resource_type = resource_type


def _failed(reason: str, *, resource_type: str, outcome: str) -> FhirFetchError:
    """Count a failed fetch by outcome and return the error to raise."""
    metrics.FHIR_FETCHES.labels(resource_type=resource_type, outcome=outcome).inc()
    return FhirFetchError(reason, resource_type=resource_type)


def normalise_base(url: str) -> str:
    """``HTTPS://EHR.example.org:443/fhir/`` → ``https://ehr.example.org/fhir`` (for comparisons)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def is_within(url: str, base: str) -> bool:
    """Whether ``url`` is on ``base``'s origin (scheme, host, port) and under its path.

    >>> is_within("https://ehr.org/fhir/Observation?x=1", "https://ehr.org/fhir")
    True
    >>> is_within("https://evil.org/fhir/Observation", "https://ehr.org/fhir")
    False
    >>> is_within("https://ehr.org/fhir/../admin", "https://ehr.org/fhir")
    False

    The check is made on the URL as httpx will send it (``..`` segments resolved), and a percent-encoded
    ``.``/``..`` segment, which a server may resolve itself, is refused outright.
    """
    try:
        url, base = str(httpx.URL(url)), str(httpx.URL(base))
    except httpx.InvalidURL:
        return False
    u, b = urlsplit(url), urlsplit(base)
    if u.scheme.lower() not in ("http", "https") or u.username or u.password:
        return False
    if any(unquote(segment) in (".", "..") for segment in u.path.split("/")):
        return False
    if normalise_base(f"{u.scheme}://{u.netloc}") != normalise_base(f"{b.scheme}://{b.netloc}"):
        return False
    base_path = b.path.rstrip("/")
    return u.path == base_path or u.path.startswith(base_path + "/")


class FhirClient:
    """Reads from one EHR FHIR server per hook call; built per call over the process's shared client."""

    def __init__(self, http: httpx.AsyncClient, *, base: str, token: str | None, max_pages: int,
                 max_response_bytes: int, max_total_bytes: int) -> None:
        self._http = http
        self.base = base.rstrip("/")
        self._token = token
        self._max_pages = max_pages
        self._max_response_bytes = max_response_bytes
        self._max_total_bytes = max_total_bytes
        self.bytes_read = 0
        """Body bytes read so far by this client (one hook call), all keys and pages together."""

    def url_for(self, relative: str) -> str:
        return f"{self.base}/{relative.lstrip('/')}"

    async def get_json(self, url: str, *, resource_type: str) -> dict[str, Any] | None:
        """GET one URL; ``None`` for a 404 (a read of a resource that does not exist is "no data")."""
        if not is_within(url, self.base):
            raise _failed("URL outside the fhirServer origin refused", resource_type=resource_type, outcome="refused")
        headers = {"Accept": "application/fhir+json, application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                async with self._http.stream("GET", url, headers=headers, follow_redirects=False) as response:
                    status = response.status_code
                    content = await self._read_capped(response, resource_type=resource_type) if status == 200 else b""
                break
            except _DROPPED_CONNECTION as exc:
                if attempt == 1:  # the server closed a kept-alive connection as we reused it: a GET may be sent again
                    log.info("fhir fetch sent again", extra={"resource_type": resource_type,
                                                             "error": type(exc).__name__})
                    continue
                raise self._unreachable(exc, resource_type=resource_type) from None
            except httpx.HTTPError as exc:
                raise self._unreachable(exc, resource_type=resource_type) from None
        elapsed = time.perf_counter() - started
        metrics.FHIR_LATENCY.labels(resource_type=resource_type).observe(elapsed)
        log.info("fhir fetch", extra={"resource_type": resource_type, "status": status, "ms": round(elapsed * 1000, 1)})
        if status == 404 and "?" not in url:
            metrics.FHIR_FETCHES.labels(resource_type=resource_type, outcome="not-found").inc()
            return None
        if status != 200:
            raise _failed(f"FHIR server answered {status}", resource_type=resource_type,
                          outcome=f"http-{metrics.status_class(status)}")
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise _failed("FHIR server answer is not JSON", resource_type=resource_type, outcome="not-json") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise _failed("FHIR server answer is not a FHIR resource", resource_type=resource_type, outcome="not-fhir")
        metrics.FHIR_FETCHES.labels(resource_type=resource_type, outcome="ok").inc()
        return body

    @staticmethod
    def _unreachable(exc: httpx.HTTPError, *, resource_type: str) -> Exception:
        log.warning("fhir fetch failed", extra={"resource_type": resource_type, "error": type(exc).__name__})
        return _failed(f"FHIR server unreachable or too slow ({type(exc).__name__})", resource_type=resource_type,
                       outcome="error")

    async def _read_capped(self, response: httpx.Response, *, resource_type: str) -> bytes:
        """The (decoded) body, read chunk by chunk; refused as soon as it passes either byte cap.

        A ``Content-Length`` over the cap is refused before reading; a body that never ends is cut by the
        call's deadline (``asyncio.timeout`` in ``prefetch.resolve``), and what was read is dropped with it.
        Compressed bodies are counted after decoding, so a small gzip bomb is refused like a big body.
        """
        limit = min(self._max_response_bytes, self._max_total_bytes - self.bytes_read)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and "content-encoding" not in response.headers and int(declared) > limit:
            raise self._too_large(resource_type)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise self._too_large(resource_type)
        self.bytes_read += len(body)
        return bytes(body)

    def _too_large(self, resource_type: str) -> FhirFetchError:
        if self._max_total_bytes - self.bytes_read < self._max_response_bytes:
            reason = (f"FHIR answers of this call exceed {self._max_total_bytes} bytes in total "
                      "(BLINA_CDS_FHIR_MAX_TOTAL_BYTES)")
        else:
            reason = f"FHIR answer larger than {self._max_response_bytes} bytes (BLINA_CDS_FHIR_MAX_RESPONSE_BYTES)"
        log.warning("fhir answer too large", extra={"resource_type": resource_type})
        return _failed(reason, resource_type=resource_type, outcome="too-large")

    async def read(self, relative: str) -> list[Mapping[str, Any]]:
        """``Patient/123`` → ``[patient]`` (``[]`` when the server has no such resource)."""
        resource_type = relative.split("/", 1)[0]
        body = await self.get_json(self.url_for(relative), resource_type=resource_type)
        if body is None:
            return []
        if body.get("resourceType") == "OperationOutcome":
            raise FhirFetchError("FHIR server answered with an OperationOutcome", resource_type=resource_type)
        return [body]

    async def search(self, relative: str, *, newest_first: bool = False) -> list[Mapping[str, Any]]:
        """A search, following ``next`` links (origin-checked) up to ``max_pages`` pages."""
        resource_type = relative.split("?", 1)[0]
        return await self.pages(self.url_for(relative), resource_type=resource_type, newest_first=newest_first)

    async def pages(
        self,
        url: str | None,
        *,
        resource_type: str,
        first: Mapping[str, Any] | None = None,
        newest_first: bool = False,
    ) -> list[Mapping[str, Any]]:
        """Resources of a searchset, from ``first`` (already in hand) or ``url``, through its ``next`` links.

        Past ``max_pages`` pages: a search sorted newest first (``_sort=-date``) keeps what it has — only the
        oldest records are left unread, and a warning is logged; any other search fails (412), because the
        record left unread could be the one that matters.
        """
        resources: list[Mapping[str, Any]] = []
        pages = 0
        bundle: Mapping[str, Any] | None = first
        while True:
            if bundle is None:
                if url is None:
                    break
                bundle = await self.get_json(url, resource_type=resource_type)
                pages += 1
                if bundle is None or bundle.get("resourceType") != "Bundle":
                    raise FhirFetchError("search did not return a Bundle", resource_type=resource_type)
            resources.extend(searchset_resources(bundle, resource_type=resource_type))
            url = next_link(bundle, base=self.base)
            bundle = None
            if url is None:
                break
            if pages >= self._max_pages:
                metrics.FHIR_FETCHES.labels(resource_type=resource_type, outcome="page-cap").inc()
                log.warning("fhir paging cap reached", extra={"resource_type": resource_type, "pages": pages})
                if newest_first:
                    break
                raise FhirFetchError(
                    f"more than {self._max_pages} pages of results; raise BLINA_CDS_FHIR_MAX_PAGES",
                    resource_type=resource_type,
                )
        return resources


def searchset_resources(bundle: Mapping[str, Any], *, resource_type: str) -> list[Mapping[str, Any]]:
    """Entry resources of a fetched searchset; an error OperationOutcome entry fails the fetch."""
    out: list[Mapping[str, Any]] = []
    entries = bundle.get("entry")
    if entries is not None and not isinstance(entries, list):
        raise FhirFetchError("search answered with a malformed Bundle (entry is not a list)",
                             resource_type=resource_type)
    for entry in entries or ():
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        if resource.get("resourceType") == "OperationOutcome":
            issues = resource.get("issue")
            if not isinstance(issues, list) or any(
                not isinstance(i, Mapping) or i.get("severity") in ("error", "fatal") for i in issues
            ):
                raise FhirFetchError("search answered with an error OperationOutcome", resource_type=resource_type)
            continue
        out.append(resource)
    return out


def next_link(bundle: Mapping[str, Any], *, base: str) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return urljoin(base + "/", str(link["url"]))
    return None
