"""Builders for the CDS Hooks suggestion actions our rules attach to findings.

Rules decide *that* a suggestion applies; these functions build the action (the card file words it via
``[actions.<key>]``). Shared by the medication and threshold rule families.
"""

from __future__ import annotations

from service.rules.base import Action
from service.timeline.model import BlinOrder


def remove_order(order: BlinOrder) -> Action:
    """Delete the draft blinatumomab order (the EHR removes it from the order session).

    CDS Hooks: a ``delete`` action names the resource by ``resourceId`` (``MedicationRequest/<id>``).
    """
    return Action(type="delete", key="remove-order", resource_id=order.ref)
