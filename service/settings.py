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
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
