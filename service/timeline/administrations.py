"""Administrations on the timeline: blinatumomab infusion periods and steroid doses.

A blinatumomab MedicationAdministration is one bag or a run of bags (``effectivePeriod``); gaps between
periods are the interruptions the course builder reads. ``not-done`` and ``entered-in-error`` records
never happened and are dropped; ``in-progress`` is running; ``on-hold`` and ``stopped`` end an infusion,
and their ``statusReason`` may say why (overdose, flushed line, adverse event — the restart rules differ).
Steroids come from administrations and orders (drafts too): each is a candidate premedication.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from service.fhir.extract import Instant, parse_instant, relative_ref, texts
from service.knowledge import Knowledge
from service.timeline.dose import (
    BodyBasis,
    concentration_ug_per_ml,
    daily_dose,
    is_blinatumomab,
    medication_concept,
    quantity_unit,
    referenced_medication,
    steroid_agent,
    text_dose,
)
from service.timeline.model import BodySize, InfusionPeriod, SteroidEvent
from service.timeline.orders import first_dosage

_IGNORED = ("not-done", "entered-in-error")
StopReason = Literal["overdose", "flush", "adverse-event"]


def build_infusions(
    administrations: Iterable[Mapping[str, Any]],
    *,
    medications: Mapping[str, Mapping[str, Any]],
    body: BodySize,
    kb: Knowledge,
    now: dt.datetime,
) -> tuple[InfusionPeriod, ...]:
    """Blinatumomab infusion periods, oldest first."""
    basis = BodyBasis(bsa_m2=body.bsa_m2, weight_kg=body.weight_kg)
    out: list[InfusionPeriod] = []
    for ma in administrations:
        if ma.get("resourceType") != "MedicationAdministration" or ma.get("status") in _IGNORED:
            continue
        if not is_blinatumomab(medication_concept(ma, medications), kb):
            continue
        period = _period(ma)
        if period is None:
            continue
        start, end, date_only = period
        over = _infuse_over(ma, kb) if end == start and "effectiveDateTime" in ma else None
        if over is not None:
            end = start + over  # an instant "Infuse" result that ran for its infuse-over-time
        status = str(ma.get("status", ""))
        if (status == "in-progress" or over is not None) and (end is None or end > now):
            end = None
        elif end is None and status != "in-progress":
            end = start  # stopped or completed with no end recorded: the stop time is unknown; never extend it
        dosage = ma.get("dosage") if isinstance(ma.get("dosage"), Mapping) else {}
        assert isinstance(dosage, Mapping)
        entries: list[Mapping[str, Any]] = []
        for key in ("rateQuantity", "rateRatio"):
            if isinstance(dosage.get(key), Mapping):
                entries.append({key: dosage[key]})
        if isinstance(dosage.get("dose"), Mapping):
            entries.append({"doseQuantity": dosage["dose"]})
        # A bag's dose spread over its period is a rate only for a bag that ran to completion: a stopped or
        # held bag's dose is what was hung, not what was infused.
        hours = (end - start).total_seconds() / 3600 if status == "completed" and end is not None and end > start \
            else None
        dose = daily_dose(
            entries, kb=kb, text=dosage.get("text") if isinstance(dosage.get("text"), str) else None, body=basis,
            concentration_ug_per_ml=concentration_ug_per_ml(referenced_medication(ma, medications), kb),
            period_hours=hours,
        )
        if dose.problem == "rate-without-concentration":
            # The MAR line often states the dose beside the pump rate ("28 mcg/24 hr at 10 mL/hr"): what the nurse
            # charted as infused. Never a dose estimated from the rate or the bag volume. (An order's text is not
            # read this way: an mL/h order must state its µg/day.)
            dose = text_dose(dosage.get("text") if isinstance(dosage.get("text"), str) else None, kb=kb,
                             body=basis) or dose
        out.append(InfusionPeriod(
            ref=relative_ref(ma),
            start=start,
            end=end,
            status=status,
            ug_per_day=dose.ug_per_day,
            stop_reason=stop_reason(ma, kb),
            date_only=date_only,
            dose=dose,
        ))
    out.sort(key=lambda p: p.start)
    return tuple(_without_rate_checks(out))


def _without_rate_checks(periods: list[InfusionPeriod]) -> list[InfusionPeriod]:
    """Drop point records (start = end) that fall inside another period at the same rate: a MAR "Rate Verify"
    charted each shift confirms the running bag; read as a bag of its own it would end the infusion and make the
    next bag a restart. A point record at another rate stays (it is a rate change), and so does a pause or stop."""
    kept: list[InfusionPeriod] = []
    for p in periods:
        host = next((k for k in reversed(kept) if k.start <= p.start and (k.end is None or k.end >= p.start)
                     and k.end != k.start), None)
        same = host is not None and (p.ug_per_day is None or host.ug_per_day is None
                                     or round(p.ug_per_day, 1) == round(host.ug_per_day, 1))
        if p.end == p.start and same and p.status in ("completed", "in-progress") and p.stop_reason is None:
            continue  # a pause or stop (on-hold, stopped, a stated reason) is kept: the restart rules read it
        kept.append(p)
    return kept


def _period(ma: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime | None, bool] | None:
    period = ma.get("effectivePeriod")
    if isinstance(period, Mapping):
        start, end = parse_instant(period.get("start")), parse_instant(period.get("end"))
        if start is None:
            return None
        return start.at, end.at if end else None, start.date_only or bool(end and end.date_only)
    point = parse_instant(ma.get("effectiveDateTime"))
    if point is None:
        return None
    return point.at, point.at, point.date_only


def _infuse_over(ma: Mapping[str, Any], kb: Knowledge) -> dt.timedelta | None:
    """The duration an instant administration ran for, from a vendor extension (``[running_infusion]``)."""
    wanted = kb.dosing.running_infusion.infuse_over_time_extensions
    for ext in ma.get("extension") or ():
        if not isinstance(ext, Mapping) or ext.get("url") not in wanted:
            continue
        q = ext.get("valueQuantity")
        value = q.get("value") if isinstance(q, Mapping) else None
        unit = quantity_unit(q) if isinstance(q, Mapping) else None
        hours = kb.dosing.units.duration_to_hours.get(kb.dosing.units.norm(unit)) if unit else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and hours:
            return dt.timedelta(hours=float(value) * hours)
    return None


def stop_reason(ma: Mapping[str, Any], kb: Knowledge) -> StopReason | None:
    """Why a blinatumomab infusion stopped, from ``statusReason`` text/display (``policy.toml`` patterns)."""
    reasons = ma.get("statusReason")
    items = reasons if isinstance(reasons, list) else [reasons]
    words = [t for r in items if isinstance(r, Mapping) for t in texts(r)]
    for reason, patterns in kb.policy.stop_reason_patterns.items():
        if any(p.search(w) for p in patterns for w in words):
            return cast(StopReason, reason)
    return None


def build_steroids(
    administrations: Iterable[Mapping[str, Any]],
    requests: Iterable[tuple[Mapping[str, Any], bool]],
    *,
    medications: Mapping[str, Mapping[str, Any]],
    body: BodySize,
    kb: Knowledge,
) -> tuple[SteroidEvent, ...]:
    """Steroid administrations and orders (``requests`` pairs each MedicationRequest with "is a draft")."""
    out: list[SteroidEvent] = []
    for ma in administrations:
        if ma.get("resourceType") != "MedicationAdministration" or ma.get("status") in _IGNORED:
            continue
        agent = steroid_agent(medication_concept(ma, medications), kb)
        if agent is None:
            continue
        dosage = ma.get("dosage") if isinstance(ma.get("dosage"), Mapping) else {}
        assert isinstance(dosage, Mapping)
        period = _period(ma)
        mg, mg_m2 = _steroid_mg(dosage.get("dose"), body, kb)
        out.append(SteroidEvent(
            ref=relative_ref(ma), agent=agent, kind="administration",
            time=period[0] if period else None, date_only=period[2] if period else False,
            dose_mg=mg, dose_mg_per_m2=mg_m2, status=str(ma.get("status", "")),
            dose_unit=_non_mass_unit(dosage.get("dose"), kb),
        ))
    for mr, draft in requests:
        if mr.get("resourceType") != "MedicationRequest" or mr.get("status") == "entered-in-error":
            continue
        agent = steroid_agent(medication_concept(mr, medications), kb)
        if agent is None:
            continue
        dosage = first_dosage(mr)
        entries = [e for e in dosage.get("doseAndRate") or () if isinstance(e, Mapping)]
        dose_q = next((e.get("doseQuantity") for e in entries if e.get("doseQuantity")), None)
        mg, mg_m2 = _steroid_mg(dose_q, body, kb)
        scheduled = scheduled_times(mr)
        out.append(SteroidEvent(
            ref=relative_ref(mr), agent=agent, kind="order", time=scheduled[0].at if scheduled else None,
            date_only=bool(scheduled) and all(s.date_only for s in scheduled), dose_mg=mg, dose_mg_per_m2=mg_m2,
            draft=draft, status=str(mr.get("status", "")), scheduled=tuple(s.at for s in scheduled),
            dose_unit=_non_mass_unit(dose_q, kb),
        ))
    return tuple(out)


def scheduled_times(mr: Mapping[str, Any]) -> list[Instant]:
    """When an order is to be given: every ``timing.event`` and ``timing.repeat.boundsPeriod.start``, in that
    order. ``authoredOn`` is when the order was written, not when the dose is due: it is never a scheduled time.
    Repeats (``frequency``/``period``) are not expanded: a q8h course counts by its first dose."""
    timing = first_dosage(mr).get("timing")
    if not isinstance(timing, Mapping):
        return []
    out = [i for i in (parse_instant(e) for e in timing.get("event") or ()) if i is not None]
    repeat = timing.get("repeat")
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, Mapping) else None
    start = parse_instant(bounds.get("start")) if isinstance(bounds, Mapping) else None
    if start is not None:
        out.append(start)
    return out


def _non_mass_unit(q: Any, kb: Knowledge) -> str | None:
    """A steroid dose's unit when it is given but is not a mass (``{pill}``, ``mL``): the dose check is skipped."""
    if not isinstance(q, Mapping) or not isinstance(q.get("value"), int | float):
        return None
    unit = quantity_unit(q)
    if unit is None:
        return "(none)"
    mass = kb.dosing.units.norm(unit).partition("/")[0]
    return None if mass in kb.dosing.units.steroid_mass_to_mg else unit


def _steroid_mg(q: Any, body: BodySize, kb: Knowledge) -> tuple[float | None, float | None]:
    """(mg, mg/m²) of a steroid dose; a per-m² dose is also given in mg when the BSA is known."""
    if not isinstance(q, Mapping) or not isinstance(q.get("value"), int | float):
        return None, None
    unit = quantity_unit(q)
    if unit is None:
        return None, None
    units = kb.dosing.units
    mass, _, per = units.norm(unit).partition("/")
    factor = units.steroid_mass_to_mg.get(mass)
    if factor is None:
        return None, None
    value = float(q["value"]) * factor
    if per == "m2":
        return (value * body.bsa_m2 if body.bsa_m2 else None), value
    if per:
        return None, None
    return value, None
