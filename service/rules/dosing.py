"""Dose rules for the blinatumomab orders in focus: dose-limit, dose-schedule, dose-weight-band, dose-unverifiable.

The timeline has already normalised each order to µg/day (or µg/m²/day) and placed it in the course; these
rules compare it with the regimen's schedule for that cycle and day (``regimens.toml``), the weight band
(≥ 45 kg fixed, < 45 kg BSA-based, ±10 %), and the absolute maximum. One error gives one card: an order
above the absolute maximum is a dose-limit card only; an order whose basis is wrong for the band is a
dose-weight-band card only. Order hooks only (patient-view does not offer these rules).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from service.knowledge import Knowledge
from service.knowledge.regimens import RegimenSpec
from service.rules.base import Action, Finding, Indicator
from service.rules.medication import (
    WEIGHT_PROBLEMS,
    Expected,
    bsa_dose,
    context_facts,
    day,
    expected_dose,
    focus_targets,
    num,
    order_facts,
    spec_of,
    weight_band,
)
from service.rules.suggestions import update_dose
from service.timeline.model import BlinOrder, CoursePosition, Timeline


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    spec = spec_of(timeline, kb)
    for order, position in focus_targets(timeline):
        yield from dose_unverifiable(order, position, timeline, kb)
        yield from _dose_checks(order, position, timeline, kb, spec)


def dose_unverifiable(
    order: BlinOrder, position: CoursePosition, timeline: Timeline, kb: Knowledge
) -> Iterator[Finding]:
    """When the weight is missing, stale, unit-less or two weights a day apart straddle 45 kg; a < 45 kg
    patient has no height and no BSA; the order's rate has no concentration, an unconvertible unit or no
    dose at all; or a time it rests on is a bare date,
    Then one warning lists every reason (never assume the adult band, never guess a dose or a time).
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
    if order.dose.problem:
        problems.append(order.dose.problem)
    if order.start_date_only or position.date_only:
        problems.append("date-only")
    if problems:
        facts = _facts(order, position, timeline, kb, expected=None, suggested=None)
        yield Finding("dose-unverifiable", "warning", {**facts, "problems": problems,
                                                       "freshness_days": kb.dosing.freshness.weight_days},
                      about=order.ref)


def _dose_checks(
    order: BlinOrder, position: CoursePosition, timeline: Timeline, kb: Knowledge, spec: RegimenSpec
) -> Iterator[Finding]:
    """When the order is above the absolute maximum (28 µg/day; unit slips such as mg for µg or per hour for
    per day included),
    Then dose-limit, critical, with an update to the scheduled dose.

    When a ≥ 45 kg patient's order is in µg/m²/day or µg/kg/day, or a < 45 kg patient's µg/day order is more
    than 10 % off the BSA dose (min(µg/m²/day × BSA, cap)),
    Then dose-weight-band: critical if > 10 % above the BSA dose, otherwise warning.

    When the µg/day (≥ 45 kg) or µg/m²/day (< 45 kg) order does not match the schedule for the cycle and day
    (e.g. 28 on R/R cycle 1 days 1–7; a restart after an adverse event not at 9; re-escalation before 7 days),
    Then dose-schedule: critical above, warning below; an early re-escalation is a warning. With no usable
    weight only the schedule's cap is checked.
    """
    body = timeline.body
    band = weight_band(timeline, kb)
    expected = expected_dose(position, spec, kb)
    dose = order.dose.ug_per_day
    decimals = kb.dosing.limits.fixed_dose_compare_decimals
    target = _target(expected, band, body.bsa_m2)

    def finding(rule: str, indicator: Indicator, **extra: Any) -> Finding:
        suggested = extra.pop("suggested", target)
        facts = _facts(order, position, timeline, kb, expected=expected, suggested=suggested)
        action = update_dose(order, suggested, kb=kb) if suggested is not None and order.draft else None
        actions: tuple[Action, ...] = (action,) if action else ()
        return Finding(rule, indicator, {**facts, **extra}, actions=actions, about=order.ref)

    limit = kb.dosing.limits.absolute_max_ug_per_day
    if dose is not None and round(dose, decimals) > limit:
        yield finding("dose-limit", "critical", limit_ug_per_day=num(limit), unit_slip=order.dose.unit_slip)
        return
    if expected is None:
        return  # beyond the schedule's last cycle or day: cycle-limit speaks to that
    if order.dose.per_kg:
        yield finding("dose-weight-band", "warning", kind="per-kg", direction=None, ratio_pct=None)
        return
    if band == "fixed":
        if order.dose.ug_per_m2_per_day is not None:
            yield finding("dose-weight-band", "warning", kind="bsa-unit-fixed-band", direction=None, ratio_pct=None)
            return
        if dose is not None:
            yield from _schedule(finding, round(dose, decimals), round(expected.ug_per_day, decimals),
                                 position=position, expected=expected, compared="ug_per_day")
    elif band == "bsa" and body.bsa_m2 is not None and target is not None:
        per_m2 = order.dose.ug_per_m2_per_day
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
    early = above and expected.basis == "ae-restart" and position.event in ("re-escalation", "continuation")
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
    order: BlinOrder, position: CoursePosition, timeline: Timeline, kb: Knowledge, *, expected: Expected | None,
    suggested: float | None,
) -> dict[str, Any]:
    ae = kb.regimens.ae_restart
    facts: dict[str, Any] = {
        **context_facts(timeline, kb, position),
        **order_facts(order),
        "expected_ug_per_day": num(expected.ug_per_day) if expected else None,
        "expected_ug_per_m2_per_day": num(expected.ug_per_m2_per_day) if expected else None,
        "expected_cap_ug_per_day": num(expected.cap_ug_per_day) if expected else None,
        "expected_basis": expected.basis if expected else None,
        "expected_bsa_ug_per_day": (
            num(bsa_dose(expected, timeline.body.bsa_m2), 1) if expected and timeline.body.bsa_m2 else None
        ),
        "suggested_ug_per_day": num(suggested, 1),
        "ae_restart_date": day(position.ae_restart_at),
        "ae_restart_confirmed": timeline.regimen.id in kb.toxicity.restart_dose.confirmed_regimens,
        "escalate_after_days": ae.escalate_after_days,
        "tolerance_pct": num(kb.dosing.bsa.tolerance_pct),
        "unit_slip": order.dose.unit_slip,
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
        "overdose_restart_hours": num(kb.toxicity.overdose.restart_min_hours),
    }
    return facts
