"""Deployment settings, read from ``BLINA_CDS_*`` environment variables.

These are deployment facts (where to listen, whom to trust, where to store feedback). Clinical
numbers never live here: they are in ``service/knowledge/*.toml``.

    BLINA_CDS_AUTH=off BLINA_CDS_PORT=8000 blina-cds serve
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CARDS_DIR = PACKAGE_DIR.parent / "cards"
DEFAULT_KNOWLEDGE_DIR = PACKAGE_DIR / "knowledge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLINA_CDS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    public_base_url: str = "http://127.0.0.1:8000"
    """The base URL the EHR uses to reach us; the JWT ``aud`` must be this plus the path called."""

    database_url: str = "sqlite:///./var/blina-cds.db"
    auth: Literal["jwt", "off"] = "jwt"
    trusted_issuers_file: Path | None = None
    cors_origins: str = "*"
    """``*`` or a comma-separated list of origins."""

    fhir_timeout_s: float = Field(default=5.0, gt=0)
    """Bound on all FHIR fetches of one hook call together."""
    fhir_max_pages: int = Field(default=20, ge=1)
    """Pages read per prefetch key. Past it, a search sorted newest first keeps its newest pages; others → 412."""
    fhir_max_medication_reads: int = Field(default=50, ge=0)
    """Medications read one by one per hook call (named by ``Medication/<id>``, neither prefetched nor contained:
    a draft's drug, or a server that ignores ``_include``); more → 412 (the one left unread could be blinatumomab)."""

    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Largest hook or feedback body accepted (prefetch Bundles can be large; a body past this is a 413)."""

    # Input bounds: nothing in a request may grow memory, logs or metrics without bound (README "Limits").
    max_hook_instance_chars: int = Field(default=128, ge=36)
    """Longest ``hookInstance`` accepted (the spec makes it a UUID: 36 characters); longer → 400."""
    max_feedback_items: int = Field(default=100, ge=1)
    """Most items in one feedback batch (an EHR sends one per card it showed; more → 413) and in any list inside
    an item (more → 400); nothing is stored."""
    max_feedback_text_chars: int = Field(default=2000, ge=64)
    """Longest text field of a feedback item (userComment, a reason's code/system/display, ids); longer → 400."""
    log_max_field_chars: int = Field(default=512, ge=64)
    """Longest string in a log line (message, hookInstance, any field); the rest is cut, so no request grows a log."""

    cards_dir: Path = DEFAULT_CARDS_DIR
    knowledge_dir: Path = DEFAULT_KNOWLEDGE_DIR
    card_map_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """How long the card uuid → rule id map keeps an entry, for feedback analytics."""
    jku_cache_ttl_s: int = Field(default=300, ge=0)
    jwt_leeway_s: int = Field(default=60, ge=0)
    jwt_max_lifetime_s: int = Field(default=3600, ge=60)
    """A JWT whose ``exp`` is further ahead than this is refused (the ``jti`` replay cache holds each until ``exp``)."""
    log_level: str = "INFO"

    # --- analyst tools: issued-card record and override analytics (service/store.py, service/analytics.py)
    issued_cards_queue_max: int = Field(default=10_000, ge=1)
    """Issued cards waiting to be written; when full (store unreachable) further records are dropped and counted."""
    issued_cards_batch_max: int = Field(default=500, ge=1)
    """Issued cards written per transaction."""
    issued_cards_flush_s: float = Field(default=0.2, gt=0)
    """Longest an issued card waits before its batch is written."""
    issued_card_ttl_s: int = Field(default=90 * 24 * 3600, ge=60)
    """How long the record of an issued card is kept (feedback takes its rule id from it; the report counts it)."""

    # --- the shared store: feedback, issued cards, JWT replay cache (README "Shared state and outages") ---------
    store_timeout_s: float = Field(default=1.0, gt=0)
    """Longest a call waits for the shared jti replay check before falling back to the in-process cache."""
    store_retry_s: float = Field(default=5.0, gt=0)
    """After a store failure, replay checks stay in-process this long before the store is tried again; also the
    ``Retry-After`` of a feedback 503."""
    store_purge_interval_s: float = Field(default=300.0, gt=0)
    """How often expired issued cards and replay-cache rows are deleted (in the background)."""
    store_purge_batch: int = Field(default=1000, ge=1)
    """Rows deleted per transaction by the purge (short transactions never hold up feedback or replay checks)."""
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    """How long a SQLite connection waits for another worker's write to finish before failing."""
    database_connect_timeout_s: int = Field(default=3, ge=2)
    """How long a PostgreSQL connection attempt may take (libpq ``connect_timeout``; its minimum is 2)."""

    analytics_reasons_max: int = Field(default=5, ge=1)
    """Override reasons listed per rule in the feedback report."""
    analytics_comments_max: int = Field(default=10, ge=0)
    """Clinicians' comments listed per rule in the feedback report (newest first)."""

    # /preview — the analysts' and testers' page (service/preview). Unset: on exactly when auth is off
    # (development, `make run`); a production deployment turns it on only with BLINA_CDS_PREVIEW=on.
    preview: Literal["on", "off"] | None = None
    preview_max_form_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Largest order-entry form accepted by /preview (a pasted hook request with its prefetch included)."""

    # --- availability: outbound reads, CPU work off the event loop, connections (README "Limits") ---------------
    fhir_max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest FHIR answer read, after decompression; past it the key is unavailable (412). A page of 5,000
    realistic lab Observations is 8.4 MB as servers send it (compact JSON) and 14.7 MB pretty-printed."""
    fhir_max_total_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """All FHIR answers of one hook call together (every key, every page); past it → 412."""
    fhir_keepalive_s: float = Field(default=4.0, gt=0)
    """An idle connection to a FHIR server is closed after this, before the server's own keep-alive timeout (5 s in
    uvicorn, Node and Apache), so a request is rarely sent on a connection the server is closing."""
    fhir_max_connections: int = Field(default=100, ge=1)
    """Open connections to FHIR servers, all hook calls of the process together; a request beyond waits for one
    (within the call's deadline). One hook call without prefetch opens about 8 at once."""
    fhir_max_idle_connections: int = Field(default=20, ge=0)
    """Idle connections kept open to FHIR servers for the next call (each is a file descriptor)."""
    ca_bundle: Path | None = None
    """PEM file of extra CAs trusted for every outbound TLS call (FHIR servers, jku), beside the public ones."""
    cpu_pool: Literal["process", "thread"] = "process"
    """Where large hook calls are parsed and evaluated: worker processes (the event loop keeps answering) or threads
    (measured: the interpreter lock then still stalls /healthz for seconds; kept for comparison only)."""
    cpu_workers: int = Field(default=1, ge=1)
    """Worker processes per server process for large hook calls (started on the first one)."""
    cpu_deadline_s: float = Field(default=20.0, gt=0)
    """Time a large hook call may spend in its worker (parsing, timeline, rules, cards) before a 503. A maximal
    (20 MiB) call took 2-6 s on a loaded 2-core machine."""
    cpu_inline_max_bytes: int = Field(default=256 * 1024, ge=0)
    """Hook bodies (and FHIR data fetched for them) up to this size are evaluated on the event loop: at most about
    35 ms of it (an ordinary 50 KB call takes 4 ms; a worker round trip adds 1.5 ms). Larger ones go to a worker."""
    limit_concurrency: int = Field(default=2000, ge=1)
    """Open connections plus running requests per server process before uvicorn answers 503."""
    keepalive_timeout_s: int = Field(default=5, ge=1)
    """An idle keep-alive connection is closed after this many seconds."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must deliver a complete request head within this many seconds of opening (or of its last
    response), else it is closed: idle and slow-header connections cannot pile up."""
    max_header_bytes: int = Field(default=64 * 1024, ge=8192)
    """Largest request head (request line and headers) buffered while incomplete; a JWT may be 16 KiB."""

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _jwt_needs_issuers(self) -> Settings:
        if self.auth == "jwt" and self.trusted_issuers_file is None:
            raise ValueError(
                "BLINA_CDS_AUTH=jwt needs BLINA_CDS_TRUSTED_ISSUERS_FILE "
                "(set BLINA_CDS_AUTH=off for local development only)"
            )
        return self

    @property
    def preview_enabled(self) -> bool:
        return self.preview == "on" if self.preview is not None else self.auth == "off"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
