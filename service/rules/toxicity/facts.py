"""Facts several toxicity cards share: the episode, the family's grades, the restart dose, the CRS treatment.

Besides numbers and codes, each finding carries phrases its card prints as they are (``wording``): the event's
name, the grading note, doses with units for the patient's weight band, and the shared context (``card_context``).

The restart dose and its escalation come from ``regimens.toml`` (``[ae_restart]`` and the regimen's schedule
for the dose escalated to) and the 45 kg band from ``dosing.toml [weight_band]``: each fact is stated once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from service.knowledge.toxicity import Policy
from service.rules.base import Finding, Indicator
from service.rules.labs import card_context, course_position_facts, when
from service.rules.medication import num
from service.rules.toxicity import wording
from service.rules.toxicity.context import Context, Episode, SeizureEpisode
from service.timeline.model import InfusionPeriod, ToxicityRecord


def finding(
    rule_id: str, indicator: Indicator, ctx: Context, episode: Episode | None, specific: dict[str, Any],
    *, key: str | None = None,
) -> Finding:
    now = ctx.timeline.now
    default_system = ctx.kb.toxicity.grading.default_system
    facts: dict[str, Any] = {
        **card_context(ctx.timeline, ctx.kb),
        "key": key or (episode.key if episode else rule_id),
        "kind": episode.family if episode else None,
        "label": episode.peak.label if episode else None,
        "grade": episode.peak.grade if episode else None,
        "grade_from_text": episode.peak.grade_from_text if episode else False,
        "grading_system": episode.peak.grading_system if episode else None,
        "default_grading_system": ctx.kb.toxicity.grading.default_system,
        "onset": when(episode.onset.at) if episode else None,
        "ref": episode.peak.ref if episode else None,
        "resolved_at": when(episode.resolved_at) if episode else None,
        "days": round(episode.days_to_resolve(now), 1) if episode else None,
        # phrases the card prints as they are
        "has_episode": episode is not None,
        "toxicity_name": wording.event_name(episode.peak.label, episode.family) if episode else None,
        "grading_note": wording.grading_note(episode.peak.grading_system, default_system,
                                             from_text=episode.peak.grade_from_text) if episode else None,
        "unresolved": episode is not None and episode.resolved_at is None,
    }
    facts.update(specific)
    return Finding(rule_id=rule_id, indicator=indicator, facts=facts,
                   about=episode.peak.ref if episode else None)


def grade_facts(policy: Policy) -> dict[str, Any]:
    """The family's grades (interrupt at, discontinue at, resolved at or below), for cards that name them."""
    life_threatening = " (life-threatening)" if policy.discontinue_grade == 4 else ""
    return {"interrupt_grade": policy.interrupt_grade, "discontinue_grade": policy.discontinue_grade,
            "resolved_max_grade": policy.resolved_max_grade,
            "discontinue_grade_phrase": f"grade {policy.discontinue_grade}{life_threatening}"}


def source_of(record: ToxicityRecord) -> str:
    """The resource type that recorded it (``Observation``, ``Condition``, ``AdverseEvent``…)."""
    return record.ref.split("/", 1)[0]


def seizure_facts(episodes: Sequence[SeizureEpisode]) -> list[dict[str, Any]]:
    """Each distinct seizure with its time, what it was called and every record (type and reference) of it."""
    return [{"at": when(e.at), "label": e.first.label, "count": e.count,
             "sources": [{"type": source_of(r), "ref": r.ref, "at": when(r.at)} for r in e.records]}
            for e in episodes]


def weight_band_kg(ctx: Context) -> float:
    return ctx.kb.dosing.weight_band.threshold_kg


def small_patient(ctx: Context) -> bool | None:
    weight = ctx.timeline.body.weight_kg
    return None if weight is None else weight < weight_band_kg(ctx)


