"""Shared shapes for knowledge files: provenance on every entry, strict parsing."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every knowledge model: unknown keys are an error (a typo must stop start-up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(Strict):
    """Where a fact comes from and when a person last checked it.

    ``confidence``: ``verified`` (wording read in the source), ``secondary`` (a copy or summary of
    the label), ``unconfirmed`` (not confirmed against the current label: a pharmacist must check
    it; cards built on it say so).
    """

    source: str
    reviewed_on: dt.date
    confidence: Literal["verified", "secondary", "unconfirmed"]
