"""Toxicity rules: CRS, neurological toxicity and seizures, other adverse events, unknown grades, and
restarts ordered before the label's criteria are met.

The timeline's toxicity records are grouped into *episodes*: an episode opens at the first record at
or above the interrupt grade and closes at the first later record at or below the resolved grade
(``toxicity.toml``). An open episode means the infusion must stay interrupted; the time it took to
close decides some discontinuations and the earliest restart. "Discontinue outranks interrupt": for
one toxicity only the stronger card shows.

Only records of the current course count (from its first infusion); without a known course start,
only recent records (``scope.unanchored_lookback_days``), and seizures are not counted at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.knowledge import Knowledge
from service.knowledge.toxicity import Policy
from service.rules.base import Finding, Indicator
from service.rules.labs import course_position_facts, when
from service.rules.medication import num
from service.timeline.model import BlinOrder, InfusionPeriod, Interruption, Timeline, ToxicityRecord

Family = Literal["crs", "neuro", "other"]
_FAMILIES: tuple[Family, ...] = ("crs", "neuro", "other")


@dataclass(frozen=True)
class Episode:
    """One toxicity at or above its interrupt grade, from onset to the record that shows it resolved."""

    family: Family
    key: str
    onset: ToxicityRecord
    peak: ToxicityRecord
    resolved_at: dt.datetime | None

    def days_to_resolve(self, now: dt.datetime) -> float:
        """Days from onset to resolution, or to ``now`` while unresolved."""
        return ((self.resolved_at or now) - self.onset.at).total_seconds() / 86400


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    ctx = _Context.build(timeline, kb)
    discontinued: set[str] = set()
    for finding in (*crs_rules(ctx), *neuro_rules(ctx), *other_event_rules(ctx)):
        if finding.indicator == "critical" and finding.rule_id.endswith("-discontinue"):
            discontinued.add(str(finding.facts["key"]))
        yield finding
    yield from grade_unknown(ctx, discontinued=discontinued, interrupted=_interrupted_families(ctx))
    yield from restart_premature(ctx, discontinued=discontinued)


# ------------------------------------------------------------------ context


@dataclass(frozen=True)
class _Context:
    timeline: Timeline
    kb: Knowledge
    course_start: dt.datetime | None
    records: tuple[ToxicityRecord, ...]
    """Records in scope (current course, or recent when the course start is unknown), oldest first."""
    by_family: Mapping[Family, tuple[Episode, ...]]
    """The episodes of each family, found once per call (several rules read them)."""

    @classmethod
    def build(cls, timeline: Timeline, kb: Knowledge) -> _Context:
        start = _course_start(timeline)
        since = start if start is not None else timeline.now - dt.timedelta(
            days=kb.toxicity.scope.unanchored_lookback_days)
        records = tuple(r for r in timeline.toxicities if since <= r.at <= timeline.now)
        policies = kb.toxicity.policies
        by_family = {f: _episodes(records, f, getattr(policies, f)) for f in _FAMILIES}
        return cls(timeline, kb, start, records, by_family)

    def policy(self, family: Family) -> Policy:
        policy: Policy = getattr(self.kb.toxicity.policies, family)
        return policy

    def episodes(self, family: Family) -> tuple[Episode, ...]:
        """Every episode of this family, oldest first; "other" events are kept apart by what they are."""
        return self.by_family[family]

    def seizures(self) -> list[ToxicityRecord]:
        """Distinct seizures of the current course (records of one onset minute count once)."""
        if self.course_start is None:
            return []
        distinct: dict[dt.datetime, ToxicityRecord] = {}
        for r in self.records:
            if r.kind == "seizure":
                distinct.setdefault(r.at.replace(second=0, microsecond=0), r)
        return list(distinct.values())


def _episodes(records: Sequence[ToxicityRecord], family: Family, policy: Policy) -> tuple[Episode, ...]:
    """The episodes of one family in ``records``, oldest first."""
    groups: dict[str, list[ToxicityRecord]] = {}
    for r in records:
        if r.kind == family and r.grade is not None:
            groups.setdefault(_key(family, r), []).append(r)
    episodes: list[Episode] = []
    for key, recs in groups.items():
        current: tuple[ToxicityRecord, ToxicityRecord] | None = None  # (onset, peak) of the open episode
        for r in recs:
            if _grade(r) >= policy.interrupt_grade:
                if current is None:
                    current = (r, r)
                elif _grade(r) > _grade(current[1]):
                    current = (current[0], r)
            elif _grade(r) <= policy.resolved_max_grade and current is not None:
                episodes.append(Episode(family, key, *current, r.at))
                current = None
        if current is not None:
            episodes.append(Episode(family, key, *current, None))
    return tuple(sorted(episodes, key=lambda e: e.onset.at))


def _key(family: Family, record: ToxicityRecord) -> str:
    return family if family != "other" else f"other:{' '.join(record.label.lower().split())}"


def _course_start(timeline: Timeline) -> dt.datetime | None:
    starts = [p.course_start for p in timeline.positions.values() if p.course_start is not None]
    if starts:
        return min(starts)
    return min((p.start for p in timeline.infusions), default=None)


# ------------------------------------------------------------------ CRS


def crs_rules(ctx: _Context) -> Iterator[Finding]:
    """crs-discontinue — When a CRS episode of the current course reached grade 4 (resolved or not),
    Then critical: discontinue permanently, with the label's dexamethasone treatment.

    crs-interrupt — When the latest CRS episode is grade 3 and has not resolved (no later record at
    grade ≤ 1), and no grade 4 occurred,
    Then critical: interrupt, with the label's dexamethasone treatment and the restart dose (9 µg/day;
    5 µg/m²/day below 45 kg). The 2016 review's "< grade 1 for 3 days" is not used: the label wins.
    """
    policy = ctx.policy("crs")
    episodes = ctx.episodes("crs")
    severe = [e for e in episodes if _grade(e.peak) >= policy.discontinue_grade]
    if severe:
        e = severe[-1]
        yield _finding("crs-discontinue", "critical", ctx, e, {**_crs_treatment(ctx), **_grade_facts(policy),
                                                               "reasons": ["grade-4"]})
        return
    if episodes and episodes[-1].resolved_at is None:
        e = episodes[-1]
        yield _finding("crs-interrupt", "critical", ctx, e, {**_crs_treatment(ctx), **_restart_dose(ctx),
                                                             **_grade_facts(policy)})


# ------------------------------------------------------------------ neurological toxicity


def neuro_rules(ctx: _Context) -> Iterator[Finding]:
    """neuro-discontinue — When in the current course a neurological toxicity (ICANS, encephalopathy…)
    reached grade 4; or reached grade 3 while the infusion ran at the step dose (9 µg/day, or
    5 µg/m²/day below 45 kg); or a grade 3 took more than 7 days to resolve (or is unresolved after 7
    days); or more than one seizure occurred,
    Then critical: discontinue permanently (one finding listing every reason).

    neuro-interrupt — When the latest neurological-toxicity episode is grade 3, unresolved, and none of
    the above applies (it occurred at 28 µg/day or 15 µg/m²/day, or the dose is unknown),
    Then critical: withhold until grade ≤ 1 for at least 3 days, then restart at the restart dose.

    seizure — When exactly one seizure occurred in the current course and neuro-discontinue did not fire,
    Then warning: a second seizure means permanent discontinuation.
    """
    policy = ctx.policy("neuro")
    tox = ctx.kb.toxicity
    now = ctx.timeline.now
    episodes = ctx.episodes("neuro")
    seizures = ctx.seizures()
    reasons: list[str] = []
    trigger: Episode | None = None
    for e in episodes:
        found: list[str] = []
        if _grade(e.peak) >= policy.discontinue_grade:
            found.append("grade-4")
        else:
            if _at_step_dose(ctx, e.onset.at) is True:
                found.append("grade-3-at-step-dose")
            if policy.max_days_to_resolve is not None and e.days_to_resolve(now) > policy.max_days_to_resolve:
                found.append("grade-3-slow-resolution")
        if found:
            reasons += [r for r in found if r not in reasons]
            trigger = e
    if len(seizures) >= tox.seizures.discontinue_count:
        reasons.append("seizures")
    seizure_facts = {
        "seizure_count": len(seizures),
        "seizure_dates": [when(s.at) for s in seizures],
        "seizure_limit": tox.seizures.discontinue_count,
        **_grade_facts(policy),
    }
    if reasons:
        yield _finding("neuro-discontinue", "critical", ctx, trigger, {
            "reasons": reasons, **seizure_facts, **_dose_facts(ctx, trigger),
            "max_days_to_resolve": num(policy.max_days_to_resolve),
        }, key="neuro")
        return
    if episodes and episodes[-1].resolved_at is None:
        e = episodes[-1]
        yield _finding("neuro-interrupt", "critical", ctx, e, {
            **_dose_facts(ctx, e), **_restart_dose(ctx), **_grade_facts(policy),
            "restart_min_days_resolved": num(policy.restart_min_days_resolved),
            "max_days_to_resolve": num(policy.max_days_to_resolve),
        })
    if len(seizures) == 1:
        s = seizures[0]
        yield Finding(
            rule_id="seizure", indicator="warning", about=s.ref,
            facts={**seizure_facts, "at": when(s.at), "label": s.label, "ref": s.ref, "key": "neuro",
                   **course_position_facts(ctx.timeline)},
        )


# ------------------------------------------------------------------ other adverse events


def other_event_rules(ctx: _Context) -> Iterator[Finding]:
    """adverse-event-discontinue — When another adverse event (an AdverseEvent that is not CRS,
    neurological toxicity, a seizure, an overdose or a line flush) reached grade 4 in the current course
    (the label says "consider discontinuing"), or a grade 3 took more than 14 days to resolve,
    Then critical, per event.

    adverse-event-interrupt — When the latest episode of such an event is grade 3 and unresolved,
    Then critical: withhold until grade ≤ 1, then restart at the restart dose.
    """
    policy = ctx.policy("other")
    now = ctx.timeline.now
    by_key: dict[str, list[Episode]] = {}
    for e in ctx.episodes("other"):
        by_key.setdefault(e.key, []).append(e)
    for key, episodes in by_key.items():
        reasons: list[str] = []
        trigger: Episode | None = None
        for e in episodes:
            if _grade(e.peak) >= policy.discontinue_grade:
                reasons, trigger = [*reasons, "grade-4"], e
            elif policy.max_days_to_resolve is not None and e.days_to_resolve(now) > policy.max_days_to_resolve:
                reasons, trigger = [*reasons, "grade-3-slow-resolution"], e
        if trigger is not None:
            yield _finding("adverse-event-discontinue", "critical", ctx, trigger, {
                "reasons": sorted(set(reasons)), "max_days_to_resolve": num(policy.max_days_to_resolve),
                "policy_confidence": policy.confidence, **_grade_facts(policy),
            }, key=key)
        elif episodes[-1].resolved_at is None:
            yield _finding("adverse-event-interrupt", "critical", ctx, episodes[-1], {
                **_restart_dose(ctx), "max_days_to_resolve": num(policy.max_days_to_resolve),
                "restart_min_days_resolved": num(policy.restart_min_days_resolved),
                "policy_confidence": policy.confidence, **_grade_facts(policy),
            }, key=key)


# ------------------------------------------------------------------ unknown grade


def _interrupted_families(ctx: _Context) -> set[str]:
    return {f for f in ("crs", "neuro") if (eps := ctx.episodes(f)) and eps[-1].resolved_at is None}


def grade_unknown(ctx: _Context, *, discontinued: set[str], interrupted: set[str]) -> Iterator[Finding]:
    """When the latest CRS or neurological-toxicity record of the current course has no determinable
    grade (e.g. "severe CRS") and no card already covers that toxicity,
    Then warning: the interruption rules cannot be checked; grade it.
    """
    for family in ("crs", "neuro"):
        if family in discontinued or family in interrupted:
            continue
        recs = [r for r in ctx.records if r.kind == family]
        if not recs or recs[-1].grade is not None:
            continue
        latest = recs[-1]
        if any(r.grade is not None and r.at >= latest.at for r in recs):
            continue
        yield Finding(
            rule_id="toxicity-grade-unknown", indicator="warning", about=latest.ref,
            facts={"kind": family, "key": family, "label": latest.label, "at": when(latest.at), "ref": latest.ref,
                   "default_grading_system": ctx.kb.toxicity.grading.default_system,
                   "restart_ug_per_day": num(ctx.kb.toxicity.restart_dose.ug_per_day),
                   **_grade_facts(ctx.policy(family)),
                   **course_position_facts(ctx.timeline)},
        )


# ------------------------------------------------------------------ restart


def restart_premature(ctx: _Context, *, discontinued: set[str]) -> Iterator[Finding]:
    """When a blinatumomab order in focus restarts the infusion after an interruption, and
    (a) a toxicity that needs it has not been at grade ≤ 1 for the required time before the restart
        (neurological toxicity: 3 days, critical; other adverse events: 3 days, a warning, since only a
        secondary source says so; CRS: none, the label restarts "when resolved"), or
    (b) the interruption followed an overdose or a flushed line and the restart is less than 12 hours
        after the infusion stopped (critical), or is later but a toxicity charted since the overdose has
        not resolved (critical), or the chart holds no graded record since the overdose, so "all
        toxicities resolved" cannot be confirmed (warning: the label needs both conditions),
    Then restart-premature (one finding per order and cause). A toxicity already discontinued is left
    to its discontinue card.
    """
    tl = ctx.timeline
    for order in tl.focus_orders:
        if order.start_date_only:
            continue
        restart_at = order.start or tl.now
        interruption = _interruption_before(tl, order, restart_at)
        if interruption is not None:
            yield from _restart_after_toxicity(ctx, order, restart_at, discontinued=discontinued)
            yield from _restart_after_overdose(ctx, order, restart_at, interruption)
        elif not tl.infusions:
            # No administration history at all: measure from the overdose/flush record itself.
            yield from _restart_after_overdose(ctx, order, restart_at, None)


def _restart_after_toxicity(
    ctx: _Context, order: BlinOrder, restart_at: dt.datetime, *, discontinued: set[str]
) -> Iterator[Finding]:
    for family in _FAMILIES:
        policy = ctx.policy(family)
        if policy.restart_min_days_resolved <= 0:
            continue
        for e in ctx.episodes(family):
            if e.key in discontinued or e.resolved_at is None or not e.onset.at <= e.resolved_at <= restart_at:
                continue
            days = (restart_at - e.resolved_at).total_seconds() / 86400
            if days >= policy.restart_min_days_resolved:
                continue
            yield _restart_finding(ctx, order, restart_at, policy.restart_indicator, {
                "reason": "toxicity-resolved-too-recently", "kind": family, "label": e.peak.label,
                "grade": e.peak.grade, "event_at": when(e.onset.at), "resolved_at": when(e.resolved_at),
                "days_since_resolved": round(days, 1),
                "required_days": num(policy.restart_min_days_resolved),
                "key": e.key, **_grade_facts(policy),
            })


def _restart_after_overdose(
    ctx: _Context, order: BlinOrder, restart_at: dt.datetime, interruption: Interruption | None
) -> Iterator[Finding]:
    events = [r for r in ctx.records if r.kind in ("overdose", "flush") and r.at <= restart_at]
    # The medication side also reads the stop reason of the infusion (and of the interruption), with its own
    # patterns (``policy.toml [stop_reasons]``): a stop only those patterns recognise is found there.
    events += [ToxicityRecord(kind=p.stop_reason, ref=p.ref, at=p.end, grade=None)
               for p in ctx.timeline.infusions
               if p.stop_reason in ("overdose", "flush") and p.end is not None and p.end <= restart_at]
    if interruption is not None and interruption.reason in ("overdose", "flush"):
        events.append(ToxicityRecord(kind=interruption.reason, ref=order.ref, at=interruption.stopped, grade=None))
    if not events:
        return
    event = max(events, key=lambda r: (r.at, bool(r.label)))
    if interruption is None:
        stopped = event.at
    elif _linked(event, interruption, ctx.timeline.infusions):
        stopped = interruption.stopped
    else:
        return
    hours = (restart_at - stopped).total_seconds() / 3600
    policy = ctx.kb.toxicity.overdose
    status, unresolved = _toxicity_status_since(ctx, min(event.at, stopped), restart_at)
    indicator: Indicator
    if hours < policy.restart_min_hours:
        reason, indicator = "overdose-too-soon", "critical"
    elif status == "unresolved":
        reason, indicator = "overdose-toxicity-unresolved", "critical"
    elif status == "unknown":
        reason, indicator = "overdose-toxicity-unknown", "warning"
    else:
        return
    yield _restart_finding(ctx, order, restart_at, indicator, {
        "reason": reason, "kind": event.kind, "label": event.label, "grade": None,
        "event_at": when(event.at), "stopped_at": when(stopped), "hours_since_stop": round(hours, 1),
        "required_hours": num(policy.restart_min_hours), "key": event.kind,
        "toxicity_status": status, "unresolved_toxicities": unresolved,
        "overdose_resolved_max_grade": policy.resolved_max_grade,
    })


def _toxicity_status_since(
    ctx: _Context, since: dt.datetime, until: dt.datetime
) -> tuple[Literal["resolved", "unresolved", "unknown"], list[dict[str, Any]]]:
    """Whether "all toxicities have resolved" between an overdose and a restart (the label's second condition).

    Each toxicity charted in the window (CRS, neurological toxicity and seizures together, each other adverse
    event by what it is) is judged by its latest record: at or below ``overdose.resolved_max_grade`` is
    resolved, above it unresolved, without a grade unknown. No record at all is unknown too: the chart does not
    say the patient is free of toxicity, so the restart gets a warning, not silence.
    """
    latest: dict[str, ToxicityRecord] = {}
    for r in ctx.records:
        if r.kind in ("overdose", "flush") or not since <= r.at <= until:
            continue
        family = "neuro" if r.kind == "seizure" else r.kind
        latest[_key(family, r) if family == "other" else family] = r
    limit = ctx.kb.toxicity.overdose.resolved_max_grade
    unresolved = [{"label": r.label, "grade": r.grade, "at": when(r.at)}
                  for r in latest.values() if r.grade is not None and r.grade > limit]
    if unresolved:
        return "unresolved", unresolved
    if not latest or any(r.grade is None for r in latest.values()):
        return "unknown", []
    return "resolved", []


def _restart_finding(
    ctx: _Context, order: BlinOrder, restart_at: dt.datetime, indicator: Indicator, specific: dict[str, Any]
) -> Finding:
    facts: dict[str, Any] = {
        "order_ref": order.ref, "restart_at": when(restart_at), "kind": None, "label": None, "grade": None,
        "event_at": None, "resolved_at": None, "days_since_resolved": None, "required_days": None,
        "stopped_at": None, "hours_since_stop": None, "required_hours": None,
        "toxicity_status": None, "unresolved_toxicities": [], "overdose_resolved_max_grade": None,
        "interrupt_grade": None, "discontinue_grade": None, "resolved_max_grade": None,
        "restart_ug_per_day": num(ctx.kb.toxicity.restart_dose.ug_per_day),
        **course_position_facts(ctx.timeline),
    }
    facts.update(specific)
    return Finding(rule_id="restart-premature", indicator=indicator, facts=facts, about=order.ref)


def _interruption_before(tl: Timeline, order: BlinOrder, restart_at: dt.datetime) -> Interruption | None:
    """The interruption this order restarts after: the course position's, else derived from the infusions.

    Derived locally when the medication side gave no interruption: no infusion runs at ``restart_at``
    and an earlier one has ended.
    """
    position = tl.positions.get(order.ref)
    if position is not None and position.interruption is not None:
        return position.interruption
    if any(p.start <= restart_at and (p.end is None or p.end > restart_at) for p in tl.infusions):
        return None
    ended = [p for p in tl.infusions if p.end is not None and p.end <= restart_at]
    if not ended:
        return None
    last = max(ended, key=lambda p: p.end or p.start)
    assert last.end is not None
    return Interruption(stopped=last.end, restarted=restart_at, gap=restart_at - last.end, reason=last.stop_reason)


def _linked(event: ToxicityRecord, interruption: Interruption, infusions: Sequence[InfusionPeriod]) -> bool:
    """Whether the overdose/flush happened in the infusion this interruption ended (no restart in between)."""
    return not any(event.at < p.start < interruption.stopped for p in infusions)


# ------------------------------------------------------------------ facts


def _grade(record: ToxicityRecord) -> int:
    return record.grade if record.grade is not None else -1


def _finding(
    rule_id: str, indicator: Indicator, ctx: _Context, episode: Episode | None, specific: dict[str, Any],
    *, key: str | None = None,
) -> Finding:
    now = ctx.timeline.now
    facts: dict[str, Any] = {
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
        **course_position_facts(ctx.timeline),
    }
    facts.update(specific)
    return Finding(rule_id=rule_id, indicator=indicator, facts=facts,
                   about=episode.peak.ref if episode else None)


def _grade_facts(policy: Policy) -> dict[str, Any]:
    """The family's grades (interrupt at, discontinue at, resolved at or below), for cards that name them."""
    return {"interrupt_grade": policy.interrupt_grade, "discontinue_grade": policy.discontinue_grade,
            "resolved_max_grade": policy.resolved_max_grade}


def _small_patient(ctx: _Context) -> bool | None:
    weight = ctx.timeline.body.weight_kg
    return None if weight is None else weight < ctx.kb.toxicity.restart_dose.weight_band_kg


def _restart_dose(ctx: _Context) -> dict[str, Any]:
    """The label's restart and escalation doses, with the regimen they were read for (cards flag the others)."""
    rd = ctx.kb.toxicity.restart_dose
    regimen = ctx.timeline.regimen
    return {
        "regimen": regimen.id,
        "regimen_label": ctx.kb.regimens.regimens[regimen.id].label,
        "regimen_why": regimen.why,
        "regimen_evidence": regimen.evidence,
        "restart_dose_confirmed": regimen.id in rd.confirmed_regimens,
        "restart_ug_per_day": num(rd.ug_per_day),
        "restart_ug_per_m2_per_day": num(rd.ug_per_m2_per_day),
        "escalate_ug_per_day": num(rd.escalate_ug_per_day),
        "escalate_ug_per_m2_per_day": num(rd.escalate_ug_per_m2_per_day),
        "escalate_after_days": num(rd.escalate_after_days),
        "weight_band_kg": num(rd.weight_band_kg),
        "weight_kg": num(ctx.timeline.body.weight_kg),
        "small_patient": _small_patient(ctx),
    }


def _crs_treatment(ctx: _Context) -> dict[str, Any]:
    t = ctx.kb.toxicity.crs_grade3_treatment
    bsa = ctx.timeline.body.bsa_m2
    small_dose = min(t.small_patient_mg_per_m2 * bsa, t.small_patient_max_mg) if bsa else None
    return {
        "dex_mg": num(t.dexamethasone_mg),
        "dex_interval_hours": num(t.interval_hours),
        "dex_max_days": num(t.max_days),
        "dex_taper_days": num(t.taper_days),
        "dex_mg_per_m2": num(t.small_patient_mg_per_m2),
        "dex_max_mg_small": num(t.small_patient_max_mg),
        "dex_small_dose_mg": num(small_dose),
        "weight_band_kg": num(ctx.kb.toxicity.restart_dose.weight_band_kg),
        "small_patient": _small_patient(ctx),
    }


def _infusion_at(infusions: Sequence[InfusionPeriod], at: dt.datetime) -> InfusionPeriod | None:
    """The infusion running at ``at``, else the last one that started before it."""
    running = [p for p in infusions if p.start <= at and (p.end is None or p.end >= at)]
    if running:
        return running[-1]
    before = [p for p in infusions if p.start <= at]
    return before[-1] if before else None


def _at_step_dose(ctx: _Context, at: dt.datetime) -> bool | None:
    """Whether the infusion at ``at`` ran at the step dose (``None`` when the dose or BSA is unknown)."""
    rd = ctx.kb.toxicity.restart_dose
    period = _infusion_at(ctx.timeline.infusions, at)
    if period is None or period.ug_per_day is None:
        return None
    body = ctx.timeline.body
    limit = 1 + rd.dose_match_tolerance
    if body.weight_kg is not None and body.weight_kg < rd.weight_band_kg:
        if not body.bsa_m2:
            return None
        return period.ug_per_day / body.bsa_m2 <= rd.ug_per_m2_per_day * limit
    return period.ug_per_day <= rd.ug_per_day * limit


def _dose_facts(ctx: _Context, episode: Episode | None) -> dict[str, Any]:
    if episode is None:
        return {"dose_at_event": None, "at_step_dose": None}
    period = _infusion_at(ctx.timeline.infusions, episode.onset.at)
    return {
        "dose_at_event": num(period.ug_per_day) if period else None,
        "at_step_dose": _at_step_dose(ctx, episode.onset.at),
    }
