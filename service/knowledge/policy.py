"""``policy.toml``: which patients patient-view summarises and how a stop reason is read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, PositiveInt, field_validator

from service.knowledge.base import Provenance, Strict


class PatientView(Provenance):
    lookback_days: PositiveInt


class StopReasons(Provenance):
    """Case-insensitive patterns over a stopping administration's ``statusReason``, per reason."""

    overdose: tuple[str, ...]
    flush: tuple[str, ...]
    adverse_event: tuple[str, ...]

    @field_validator("overdose", "flush", "adverse_event")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad pattern {p!r}: {exc}") from None
        return patterns


class Observations(Provenance):
    statuses: tuple[str, ...] = Field(min_length=1)


class Policy(Strict):
    patient_view: PatientView
    stop_reasons: StopReasons
    observations: Observations

    # Built once per load (a plain instance attribute set past pydantic's frozen __setattr__, as in codes.py):
    # every stopped blinatumomab administration of every call is read against these.
    stop_reason_patterns: ClassVar[Mapping[str, tuple[re.Pattern[str], ...]]]
    """Reason (as ``InfusionPeriod.stop_reason``) → compiled case-insensitive patterns, in the order they are tried."""

    def model_post_init(self, context: Any, /) -> None:
        s = self.stop_reasons
        patterns = {"overdose": s.overdose, "flush": s.flush, "adverse-event": s.adverse_event}
        object.__setattr__(self, "stop_reason_patterns", {
            reason: tuple(re.compile(p, re.IGNORECASE) for p in ps) for reason, ps in patterns.items()
        })
