"""CDS Hooks 2.0 wire shapes (pydantic v2).

Requests are parsed strictly (a string where the spec says string, no silent coercion) and tolerate
unknown fields: "a service must tolerate unknown context fields", and ``extension`` is a reserved
slot on any object. Responses are built from these models and serialised with ``exclude_none`` so no
optional field is ever ``null``; empty lists are never produced (spec: "JSON elements SHALL NOT be empty").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

FHIR_ID_PATTERN = r"^(?!\.+$)[A-Za-z0-9\-.]{1,64}$"
"""FHIR R4 ``id`` (a context value that goes into a URL must be one: no ``/``, ``?``, ``&``, ``,`` or ``%``)."""
_FHIR_ID = re.compile(FHIR_ID_PATTERN)


def is_fhir_id(value: str) -> bool:
    """A FHIR id, and not ``.`` or ``..`` (which a URL would read as a path step)."""
    return bool(_FHIR_ID.fullmatch(value))  # fullmatch: "$" alone would let a final newline through


_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
FHIR_SERVER_PATTERN = rf"^https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?(?::{_PORT})?(?:/[^?#@\x00-\x20\x7f]*)?$"
"""``fhirServer``: scheme, host name, optional port and path — no query, fragment, user information or IP-v6 literal."""
_FHIR_SERVER = re.compile(FHIR_SERVER_PATTERN)


def _fhir_id(value: str) -> str:
    if not is_fhir_id(value):
        raise ValueError("must be a FHIR id: 1-64 of A-Z a-z 0-9 - . (and not only dots)")
    return value


FhirId = Annotated[
    str,
    AfterValidator(_fhir_id),
    WithJsonSchema({"type": "string", "pattern": FHIR_ID_PATTERN, "description": "a FHIR id, not only dots"}),
]

# ---------------------------------------------------------------- requests


class _Lenient(BaseModel):
    """Strict types, unknown fields accepted (and ignored)."""

    model_config = ConfigDict(strict=True, extra="allow")


class FhirAuthorization(_Lenient):
    # RFC 6750 b64token: it goes into an Authorization header, which is ASCII
    access_token: str = Field(repr=False, pattern=r"^[A-Za-z0-9\-._~+/]+=*$")
    token_type: str
    expires_in: StrictInt
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # never let a token reach a log through repr()
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r})"

    __str__ = __repr__


class HookRequest(_Lenient):
    """The body of ``POST /cds-services/{id}``."""

    hook: str
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _absolute_url(cls, v: str | None) -> str | None:
        # A base URL and nothing else: a query or fragment would ride along on every fetch (``?_type=…&x=``
        # turns each read into a system-wide search), userinfo would send credentials we never chose.
        if v is not None and not _FHIR_SERVER.fullmatch(v):
            raise ValueError("fhirServer must be an http(s) base URL: a host name, an optional port and path, "
                             "no query, fragment or user information")
        return v

    @model_validator(mode="after")
    def _authorization_needs_server(self) -> HookRequest:
        # Spec: "If fhirAuthorization is provided, this field is REQUIRED."
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer is required when fhirAuthorization is present")
        return self


class PatientViewContext(_Lenient):
    userId: str
    patientId: FhirId
    encounterId: FhirId | None = None


class _Bundle(_Lenient):
    resourceType: Literal["Bundle"]
    entry: list[dict[str, Any]] | None = None


class OrderSignContext(PatientViewContext):
    draftOrders: _Bundle


class OrderSelectContext(OrderSignContext):
    selections: list[str] = Field(min_length=1)


# ---------------------------------------------------------------- responses


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Coding(_Out):
    system: str
    code: str
    display: str | None = None


class Source(_Out):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Out):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _resource_matches_type(self) -> Action:
        # Spec: create/update "SHALL contain the new resource" / the whole updated one; a delete names its
        # target by resourceId (a resource on a delete is deprecated; cds-resp-2).
        if self.type == "delete" and (self.resourceId is None or self.resource is not None):
            raise ValueError("cds-resp-2: a delete action needs resourceId and no resource")
        if self.type != "delete" and self.resource is None:
            raise ValueError(f"a {self.type} action needs the resource")
        return self


class Suggestion(_Out):
    label: str = Field(min_length=1)
    uuid: str
    isRecommended: bool | None = None
    actions: list[Action] | None = Field(default=None, min_length=1)


class Link(_Out):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Out):
    uuid: str
    summary: str = Field(min_length=1, max_length=139)  # spec: "<140-character summary"; never empty
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = Field(default=None, min_length=1)
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = Field(default=None, min_length=1)
    links: list[Link] | None = Field(default=None, min_length=1)
    extension: dict[str, Any] | None = None
    """Provenance (``blina-cds.provenance``: rule id, knowledge hash, card file); see ``service.render``."""

    @model_validator(mode="after")
    def _spec_invariants(self) -> Card:
        if self.suggestions and not self.selectionBehavior:
            raise ValueError("cds-resp-6: suggestions need selectionBehavior")
        for reason in self.overrideReasons or ():
            if not reason.display:
                raise ValueError("cds-resp-4: every override reason needs a display")
        return self


class CdsResponse(_Out):
    cards: list[Card]


# ---------------------------------------------------------------- feedback


class AcceptedSuggestion(_Lenient):
    id: str = Field(min_length=1)


class FeedbackCoding(_Lenient):
    code: str
    system: str
    display: str | None = None


class OverrideReason(_Lenient):
    reason: FeedbackCoding | None = None
    userComment: str | None = None


class FeedbackItem(_Lenient):
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: AwareDatetime

    @field_validator("outcomeTimestamp", mode="before")
    @classmethod
    def _rfc3339(cls, v: Any) -> Any:
        # strict mode would refuse the ISO string; parse it here and insist on a zone (RFC 3339 §5.6)
        if isinstance(v, str):
            from datetime import datetime

            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError("outcomeTimestamp must be an RFC 3339 date-time") from exc
        return v

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        # Spec: acceptedSuggestions is "Required for accepted outcomes."
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when outcome is 'accepted'")
        return self


class FeedbackRequest(_Lenient):
    feedback: list[FeedbackItem] = Field(min_length=1)


class FeedbackResponse(_Out):
    received: int = Field(ge=0)
    """Items in the batch."""
    stored: int = Field(ge=0)
    """Items stored now (an item already stored is received again but not stored twice)."""


# ---------------------------------------------------------------- discovery, health, errors (for the OpenAPI document)


class DiscoveryService(_Out):
    hook: str
    id: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(_Out):
    services: list[DiscoveryService]


class Health(_Out):
    status: Literal["ok", "degraded"]
    """``degraded``: hook calls answer, feedback is refused (503) until the store is back."""
    store: Literal["ok", "unreachable"]


class Live(_Out):
    """``/livez``: the process answers; the store is not asked."""

    status: Literal["ok"]


class OperationOutcomeIssue(_Out):
    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = Field(default=None, min_length=1)


class OperationOutcome(_Out):
    """Every error answer (4xx and 5xx): a FHIR R4 OperationOutcome naming the problem and the field."""

    resourceType: Literal["OperationOutcome"]
    issue: list[OperationOutcomeIssue] = Field(min_length=1)
