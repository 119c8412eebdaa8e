"""Course rules (cycle-new-required, cycle-limit, treatment-free-interval, therapy-status) and quiet courses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.knowledge import Knowledge
from service.rules.base import Finding
from tests.builders import (
    PREDNISONE,
    at,
    blin_infusion,
    blin_order,
    height,
    patient,
    steroid_given,
    steroid_order,
    weight,
)
from tests.med_helpers import alarms, detail_of, one, renderer, run

C1 = at(2026, 3, 1, 10)
MRD = "urn:blina-cds:regimen:mrd-positive"


def adult(when: dt.datetime | None = None) -> list[dict[str, Any]]:
    when = when or at(2026, 3, 1)
    return [patient(birth_date="1980-01-01"), weight("w", 70, when), height("h", 175, when)]


def course_ids(findings: list[Finding]) -> list[tuple[str, str]]:
    wanted = ("cycle-new-required", "cycle-limit", "treatment-free-interval", "therapy-status")
    return sorted((f.rule_id, f.indicator) for f in findings if f.rule_id in wanted)


@pytest.mark.parametrize(("gap", "expected"), [(dt.timedelta(days=8), [("cycle-new-required", "warning")]),
                                               (dt.timedelta(days=7), [])])
def test_order_text_continuing_a_cycle_after_more_than_7_days(kb: Knowledge, gap: dt.timedelta,
                                                              expected: list[Any]) -> None:
    stop = at(2026, 3, 9, 10)
    restart = stop + gap
    history = [blin_infusion("a", C1, stop, ug_per_day=28, status="stopped", status_reason="neurotoxicity grade 3")]
    findings = run(kb, now=restart, drafts=[blin_order("o", 9, start=restart, text="Cycle 1 Day 9"),
                                            steroid_order("dx")], resources=[*history, *adult()])
    assert course_ids(findings) == expected
    if expected:
        f = one(findings, "cycle-new-required")
        facts = f.facts
        assert (facts["gap_days"], facts["derived_cycle"], facts["interruption_reason"]) == (8, 2, "adverse-event")


@pytest.mark.parametrize(
    ("text", "canonical", "expected"),
    [("Cycle 10 Day 1", None, [("cycle-limit", "warning")]), ("Cycle 9 Day 1", None, []),
     ("Cycle 5 Day 1", MRD, [("cycle-limit", "warning")]), ("Cycle 4 Day 1", MRD, [])],
)
def test_cycle_limit_per_regimen(kb: Knowledge, text: str, canonical: str | None, expected: list[Any]) -> None:
    order = blin_order("o", 28, text=text, instantiates=[canonical] if canonical else ())
    findings = run(kb, now=C1, drafts=[order, steroid_order("dx", PREDNISONE, dose=100) if canonical
                                       else steroid_order("dx")], resources=adult())
    assert course_ids(findings) == expected
    if expected:
        assert one(findings, "cycle-limit").facts["max_cycles"] == (4 if canonical else 9)


def test_an_unconfirmed_regimen_says_so_once_and_from_the_knowledge(kb: Knowledge) -> None:
    """Consolidation is ``confidence = "unconfirmed"`` in regimens.toml: the shared context block says it is pending."""
    order = blin_order("o", 28, text="Cycle 5 Day 1", instantiates=["urn:blina-cds:regimen:consolidation"])
    f = one(run(kb, now=C1, drafts=[order, steroid_order("dx", PREDNISONE, dose=100)], resources=adult()),
            "cycle-limit")
    detail = detail_of(f)
    assert "at most 4 cycles \\(4 blinatumomab cycles in the E1910 sequence\\)." in detail
    assert detail.count("pending confirmation against the current label") == 1


def full_cycle(cycle_start: dt.datetime, rate: float = 28) -> list[dict[str, Any]]:
    return [blin_infusion(f"c{cycle_start.day}{cycle_start.month}", cycle_start,
                          cycle_start + dt.timedelta(days=28), ug_per_day=rate)]


@pytest.mark.parametrize(("days", "expected"), [(10, [("treatment-free-interval", "warning")]), (14, [])])
def test_treatment_free_interval_after_a_complete_cycle(kb: Knowledge, days: int, expected: list[Any]) -> None:
    start = C1 + dt.timedelta(days=28 + days)
    findings = run(kb, now=start, drafts=[blin_order("o", 28, start=start, text="Cycle 2 Day 1"),
                                          steroid_order("dx")], resources=[*full_cycle(C1), *adult(start)])
    assert course_ids(findings) == expected
    if expected:
        f = one(findings, "treatment-free-interval")
        assert (f.facts["gap_days"], f.facts["required_days"], f.facts["previous_cycle"]) == (10, 14, 1)
        assert f.facts["earliest_start"] == "2026-04-12"


def test_56_day_interval_after_continued_therapy_cycle_6(kb: Knowledge) -> None:
    start = C1 + dt.timedelta(days=28 + 20)
    order = blin_order("o", 28, start=start, text="Cycle 7 Day 1")
    findings = run(kb, now=start, drafts=[order, steroid_order("dx")], resources=[*full_cycle(C1), *adult(start)])
    f = one(findings, "treatment-free-interval")
    assert (f.facts["required_days"], f.facts["previous_cycle"], f.facts["gap_days"]) == (56, 6, 20)


def test_therapy_status_at_patient_view(kb: Knowledge) -> None:
    findings = run(kb, now=at(2026, 3, 4, 12), hook="patient-view",
                   resources=[blin_infusion("a", C1, None, ug_per_day=9),
                              steroid_given("d", C1 - dt.timedelta(minutes=30)), *adult()])
    assert alarms(findings) == []
    f = one(findings, "therapy-status")
    assert f.indicator == "info"
    facts = f.facts
    assert (facts["regimen"], facts["cycle"], facts["day"], facts["current_dose_ug_per_day"], facts["running"]) == (
        "relapsed-refractory", 1, 4, 9, True)
    assert (facts["next_premed_event"], facts["next_premed_date"]) == ("step", "2026-03-08")


def test_therapy_status_next_cycle_and_not_after_90_days(kb: Knowledge) -> None:
    recent = run(kb, now=at(2026, 4, 2), hook="patient-view", resources=[*full_cycle(C1), *adult()])
    f = one(recent, "therapy-status")
    assert (f.facts["running"], f.facts["next_premed_event"], f.facts["next_premed_date"]) == (
        False, "cycle-start", "2026-04-12")
    old = run(kb, now=at(2026, 7, 1), hook="patient-view", resources=[*full_cycle(C1), *adult()])
    assert course_ids(old) == []


def test_no_therapy_status_at_order_sign(kb: Knowledge) -> None:
    """The patient is on blinatumomab (an active order), so only the hook keeps the summary away."""
    on_drug = blin_order("active", 9, status="active", start=C1)
    findings = run(kb, now=C1, drafts=[blin_order("o", 9), steroid_order("dx")], resources=[*adult(), on_drug])
    assert findings == []
    view = run(kb, now=C1, hook="patient-view", resources=[*adult(), on_drug])
    assert [f.rule_id for f in view] == ["therapy-status"]


# ----------------------------------------------------------------- quiet courses: no warning, no critical


def bags(start: dt.datetime, days: int, rate: float, prefix: str, *, gap_minutes: int = 10) -> list[dict[str, Any]]:
    """48-hour bags back to back with a short bag change between them."""
    out: list[dict[str, Any]] = []
    t, end = start, start + dt.timedelta(days=days)
    while t < end:
        stop = min(t + dt.timedelta(hours=48), end)
        out.append(blin_infusion(f"{prefix}{len(out)}", t, stop, ug_per_day=rate))
        t = stop + dt.timedelta(minutes=gap_minutes)
    return out


def as_of(resources: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """What the EHR shows at ``now``: later administrations absent, the current bag running."""
    out = []
    for r in resources:
        if r["resourceType"] != "MedicationAdministration":
            out.append(r)
            continue
        start = r.get("effectivePeriod", {}).get("start") or r.get("effectiveDateTime")
        if start > now.isoformat().replace("+00:00", "Z"):
            continue
        end = r.get("effectivePeriod", {}).get("end")
        if end and end > now.isoformat().replace("+00:00", "Z"):
            r = {**r, "status": "in-progress", "effectivePeriod": {"start": start}}
        out.append(r)
    return out


def before(t: dt.datetime, minutes: int = 45) -> dt.datetime:
    return t - dt.timedelta(minutes=minutes)


def test_quiet_adult_rr_course_through_cycle_3(kb: Knowledge) -> None:
    c2, c3 = C1 + dt.timedelta(days=42), C1 + dt.timedelta(days=84)
    step = C1 + dt.timedelta(days=7)
    history = [
        *adult(),
        *(weight(f"w{i}", 70, t - dt.timedelta(days=1)) for i, t in enumerate((c2, c3))),
        *bags(C1, 7, 9, "a"),
        *bags(step, 4, 28, "b"),
        # a 3 h bag-change interruption on day 12 (under 4 h: no premedication needed)
        *bags(step + dt.timedelta(days=4, hours=3), 17, 28, "c"),
        *bags(c2, 28, 28, "d"),
        *bags(c3, 28, 28, "e"),
        *(steroid_given(f"dex{i}", before(t)) for i, t in enumerate((C1, step, c2, c3))),
    ]
    calls: list[tuple[str, dt.datetime, list[dict[str, Any]]]] = [
        ("order-sign", before(C1, 60), [blin_order("o1", 9, start=C1, text="Cycle 1 Day 1"), steroid_order("x1")]),
        ("patient-view", C1 + dt.timedelta(days=3), []),
        ("order-sign", before(step, 60), [blin_order("o2", 28, start=step), steroid_order("x2")]),
        ("patient-view", step + dt.timedelta(hours=2), []),
        ("order-sign", step + dt.timedelta(days=4, hours=2),
         [blin_order("o3", 28, start=step + dt.timedelta(days=4, hours=3))]),
        ("patient-view", step + dt.timedelta(days=10), []),
        ("order-sign", before(c2, 60), [blin_order("o4", 28, start=c2, text="C2D1"), steroid_order("x4")]),
        ("patient-view", c2 + dt.timedelta(days=1), []),
        ("patient-view", c2 + dt.timedelta(days=35), []),
        ("order-sign", before(c3, 60), [blin_order("o5", 28, start=c3), steroid_order("x5")]),
        ("patient-view", c3 + dt.timedelta(hours=5), []),
    ]
    for hook, now, drafts in calls:
        findings = run(kb, now=now, hook=hook, drafts=drafts, resources=as_of(history, now))  # type: ignore[arg-type]
        assert alarms(findings) == [], (hook, now)
        if hook == "patient-view":
            assert [f.rule_id for f in findings] == ["therapy-status"], (hook, now)


def test_quiet_child_on_bsa_dosing(kb: Knowledge) -> None:
    body = [patient(birth_date="2016-01-01"), weight("w", 30, at(2026, 2, 27)), height("h", 135, at(2026, 2, 27)),
            weight("w2", 30, at(2026, 4, 11))]
    step, c2 = C1 + dt.timedelta(days=7), C1 + dt.timedelta(days=42)
    history = [*body, *bags(C1, 7, 5.3, "a"), *bags(step, 21, 15.9, "b"), *bags(c2, 28, 15.9, "c"),
               steroid_given("d1", before(C1), dose=5.3), steroid_given("d2", before(step), dose=5.3)]
    calls: list[tuple[str, dt.datetime, list[dict[str, Any]]]] = [
        ("order-sign", before(C1, 60), [blin_order("o1", 5.3, start=C1), steroid_order("x1", dose=5.3)]),
        ("order-sign", before(step, 60),
         [blin_order("o2", 15.9, start=step), steroid_order("x2", dose=5, unit="mg/m2")]),
        ("patient-view", step + dt.timedelta(days=1), []),
        ("order-sign", before(c2, 60), [blin_order("o3", 15, unit="ug/m2/d", start=c2)]),  # no premed: first cycle only
        ("patient-view", c2 + dt.timedelta(days=2), []),
    ]
    for hook, now, drafts in calls:
        findings = run(kb, now=now, hook=hook, drafts=drafts, resources=as_of(history, now))  # type: ignore[arg-type]
        assert alarms(findings) == [], (hook, now)


def test_quiet_mrd_positive_adult_on_prednisone(kb: Knowledge) -> None:
    c2 = C1 + dt.timedelta(days=42)
    stored = blin_order("active", 28, status="active", start=C1, instantiates=[MRD])
    history = [*adult(), weight("w2", 70, at(2026, 4, 11)), stored, *bags(C1, 28, 28, "a"), *bags(c2, 28, 28, "b"),
               steroid_given("p1", before(C1), PREDNISONE, dose=100),
               steroid_given("p2", before(c2), PREDNISONE, dose=100)]
    calls: list[tuple[str, dt.datetime, list[dict[str, Any]]]] = [
        ("order-sign", before(C1, 60), [blin_order("o1", 28, start=C1, instantiates=[MRD]),
                                        steroid_order("x1", PREDNISONE, dose=100)]),
        ("patient-view", C1 + dt.timedelta(days=8), []),
        ("order-sign", before(c2, 60), [blin_order("o2", 28, start=c2, instantiates=[MRD]),
                                        steroid_order("x2", PREDNISONE, dose=100)]),
        ("patient-view", c2 + dt.timedelta(hours=3), []),
    ]
    for hook, now, drafts in calls:
        findings = run(kb, now=now, hook=hook, drafts=drafts, resources=as_of(history, now))  # type: ignore[arg-type]
        assert alarms(findings) == [], (hook, now)
        assert all(f.facts["regimen"] == "mrd-positive" for f in findings)


@pytest.mark.parametrize(("days_after", "off_days"), [(1, 1), (6, 6), (13, 13)])
def test_therapy_status_names_the_treatment_free_interval_and_counts_its_days(
    kb: Knowledge, days_after: int, off_days: int,
) -> None:
    end = C1 + dt.timedelta(days=28)
    f = one(run(kb, now=end + dt.timedelta(days=days_after, hours=2), hook="patient-view",
                resources=[*full_cycle(C1), *adult(C1)]), "therapy-status")
    assert (f.facts["interval"], f.facts["off_days"], f.facts["tfi_required_days"]) == (
        "treatment-free", off_days, 14)
    assert f.facts["next_cycle_earliest"] == (end + dt.timedelta(days=14)).date().isoformat()
    summary = renderer().render(f).summary
    assert f"cycle 1 completed, treatment-free interval {off_days} of 14 days" in summary


def test_therapy_status_of_an_interrupted_cycle_says_so(kb: Knowledge) -> None:
    stop = C1 + dt.timedelta(days=10)
    f = one(run(kb, now=stop + dt.timedelta(days=2), hook="patient-view",
                resources=[blin_infusion("a", C1, stop, ug_per_day=28), *adult(C1)]), "therapy-status")
    assert (f.facts["interval"], f.facts["off_days"]) == ("interruption", 2)
    assert "stopped 2 days ago" in renderer().render(f).summary


def test_treatment_free_interval_names_the_cycle_on_record(kb: Knowledge) -> None:
    """Only cycle 1 is on record but the order says Cycle 7: the 56-day interval after continued therapy applies
    (the order's numbering), and the card says the record shows cycle 1 — never 'cycle 6' as if on record."""
    start = C1 + dt.timedelta(days=28 + 20)
    order = blin_order("o", 28, start=start, text="Cycle 7 Day 1")
    f = one(run(kb, now=start, drafts=[order, steroid_order("dx")], resources=[*full_cycle(C1), *adult(start)]),
            "treatment-free-interval")
    assert (f.facts["previous_cycle"], f.facts["previous_cycle_on_record"], f.facts["required_days"]) == (6, 1, 56)
    card = renderer().render(f)
    assert "the last cycle on record" in card.summary
    assert "cycle 1 by the administration history" in " ".join((card.detail or "").split())
