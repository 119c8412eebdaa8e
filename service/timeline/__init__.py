"""Build the patient timeline once per hook call (pipeline step 2).

``build_timeline`` normalises the resolved FHIR data (dicts) into :class:`Timeline`; rules read only
the timeline. Sub-builders live beside this file, one per kind of record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from service.fhir.extract import bundle_resources
from service.knowledge import Knowledge
from service.timeline.model import HookName, Timeline

__all__ = ["Timeline", "build_timeline", "draft_resources", "has_blinatumomab_draft"]


def draft_resources(context: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The resources of ``context.draftOrders`` (order-sign, order-select); empty for patient-view."""
    draft = context.get("draftOrders")
    return bundle_resources(draft) if isinstance(draft, Mapping) else []


def has_blinatumomab_draft(context: Mapping[str, Any], kb: Knowledge, *, selections_only: bool = False) -> bool:
    """Whether a draft MedicationRequest is blinatumomab (no such draft → the order hooks return no cards).

    With ``selections_only`` (order-select) only the drafts named in ``context.selections`` count:
    "Decision support should focus on the 'selected' orders".
    """
    selections = context.get("selections") if selections_only else None
    wanted = {s for s in selections if isinstance(s, str)} if isinstance(selections, list) else None
    for resource in draft_resources(context):
        if resource.get("resourceType") != "MedicationRequest":
            continue
        if wanted is not None and f"MedicationRequest/{resource.get('id')}" not in wanted:
            continue
        concept = resource.get("medicationCodeableConcept")
        if isinstance(concept, Mapping) and kb.codes.matching_concept(concept, ("blinatumomab",)):
            return True
    return False


def build_timeline(
    *,
    hook: HookName,
    context: Mapping[str, Any],
    data: Mapping[str, Sequence[Mapping[str, Any]]],
    kb: Knowledge,
    now: dt.datetime,
) -> Timeline:
    """``data`` maps each prefetch key to its resources (already resolved; ``null`` became ``[]``)."""
    return Timeline(now=now, hook=hook)
