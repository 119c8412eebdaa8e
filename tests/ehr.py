"""A mini-EHR that calls the service the way the CDS Hooks Sandbox was seen to (ecosystem.md §2,
cds-hooks-2.0.md §8), so integration tests exercise the client behaviour we must survive:

* discovery with a JWT whose ``aud`` is the discovery URL;
* prefetch filled by the client itself from the FHIR server: ``{{context.<primitive>}}``, the four
  user tokens derived from ``context.userId``, legacy ``{{user}}``, 3.0-style ``{{today()}}`` and
  ``{{today() - N days}}``; query values URL-encoded; searches as ``POST {base}/{Type}/_search`` with a
  form body, falling back to GET; reads with GET; a template with an unresolved token is skipped; a key
  that fails is omitted (never ``null``, never an OperationOutcome); no ``prefetch`` at all when
  nothing succeeded. Only the first page of a search is sent (its ``next`` link is the service's job);
* one fresh ES384 JWT per call: ``iss``, ``aud`` = the exact URL posted to, ``iat`` rounded like
  JavaScript's ``Math.round(Date.now()/1000)`` — so up to 0.5 s in the future —, ``exp`` = iat + 300,
  ``jti`` a uuid4, ``kid`` (and optionally ``jku``) in the header;
* the hook body in the Sandbox's key order; ``Accept`` and ``Content-Type`` JSON;
* feedback posts signed with ``aud`` = ``{service URL}/feedback``.

    async with MiniEhr(cds_client, fhir_base, private_key=key, kid=jwk["kid"], iss=ISS) as ehr:
        await ehr.discover()
        response = await ehr.call("blinatumomab-patient-view", "patient-view", {"patientId": "p1"})
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import jwt

from tests.jwt_tools import sign

DEFAULT_ISS = "https://mini-ehr.test"
DEFAULT_DISCOVERY_URL = "http://127.0.0.1:8000/cds-services"
DEFAULT_USER = "Practitioner/COREPRACTITIONER1"

_TOKEN = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_TODAY = re.compile(r"^today\(\)\s*(?:([+-])\s*(\d+)\s*days?)?$")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
_JSON = "application/json"


def js_round(value: float) -> int:
    """``Math.round``: halves go up (Python's ``round`` goes to even)."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class FhirFetch:
    """One request the harness made to the FHIR server while filling prefetch."""

    key: str
    method: str
    url: str
    status: int | None


class MiniEhr:
    """See the module docstring. ``cds`` talks to the service (ASGITransport in tests)."""

    def __init__(
        self,
        cds: httpx.AsyncClient,
        fhir_base: str,
        *,
        private_key: Any,
        kid: str,
        iss: str = DEFAULT_ISS,
        jku: str | None = None,
        discovery_url: str = DEFAULT_DISCOVERY_URL,
        fhir_token: str | None = None,
        fhir: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        today: Callable[[], dt.date] | None = None,
    ) -> None:
        self.cds = cds
        self.fhir_base = fhir_base.rstrip("/")
        self.discovery_url = discovery_url.rstrip("/")
        self.iss = iss
        self._key = private_key
        self._kid = kid
        self._jku = jku
        self._fhir_token = fhir_token
        self._fhir = fhir
        self._owns_fhir = fhir is None
        self._clock = clock
        self._today = today or (lambda: dt.datetime.fromtimestamp(clock(), dt.UTC).date())
        self.services: dict[str, dict[str, Any]] = {}
        self.fhir_log: list[FhirFetch] = []
        self.last_request: dict[str, Any] | None = None
        self.last_claims: dict[str, Any] | None = None

    async def __aenter__(self) -> MiniEhr:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_fhir and self._fhir is not None:
            await self._fhir.aclose()
            self._fhir = None

    # ------------------------------------------------------------------ CDS side

    def service_url(self, service_id: str) -> str:
        return f"{self.discovery_url}/{service_id}"

    def token(self, aud: str) -> str:
        """A fresh Sandbox-shaped ES384 JWT for ``aud`` (the exact URL about to be called)."""
        iat = js_round(self._clock())
        extra = {"jku": self._jku} if self._jku else None
        token = sign(self._key, kid=self._kid, iss=self.iss, aud=aud, iat=iat, exp=iat + 300,
                     jti=str(uuid.uuid4()), extra_headers=extra)
        self.last_claims = jwt.decode(token, options={"verify_signature": False})
        return token

    def _headers(self, aud: str) -> dict[str, str]:
        return {"Accept": _JSON, "Authorization": f"Bearer {self.token(aud)}"}

    async def discover(self) -> httpx.Response:
        """``GET /cds-services``; on 200 remembers the services by id (the Sandbox keys them by URL)."""
        response = await self.cds.get(self.discovery_url, headers=self._headers(self.discovery_url))
        if response.status_code == 200:
            self.services = {s["id"]: s for s in response.json().get("services", [])}
        return response

    async def call(
        self,
        service_id: str,
        hook: str,
        context: Mapping[str, Any],
        *,
        prefetch: bool | Mapping[str, Any] = True,
        fhir_authorization: Mapping[str, Any] | None = None,
        fhir_server: str | None = None,
        hook_instance: str | None = None,
    ) -> httpx.Response:
        """POST a hook call. ``prefetch``: True → fill it from the FHIR server (needs ``discover()``);
        False → send none; a mapping → send exactly that."""
        context = {"userId": DEFAULT_USER, **context}
        body: dict[str, Any] = {
            "hookInstance": hook_instance or str(uuid.uuid4()),
            "hook": hook,
            "fhirServer": fhir_server or self.fhir_base,
            "context": context,
        }
        if fhir_authorization is not None:
            body["fhirAuthorization"] = dict(fhir_authorization)
        if prefetch is True:
            filled = await self.prefetch_for(service_id, context)
            if filled is not None:
                body["prefetch"] = filled
        elif prefetch is not False:
            body["prefetch"] = dict(prefetch)
        self.last_request = body
        url = self.service_url(service_id)
        return await self.cds.post(url, json=body, headers={**self._headers(url), "Content-Type": _JSON})

    async def feedback(self, service_id: str, body: Mapping[str, Any]) -> httpx.Response:
        url = f"{self.service_url(service_id)}/feedback"
        return await self.cds.post(url, json=dict(body), headers={**self._headers(url), "Content-Type": _JSON})

    # ------------------------------------------------------------------ prefetch (FHIR side)

    async def prefetch_for(self, service: str | Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any] | None:
        """The prefetch object the Sandbox would send for ``service`` (an id from discovery, or its entry)."""
        entry = self.services[service] if isinstance(service, str) else service
        templates: Mapping[str, str] = entry.get("prefetch") or {}
        out: dict[str, Any] = {}
        for key, template in templates.items():
            value = await self.fill(template, context, key=key)
            if value is not None:
                out[key] = value
        return out or None

    async def fill(self, template: str, context: Mapping[str, Any], *, key: str = "") -> dict[str, Any] | None:
        """Run one template against the FHIR server; ``None`` when it is skipped or fails."""
        if "?" in template:
            rtype, query = template.split("?", 1)
            pairs: list[tuple[str, str]] = []
            for name, raw in parse_qsl(query, keep_blank_values=True):
                value = self._substitute(raw, context)
                if value is None:
                    return None  # unresolved token: the Sandbox skips the template
                pairs.append((name, value))
            return await self._search(key, rtype.strip("/"), pairs)
        path = self._substitute(template, context, quote_values=True)
        if path is None:
            return None
        if "/" not in path.strip("/"):
            return await self._search(key, path.strip("/"), [])
        return await self._get(key, f"{self.fhir_base}/{path.lstrip('/')}")

    def _substitute(self, text: str, context: Mapping[str, Any], *, quote_values: bool = False) -> str | None:
        unresolved = False

        def value_of(match: re.Match[str]) -> str:
            nonlocal unresolved
            value = self._token_value(match.group(1), context)
            if value is None:
                unresolved = True
                return ""
            return quote(value, safe="") if quote_values else value

        result = _TOKEN.sub(value_of, text)
        return None if unresolved else result

    def _token_value(self, name: str, context: Mapping[str, Any]) -> str | None:
        if name.startswith("context."):
            value = context.get(name.removeprefix("context."))
            if isinstance(value, bool):
                return str(value).lower()
            return str(value) if isinstance(value, str | int | float) else None
        user = context.get("userId")
        if name == "user":
            return user if isinstance(user, str) else None
        if name in _USER_TOKENS:
            prefix = _USER_TOKENS[name] + "/"
            return user.removeprefix(prefix) if isinstance(user, str) and user.startswith(prefix) else None
        today = _TODAY.match(name)
        if today:
            sign_, days = today.groups()
            delta = dt.timedelta(days=int(days or 0)) * (-1 if sign_ == "-" else 1)
            return (self._today() + delta).isoformat()
        return None

    async def _client(self) -> httpx.AsyncClient:
        if self._fhir is None:
            self._fhir = httpx.AsyncClient(timeout=10.0, trust_env=False)
        return self._fhir

    def _fhir_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/fhir+json"}
        if self._fhir_token:
            headers["Authorization"] = f"Bearer {self._fhir_token}"
        return headers

    async def _search(self, key: str, rtype: str, pairs: list[tuple[str, str]]) -> dict[str, Any] | None:
        client = await self._client()
        url = f"{self.fhir_base}/{rtype}/_search"
        try:
            response = await client.post(url, content=urlencode(pairs), headers={
                **self._fhir_headers(), "Content-Type": "application/x-www-form-urlencoded"})
            self.fhir_log.append(FhirFetch(key, "POST", url, response.status_code))
            body = _resource(response)
            if body is not None:
                return body
        except httpx.HTTPError:
            self.fhir_log.append(FhirFetch(key, "POST", url, None))
        query = urlencode(pairs)
        return await self._get(key, f"{self.fhir_base}/{rtype}" + (f"?{query}" if query else ""))

    async def _get(self, key: str, url: str) -> dict[str, Any] | None:
        client = await self._client()
        try:
            response = await client.get(url, headers=self._fhir_headers())
        except httpx.HTTPError:
            self.fhir_log.append(FhirFetch(key, "GET", url, None))
            return None
        self.fhir_log.append(FhirFetch(key, "GET", url, response.status_code))
        return _resource(response)


def _resource(response: httpx.Response) -> dict[str, Any] | None:
    """A usable answer: 2xx, JSON, a FHIR resource that is not an OperationOutcome."""
    if not 200 <= response.status_code < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        return None
    if body["resourceType"] == "OperationOutcome":
        return None
    return body
