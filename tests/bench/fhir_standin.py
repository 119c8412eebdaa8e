"""A FHIR server stand-in for the benchmark: answers every request after a fixed delay, from resources in memory.

    with FhirStandIn(resources, delay_s=0.05) as fhir:     # an asyncio server in a thread, on 127.0.0.1
        fhir.base                                          # http://127.0.0.1:<port>/fhir
        fhir.requests                                      # how many requests it answered

It stands for an EHR whose FHIR API takes ``delay_s`` per request whatever is asked, so a hook call without
prefetch takes about ``delay_s`` when its fetches run concurrently and a multiple of it when they do not. All
requests wait concurrently (``asyncio.sleep``): the stand-in is never the bottleneck. What it understands:

* reads: ``GET {base}/{type}/{id}`` (404 with an OperationOutcome when there is no such resource);
* searches: ``GET {base}/{type}?...`` with ``patient=<id>`` or ``subject=Patient/<id>`` (matched against the
  resource's ``subject`` or ``patient`` reference), ``code=[system|]code,...`` (any coding of ``code``),
  ``_sort=-date`` / ``_sort=date`` (the clinical date: ``effective[x]``, ``onset[x]``, ``authoredOn``,
  ``recordedDate``, ``date``, ``issued``), ``_count`` and ``_offset`` (a ``next`` link while more remain), and
  ``_include=<Type>:medication`` (the Medications the page's records name, as ``search.mode: include``). Any other
  parameter is ignored: the data given is already the one patient's chart.

Answers are serialised once per distinct URL (at most ``CACHE_MAX`` of them), so a long benchmark spends its CPU in
the service, not here. Only 127.0.0.1 is bound.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson

Resource = Mapping[str, Any]
CACHE_MAX = 1000
_DATE_FIELDS = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "onsetDateTime", "onsetPeriod",
                "authoredOn", "recordedDate", "date", "issued")


def _clinical_date(resource: Resource) -> str:
    for name in _DATE_FIELDS:
        value = resource.get(name)
        if isinstance(value, Mapping):
            value = value.get("start") or value.get("end")
        if isinstance(value, str):
            return value
    return ""


def _reference(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, Mapping) else None


def _codes(resource: Resource) -> set[str]:
    """``code`` and ``system|code`` for every coding of the resource's ``code``."""
    found: set[str] = set()
    concept = resource.get("code")
    for coding in concept.get("coding", []) if isinstance(concept, Mapping) else []:
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            found.add(coding["code"])
            found.add(f"{coding.get('system', '')}|{coding['code']}")
    return found


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class FhirData:
    """The resources served, indexed by type and by ``type/id``; ``answer`` is the whole FHIR API."""

    def __init__(self, resources: Iterable[Resource], base: str) -> None:
        self.base = base
        self.by_type: dict[str, list[Resource]] = {}
        self.by_id: dict[str, Resource] = {}
        for resource in resources:
            kind = str(resource["resourceType"])
            self.by_type.setdefault(kind, []).append(resource)
            if "id" in resource:
                self.by_id[f"{kind}/{resource['id']}"] = resource

    def answer(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for ``GET {path}?{query}``; ``path`` is relative to the base (``Patient/p1``)."""
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2:
            found = self.by_id.get("/".join(parts))
            return (200, dict(found)) if found is not None else (404, _outcome("not-found", f"no {path}"))
        if len(parts) != 1:
            return 400, _outcome("not-supported", f"unsupported path {path}")
        return 200, self.search(parts[0], parse_qsl(query, keep_blank_values=True))

    def search(self, kind: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        matches = self.by_type.get(kind, [])
        count, offset, includes = 50, 0, []
        for name, value in params:
            if name in ("patient", "subject"):
                wanted = value if "/" in value else f"Patient/{value}"
                matches = [r for r in matches
                           if wanted in (_reference(r.get("subject")), _reference(r.get("patient")))]
            elif name == "code":
                tokens = set(value.split(","))
                matches = [r for r in matches if tokens & _codes(r)]
            elif name == "_sort":
                matches = sorted(matches, key=_clinical_date, reverse=value.startswith("-"))
            elif name == "_count":
                count = max(1, int(value))
            elif name == "_offset":
                offset = max(0, int(value))
            elif name == "_include":
                includes.append(value)
        page = matches[offset:offset + count]
        entries: list[dict[str, Any]] = [
            {"fullUrl": f"{self.base}/{kind}/{r.get('id')}", "resource": r, "search": {"mode": "match"}} for r in page
        ]
        if any(i.endswith(":medication") for i in includes):
            named = {_reference(r.get("medicationReference")) for r in page} - {None}
            for reference in sorted(str(n) for n in named):
                if (medication := self.by_id.get(reference)) is not None:
                    entries.append({"fullUrl": f"{self.base}/{reference}", "resource": medication,
                                    "search": {"mode": "include"}})
        links = [{"relation": "self", "url": f"{self.base}/{kind}?{urlencode(params)}"}]
        if offset + count < len(matches):
            rest = [(k, v) for k, v in params if k != "_offset"] + [("_offset", str(offset + count))]
            links.append({"relation": "next", "url": f"{self.base}/{kind}?{urlencode(rest)}"})
        return {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links,
                "entry": entries}


class _Http(asyncio.Protocol):
    """HTTP/1.1 GET only, keep-alive, no pipelining needed (httpx never pipelines): as little CPU as can be."""

    def __init__(self, stand_in: FhirStandIn) -> None:
        self.stand_in = stand_in
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stand_in.connections.add(transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            asyncio.get_running_loop().create_task(self.answer(method, target))

    async def answer(self, method: str, target: str) -> None:
        status, body = await self.stand_in.respond(method, target)
        if self.transport is not None and not self.transport.is_closing():
            head = b"HTTP/1.1 %d %s\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n"
            self.transport.write(head % (status, b"OK" if status == 200 else b"Error", len(body)) + body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.stand_in.connections.discard(self.transport)
        self.transport = None


class FhirStandIn:
    """``FhirData`` behind a minimal asyncio HTTP server in a thread; each answer is sent ``delay_s`` after its
    request arrived."""

    def __init__(self, resources: Iterable[Resource], *, delay_s: float = 0.05) -> None:
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(512)
        self.base = f"http://127.0.0.1:{self._socket.getsockname()[1]}/fhir"
        self.data = FhirData(resources, self.base)
        self.delay_s = delay_s
        self.requests = 0
        self.paths: list[str] = []
        """The first ``CACHE_MAX`` paths asked (with their query), for tests."""
        self._cache: dict[str, tuple[int, bytes]] = {}
        self.connections: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(self._loop.create_server(lambda: _Http(self), sock=self._socket))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for transport in list(self.connections):  # kept-alive client connections: closed, not left to the GC
                transport.close()
            self._loop.run_until_complete(asyncio.sleep(0))  # let the transports finish closing
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def respond(self, method: str, target: str) -> tuple[int, bytes]:
        self.requests += 1
        if len(self.paths) < CACHE_MAX:
            self.paths.append(target)
        await asyncio.sleep(self.delay_s)
        if method != "GET":
            return 405, orjson.dumps(_outcome("not-supported", f"{method} is not supported"))
        answer = self._cache.get(target)
        if answer is None:
            path, _, query = target.partition("?")
            status, body = self.data.answer(unquote(path.removeprefix("/fhir")), query)
            answer = (status, orjson.dumps(body))
            if len(self._cache) < CACHE_MAX:
                self._cache[target] = answer
        return answer

    def __enter__(self) -> FhirStandIn:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the FHIR stand-in did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._socket.close()