def restart_dose(ctx: Context) -> dict[str, Any]:
    """The label's restart and escalation doses, with the regimen they were read for (cards flag the others).

    Restart: ``regimens.toml [ae_restart]``. Escalation: the regimen's full dose for the cycle (its last infusion
    day's schedule row; cycle 1 when the position is unknown).
    """
    kb, regimen = ctx.kb, ctx.timeline.regimen
    ae = kb.regimens.ae_restart
    spec = kb.regimens.regimens[regimen.id]
    cycle = course_position_facts(ctx.timeline)["cycle"] or 1
    last_day = kb.regimens.cycle_rules.cycle_days
    full = spec.row(cycle, last_day) or spec.row(1, last_day)
    band, small = num(weight_band_kg(ctx)), small_patient(ctx)
    restart_day, restart_m2 = wording.ug_day(num(ae.ug_per_day)), wording.ug_m2_day(num(ae.ug_per_m2_per_day))
    escalate_day = wording.ug_day(num(full.ug_per_day)) if full else None
    escalate_m2 = wording.ug_m2_day(num(full.ug_per_m2_per_day)) if full else None
    assert band is not None
    return {
        "regimen": regimen.id,
        "regimen_label": spec.label,
        "regimen_why": regimen.why,
        "regimen_evidence": regimen.evidence,
        "restart_dose_confirmed": regimen.id in kb.regimens.ae_restart.confirmed_regimens,
        "restart_dose_unconfirmed": regimen.id not in kb.regimens.ae_restart.confirmed_regimens,
        "restart_ug_per_day": num(ae.ug_per_day),
        "restart_ug_per_m2_per_day": num(ae.ug_per_m2_per_day),
        "escalate_ug_per_day": num(full.ug_per_day) if full else None,
        "escalate_ug_per_m2_per_day": num(full.ug_per_m2_per_day) if full else None,
        "escalate_after_days": num(ae.escalate_after_days),
        "weight_band_kg": num(weight_band_kg(ctx)),
        "weight_kg": num(ctx.timeline.body.weight_kg),
        "small_patient": small,
        # doses with units: for the patient's weight band (both when the weight is unknown), or the adult dose
        # with the under-band one unless the patient is known to be at or above the band
        "weight_unknown": small is None,
        "under_band_possible": small is not False,
        "step_dose": restart_day,
        "restart_dose": wording.by_band(restart_day, restart_m2, band, small),
        "escalate_dose": wording.by_band(escalate_day, escalate_m2, band, small),
        "restart_dose_bands": wording.with_small_band(restart_day, restart_m2, band, small),
        "escalate_dose_adult": escalate_day,
    }


def crs_treatment(ctx: Context) -> dict[str, Any]:
    t = ctx.kb.toxicity.crs_grade3_treatment
    bsa = ctx.timeline.body.bsa_m2
    small_dose = min(t.small_patient_mg_per_m2 * bsa, t.small_patient_max_mg) if bsa else None
    band, small = num(weight_band_kg(ctx)), small_patient(ctx)
    assert band is not None
    adult = f"{num(t.dexamethasone_mg)} mg"
    small_text = f"{num(t.small_patient_mg_per_m2)} mg/m², maximum {num(t.small_patient_max_mg)} mg"
    for_patient = (f"{num(t.small_patient_mg_per_m2)} mg/m² (maximum {num(t.small_patient_max_mg)} mg; "
                   f"{num(small_dose)} mg for this patient's BSA)") if small_dose is not None else small_text
    return {
        "dex_mg": num(t.dexamethasone_mg),
        "dex_interval_hours": num(t.interval_hours),
        "dex_max_days": num(t.max_days),
        "dex_taper_days": num(t.taper_days),
        "dex_mg_per_m2": num(t.small_patient_mg_per_m2),
        "dex_max_mg_small": num(t.small_patient_max_mg),
        "dex_small_dose_mg": num(small_dose),
        "weight_band_kg": band,
        "small_patient": small,
        "dex_dose": wording.by_band(adult, for_patient, band, small),
        "dex_dose_bands": f"{adult} (under {band} kg: {small_text})",
    }


def infusion_at(infusions: Sequence[InfusionPeriod], at: dt.datetime) -> InfusionPeriod | None:
    """The infusion running at ``at``, else the last one that started before it."""
    running = [p for p in infusions if p.start <= at and (p.end is None or p.end >= at)]
    if running:
        return running[-1]
    before = [p for p in infusions if p.start <= at]
    return before[-1] if before else None


def at_step_dose(ctx: Context, at: dt.datetime) -> bool | None:
    """Whether the infusion at ``at`` ran at the step dose (``None`` when the dose or BSA is unknown)."""
    ae = ctx.kb.regimens.ae_restart
    period = infusion_at(ctx.timeline.infusions, at)
    if period is None or period.ug_per_day is None:
        return None
    body = ctx.timeline.body
    limit = 1 + ctx.kb.toxicity.restart_dose.dose_match_tolerance
    if body.weight_kg is not None and body.weight_kg < weight_band_kg(ctx):
        if not body.bsa_m2:
            return None
        return period.ug_per_day / body.bsa_m2 <= ae.ug_per_m2_per_day * limit
    return period.ug_per_day <= ae.ug_per_day * limit


def dose_facts(ctx: Context, episode: Episode | None) -> dict[str, Any]:
    if episode is None:
        return {"dose_at_event": None, "dose_at_event_text": None, "at_step_dose": None}
    period = infusion_at(ctx.timeline.infusions, episode.onset.at)
    return {
        "dose_at_event": num(period.ug_per_day) if period else None,
        "dose_at_event_text": wording.ug_day(num(period.ug_per_day)) if period else None,
        "at_step_dose": at_step_dose(ctx, episode.onset.at),
    }
