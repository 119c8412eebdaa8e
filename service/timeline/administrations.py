"""Administrations on the timeline: blinatumomab infusion periods and steroid doses.

A blinatumomab MedicationAdministration is one bag or a run of bags; gaps between periods are the interruptions
the course builder reads. Each charting style gives a period (real-world-charting.md §1):

- ``effectivePeriod`` with its end (Epic), or open: ``in-progress`` runs until the next record or now;
- an instant (``effectiveDateTime``, or a ``completed`` period with only its start) that ran for its
  infuse-over-time extension (Oracle Health), or for its volume ÷ pump rate (``dose`` 240 mL at 10 mL/h);
- an instant with no run time (Oracle Health charts each bag as a ``completed`` instant): until the next record
  within the longest bag, else ``[running_infusion] unended_bag_hours``;
- a worked-out end after ``now`` is a running bag.

``entered-in-error`` never happened. ``not-done`` (Oracle Health's only way besides a gap to chart a pause) is no
bag: at its time the infusion was not running, so it cuts short a bag whose end was worked out, and its
``statusReason`` says why. ``on-hold`` and ``stopped`` end an infusion, and their ``statusReason`` may say why
(overdose, flushed line, adverse event — the restart rules differ).
Steroids come from administrations and orders (drafts too): each is a candidate premedication.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from service.fhir.extract import Instant, parse_instant, relative_ref, texts
from service.knowledge import Knowledge
from service.timeline.dose import (
    BodyBasis,
    concentration_ug_per_ml,
    daily_dose,
    is_blinatumomab,
    medication_concept,
    parse_rate_unit,
    quantity_unit,
    referenced_medication,
    steroid_agent,
    text_dose,
)
from service.timeline.model import BlinOrder, BodySize, InfusionPeriod, SteroidEvent
from service.timeline.orders import first_dosage

_IGNORED = ("not-done", "entered-in-error")
_HALTED = ("on-hold", "stopped")
StopReason = Literal["overdose", "flush", "adverse-event"]


def build_infusions(
    administrations: Iterable[Mapping[str, Any]],
    *,
    medications: Mapping[str, Mapping[str, Any]],
    body: BodySize,
    kb: Knowledge,
    now: dt.datetime,
    orders: Iterable[BlinOrder] = (),
) -> tuple[InfusionPeriod, ...]:
    """Blinatumomab infusion periods, oldest first, from every charting style (see the module docstring).
    ``orders``: the blinatumomab orders on record, for the bag length of the order an administration fulfils."""
    basis = BodyBasis(bsa_m2=body.bsa_m2, weight_kg=body.weight_kg)
    lengths = {o.ref: length for o in orders if (length := _order_bag_length(o, kb)) is not None}
    runs: list[_Run] = []
    pauses: list[_Pause] = []
    for ma in administrations:
        if ma.get("resourceType") != "MedicationAdministration" or ma.get("status") == "entered-in-error":
            continue
        if not is_blinatumomab(medication_concept(ma, medications), kb):
            continue
        period = _period(ma)
        if period is None:
            continue
        start, end, date_only = period
        status = str(ma.get("status", ""))
        if status == "not-done":
            # A bag not hung (Oracle Health "Not Done: …", Epic "Held"): the infusion was not running then.
            pauses.append(_Pause(start, stop_reason(ma, kb)))
            continue
        dosage = ma.get("dosage") if isinstance(ma.get("dosage"), Mapping) else {}
        assert isinstance(dosage, Mapping)
        # An instant, or a period with only its start, of a bag that ran (not a pause or a stop) has no end on record.
        unended = end is None and status not in _HALTED and (status != "in-progress" or "effectiveDateTime" in ma)
        runs_for = (infuse_over(ma, kb) or _volume_over_rate(dosage, kb)) if unended else None
        if runs_for is not None:
            end = start + runs_for  # an "Infuse" result that ran for its infuse-over-time, or its volume ÷ rate
        elif (end is None and status != "in-progress") or unended:
            end = start  # a pause or a stop; or a bag whose end comes from the next record (below)
        runs.append(_Run(
            _infusion(ma, dosage, start=start, end=end, status=status, date_only=date_only, basis=basis,
                      medications=medications, kb=kb),
            bare=unended and runs_for is None, derived=runs_for is not None,
            ordered=_reference(ma.get("request"), lengths),
        ))
    runs.sort(key=lambda r: r.period.start)
    resolved = _with_ends(_without_rate_checks(runs), pauses, kb)
    return tuple(
        replace(r.period, end=None) if (r.derived or r.period.status == "in-progress") and r.period.end is not None
        and r.period.end > now else r.period
        for r in resolved
    )


@dataclass(frozen=True)
class _Run:
    period: InfusionPeriod
    bare: bool = False
    """No run time of its own (an instant or an open period with no infuse-over-time, no volume ÷ rate): it ran
    until the next record."""
    derived: bool = False
    """Its end was worked out, not charted: a bag running past ``now`` is running; a pause cuts it short."""
    ordered: dt.timedelta | None = None
    """The bag length of the order it fulfils (``request``), if that states one."""


@dataclass(frozen=True)
class _Pause:
    """A ``not-done`` record: at ``at`` the infusion was not running, for ``reason`` (its ``statusReason``)."""

    at: dt.datetime
    reason: StopReason | None


def _infusion(
    ma: Mapping[str, Any], dosage: Mapping[str, Any], *, start: dt.datetime, end: dt.datetime | None, status: str,
    date_only: bool, basis: BodyBasis, medications: Mapping[str, Mapping[str, Any]], kb: Knowledge,
) -> InfusionPeriod:
    entries: list[Mapping[str, Any]] = []
    for key in ("rateQuantity", "rateRatio"):
        if isinstance(dosage.get(key), Mapping):
            entries.append({key: dosage[key]})
    if isinstance(dosage.get("dose"), Mapping):
        entries.append({"doseQuantity": dosage["dose"]})
    # A bag's dose spread over its period is a rate only for a bag that ran to completion: a stopped or
    # held bag's dose is what was hung, not what was infused. (Never over an end taken from the next record.)
    hours = (end - start).total_seconds() / 3600 if status == "completed" and end is not None and end > start \
        else None
    text = dosage.get("text") if isinstance(dosage.get("text"), str) else None
    dose = daily_dose(
        entries, kb=kb, text=text, body=basis,
        concentration_ug_per_ml=concentration_ug_per_ml(referenced_medication(ma, medications), kb),
        period_hours=hours,
    )
    if dose.problem == "rate-without-concentration":
        # The MAR line often states the dose beside the pump rate ("28 mcg/24 hr at 10 mL/hr"): what the nurse
        # charted as infused. Never a dose estimated from the rate or the bag volume. (An order's text is not
        # read this way: an mL/h order must state its µg/day.)
        dose = text_dose(text, kb=kb, body=basis) or dose
    return InfusionPeriod(
        ref=relative_ref(ma), start=start, end=end, status=status, ug_per_day=dose.ug_per_day,
        stop_reason=stop_reason(ma, kb), date_only=date_only, dose=dose,
    )


def _without_rate_checks(runs: list[_Run]) -> list[_Run]:
    """Drop point records (start = end) that fall inside another period at the same rate: a MAR "Rate Verify"
    charted each shift confirms the running bag; read as a bag of its own it would end the infusion and make the
    next bag a restart. A point record at another rate stays (it is a rate change), and so does a pause or stop."""
    kept: list[_Run] = []
    hosts: list[InfusionPeriod] = []  # kept periods with a length (a point hosts nothing), oldest first
    reach: list[dt.datetime | None] = []  # the latest end among hosts[:i + 1] (None: one is still running)
    for run in runs:
        p = run.period
        host = None
        for i in reversed(range(len(hosts))):
            furthest = reach[i]
            if furthest is not None and furthest < p.start:
                break  # no earlier period reaches this record: stop looking (charts of many bags stay linear)
            k = hosts[i]
            if k.start <= p.start and (k.end is None or k.end >= p.start):
                host = k
                break
        same = host is not None and (p.ug_per_day is None or host.ug_per_day is None
                                     or round(p.ug_per_day, 1) == round(host.ug_per_day, 1))
        if p.end == p.start and same and p.status in ("completed", "in-progress") and p.stop_reason is None:
            continue  # a pause or stop (on-hold, stopped, a stated reason) is kept: the restart rules read it
        kept.append(run)
        if p.end != p.start:
            last = reach[-1] if reach else p.start
            hosts.append(p)
            reach.append(None if last is None or p.end is None else max(last, p.end))
    return kept


def _with_ends(runs: list[_Run], pauses: list[_Pause], kb: Knowledge) -> list[_Run]:
    """Ends that are not on record, from the records around them.

    - A bag with no run time of its own (Oracle Health sends each bag as a ``completed`` instant) ran for the bag
      length of the order it fulfils; else until the next record (bag, rate change, pause) when that comes within
      the longest bag the label names (``[bags] durations_hours``, 7 days); otherwise (the last bag, or a long
      silence) for ``[running_infusion] unended_bag_hours``. An ``in-progress`` record runs until the next record,
      or now.
    - A ``not-done`` record at a time a worked-out end (or a running bag) covers cuts it short there, and its
      ``statusReason`` says why the infusion stopped, unless the bag itself says so.
    """
    longest = dt.timedelta(hours=max(kb.dosing.bags.durations_hours))
    assumed = dt.timedelta(hours=kb.dosing.running_infusion.unended_bag_hours)
    events = sorted([r.period.start for r in runs] + [p.at for p in pauses])
    out: list[_Run] = []
    for run in runs:
        p = run.period
        after = bisect.bisect_right(events, p.start)
        following = events[after] if after < len(events) else None
        if run.bare and p.status != "in-progress":
            if run.ordered is not None:
                end = p.start + run.ordered
            elif following is not None and following - p.start <= longest:
                end = following
            else:
                end = p.start + assumed
            run = _Run(replace(p, end=end), derived=True)
        elif run.bare or p.end is None:
            run = _Run(replace(p, end=following), derived=run.derived)
        out.append(run)
    starts = [r.period.start for r in out]  # sorted: runs come oldest first
    for pause in pauses:
        i = bisect.bisect_left(starts, pause.at) - 1  # the last bag that started before the pause
        if i < 0:
            continue
        run, p = out[i], out[i].period
        cut = p.end is None or (run.derived and p.end > pause.at)
        out[i] = _Run(replace(p, end=pause.at if cut else p.end, stop_reason=p.stop_reason or pause.reason),
                      derived=run.derived and not cut)
    return out


def _order_bag_length(order: BlinOrder, kb: Knowledge) -> dt.timedelta | None:
    """One bag's length as the order states it: ``timing.repeat.duration`` (or ``boundsDuration``), else its bag
    volume ÷ pump rate (Oracle Health: ``doseQuantity`` 240 mL, ``rateQuantity`` 10 mL/h). A length longer than the
    longest bag the label names (an order for a whole cycle) is no bag length."""
    dosage = first_dosage(order.resource)
    entries = [e for e in dosage.get("doseAndRate") or () if isinstance(e, Mapping)]
    volume = next((e["doseQuantity"] for e in entries if isinstance(e.get("doseQuantity"), Mapping)), None)
    rate = next((e["rateQuantity"] for e in entries if isinstance(e.get("rateQuantity"), Mapping)), None)
    length = (dt.timedelta(hours=order.bag_hours) if order.bag_hours
              else _volume_over_rate({"dose": volume, "rateQuantity": rate}, kb))
    longest = dt.timedelta(hours=max(kb.dosing.bags.durations_hours))
    return length if length is not None and length <= longest else None


def _reference(ref: Any, lengths: Mapping[str, dt.timedelta]) -> dt.timedelta | None:
    """The bag length of the order ``request`` names (relative, absolute or versioned: ``…/MedicationRequest/1``)."""
    target = ref.get("reference") if isinstance(ref, Mapping) else None
    if not isinstance(target, str):
        return None
    parts = target.split("/_history")[0].rstrip("/").split("/")
    return lengths.get("/".join(parts[-2:])) if len(parts) >= 2 else None


def _period(ma: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime | None, bool] | None:
    """(start, end or ``None`` when none is charted, date only) of ``effectivePeriod`` or ``effectiveDateTime``."""
    period = ma.get("effectivePeriod")
    if isinstance(period, Mapping):
        start, end = parse_instant(period.get("start")), parse_instant(period.get("end"))
        if start is None:
            return None
        return start.at, end.at if end else None, start.date_only or bool(end and end.date_only)
    point = parse_instant(ma.get("effectiveDateTime"))
    if point is None:
        return None
    return point.at, None, point.date_only


def infuse_over(ma: Mapping[str, Any], kb: Knowledge) -> dt.timedelta | None:
    """The duration an instant administration ran for, from a vendor extension (``[running_infusion]``)."""
    wanted = kb.dosing.running_infusion.infuse_over_time_extensions
    for ext in ma.get("extension") or ():
        if not isinstance(ext, Mapping) or ext.get("url") not in wanted:
            continue
        q = ext.get("valueQuantity")
        value = _positive(q.get("value")) if isinstance(q, Mapping) else None
        unit = quantity_unit(q) if isinstance(q, Mapping) else None
        hours = kb.dosing.units.duration_to_hours.get(kb.dosing.units.norm(unit)) if unit else None
        if value is not None and hours:
            return dt.timedelta(hours=value * hours)
    return None


def _volume_over_rate(dosage: Mapping[str, Any], kb: Knowledge) -> dt.timedelta | None:
    """How long a bag ran from its charted volume and pump rate: ``dose`` 240 mL at ``rateQuantity`` 10 mL/h →
    24 h (Oracle Health charts the volume infused as the dose)."""
    dose, rate = dosage.get("dose"), dosage.get("rateQuantity")
    if not isinstance(dose, Mapping) or not isinstance(rate, Mapping):
        return None
    volume, rate_value = _positive(dose.get("value")), _positive(rate.get("value"))
    dose_unit, rate_unit = quantity_unit(dose), quantity_unit(rate)
    if not dose_unit or not rate_unit or volume is None or rate_value is None:
        return None
    ml = _ML.get(kb.dosing.units.norm(dose_unit))
    parsed = parse_rate_unit(rate_unit, kb)
    if ml is None or parsed is None or parsed.mass is not None or parsed.basis is not None:
        return None  # a mass dose, or a rate per day of drug: no volume to run down
    ml_per_hour = rate_value * parsed.per_day / 24
    return dt.timedelta(hours=volume * ml / ml_per_hour)


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


_ML = {"ml": 1.0, "l": 1000.0}
"""Volume units a bag's dose is charted in, in mL (unit arithmetic)."""


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
