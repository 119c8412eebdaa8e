"""The phrases the medication cards print, worded from the facts the rules found.

Premedication, dose and course rules decide; this module only words what they decided, so each card file
(``cards/<rule-id>.toml``) is sentences with ``{{ placeholders }}`` and plain ``{% if flag %}``. Every function
takes a finding's facts and returns new keys; :func:`worded` adds them to a finding. The codes stay in the facts
too (``event``, ``kind``, ``direction``…): analytics, tests and site cards may still read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from service.rules.base import Finding
from service.rules.phrases import event_name, event_phrase, plural, steroid_dose, ug_per_day, ug_per_m2_per_day

Facts = Mapping[str, Any]


# --- premedication -----------------------------------------------------------------------------------------------

def requirement_phrase(f: Facts) -> str:
    """``dexamethasone 20 mg IV or equivalent (the label gives prednisone 100 mg as an example)``."""
    agent = f["required_agent"]
    if f["required_dose_mg"] is not None:
        text = f"{agent} {f['required_dose_mg']} mg"
    else:
        for_patient = f["required_mg_for_patient"]
        extra = f"; {for_patient} mg for this patient" if for_patient is not None else ""
        text = f"{agent} {f['required_dose_mg_per_m2']} mg/m² (maximum {f['required_max_mg']} mg{extra})"
    text += f" {f['required_route']}"
    if f["accept_equivalents"]:
        text += " or equivalent"
        others = [f"{e['agent']} {e['mg']} mg" for e in f["label_equivalents"] if e["agent"] != agent]
        if others:
            text += f" (the label gives {', '.join(others)} as an example)"
    return text


def equivalence_phrase(f: Facts) -> str | None:
    """How "or equivalent" is judged: the label's own ratio, then the standard table (``None``: not accepted)."""
    if not f["accept_equivalents"]:
        return None
    text = ""
    if f["label_equivalents"]:
        ratio = " ≈ ".join(f"{e['agent']} {e['mg']} mg" for e in f["label_equivalents"])
        text = f"the label's own ratio ({ratio}) and "
    text += "the standard table for other agents"
    methylpred = f["standard_equivalent_mg"].get("methylprednisolone")
    if methylpred is not None:
        text += f" (methylprednisolone {methylpred} mg ≈ {f['required_agent']} {f['required_dose_mg']} mg)"
    return text


def _not_counted_items(f: Facts) -> list[dict[str, Any]]:
    """Each steroid order the rule did not count, with ``after_start`` (else: untimed) for the card to word."""
    return [{"agent": n["agent"], "ref": n["ref"], "at": n["at"], "after_start": n["why"] == "after-start"}
            for n in f["orders_not_counted"]]


def _given_phrases(f: Facts) -> dict[str, Any]:
    """The steroid judged by premed-timing and premed-dose (empty for premed-missing)."""
    if "given_agent" not in f:
        return {}
    agent, dose = f["given_agent"], f["given_dose_mg"]
    minutes = f["minutes_before"]
    if minutes is None:
        offset = None
    elif f["given_after_start"]:
        offset = f"{plural(-minutes, 'minute')} after the start"
    else:
        offset = f"{plural(minutes, 'minute')} before it"
    if dose is not None:
        dose_text = f" {dose} mg"
    elif f["given_dose_unit"] is not None:
        dose_text = f" (dose in {f['given_dose_unit']}, not a mass)"
    else:
        dose_text = " (no dose stated)"
    description = f"{agent}{dose_text}"
    if f["given_at"] is not None:
        description += f" at {f['given_at']}"
    if f["equivalent_mg"] is not None and agent != f["required_agent"]:
        description += f", equivalent to about {f['equivalent_mg']} mg {f['required_agent']}"
    given_at = f["given_at"]
    return {
        "given_verb": "scheduled" if f["given_kind"] == "order" else "given",
        "given_label": "Ordered" if f["given_kind"] == "order" else "Given",
        "given_steroid": agent[:1].upper() + agent[1:] + (f" {dose} mg" if dose is not None else ""),
        "given_when": (f"on {given_at[:10]} (no time recorded)" if f["given_date_only"] and given_at
                       else f"at {given_at}"),
        "given_dose_phrase": f"{dose} mg" if dose is not None else "(no dose)",
        "given_description": description,
        "offset_phrase": offset,
    }


