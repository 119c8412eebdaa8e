"""Prometheus metrics, exported at ``/metrics``.

Every label has a fixed, bounded set of values — service ids from the catalog, rule ids, indicators,
resource types from our own prefetch templates, prefetch states, outcomes, status classes — and never a
value from a request or from the FHIR server: the endpoint is unauthenticated, and each new label value is
a new series held in memory for the life of the process. Values that come from outside (an HTTP method,
a status code) go through :func:`method_label` and :func:`status_class` first.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "blina_cds_requests_total", "HTTP requests answered, by route template, method and status class",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "blina_cds_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CARDS = Counter("blina_cds_cards_total", "Cards returned", ["service", "rule_id", "indicator"])
FHIR_FETCHES = Counter(
    "blina_cds_fhir_fetches_total", "Outbound FHIR requests by outcome", ["resource_type", "outcome"]
)
FHIR_LATENCY = Histogram(
    "blina_cds_fhir_fetch_seconds",
    "Outbound FHIR request latency",
    ["resource_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREFETCH = Counter(
    "blina_cds_prefetch_keys_total",
    "Prefetch keys by how they were satisfied",
    ["service", "state"],
)
FEEDBACK = Counter("blina_cds_feedback_total", "Feedback items received", ["service", "outcome"])

METHODS = frozenset({"GET", "POST", "OPTIONS", "HEAD"})


def method_label(method: str) -> str:
    """The request's method, or ``other`` for any method we do not serve (a client may send any token)."""
    return method if method in METHODS else "other"


def status_class(status: int) -> str:
    """``404`` → ``4xx``; anything outside 100-599 → ``other``."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def observe_request(*, route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request; ``route`` is a route template, never the raw path."""
    label = method_label(method)
    REQUESTS.labels(route=route, method=label, status=status_class(status)).inc()
    LATENCY.labels(route=route, method=label).observe(seconds)


# --- the shared store (service/store.py): degradations are counted, never silent -------------------------------
STORE_FAILURES = Counter(
    "blina_cds_store_failures_total",
    "Store operations that failed (database unreachable or busy), by operation",
    ["operation"],  # jti | issued_cards | feedback | purge
)
ISSUED_CARDS_DROPPED = Counter(
    "blina_cds_issued_cards_dropped_total",
    "Issued-card records dropped because the queue was full while the store was unreachable",
)
JTI_LOCAL_ONLY = Counter(
    "blina_cds_jti_checked_locally_total",
    "Tokens accepted on the in-process replay cache alone because the shared store was unavailable",
)
STORE_PURGED = Counter("blina_cds_store_purged_rows_total", "Expired rows removed, by table", ["table"])
