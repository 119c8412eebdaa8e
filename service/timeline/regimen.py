"""Which blinatumomab regimen the patient is on, and why the service thinks so.

Dose schedule, cycle limit, treatment-free interval and premedication all depend on the indication,
and FHIR has no standard element for it. In order: the order's ``instantiatesCanonical`` (the knowledge
maps canonicals such as ``urn:blina-cds:regimen:mrd-positive`` to regimens), then a coded order reason
or Condition in the knowledge's ``reason_map``, then the configured default (relapsed/refractory). The
card says which it was, because a wrong assumption changes every number on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.fhir.extract import codings
from service.knowledge import Knowledge
from service.timeline.model import BlinOrder, Regimen


def determine_regimen(
    orders: Iterable[BlinOrder], conditions: Iterable[Mapping[str, Any]], *, kb: Knowledge
) -> Regimen:
    ordered = sorted(orders, key=lambda o: (not o.in_focus, not o.draft))
    for order in ordered:
        for url in order.instantiates:
            name = kb.regimens.by_canonical(url)
            if name:
                return Regimen(id=name, why="order-canonical", evidence=url)
    reasons: list[Mapping[str, Any]] = []
    for order in ordered:
        reasons.extend(r for r in order.resource.get("reasonCode") or () if isinstance(r, Mapping))
    for cond in conditions:
        if cond.get("resourceType") == "Condition" and isinstance(cond.get("code"), Mapping):
            reasons.append(cond["code"])
    for concept in reasons:
        for coding in codings(concept):
            system = coding.get("system")
            key = kb.codes.system_key(system) if isinstance(system, str) else None
            for m in kb.regimens.reason_map:
                if m.system == key and m.code == coding.get("code"):
                    return Regimen(id=m.regimen, why="condition", evidence=f"{system}|{m.code}")
    return Regimen(id=kb.regimens.default_regimen, why="default")