def premedication_phrases(f: Facts) -> dict[str, Any]:
    """premed-missing, premed-timing, premed-dose."""
    steroid_agent = f["steroid_agent"]
    return {
        "event_phrase": event_phrase(f["event"], f["restart_threshold_hours"]),
        "event_brief": (f"restart (≥ {f['restart_threshold_hours']} h interruption)" if f["event"] == "restart"
                        else event_name(f["event"])),
        "is_restart": f["event"] == "restart",
        "infusion_date": f["infusion_start"][:10] if f["infusion_start"] else None,
        "requirement_phrase": requirement_phrase(f),
        "equivalence_phrase": equivalence_phrase(f),
        "per_m2_requirement": f["required_dose_mg"] is None,
        "not_counted_items": _not_counted_items(f),
        "steroid_phrase": steroid_dose(steroid_agent, f["steroid_dose_mg"], f["steroid_dose_mg_per_m2"]),
        **_given_phrases(f),
    }


# --- doses ----------------------------------------------------------------------------------------------------------

UNVERIFIABLE: dict[str, tuple[str, str, str]] = {
    # problem code: (what is wrong, the checks skipped, what to record). {freshness_days}, {straddle_window_hours},
    # {weight_threshold_kg}, {restart_threshold_hours} and {same_cycle_max_days} are filled from the facts.
    "weight-missing": ("no weight recorded", "the weight band, schedule and BSA dose checks",
                       "a current weight in kg"),
    "weight-stale": ("weight older than {freshness_days} days", "the weight band, schedule and BSA dose checks",
                     "a weight from the last {freshness_days} days"),
    "weight-unit-missing": ("weight without a unit", "the weight band, schedule and BSA dose checks",
                            "the weight with its unit (kg, g or lb)"),
    "weight-unit-not-convertible": ("weight unit not convertible", "the weight band, schedule and BSA dose checks",
                                    "the weight in kg, g or lb"),
    "weight-straddles-band": ("two weights within {straddle_window_hours} h on both sides of {weight_threshold_kg} kg",
                              "the weight band, schedule and BSA dose checks", "one confirmed current weight"),
    "height-missing": ("no height or BSA for a patient under {weight_threshold_kg} kg",
                       "the BSA dose check (and the pediatric steroid dose)", "a height (or a BSA)"),
    "bsa-missing": ("per-m² order without a BSA", "the µg/m²/day order's conversion to µg/day and the maximum",
                    "a height and weight (or a BSA)"),
    "medication-unresolved": ("the order's Medication could not be found (neither prefetched nor on the FHIR "
                              "server); only the order's text names blinatumomab",
                              "confirming the drug and reading the bag's strength",
                              "the drug on the order (a coded Medication, contained or on the FHIR server)"),
    "rate-without-concentration": ("pump rate without a concentration", "every dose check of this order",
                                   "the dose in µg/day (UCUM ug/d), or the bag's concentration "
                                   "(Medication.ingredient.strength)"),
    "unit-not-convertible": ("dose unit not convertible", "every dose check of this order",
                             "the dose in µg/day (UCUM ug/d): units such as {{pill}} are not a mass"),
    "no-dose": ("no dose found in the order", "every dose check of this order", "the dose in µg/day (UCUM ug/d)"),
    "order-date-only": ("order start recorded as a date only",
                        "the cycle day, premedication window and treatment-free interval checks of this order",
                        "the order's start with a time (timing.repeat.boundsPeriod.start)"),
    "history-date-only": ("infusion times recorded as dates only",
                          "the cycle day, interruption ({restart_threshold_hours} hours, {same_cycle_max_days} days), "
                          "premedication window and treatment-free "
                          "interval checks", "each administration's start and end with a time"),
    "infusion-rate-without-concentration": ("running pump rate without a concentration",
                                            "the running infusion's dose check (pump programming)",
                                            "the bag's concentration (Medication.ingredient.strength) or the rate "
                                            "in µg/day"),
    "infusion-unit-not-convertible": ("running infusion's unit not convertible",
                                      "the running infusion's dose check (pump programming)",
                                      "the rate in µg/day, or in mL/h with the bag's concentration"),
    "infusion-no-dose": ("running infusion charted without a rate",
                         "the running infusion's dose check (pump programming)",
                         "the rate (dosage.rateQuantity) on the administration"),
    "steroid-dose-unit": ("steroid dose not in mg", "the premedication dose check", "the steroid dose in mg (UCUM mg)"),
    "steroid-date-only": ("steroid charted with a date only", "the premedication timing check",
                          "the steroid's scheduled or given time (timing.event, boundsPeriod.start, or the "
                          "administration's time)"),
}


