"""Dose rules for the blinatumomab orders in focus: dose-limit, dose-schedule, dose-weight-band, dose-unverifiable.

The timeline has already normalised each order and each administration to µg/day (or µg/m²/day) and placed it
in the course; these rules compare it with the regimen's schedule for that cycle and day (``regimens.toml``), the
weight band (≥ 45 kg fixed, < 45 kg BSA-based, ±10 %), and the absolute maximum. They check the blinatumomab
orders in focus (order hooks) and, at every hook, the administration in progress and any stopped within 24 h
(``dosing.toml [running_infusion]``), each against the dose due on the day it started: a pump programmed at
28 µg/day on cycle 1 day 3 is the same error as an order written so.

One error gives one card: above the absolute maximum is a dose-limit card only; a basis wrong for the band is a
dose-weight-band card only; when a draft order and the running infusion carry the same error, the order's card
(which can fix it) names the administration too, and no second card is made. When an order's written
"Cycle N Day D" disagrees with the administration history, the dose is also checked on the derived day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, Literal

from service.knowledge import Knowledge
from service.knowledge.regimens import RegimenSpec
from service.rules.base import Action, Finding, Indicator
from service.rules.medication import (
    WEIGHT_PROBLEMS,
    Dosed,
    Expected,
    administration_facts,
    age_group,
    bsa_dose,
    context_facts,
    day,
    expected_dose,
    focus_targets,
    infusion_targets,
    num,
    order_facts,
    spec_of,
    weight_band,
)
from service.rules.medication_phrases import worded
from service.rules.premedication import required_for
from service.rules.suggestions import update_dose
from service.timeline.model import BlinOrder, CoursePosition, SteroidEvent, Timeline

_SCHEDULE_RULES = ("dose-limit", "dose-schedule", "dose-weight-band")


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    spec = spec_of(timeline, kb)
    running = infusion_targets(timeline, kb)
    from_orders: list[Finding] = []
    for order, position in focus_targets(timeline):
        from_orders.extend(dose_unverifiable(order, position, timeline, kb, running=running))
        from_orders.extend(_order_checks(order, position, timeline, kb, spec))
    from_infusions: list[Finding] = []
    for subject, position in running:
        from_infusions.extend(f for f in _dose_checks(subject, position, timeline, kb, spec)
                              if f.rule_id not in {g.rule_id for g in from_infusions})
    yield from map(worded, _one_card_per_error(from_orders, from_infusions))


def _one_card_per_error(orders: list[Finding], infusions: Iterable[Finding]) -> Iterator[Finding]:
    """When a draft order and the running infusion carry the same error (same rule, same µg/day), the order's
    card stands (it carries the fix) and names the administration; the administration's card is dropped.
    Otherwise each keeps its card (at most one per rule for the administrations: the newest)."""
    merged = list(orders)
    for f in infusions:
        twin = next((i for i, o in enumerate(merged) if o.rule_id == f.rule_id and o.facts.get("checked") == "order"
                     and o.facts.get("dose_ug_per_day") == f.facts.get("dose_ug_per_day")), None)
        if twin is None:
            merged.append(f)
            continue
        o = merged[twin]
        merged[twin] = replace(o, facts={**o.facts, "also_administration_ref": f.facts["administration_ref"],
                                         "also_administration_start": f.facts["administration_start"]})
    yield from merged


def dose_unverifiable(
    order: BlinOrder, position: CoursePosition, timeline: Timeline, kb: Knowledge, *,
    running: Iterable[tuple[Dosed, CoursePosition]] = (),
) -> Iterator[Finding]:
    """When the weight is missing, stale, unit-less or two weights a day apart straddle 45 kg; a < 45 kg
    patient has no height and no BSA; the order names its drug by a Medication that could not be had (only its
    text says blinatumomab); the order's rate has no concentration, an unconvertible unit (``{pill}``)
    or no dose at all; the order's start or a time of the history is a bare date; the running infusion's rate
    cannot be turned into µg/day; or a steroid for a start that needs premedication is charted with a date only
    or a non-mass unit,
    Then one warning lists every check that was skipped and what to record to enable it (never assume the adult
    band, never guess a dose or a time).
    """
    body = timeline.body
    problems: list[str] = []
    if body.weight_problem in WEIGHT_PROBLEMS:
        problems.append(WEIGHT_PROBLEMS[body.weight_problem])
    if body.weight_stale:
        problems.append("weight-stale")
    band = weight_band(timeline, kb)
    if band == "bsa" and body.bsa_m2 is None:
        problems.append("height-missing")
    elif order.dose.ug_per_m2_per_day is not None and body.bsa_m2 is None:
        problems.append("bsa-missing")
    if order.medication_unresolved:
        problems.append("medication-unresolved")
    if order.dose.problem:
        problems.append(order.dose.problem)
    if order.start_date_only:
        problems.append("order-date-only")
    if position.date_only and (not order.start_date_only or any(p.date_only for p in timeline.infusions)):
        problems.append("history-date-only")
    for subject, _ in running:
        if subject.dose.problem and f"infusion-{subject.dose.problem}" not in problems:
            problems.append(f"infusion-{subject.dose.problem}")
    requirement = kb.premedication.requirement(timeline.regimen.id, age_group(timeline, kb))
    steroids = _steroids_for(timeline, kb, position) if required_for(position, requirement) else []
    unit_refs = [e for e in steroids if e.dose_mg is None and e.dose_unit is not None]
    dated = [e for e in steroids if e.date_only]
    if unit_refs:
        problems.append("steroid-dose-unit")
    if dated:
        problems.append("steroid-date-only")
    if problems:
        facts = _facts(Dosed(order.ref, order.dose, order=order), position, timeline, kb, expected=None,
                       suggested=None)
        yield Finding("dose-unverifiable", "warning", {
            **facts, "problems": problems, "freshness_days": kb.dosing.freshness.weight_days,
            "running_display": next((s.dose.display for s, _ in running if s.dose.problem), None),
            "medication_ref": order.medication_unresolved,
            "steroid_units": sorted({f"{e.agent} {e.dose_unit}" for e in unit_refs}),
            "steroid_dates": sorted({f"{e.agent} {e.time.date().isoformat()}" for e in dated if e.time}),
        }, about=order.ref)


def _steroids_for(timeline: Timeline, kb: Knowledge, position: CoursePosition) -> list[SteroidEvent]:
    """The steroids that could premedicate this start: drafts, and any charted within the look-back of it."""
    if position.at is None:
        return [e for e in timeline.steroids if e.draft]
    lookback = dt.timedelta(hours=kb.premedication.timing.lookback_hours)
    return [e for e in timeline.steroids
            if e.draft or (e.time is not None and abs(position.at - e.time) <= lookback)]


def _order_checks(
    order: BlinOrder, position: CoursePosition, timeline: Timeline, kb: Knowledge, spec: RegimenSpec
) -> Iterator[Finding]:
    """When the order's "Cycle N Day D" disagrees with the position the administration history gives it,
    Then its cards say so (``position_mismatch``), and when the dose is right for the written day but not for the
    derived one, the derived day decides (a dose above what is due on the derived day is critical)."""
    subject = Dosed(order.ref, order.dose, order=order)
    mismatch = (position.source == "order-text" and position.derived_cycle is not None
                and (position.derived_cycle, position.derived_day) != (position.cycle, position.day))
    extra = {"position_mismatch": mismatch, "text_cycle": position.cycle if mismatch else None,
             "text_day": position.day if mismatch else None}
    written = [replace(f, facts={**f.facts, **extra}) for f in _dose_checks(subject, position, timeline, kb, spec)]
    yield from written
    if not mismatch or any(f.rule_id in _SCHEDULE_RULES for f in written):
        return
    assert position.derived_cycle is not None and position.derived_day is not None
    derived = replace(position, cycle=position.derived_cycle, day=position.derived_day, source="history")
    for f in _dose_checks(subject, derived, timeline, kb, spec):
        if f.rule_id in ("dose-schedule", "dose-weight-band"):
            yield replace(f, facts={**f.facts, **extra, "checked_position": "derived"})


def _dose_checks(
    subject: Dosed, position: CoursePosition, timeline: Timeline, kb: Knowledge, spec: RegimenSpec
) -> Iterator[Finding]:
    """When the order or administration is above the absolute maximum (28 µg/day; unit slips such as mg for µg
    or per hour for per day included),
    Then dose-limit, critical, with an update to the scheduled dose (orders) or the pump check (administrations).

    When a ≥ 45 kg patient's dose is in µg/m²/day or µg/kg/day, or a < 45 kg patient's µg/day dose is more
    than 10 % off the BSA dose (min(µg/m²/day × BSA, cap)),
    Then dose-weight-band: critical if > 10 % above the BSA dose, otherwise warning.

    When the µg/day (≥ 45 kg) or µg/m²/day (< 45 kg) dose does not match the schedule for the cycle and day
    (e.g. 28 on R/R cycle 1 days 1–7; a restart after an adverse event not at 9; re-escalation before 7 days),
    Then dose-schedule: critical above, warning below; an early re-escalation is a warning. With no usable
    weight only the schedule's cap is checked.
    """
    body = timeline.body
    band = weight_band(timeline, kb)
    expected = expected_dose(position, spec, kb)
    dose = subject.dose.ug_per_day
    decimals = kb.dosing.limits.fixed_dose_compare_decimals
    target = _target(expected, band, body.bsa_m2)

    def finding(rule: str, indicator: Indicator, **extra: Any) -> Finding:
        suggested = extra.pop("suggested", target)
        facts = _facts(subject, position, timeline, kb, expected=expected, suggested=suggested)
        action = (update_dose(subject.order, suggested, kb=kb)
                  if suggested is not None and subject.order is not None and subject.draft else None)
        actions: tuple[Action, ...] = (action,) if action else ()
        return Finding(rule, indicator, {**facts, **extra}, actions=actions, about=subject.ref)

    limit = kb.dosing.limits.absolute_max_ug_per_day
    if dose is not None and round(dose, decimals) > limit:
        yield finding("dose-limit", "critical", limit_ug_per_day=num(limit), unit_slip=subject.dose.unit_slip)
        return
    if expected is None:
        return  # beyond the schedule's last cycle or day: cycle-limit speaks to that
    if subject.dose.per_kg:
        yield finding("dose-weight-band", "warning", kind="per-kg", direction=None, ratio_pct=None)
        return
    if band == "fixed":
        if subject.dose.ug_per_m2_per_day is not None:
            yield finding("dose-weight-band", "warning", kind="bsa-unit-fixed-band", direction=None, ratio_pct=None)
            return
        if dose is not None:
            yield from _schedule(finding, round(dose, decimals), round(expected.ug_per_day, decimals),
                                 position=position, expected=expected, compared="ug_per_day")
    elif band == "bsa" and body.bsa_m2 is not None and target is not None:
        per_m2 = subject.dose.ug_per_m2_per_day
        if per_m2 is not None:
            yield from _schedule(finding, round(per_m2, decimals), round(expected.ug_per_m2_per_day, decimals),
                                 position=position, expected=expected, compared="ug_per_m2_per_day")
        elif dose is not None:
            tolerance = kb.dosing.bsa.tolerance_pct / 100
            # Rounded before comparing: ±10 % is inclusive, and float noise (1.1000000000000003) must not
            # turn an order exactly 10 % above the BSA dose into a critical card.
            ratio = round(dose / target, 9)
            if ratio > round(1 + tolerance, 9):
                yield finding("dose-weight-band", "critical", kind="bsa-dose", direction="above",
                              ratio_pct=num(ratio * 100, 0))
            elif ratio < round(1 - tolerance, 9):
                yield finding("dose-weight-band", "warning", kind="bsa-dose", direction="below",
                              ratio_pct=num(ratio * 100, 0))
    elif band is None and dose is not None and round(dose, decimals) > expected.cap_ug_per_day:
        yield finding("dose-schedule", "critical", direction="above", compared="ug_per_day", early_escalation=False,
                      band_unknown=True, suggested=None)


def _schedule(
    finding: Any, ordered: float, wanted: float, *, position: CoursePosition, expected: Expected,
    compared: Literal["ug_per_day", "ug_per_m2_per_day"],
) -> Iterator[Finding]:
    if ordered == wanted:
        return
    above = ordered > wanted
    early = above and expected.basis == "ae-restart" and position.event in (
        "re-escalation", "continuation", "dose-change")
    indicator: Indicator = "critical" if above and not early else "warning"
    yield finding("dose-schedule", indicator, direction="above" if above else "below", compared=compared,
                  early_escalation=early, band_unknown=False)


def _target(expected: Expected | None, band: str | None, bsa_m2: float | None) -> float | None:
    """The µg/day the order should carry in this band (``None`` when the band or BSA is unknown)."""
    if expected is None:
        return None
    if band == "fixed":
        return expected.ug_per_day
    if band == "bsa" and bsa_m2 is not None:
        return bsa_dose(expected, bsa_m2)
    return None


def _facts(
    subject: Dosed, position: CoursePosition, timeline: Timeline, kb: Knowledge, *, expected: Expected | None,
    suggested: float | None,
) -> dict[str, Any]:
    ae = kb.regimens.ae_restart
    dose = subject.dose
    facts: dict[str, Any] = {
        **context_facts(timeline, kb, position),
        **order_facts(subject.order),
        **administration_facts(subject.infusion),
        "dose_display": dose.display,
        "dose_basis": dose.basis,
        "dose_ug_per_day": num(dose.ug_per_day),
        "dose_ug_per_m2_per_day": num(dose.ug_per_m2_per_day),
        "also_administration_ref": None,
        "also_administration_start": None,
        "position_mismatch": False,
        "text_cycle": None,
        "text_day": None,
        "checked_position": "written" if position.source == "order-text" else "derived",
        "running_display": None,
        "medication_ref": None,
        "steroid_units": [],
        "steroid_dates": [],
        "expected_ug_per_day": num(expected.ug_per_day) if expected else None,
        "expected_ug_per_m2_per_day": num(expected.ug_per_m2_per_day) if expected else None,
        "expected_cap_ug_per_day": num(expected.cap_ug_per_day) if expected else None,
        "expected_basis": expected.basis if expected else None,
        "expected_bsa_ug_per_day": (
            num(bsa_dose(expected, timeline.body.bsa_m2), 1) if expected and timeline.body.bsa_m2 else None
        ),
        "suggested_ug_per_day": num(suggested, 1),
        "ae_restart_date": day(position.ae_restart_at),
        "ae_restart_confirmed": timeline.regimen.id in ae.confirmed_regimens,
        "escalate_after_days": ae.escalate_after_days,
        "tolerance_pct": num(kb.dosing.bsa.tolerance_pct),
        "unit_slip": dose.unit_slip,
        "limit_ug_per_day": num(kb.dosing.limits.absolute_max_ug_per_day),
        "kind": None,
        "direction": None,
        "ratio_pct": None,
        "compared": None,
        "early_escalation": False,
        "band_unknown": False,
        "problems": [],
        "freshness_days": kb.dosing.freshness.weight_days,
        "straddle_window_hours": num(kb.dosing.weight_band.straddle_window_hours),
        "restart_threshold_hours": num(kb.dosing.interruption.restart_threshold_minutes / 60),
        "same_cycle_max_days": num(kb.regimens.cycle_rules.same_cycle_max_hours / 24, 1),
        "overdose_restart_hours": num(kb.toxicity.overdose.restart_min_hours),
    }
    return facts
