"""Every error the service raises, and the HTTP status each one becomes.

The tree::

    CdsServiceError                      (never raised itself)
      ├─ InvalidRequest        → 400     malformed JSON, missing or mistyped field, hook ≠ service
      ├─ PayloadTooLarge       → 413     body over BLINA_CDS_MAX_BODY_BYTES, feedback batch over
      │                                  BLINA_CDS_MAX_FEEDBACK_ITEMS
      ├─ UnsupportedMediaType  → 415     a body that is not declared JSON
      ├─ AuthError             → 401     any JWT check failed; the body never says which
      ├─ UnknownService        → 404     no service with that id
      ├─ PrefetchUnavailable   → 412     spec: "If the CDS Service is unable to obtain required data
      │                                  because it cannot access the FHIR server … SHALL respond with
      │                                  an HTTP 412 Precondition Failed status code."
      ├─ StoreUnavailable      → 503     feedback could not be committed; nothing was acknowledged;
      │                                  ``Retry-After`` (BLINA_CDS_STORE_RETRY_S)
      └─ EvaluationTimeout     → 503     a large call outran BLINA_CDS_CPU_DEADLINE_S, or its worker was lost
    KnowledgeError                       bad knowledge or card file; stops start-up, never a request

Each error carries its context as keyword-only attributes, and each is turned into a FHIR
OperationOutcome body by ``service.main`` (CDS Hooks 3.0 recommends OperationOutcome bodies;
2.0 prescribes none, so this is forward compatible).
"""

from __future__ import annotations

import math
from typing import Any


def clip(value: str, limit: int = 64) -> str:
    """A request value quoted in a message or log line, bounded (the rest is replaced by an ellipsis)."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class CdsServiceError(Exception):
    """Base of every error that becomes an HTTP response."""

    status_code: int = 500
    issue_code: str = "exception"  # FHIR IssueType

    def __init__(self, message: str, *, expression: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression or []

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. ``Retry-After``)."""
        return {}

    def operation_outcome(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": "error",
            "code": self.issue_code,
            "diagnostics": self.message,
        }
        if self.expression:
            issue["expression"] = self.expression
        return {"resourceType": "OperationOutcome", "issue": [issue]}


class InvalidRequest(CdsServiceError):
    """The request body is not a valid CDS Hooks 2.0 request for this service."""

    status_code = 400
    issue_code = "invalid"

    def __init__(self, message: str, *, expression: list[str] | None = None,
                 problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, expression=expression)
        self.problems = problems or []

    def operation_outcome(self) -> dict[str, Any]:
        if not self.problems:
            return super().operation_outcome()
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": p["message"],
                 "expression": [p["field"]]}
                for p in self.problems
            ],
        }


class PayloadTooLarge(CdsServiceError):
    """The request body is larger than the configured maximum."""

    status_code = 413
    issue_code = "too-costly"

    def __init__(self, message: str | None = None, *, limit: int, expression: list[str] | None = None) -> None:
        super().__init__(message or f"Request body is larger than {limit} bytes", expression=expression or ["body"])
        self.limit = limit


class UnsupportedMediaType(CdsServiceError):
    """The request body is not declared as JSON (``application/json`` or ``application/fhir+json``)."""

    status_code = 415
    issue_code = "not-supported"

    def __init__(self) -> None:
        super().__init__("Content-Type must be application/json or application/fhir+json", expression=["body"])


class AuthError(CdsServiceError):
    """The caller's JWT is missing or failed a check.

    ``reason`` names the failed check for the log only; the response body never carries it
    (best practice: "responding … with a HTTP 401 Unauthorized … without any additional information").
    """

    status_code = 401
    issue_code = "login"

    def __init__(self, reason: str) -> None:
        super().__init__("Authentication failed")
        self.reason = reason


class UnknownService(CdsServiceError):
    """No CDS service has this id."""

    status_code = 404
    issue_code = "not-found"

    def __init__(self, *, service_id: str) -> None:
        super().__init__(f"Unknown CDS service id '{clip(service_id)}'")
        self.service_id = service_id


class PrefetchUnavailable(CdsServiceError):
    """Data a rule needs is neither prefetched nor obtainable from ``fhirServer``."""

    status_code = 412
    issue_code = "incomplete"

    def __init__(self, message: str, *, prefetch_keys: list[str], expression: list[str] | None = None) -> None:
        super().__init__(message, expression=expression or [f"prefetch.{k}" for k in prefetch_keys])
        self.prefetch_keys = prefetch_keys


class StoreUnavailable(CdsServiceError):
    """The feedback store could not commit; the client may retry (feedback is idempotent)."""

    status_code = 503
    issue_code = "transient"

    def __init__(self, *, retry_after_s: float) -> None:
        super().__init__("Feedback could not be stored; nothing was recorded, please retry")
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class EvaluationTimeout(CdsServiceError):
    """A large hook call was not evaluated within its deadline; its worker was stopped, nothing was answered."""

    status_code = 503
    issue_code = "timeout"

    def __init__(self, *, deadline_s: float) -> None:
        super().__init__(
            f"The request could not be evaluated within {deadline_s:g} s (BLINA_CDS_CPU_DEADLINE_S); "
            "nothing was answered, please retry"
        )
        self.deadline_s = deadline_s


class KnowledgeError(Exception):
    """A knowledge or card file is invalid. Raised at start-up with the file and key named."""

    def __init__(self, message: str, *, file: str, key: str | None = None, line: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else file
        where = f"{where}: {key}" if key else where
        super().__init__(f"{where}: {message}")
        self.file = file
        self.key = key
        self.line = line
        self.reason = message