def _problem_note(code: str, f: Facts) -> str | None:
    if code == "medication-unresolved":
        return str(f["medication_ref"])
    if code == "rate-without-concentration":
        return str(f["dose_display"])
    if code.startswith("infusion-") and f["running_display"] is not None:
        return str(f["running_display"])
    if code == "steroid-dose-unit":
        return ", ".join(f["steroid_units"])
    if code == "steroid-date-only":
        return ", ".join(f["steroid_dates"])
    if code == "weight-stale":
        return f"last weight {f['weight_date']}"
    return None


def problem_items(f: Facts) -> list[dict[str, str | None]]:
    """Each check dose-unverifiable skipped: ``what`` is wrong, a ``note`` from the chart, what was ``skipped``
    and what to ``record``."""
    values = {k: f[k] for k in ("freshness_days", "straddle_window_hours", "weight_threshold_kg",
                                "restart_threshold_hours", "same_cycle_max_days")}
    items: list[dict[str, str | None]] = []
    for code in f["problems"]:
        what, skipped, record = (text.format(**values) for text in UNVERIFIABLE[code])
        items.append({"code": code, "what": what, "note": _problem_note(code, f), "skipped": skipped,
                      "record": record})
    return items


def dose_phrases(f: Facts) -> dict[str, Any]:
    """dose-limit, dose-schedule, dose-weight-band, dose-unverifiable."""
    administration = f["checked"] == "administration"
    per_m2 = f["compared"] == "ug_per_m2_per_day"
    if f["band_unknown"]:
        expected = f"the {ug_per_day(f['expected_cap_ug_per_day'])} maximum"
    elif per_m2:
        expected = f"the {ug_per_m2_per_day(f['expected_ug_per_m2_per_day'])}"
    else:
        expected = f"the {ug_per_day(f['expected_ug_per_day'])}"
    items = problem_items(f)
    if f["administration_running"]:
        mar = f"running since {f['administration_start']}"
    else:
        stopped = f", stopped {f['administration_end']}" if f["administration_end"] is not None else ""
        mar = f"started {f['administration_start']}{stopped}"
    return {
        "subject_label": "Running infusion: blinatumomab" if administration else "Blinatumomab",
        "checked_label": "Infusing" if administration else "Ordered",
        "checked_administration": administration,
        "dose_phrase": ug_per_day(f["dose_ug_per_day"]),
        "compared_dose": (ug_per_m2_per_day(f["dose_ug_per_m2_per_day"]) if per_m2
                          else ug_per_day(f["dose_ug_per_day"])),
        "expected_phrase": expected,
        "ae_restart": f["expected_basis"] == "ae-restart",
        "show_bsa_dose": f["expected_bsa_ug_per_day"] is not None and f["weight_band"] == "bsa",
        "above": f["direction"] == "above",
        "above_schedule_risk": f["direction"] == "above" and not f["early_escalation"],
        "administration_phrase": mar if administration else None,
        "checked_derived": f["checked_position"] == "derived",
        "unit_slip_mg": f["unit_slip"] == "mg-for-ug",
        "unit_slip_per_hour": f["unit_slip"] == "per-hour-for-per-day",
        "unit_slip_question": {"mg-for-ug": "mg instead of µg?",
                               "per-hour-for-per-day": "per hour instead of per day?"}.get(f["unit_slip"] or ""),
        "kind_per_kg": f["kind"] == "per-kg",
        "kind_bsa_unit": f["kind"] == "bsa-unit-fixed-band",
        "problem_items": items,
        "first_problem": items[0]["what"] if items else None,
        "more_problems": f"(+{len(items) - 1} more)" if len(items) > 1 else None,
    }


# --- course ---------------------------------------------------------------------------------------------------------

