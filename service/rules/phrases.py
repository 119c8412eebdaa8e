"""Ready-made phrases for the card files: the rules hand templates words, never codes to translate.

A card file is prose an analyst edits (``cards/README.md``): sentences with ``{{ placeholders }}`` and at most a
plain ``{% if flag %}``. Whatever needs a choice — which words for which event kind, a plural, "as written in the
order" or "derived from the history", a time in the one display format — is made here, once, and used by every
rule. Each function takes plain values (no timeline), so a rule anywhere can call it.

One time format for every card: :func:`clock` — the date and the time in the zone the chart recorded them, with the
zone spelled out (``2026-03-05 14:20 UTC``, ``2026-03-05 14:20 UTC+01:00``); a date alone is :func:`date`
(``2026-03-05``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

EVENT_NAMES = {
    "cycle-start": "cycle start",
    "step": "step dose",
    "re-escalation": "re-escalation",
    "restart": "restart",
    "continuation": "continuation",
    "dose-change": "dose change",
}
"""What a card calls each course event (``CoursePosition.event``)."""

REGIMEN_SOURCES = {
    "order-canonical": "from the order's protocol reference",
    "condition": "from the coded diagnosis",
}
REGIMEN_ASSUMED = "assumed (the service default): no protocol reference or mapped diagnosis on record"


def clock(value: dt.datetime | None) -> str | None:
    """A time as every card prints it: ``2026-03-05 14:20 UTC`` or ``2026-03-05 14:20 UTC+01:00``.

    The zone is the one the chart recorded (a nurse reads the clock of the ward); it is never converted.
    """
    if value is None:
        return None
    offset = value.utcoffset()
    if offset is None:
        return f"{value:%Y-%m-%d %H:%M}"
    if not offset:
        return f"{value:%Y-%m-%d %H:%M} UTC"
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{value:%Y-%m-%d %H:%M} UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def date(value: dt.datetime | dt.date | None) -> str | None:
    """A date as every card prints it: ``2026-03-05`` (a datetime's own date, in its recorded zone)."""
    if value is None:
        return None
    return (value.date() if isinstance(value, dt.datetime) else value).isoformat()


def plural(count: float | int | None, word: str, words: str | None = None) -> str:
    """``1 day``, ``3 days``, ``1 hour``, ``1.5 hours`` (``None`` → the plural alone)."""
    many = words or f"{word}s"
    if count is None:
        return many
    return f"{count} {word if count == 1 else many}"


def event_name(event: str | None) -> str | None:
    """``cycle start``, ``step dose``, ``restart``…"""
    return EVENT_NAMES.get(event, event) if event is not None else None


def event_phrase(event: str | None, restart_threshold_hours: float | int) -> str | None:
    """The event with what makes it one: ``restart after an interruption of 4 hours or more``."""
    if event == "restart":
        return f"restart after an interruption of {plural(restart_threshold_hours, 'hour')} or more"
    return event_name(event)


def bag_phrase(hours: float | None) -> str | None:
    """A bag by its length: ``168`` → "7-day", ``96`` → "96-hour"; ``None`` when the length is not known."""
    if hours is None:
        return None
    if hours >= 168 and hours % 24 == 0:
        return f"{hours / 24:g}-day"
    return f"{hours:g}-hour"


def either(items: list[str | None]) -> str:
    """``["72-hour", "96-hour", "7-day"]`` → "72-hour, 96-hour or 7-day" (unknown items left out)."""
    words = [w for w in items if w]
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else "".join(words)


def mg(value: float | int | None) -> str | None:
    """``20 mg``."""
    return None if value is None else f"{value} mg"


def ug_per_day(value: float | int | None) -> str | None:
    """``28 µg/day``."""
    return None if value is None else f"{value} µg/day"


def ug_per_m2_per_day(value: float | int | None) -> str | None:
    """``15 µg/m²/day``."""
    return None if value is None else f"{value} µg/m²/day"


def steroid_dose(agent: str, dose_mg: float | int | None, dose_mg_per_m2: float | int | None,
                 max_mg: float | int | None = None) -> str:
    """``dexamethasone 20 mg``, ``dexamethasone 5 mg/m²`` or ``dexamethasone 5 mg/m² (maximum 20 mg)``."""
    if dose_mg is not None:
        return f"{agent} {dose_mg} mg"
    text = f"{agent} {dose_mg_per_m2} mg/m²"
    return f"{text} (maximum {max_mg} mg)" if max_mg is not None else text


def context_phrases(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The context every card shows (``_defaults.toml [blocks] context``), worded from ``context_facts``' keys.

    ``regimen_source`` and ``regimen_code`` (the protocol reference or diagnosis code, ``None`` when assumed),
    ``regimen_unconfirmed``, ``position_phrase``, ``weight_phrase``, ``weight_band_phrase``, ``age_phrase``,
    ``event_name``.
    """
    why = facts.get("regimen_why")
    cycle, day = facts.get("cycle"), facts.get("day")
    derived_cycle, derived_day = facts.get("derived_cycle"), facts.get("derived_day")
    source = facts.get("position_source")
    if cycle is None:
        position = "unknown"
    else:
        if source == "order-text":
            how = "as written in the order"
            if derived_cycle is not None and (derived_cycle, derived_day) != (cycle, day):
                how += f" (the administration history suggests cycle {derived_cycle}, day {derived_day})"
        elif source == "history":
            how = "derived from the blinatumomab administration history"
        else:
            how = "no earlier blinatumomab infusion on record, so cycle 1 day 1 is assumed"
        position = f"cycle {cycle}, day {day} — {how}"
    weight_kg, threshold = facts.get("weight_kg"), facts.get("weight_threshold_kg")
    if weight_kg is None:
        weight = "no usable weight"
    else:
        dated = f" on {facts['weight_date']}" if facts.get("weight_date") else ""
        weight = f"{weight_kg} kg{dated}" + (" (stale)" if facts.get("weight_stale") else "")
    band = {"fixed": f"≥ {threshold} kg, fixed dosing", "bsa": f"under {threshold} kg, BSA-based dosing"}.get(
        facts.get("weight_band") or "", "band not verifiable")
    if facts.get("bsa_m2") is not None:
        method = ("recorded BSA" if facts.get("bsa_method") == "observation"
                  else f"Mosteller, from height {facts.get('height_cm')} cm and weight")
        band += f"; BSA {facts['bsa_m2']} m² ({method})"
    age = facts.get("age_years")
    age_phrase = f"{age} years, {facts.get('age_group')}" if age is not None else "age unknown, adult rules applied"
    return {
        "regimen_source": REGIMEN_SOURCES.get(why or "", REGIMEN_ASSUMED),
        "regimen_code": facts.get("regimen_evidence") if why in REGIMEN_SOURCES else None,
        "regimen_unconfirmed": facts.get("regimen_confidence") == "unconfirmed",
        "position_phrase": position,
        "weight_phrase": weight,
        "weight_band_phrase": band,
        "age_phrase": age_phrase,
        "event_name": event_name(facts.get("event")),
    }
