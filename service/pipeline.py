"""The spine of a hook call. Read this file first.

    POST /cds-services/{id}        (routes.py validated the request)
      1. prefetch.resolve()        prefetch first; fetch only missing keys from fhirServer; 412 if impossible
      2. build_timeline()          normalise once: orders, infusions, steroids, labs with ULN, body size, toxicity
      3. rules.evaluate()          pure functions (timeline, knowledge) → findings; never text
      4. renderer.render()         findings + cards/<rule-id>.toml → spec-valid cards
      → {"cards": [...]}

Nothing else calls the rules or the card templates.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from service import metrics
from service.catalog import CdsService
from service.errors import InvalidRequest
from service.fhir import prefetch
from service.fhir.extract import find_invalid_resource
from service.knowledge import Knowledge
from service.render import CardRenderer
from service.rules import evaluate
from service.schemas import Card, CdsResponse, HookRequest
from service.timeline import build_timeline, draft_resources, has_blinatumomab_draft

if TYPE_CHECKING:
    from service.auth import Caller
    from service.store import CardMap

log = logging.getLogger("blina_cds.pipeline")

_RANK = {"critical": 0, "warning": 1, "info": 2}


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


async def run(service: CdsService, request: HookRequest, *, caller: Caller, engine: Engine,
              now: dt.datetime) -> CdsResponse:
    context = request.context
    if service.hook in ("order-sign", "order-select") and not has_blinatumomab_draft(
        context, engine.kb, selections_only=service.hook == "order-select"
    ):
        return CdsResponse(cards=[])  # not a blinatumomab order: nothing to check, nothing to fetch

    resolved = await prefetch.resolve(                                                     # 1
        service.prefetch,
        request,
        http=engine.http,
        allowed_servers=caller.fhir_servers,
        timeout_s=engine.fhir_timeout_s,
        max_pages=engine.fhir_max_pages,
    )
    for state in resolved.states.values():
        metrics.PREFETCH.labels(service=service.id, state=state).inc()

    try:
        timeline = build_timeline(hook=service.hook, context=context, data=resolved.data, kb=engine.kb, now=now)  # 2
        findings = evaluate(timeline, engine.kb, rule_ids=service.rule_ids)                # 3
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        unreadable = _unreadable(resolved.data, context, lambda data, ctx: evaluate(
            build_timeline(hook=service.hook, context=ctx, data=data, kb=engine.kb, now=now), engine.kb,
            rule_ids=service.rule_ids))
        if unreadable is None:
            raise  # not caused by one invalid resource: our bug, a 500 with the traceback logged
        raise unreadable from exc
    findings.sort(key=lambda f: _RANK[f.indicator])
    cards: list[Card] = []
    for finding in findings:                                                               # 4
        card = engine.renderer.render(finding)
        engine.card_map.remember(card.uuid, finding.rule_id, time.monotonic())
        metrics.CARDS.labels(service=service.id, rule_id=finding.rule_id, indicator=finding.indicator).inc()
        cards.append(card)
    log.info("hook answered", extra={"cards": len(cards), "states": resolved.states})
    return CdsResponse(cards=cards)


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