def _phase_breakdown(f: Facts) -> str | None:
    phases, regimen = f["phase_cycles"], f["regimen"]
    if regimen == "relapsed-refractory" and "continued_therapy" in phases:
        return (f"{phases['induction']} induction, {phases['consolidation']} consolidation and "
                f"{phases['continued_therapy']} continued-therapy cycles")
    if regimen == "mrd-positive" and "consolidation" in phases:
        return f"{phases['induction']} induction and up to {phases['consolidation']} consolidation cycles"
    if regimen == "consolidation":
        return f"{f['max_cycles']} blinatumomab cycles in the E1910 sequence"
    return None


def cycle_new_required_phrases(f: Facts) -> dict[str, Any]:
    return {"stopped_for_adverse_event": f["interruption_reason"] == "adverse-event"}


def cycle_limit_phrases(f: Facts) -> dict[str, Any]:
    breakdown = _phase_breakdown(f)
    count = plural(f["max_cycles"], "cycle")
    return {"cycle_count_phrase": f"{count} ({breakdown})" if breakdown else count,
            "rr_max_cycles": f["max_cycles_by_regimen"].get("relapsed-refractory")}


def treatment_free_interval_phrases(f: Facts) -> dict[str, Any]:
    differs = f["previous_cycle_on_record"] is not None and f["previous_cycle_on_record"] != f["previous_cycle"]
    if f["previous_phase"] == "continued_therapy":
        first, last = f["phase_ranges"]["continued_therapy"]
        basis = f"continued-therapy cycles {first}–{last}: {f['required_days']} days"
    else:
        basis = f"induction and consolidation cycles: {f['required_days']} days"
    return {
        "previous_cycle_differs": differs,
        "previous_cycle_phrase": "the last cycle on record" if differs else f"cycle {f['previous_cycle']}",
        "start_date": f["event_at"][:10] if f["event_at"] is not None else "now",
        "interval_basis": basis,
    }


def therapy_status_phrases(f: Facts) -> dict[str, Any]:
    cycle, interval = f["cycle"], f["interval"]
    off = plural(f["off_days"], "day")
    if cycle is None:
        state = "course position unknown"
    elif interval == "treatment-free":
        state = f"cycle {cycle} completed, treatment-free interval {f['off_days']} of {f['tfi_required_days']} days"
    elif interval == "interruption":
        state = f"cycle {cycle} day {f['day']}, stopped {off} ago"
    else:
        state = f"cycle {cycle} day {f['day']}"
    event = f["next_premed_event"]
    status = state
    if f["running"] and f["current_dose_ug_per_day"] is not None:
        status += f", {ug_per_day(f['current_dose_ug_per_day'])}"
    if not f["running"] and interval is None:
        status += " (not running)"
    return {
        "status_phrase": status,
        "ended_phrase": (f"last infusion ended {f['last_infusion_end']}" if f["last_infusion_end"] is not None
                         else None),
        "current_dose": ug_per_day(f["current_dose_ug_per_day"]),
        "in_treatment_free_interval": interval == "treatment-free",
        "interrupted": interval == "interruption",
        "off_days_phrase": off,
        "next_premed_name": event_name(event),
        "next_premed_when": (None if event is None else
                             f"{'no earlier than' if event == 'cycle-start' else 'due'} {f['next_premed_date']}"),
        "premed_phrase": steroid_dose(f["premed_agent"], f["premed_dose_mg"], f["premed_dose_mg_per_m2"],
                                      f["premed_max_mg"]),
    }


PHRASES: dict[str, Callable[[Facts], dict[str, Any]]] = {
    "premed-missing": premedication_phrases,
    "premed-timing": premedication_phrases,
    "premed-dose": premedication_phrases,
    "dose-limit": dose_phrases,
    "dose-schedule": dose_phrases,
    "dose-weight-band": dose_phrases,
    "dose-unverifiable": dose_phrases,
    "cycle-new-required": cycle_new_required_phrases,
    "cycle-limit": cycle_limit_phrases,
    "treatment-free-interval": treatment_free_interval_phrases,
    "therapy-status": therapy_status_phrases,
}


def worded(finding: Finding) -> Finding:
    """The finding with its card's phrases added (unchanged for a rule without phrases of its own)."""
    phrase = PHRASES.get(finding.rule_id)
    return replace(finding, facts={**finding.facts, **phrase(finding.facts)}) if phrase else finding
