"""The spine of a hook call. Read this file first.

    POST /cds-services/{id}        (routes.py read the body; ``parse`` validates it)
      1. prefetch.resolve()        prefetch first; fetch only missing keys from fhirServer, then read the Medications
                                   records name by reference that neither brought; 412 if impossible
      2. build_timeline()          normalise once: orders, infusions, steroids, labs with ULN, body size, toxicity
      3. rules.evaluate()          pure functions (timeline, knowledge) → findings; never text
      4. renderer.render()         findings + cards/<rule-id>.toml → spec-valid cards
      → {"cards": [...]}

Where each step runs: a small call (body and fetched data up to ``BLINA_CDS_CPU_INLINE_MAX_BYTES``) runs all
of it on the event loop. A larger one is parsed and evaluated (steps 2–4) in a worker process
(``service.offload``), so ``/healthz`` and discovery keep answering; FHIR fetches (step 1) always run here, on
the shared client. Nothing else calls the rules or the card templates.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from service import logs, metrics
from service.catalog import CdsService
from service.errors import InvalidRequest
from service.fhir import prefetch
from service.fhir.extract import find_invalid_resource
from service.knowledge import Knowledge
from service.offload import CpuPool, Evaluator, evaluator
from service.render import CardRenderer
from service.rules import evaluate
from service.rules.base import Finding
from service.schemas import Card, CdsResponse, HookRequest
from service.store import IssuedCard
from service.timeline import build_timeline, draft_resources, has_blinatumomab_draft, medications_to_read

if TYPE_CHECKING:
    from service.auth import Caller
    from service.store import CardMap, IssuedCardWriter

log = logging.getLogger("blina_cds.pipeline")

_RANK = {"critical": 0, "warning": 1, "info": 2}
_FROM_BODY = frozenset({"prefetched", "null"})
"""Prefetch key states whose data came in the request body (``prefetch.Resolved.states``)."""


@dataclass(frozen=True)
class Engine:
    """What every hook call needs, built once per process (``service.main``)."""

    kb: Knowledge
    catalog: Mapping[str, CdsService]
    renderer: CardRenderer
    http: httpx.AsyncClient
    card_map: CardMap
    fhir_timeout_s: float
    fhir_max_pages: int
    issued: IssuedCardWriter | None = None
    """Records every card returned (card → service, rule, indicator, time) for override analytics."""
    fhir_max_response_bytes: int = 16 * 1024 * 1024
    fhir_max_total_bytes: int = 32 * 1024 * 1024
    fhir_max_medication_reads: int = 50
    cpu: CpuPool | None = None
    """Workers for large calls; ``None`` evaluates everything on the event loop."""

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(kb=self.kb, catalog=dict(self.catalog), renderer=self.renderer)


Parse = Callable[[CdsService, bytes], HookRequest]
"""Raw body → validated hook request of that service (``routes.hook_request``; module-level, so a worker can run it)."""


@dataclass(frozen=True)
class Evaluated:
    """Steps 2–4 done: each card with its rule id and indicator, and how each prefetch key was satisfied."""

    cards: list[tuple[Card, str, str]]
    states: dict[str, str] = field(default_factory=dict)
    hook_instance: str | None = None


@dataclass(frozen=True)
class Pending:
    """A large call whose prefetch is incomplete: its request without the prefetch already usable, to fetch for."""

    request: HookRequest
    needs: list[str]
    hook_instance: str | None = None
    medications: dict[str, str] = field(default_factory=dict)
    """Medications the prefetch names by reference but lacks (id → where named), to read."""
    known_medications: list[str] = field(default_factory=list)
    """Ids of the Medications the prefetch holds (no need to read them for a fetched record)."""


async def call(service: CdsService, body: bytes, *, parse: Parse, caller: Caller, engine: Engine,
               now: dt.datetime) -> CdsResponse:
    """A hook call from its raw body: small bodies on the event loop, large ones parsed and evaluated in a worker."""
    if engine.cpu is None or len(body) <= engine.cpu.inline_max_bytes:
        return await run(service, parse(service, body), caller=caller, engine=engine, now=now)
    first = await engine.cpu.submit(_prepare, service.id, body, parse, now)
    logs.hook_instance.set(first.hook_instance)
    if isinstance(first, Pending):
        templates = {key: service.prefetch[key] for key in first.needs}
        fetched = await _resolve(templates, first.request, caller=caller, engine=engine,         # 1
                                 to_read=_still_to_read(first, engine.kb))
        first = await engine.cpu.submit(_finish, service.id, body, parse, orjson.dumps(fetched.data),
                                        fetched.states, now)
    return await _answer(service, first, engine=engine, now=now)


async def run(service: CdsService, request: HookRequest, *, caller: Caller, engine: Engine,
              now: dt.datetime) -> CdsResponse:
    """A parsed hook call; steps 2–4 move to a worker when the data (prefetched and fetched) is large."""
    context = request.context
    if service.hook in ("order-sign", "order-select") and not has_blinatumomab_draft(
        context, engine.kb, selections_only=service.hook == "order-select"
    ):
        return CdsResponse(cards=[])  # not a blinatumomab order: nothing to check, nothing to fetch

    resolved = await _resolve(service.prefetch, request, caller=caller, engine=engine,   # 1
                              to_read=lambda data: medications_to_read(context, data, engine.kb))
    # Data that all came in the body is no larger than the body, which ``call`` found small: no need to write it
    # out to measure it. Only fetched data can make a small call large.
    fetched = any(state not in _FROM_BODY for state in resolved.states.values())
    payload = _payload(context, resolved.data) if engine.cpu is not None and fetched else None
    if engine.cpu is not None and payload is not None and len(payload) > engine.cpu.inline_max_bytes:
        evaluated = await engine.cpu.submit(_evaluate_payload, service.id, payload, resolved.states, now)
    else:
        evaluated = Evaluated(evaluate_cards(engine.evaluator, service, context, resolved.data, now=now),
                              resolved.states)
    return await _answer(service, evaluated, engine=engine, now=now)


def evaluate_cards(ev: Evaluator, service: CdsService, context: Mapping[str, Any],
                   data: Mapping[str, list[Mapping[str, Any]]], *, now: dt.datetime) -> list[tuple[Card, str, str]]:
    """Steps 2–4: timeline, rules, cards (most urgent first), each with its rule id and indicator."""
    def analyse(data: Mapping[str, list[Mapping[str, Any]]], context: Mapping[str, Any]) -> list[Finding]:
        timeline = build_timeline(hook=service.hook, context=context, data=data, kb=ev.kb, now=now)  # 2
        if service.hook in ("order-sign", "order-select") and not timeline.focus_orders:
            return []  # the draft named only by a Medication reference turned out not to be blinatumomab
        return evaluate(timeline, ev.kb, rule_ids=service.rule_ids)                                  # 3

    try:
        findings = analyse(data, context)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        unreadable = _unreadable(data, context, analyse)
        if unreadable is None:
            raise  # not caused by one invalid resource: our bug, a 500 with the traceback logged
        raise unreadable from exc
    findings.sort(key=lambda f: _RANK[f.indicator])
    return [(ev.renderer.render(f), f.rule_id, f.indicator) for f in findings]                   # 4


async def _resolve(templates: Mapping[str, str], request: HookRequest, *, caller: Caller,
                   engine: Engine, to_read: prefetch.MedicationsToRead) -> prefetch.Resolved:
    return await prefetch.resolve(
        templates,
        request,
        http=engine.http,
        allowed_servers=caller.fhir_servers,
        timeout_s=engine.fhir_timeout_s,
        max_pages=engine.fhir_max_pages,
        max_response_bytes=engine.fhir_max_response_bytes,
        max_total_bytes=engine.fhir_max_total_bytes,
        medications_to_read=to_read,
        max_medication_reads=engine.fhir_max_medication_reads,
    )


def _still_to_read(pending: Pending, kb: Knowledge) -> prefetch.MedicationsToRead:
    """For a large call: the Medications its prefetch lacked, less those the fetched keys brought, plus those the
    fetched records name (less those the prefetch held)."""
    def to_read(data: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, str]:
        brought = {str(r.get("id")) for rs in data.values() for r in rs if r.get("resourceType") == "Medication"}
        left = {i: w for i, w in pending.medications.items() if i not in brought}
        return {**left, **medications_to_read(pending.request.context, data, kb,
                                              known=[*pending.known_medications, *left])}
    return to_read


async def _answer(service: CdsService, evaluated: Evaluated, *, engine: Engine, now: dt.datetime) -> CdsResponse:
    """Record what was answered (card map and issued-card record for feedback, metrics) — in the server process."""
    for state in evaluated.states.values():
        metrics.PREFETCH.labels(service=service.id, state=state).inc()
    cards: list[Card] = []
    for card, rule_id, indicator in evaluated.cards:
        engine.card_map.remember(card.uuid, rule_id, time.monotonic())
        metrics.CARDS.labels(service=service.id, rule_id=rule_id, indicator=indicator).inc()
        cards.append(card)
    if engine.issued is not None and cards:  # queued, written in the background
        await engine.issued.record([
            IssuedCard(card_uuid=card.uuid, service_id=service.id, rule_id=rule_id, indicator=indicator, issued_at=now)
            for card, rule_id, indicator in evaluated.cards
        ])
    log.info("hook answered", extra={"cards": len(cards), "states": evaluated.states})
    return CdsResponse(cards=cards)


def _payload(context: Mapping[str, Any], data: Mapping[str, list[Mapping[str, Any]]]) -> bytes | None:
    """Context and data as JSON for a worker (orjson writes 20 MiB in tens of ms; pickle takes ten times longer)."""
    try:
        return orjson.dumps({"context": context, "data": data})
    except TypeError:  # an integer past 64 bits: evaluate here
        return None


# --- run in a worker process (``service.offload``); each builds nothing the server process must see ----------------


def _prepare(service_id: str, body: bytes, parse: Parse, now: dt.datetime) -> Evaluated | Pending:
    """Parse a large body; evaluate it at once when its prefetch is complete, else say what to fetch."""
    ev = evaluator()
    service = ev.catalog[service_id]
    request = parse(service, body)
    hook_instance = request.hookInstance
    if service.hook in ("order-sign", "order-select") and not has_blinatumomab_draft(
        request.context, ev.kb, selections_only=service.hook == "order-select"
    ):
        return Evaluated([], hook_instance=hook_instance)
    resolved, missing, paged = prefetch.from_prefetch(service.prefetch, request)
    to_read = medications_to_read(request.context, resolved.data, ev.kb)
    if missing or paged or to_read:
        known = sorted({str(r.get("id")) for rs in resolved.data.values() for r in rs
                        if r.get("resourceType") == "Medication"})
        return Pending(request.model_copy(update={"prefetch": dict(paged)}), sorted(missing | set(paged)),
                       hook_instance=hook_instance, medications=dict(to_read), known_medications=known)
    return Evaluated(evaluate_cards(ev, service, request.context, resolved.data, now=now), resolved.states,
                     hook_instance=hook_instance)


def _finish(service_id: str, body: bytes, parse: Parse, fetched: bytes, fetched_states: dict[str, str],
            now: dt.datetime) -> Evaluated:
    """A large body again, with the data fetched for it (``fetched``: key → resources, as JSON)."""
    ev = evaluator()
    service = ev.catalog[service_id]
    request = parse(service, body)
    resolved, _, _ = prefetch.from_prefetch(service.prefetch, request)
    data = {**resolved.data, **orjson.loads(fetched)}
    return Evaluated(evaluate_cards(ev, service, request.context, data, now=now),
                     {**resolved.states, **fetched_states}, hook_instance=request.hookInstance)


def _evaluate_payload(service_id: str, payload: bytes, states: dict[str, str], now: dt.datetime) -> Evaluated:
    ev = evaluator()
    parsed = orjson.loads(payload)
    return Evaluated(evaluate_cards(ev, ev.catalog[service_id], parsed["context"], parsed["data"], now=now), states)


def _unreadable(data: Mapping[str, list[Mapping[str, Any]]], context: Mapping[str, Any],
                analyse: Callable[[Mapping[str, list[Mapping[str, Any]]], Mapping[str, Any]], object],
                ) -> InvalidRequest | None:
    """A 400 naming the invalid FHIR resource that made the analysis fail; ``None`` when no such resource did.

    A resource is blamed only on evidence: the analysis succeeds once every invalid resource is left out, and
    fails again when this one alone is put back. So an invalid resource elsewhere in the chart is never blamed
    for a failure it did not cause (that one is our bug: a 500, with the traceback logged).
    """
    drafts = draft_resources(context)
    invalid: list[tuple[int, tuple[str, str, str]]] = []
    for key, resources in data.items():
        for resource in resources:
            if (found := find_invalid_resource({key: [resource]}, [])) is not None:
                invalid.append((id(resource), found))
    for resource in drafts:
        if (found := find_invalid_resource({}, [resource])) is not None:
            invalid.append((id(resource), found))
    if not invalid or _fails(analyse, data, context, drop={i for i, _ in invalid}):
        return None
    for culprit, (where, ref, problem) in invalid:
        if _fails(analyse, data, context, drop={i for i, _ in invalid} - {culprit}):
            return InvalidRequest(f"{where}: {ref} is not valid FHIR R4 ({problem})", expression=[where])
    return None


def _fails(analyse: Callable[[Mapping[str, list[Mapping[str, Any]]], Mapping[str, Any]], object],
           data: Mapping[str, list[Mapping[str, Any]]], context: Mapping[str, Any], *, drop: set[int]) -> bool:
    """Whether the analysis fails on the data and drafts without the resources in ``drop`` (by identity)."""
    kept = {key: [r for r in resources if id(r) not in drop] for key, resources in data.items()}
    ctx = dict(context)
    draft = context.get("draftOrders")
    if isinstance(draft, Mapping) and isinstance(draft.get("entry"), list):
        ctx["draftOrders"] = {**draft, "entry": [
            e for e in draft["entry"] if not (isinstance(e, Mapping) and id(e.get("resource")) in drop)]}
    try:
        analyse(kept, ctx)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError):
        return True
    return False
