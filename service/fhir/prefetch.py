"""Pipeline step 1: prefetch first, then fetch only the missing keys from ``fhirServer``.

Each advertised key is in one of the states CDS Hooks 2.0 defines:

======================  ============================================================================
state of key K          what we do
======================  ============================================================================
resource / Bundle       use it; a searchset's ``next`` links are followed on ``fhirServer``
``null``                no data — spec: "If the CDS Client has no data to populate a template
                        prefetch key, the prefetch template key MUST have a value of null." — **null is
                        not missing**, and never triggers a fetch or a 412
empty searchset         no results
OperationOutcome, or a  the client hit an error ("OperationOutcome(s) SHOULD be used to communicate
Bundle holding one      those errors") — treat as unavailable and fetch it ourselves
absent                  "It is the CDS Service's responsibility … to programmatically retrieve any
                        additional necessary data" — fetch it from ``fhirServer``
======================  ============================================================================

When a key cannot be had (no ``fhirServer``, a FHIR error, timeout, a disallowed server) the whole
call is a 412: "the service SHALL respond with an HTTP 412 Precondition Failed status code".

Then the Medications: records that name their drug by ``Medication/<id>`` bring it through the medication keys'
``_include``; one still missing (a server that ignores ``_include``, a draft order's Medication, which no template
can reach) and needed (``medications_to_read``, from the timeline) is read from ``fhirServer`` — all concurrently,
in the same deadline and byte budget, at most ``max_medication_reads`` (more, or no ``fhirServer`` to read them
from: 412). A read answered 404 is "no such Medication": the record stays unidentified by it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from service import metrics
from service.errors import InvalidRequest, PrefetchUnavailable, clip
from service.fhir.client import FhirClient, FhirFetchError, next_link, normalise_base, searchset_resources
from service.schemas import HookRequest, is_fhir_id

Resources = list[Mapping[str, Any]]

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


MEDICATIONS = "medications"
"""The data key of the Medications read one by one (not a prefetch key: no template can name a draft's drug)."""

MedicationsToRead = Callable[[Mapping[str, Resources]], Mapping[str, str]]
"""Given the data of every key, the Medication ids still to read, each with where it was named (``prefetch.<key>``
or ``context.draftOrders``, for a 412's OperationOutcome)."""


@dataclass
class Resolved:
    """Resources per prefetch key, and how each key was satisfied (for metrics and tests)."""

    data: dict[str, Resources] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


def find_missing_prefetch(templates: Mapping[str, str], prefetch: Mapping[str, Any] | None) -> list[str]:
    """Keys the client did not satisfy: absent, or an OperationOutcome (alone or inside a Bundle)."""
    prefetch = prefetch or {}
    return [k for k in templates if k not in prefetch or _is_error(prefetch[k])]


def _is_error(value: Any) -> bool:
    """An OperationOutcome as the value, or a Bundle holding one that reports an error.

    A searchset may carry an OperationOutcome with only warnings or information (``search.mode`` =
    ``outcome``, e.g. "parameter ignored"): that is data with a note, not a failed prefetch.
    """
    if not isinstance(value, Mapping):
        return False
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") == "Bundle":
        return any(
            isinstance(e, Mapping)
            and isinstance(e.get("resource"), Mapping)
            and e["resource"].get("resourceType") == "OperationOutcome"
            and _reports_error(e["resource"])
            for e in value.get("entry") or ()
        )
    return False


def _reports_error(outcome: Mapping[str, Any]) -> bool:
    raw = outcome.get("issue")
    issues = [i for i in raw if isinstance(i, Mapping)] if isinstance(raw, list) else []
    return not issues or any(i.get("severity") not in ("warning", "information") for i in issues)


def render_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Substitute ``{{context.x}}`` and the four user tokens; ``None`` when a token has no value.

    Only root-level primitive context fields are tokens (spec); user tokens carry bare ids derived
    from ``context.userId`` (``Practitioner/123`` → ``userPractitionerId`` = ``123``). Every value
    must be a FHIR id (else a 400 naming the context field: ``p1,p2``, ``p1&_count=…`` or
    ``../Observation`` would change what is fetched) and is percent-encoded as well.
    """
    missing = False

    def value_of(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        if name.startswith("context."):
            value = context.get(name.removeprefix("context."))
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return _url_id(str(value), field=name)
        elif name in _USER_TOKENS:
            user = context.get("userId")
            if isinstance(user, str) and user.startswith(_USER_TOKENS[name] + "/"):
                return _url_id(user.split("/", 1)[1], field="context.userId")
        missing = True
        return ""

    rendered = _TOKEN.sub(value_of, template)
    return None if missing else rendered


def _url_id(value: str, *, field: str) -> str:
    if not is_fhir_id(value):
        raise InvalidRequest(f"{field} must be a FHIR id (1-64 of A-Z a-z 0-9 - .) to be used in a FHIR URL",
                             expression=[field])
    return quote(value, safe="")


def check_request(templates: Mapping[str, str], request: HookRequest) -> None:
    """400 unless every context value a template names is a FHIR id and every prefetch value has a usable shape.

    Checked whether or not a fetch is needed, so the same request is refused the same way every time.
    """
    for template in templates.values():
        render_template(template, request.context)
    prefetch = request.prefetch or {}
    for key in templates:
        if key in prefetch:
            _check_value(key, prefetch[key], template=templates[key])


def _check_value(key: str, value: Any, *, template: str) -> None:
    """A prefetch value is null, a resource, or a Bundle whose ``entry`` and ``link`` are lists of objects."""
    where = f"prefetch.{key}"
    if value is None:
        return
    if not (isinstance(value, Mapping) and isinstance(value.get("resourceType"), str)):
        raise InvalidRequest(f"{where} must be a FHIR resource, a Bundle or null", expression=[where])
    if value["resourceType"] != "Bundle":
        wanted = _resource_type(template)
        if "?" not in template and value["resourceType"] not in (wanted, "OperationOutcome"):
            raise InvalidRequest(f"{where} must be a {wanted} (got {clip(value['resourceType'])})",
                                 expression=[where])
        return
    for element in ("entry", "link"):
        items = value.get(element)
        if items is not None and not (isinstance(items, list) and all(isinstance(i, Mapping) for i in items)):
            raise InvalidRequest(f"{where}.{element} must be a list of objects", expression=[f"{where}.{element}"])
    for i, entry in enumerate(value.get("entry") or ()):
        resource = entry.get("resource")
        if resource is not None and not (
            isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str)
        ):
            raise InvalidRequest(f"{where}.entry[{i}].resource must be a FHIR resource",
                                 expression=[f"{where}.entry[{i}].resource"])


async def resolve(
    templates: Mapping[str, str],
    request: HookRequest,
    *,
    http: httpx.AsyncClient,
    allowed_servers: Sequence[str] | None,
    timeout_s: float,
    max_pages: int,
    max_response_bytes: int,
    max_total_bytes: int,
    medications_to_read: MedicationsToRead | None = None,
    max_medication_reads: int = 0,
) -> Resolved:
    """Resources for every advertised key: prefetched where usable, fetched concurrently otherwise; then the
    Medications ``medications_to_read`` names, read concurrently (under :data:`MEDICATIONS`).

    ``allowed_servers`` are the FHIR base URLs the caller's issuer may send (``None``: any — auth off).
    """
    resolved, missing, paged = from_prefetch(templates, request)
    needs = sorted(missing | set(paged))
    to_read = medications_to_read(resolved.data) if medications_to_read is not None and not needs else {}
    if not needs and not to_read:
        return resolved

    def client_for(keys: list[str], *, expression: list[str] | None = None) -> FhirClient:
        return _client_for(request, http=http, allowed_servers=allowed_servers, max_pages=max_pages, keys=keys,
                           max_response_bytes=max_response_bytes, max_total_bytes=max_total_bytes,
                           expression=expression)

    client = client_for(needs) if needs else None

    async def fetch(key: str) -> tuple[str, Resources]:
        assert client is not None
        template = templates[key]
        newest_first = "_sort=-date" in template
        try:
            if key in paged:
                return key, await client.pages(None, resource_type=_resource_type(template), first=paged[key],
                                               newest_first=newest_first)
            relative = render_template(template, request.context)
            if relative is None:
                raise PrefetchUnavailable(f"prefetch template '{key}' needs a context value the request lacks",
                                          prefetch_keys=[key])
            if "?" in relative:
                return key, await client.search(relative, newest_first=newest_first)
            return key, _checked_read(await client.read(relative), template=template, key=key)
        except FhirFetchError as exc:
            raise PrefetchUnavailable(
                f"Could not obtain {exc.resource_type} data from fhirServer: {exc.reason}", prefetch_keys=[key]
            ) from None

    async def read(medication_id: str, where: str) -> Resources:
        assert client is not None
        try:
            return _checked_read(await client.read(f"Medication/{medication_id}"), template="Medication/{id}",
                                 key=MEDICATIONS, expression=[where])
        except FhirFetchError as exc:
            raise PrefetchUnavailable(f"Could not read a Medication from fhirServer: {exc.reason}",
                                      prefetch_keys=_keys_of([where]), expression=[where]) from None

    # TaskGroups: the first failure cancels the other fetches, so nothing keeps running after the 412.
    try:
        async with asyncio.timeout(timeout_s):
            if needs:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(fetch(k)) for k in needs]
                for key, resources in (t.result() for t in tasks):
                    resolved.data[key] = resources
                    resolved.states[key] = "paged" if key in paged else "fetched"
                to_read = medications_to_read(resolved.data) if medications_to_read is not None else {}
            if to_read:
                where = sorted(set(to_read.values()))
                if len(to_read) > max_medication_reads:
                    raise PrefetchUnavailable(
                        f"{len(to_read)} Medications named by reference are neither prefetched nor contained; more "
                        f"than {max_medication_reads} to read (raise BLINA_CDS_FHIR_MAX_MEDICATION_READS)",
                        prefetch_keys=_keys_of(where), expression=where)
                client = client or client_for(_keys_of(where), expression=where)
                async with asyncio.TaskGroup() as group:
                    reads = [group.create_task(read(i, w)) for i, w in to_read.items()]
                resolved.data[MEDICATIONS] = [m for t in reads for m in t.result()]
                resolved.states[MEDICATIONS] = "fetched"
    except TimeoutError:
        raise PrefetchUnavailable(
            f"FHIR server did not answer within {timeout_s:g} s", prefetch_keys=needs or _keys_of(to_read.values()),
            expression=None if needs else sorted(set(to_read.values())),
        ) from None
    except BaseExceptionGroup as group_error:
        raise _first_failure(group_error) from None
    return resolved


def _keys_of(where: Iterable[str]) -> list[str]:
    """The prefetch keys among ``prefetch.<key>`` / ``context.draftOrders`` places."""
    return sorted({w.removeprefix("prefetch.") for w in where if w.startswith("prefetch.")})


def from_prefetch(
    templates: Mapping[str, str], request: HookRequest
) -> tuple[Resolved, set[str], dict[str, Mapping[str, Any]]]:
    """What the prefetch alone gives, without a request: the resolved keys, the keys missing, and the prefetched
    searchsets that have more pages (``next``) to fetch."""
    prefetch = request.prefetch or {}  # its shape and the context ids were checked by check_request (routes)
    missing = set(find_missing_prefetch(templates, prefetch))
    resolved = Resolved()
    paged: dict[str, Mapping[str, Any]] = {}

    for key in templates:
        if key in missing:
            continue
        value = prefetch[key]
        if value is None:
            resolved.data[key] = []
            resolved.states[key] = "null"
        elif value.get("resourceType") == "Bundle":
            if next_link(value, base=request.fhirServer or "") is not None:
                paged[key] = value
            else:  # any OperationOutcome left in it only warns (an error one made the key missing)
                resolved.data[key] = searchset_resources(value, resource_type=_resource_type(templates[key]))
                resolved.states[key] = "prefetched"
        else:
            resolved.data[key] = [value]
            resolved.states[key] = "prefetched"
    return resolved, missing, paged


def _checked_read(resources: Resources, *, template: str, key: str, expression: list[str] | None = None
                  ) -> Resources:
    """A read (``Patient/{id}``) answered with the resource type asked for, or the key is unavailable (412)."""
    wanted = _resource_type(template)
    for resource in resources:
        if resource.get("resourceType") != wanted:
            metrics.FHIR_FETCHES.labels(resource_type=wanted, outcome="wrong-type").inc()
            raise PrefetchUnavailable(f"fhirServer answered a read of {wanted} with another resource type",
                                      prefetch_keys=[key] if expression is None else _keys_of(expression),
                                      expression=expression)
    return resources


def _first_failure(group_error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The 412 a failed set of fetches answers with; anything else (our bug) is re-raised as is."""
    for exc in group_error.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_failure(exc)
        if isinstance(exc, PrefetchUnavailable | InvalidRequest):
            return exc
    return group_error


def _resource_type(template: str) -> str:
    """``Observation?patient=…`` → ``Observation`` (for metrics and messages)."""
    return template.split("?", 1)[0].split("/", 1)[0]


def _client_for(
    request: HookRequest,
    *,
    http: httpx.AsyncClient,
    allowed_servers: Sequence[str] | None,
    max_pages: int,
    keys: list[str],
    max_response_bytes: int,
    max_total_bytes: int,
    expression: list[str] | None = None,
) -> FhirClient:
    server = request.fhirServer
    if not server:
        raise PrefetchUnavailable(
            "Required prefetch data is missing and the request names no fhirServer to fetch it from"
            if expression is None else
            "A Medication named by reference is neither prefetched nor contained, and the request names no "
            "fhirServer to read it from",
            prefetch_keys=keys, expression=expression,
        )
    if allowed_servers is not None:
        # Fetch from the allow-listed entry itself, never from the string the request sent.
        matched = [s for s in allowed_servers if normalise_base(s) == normalise_base(server)]
        if not matched:
            raise PrefetchUnavailable(
                "fhirServer is not a FHIR server this client's issuer is trusted to send", prefetch_keys=keys,
                expression=expression,
            )
        server = matched[0]
    token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
    return FhirClient(http, base=server, token=token, max_pages=max_pages, max_response_bytes=max_response_bytes,
                      max_total_bytes=max_total_bytes)
