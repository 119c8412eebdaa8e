"""Phrase facts of the toxicity cards: what a card file prints as it is, so the file stays sentences.

The cards (``cards/crs-*.toml``, ``neuro-*.toml``, ``seizure.toml``, ``adverse-event-*.toml``,
``toxicity-grade-unknown.toml``, ``restart-premature.toml``) get, besides the numbers and codes, ready-made
phrases: the event's name, the grading note, doses with their units for the patient's weight band, the
regimen's source, yes/no flags for each reason, and lists of ready lines. A card never computes: it prints
``{{ phrase }}`` and at most tests a flag with ``{% if flag %}``.

A phrase is plain text: the ``detail`` of a card escapes every fact (``(`` becomes ``\\(``), so a phrase shows
as written and only the card file's own Markdown formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.rules.phrases import ug_per_day as ug_day
from service.rules.phrases import ug_per_m2_per_day as ug_m2_day

__all__ = ["FAMILY_NAMES", "by_band", "event_name", "grading_note", "ordinal", "records_phrase", "seizure_line",
           "ug_day", "ug_m2_day", "with_small_band"]

FAMILY_NAMES: Mapping[str, str] = {
    "crs": "Cytokine release syndrome",
    "neuro": "Neurological toxicity",
    "other": "Adverse event",
    "seizure": "Seizure",
    "overdose": "Overdose",
    "flush": "Line flush",
}
"""The name a card prints when the chart gives the event no name of its own."""

ORDINALS: Mapping[int, str] = {2: "second", 3: "third", 4: "fourth"}

def event_name(label: str | None, family: str | None) -> str:
    """The event as charted, else its family's name (``Cytokine release syndrome``)."""
    if label:
        return label
    return FAMILY_NAMES.get(family or "", "Adverse event")


def grading_note(system: str | None, default_system: str, *, from_text: bool) -> str:
    """What the grade rests on: ``CTCAE v5.0`` or that no system was stated, and whether text gave it."""
    note = system or f"grading system not stated; the label's table used {default_system}"
    return f"{note}; grade parsed from free text" if from_text else note


def by_band(adult: str | None, small: str | None, band_kg: float | int, small_patient: bool | None) -> str | None:
    """The dose for the patient's weight band; both bands when the weight is unknown."""
    return small if small_patient is True else with_small_band(adult, small, band_kg, small_patient)


def with_small_band(adult: str | None, small: str | None, band_kg: float | int,
                    small_patient: bool | None) -> str | None:
    """The adult dose, and the under-band dose too unless the patient is known to be at or above the band."""
    if small_patient is False or small is None:
        return adult
    return f"{adult} (under {band_kg} kg: {small})"


def ordinal(n: int) -> str:
    return ORDINALS.get(n, "further")


def seizure_line(episode: Mapping[str, Any]) -> str:
    """One distinct seizure for a list: ``2026-03-09 06:00 UTC: Seizure, 2 seizures charted — recorded by …``."""
    count = f" ({episode['count']} seizures charted)" if episode["count"] > 1 else ""
    refs = ", ".join(s["ref"] for s in episode["sources"])
    return f"{episode['at']}: {episode['label'] or FAMILY_NAMES['seizure']}{count} — recorded by {refs}"


def records_phrase(sources: Sequence[Mapping[str, Any]]) -> str:
    """The records of one seizure: ``Observation 2026-03-09 06:00 UTC; Condition 2026-03-09 06:10 UTC``."""
    return "; ".join(f"{s['type']} {s['at']}" for s in sources)
