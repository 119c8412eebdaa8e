"""Prometheus metrics, exported at ``/metrics``.

Labels never carry patient data: services, rules, indicators, resource types and outcomes only.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "blina_cds_requests_total", "HTTP requests answered", ["route", "method", "status"]
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
