"""What a rule returns: findings (rule id, indicator, facts, fix), never text.

A rule is a pure function ``(timeline, knowledge) -> Iterable[Finding]``. It never calls the clock
(``timeline.now`` is the request's instant), never touches HTTP, and never writes a sentence a
clinician reads: the words come from ``cards/<rule_id>.toml``, which receives ``facts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from service.knowledge import Knowledge
    from service.timeline import Timeline

Indicator = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Action:
    """One CDS Hooks suggestion action; its ``description`` comes from the card file.

    ``key`` names the card file's ``[actions.<key>]`` table that words it, e.g. ``create-steroid``.
    """

    type: Literal["create", "update", "delete"]
    key: str
    resource: Mapping[str, Any] | None = None
    resource_id: str | None = None


@dataclass(frozen=True)
class Finding:
    """A rule's verdict. ``facts`` are plain JSON-able values the card template may use."""

    rule_id: str
    indicator: Indicator
    facts: Mapping[str, Any] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    about: str | None = None
    """The record the finding concerns, e.g. ``MedicationRequest/abc`` (for logs and de-duplication)."""


Rule = Callable[["Timeline", "Knowledge"], Iterable[Finding]]
