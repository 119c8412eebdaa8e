"""A hypothesis strategy for blinatumomab courses given within the label, charted the way EHRs chart them.

A :class:`Course` is drawn from the label's choices (clinical-rules.md §1–§2, verification §9; the numbers come
from ``service/knowledge``): regimen (R/R, MRD-positive, consolidation), age group and weight band independently
(a 16-year-old of 60 kg gets the fixed dose and the pediatric premedication, E26), weight and height (→ Mosteller
BSA; < 45 kg: BSA dosing, ≥ 45 kg: fixed), the first cycle on record and how many follow, R/R cycle 1 at 9 µg/day
stepping to 28 µg/day on day 8, the treatment-free interval before each later cycle (14 days, 56 after R/R cycles
6–8), bag changes every 24 h, 48 h, 72 h, 96 h or 7 days with a few minutes of gap or overlap (never 4 h), at most
one interruption of 4–24 h with its restart, and the steroid the label asks for 0–60 minutes before each start,
step and restart.

It is charted with the example generator's chart builder (``fhir_examples/build.py``: orders per phase, one
MedicationAdministration per bag, premedication orders and administrations, weekly weight and liver tests), plus
what real charts add (real-world-charting.md): cycle and day in the order text only, orders as rateQuantity,
rateRatio, dose per bag over its duration or µg/m²/day, pump rates in mL/h beside the dose in the MAR text,
"Rate Verify" point records, a BSA observation, negative nursing checks, times in ``Z`` or in the site's offset.
It never uses the vendor shapes issue 7 is about (instant-only bags, a drug named only by medicationReference).

:meth:`Course.calls` gives the hook calls to check: patient-view during infusions and treatment-free intervals, and
order-sign of each next bag, step and cycle (the draft, and its premedication as a draft or already given).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from fhir_examples.build import (
    ABSENT,
    BLIN,
    EPIC_FLO,
    REGIMEN_CANONICAL,
    SCORE,
    Chart,
    q,
)

Regimen = Literal["relapsed-refractory", "mrd-positive", "consolidation"]
HOUR = dt.timedelta(hours=1)
MIN = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)
BAGS_HOURS = (24, 48, 72, 96, 168)
"""``dosing.toml [bags]``; preservative bags (72 h and longer) need ≥ 5.4 kg, and every weight drawn here is above."""
ML_PER_H = {24: 10.0, 48: 5.0, 72: 1.8, 96: 1.8, 168: 0.6}
MAX_CYCLES: dict[Regimen, int] = {"relapsed-refractory": 9, "mrd-positive": 4, "consolidation": 4}
METHYLPRED = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6902", "display": "methylprednisolone"}


@dataclass(frozen=True)
class Premed:
    agent: str
    mg: float


@dataclass(frozen=True)
class Event:
    """Something in the course a hook may be asked about: a cycle start, a step, a bag change, a restart."""

    kind: Literal["cycle-start", "step", "bag", "restart"]
    at: dt.datetime
    order: str | None
    """The chart-local id of the order that starts here (``None``: the bag runs under an earlier order)."""
    premed: str | None
    """The chart-local id prefix of the premedication for this event (``<id>-mr`` order, ``<id>-ma`` given)."""
    premed_at: dt.datetime | None
    cycle: int


class Course:
    """One drawn course (a plain class, not a dataclass: hypothesis would print every record of a failing one)."""

    def __init__(self, regimen: Regimen, canonical: bool, pediatric: bool, weight_kg: float, height_cm: float,
                 birth_date: str, first_cycle: int, chart: Chart, *, offset: dt.timedelta | None = None) -> None:
        self.regimen, self.canonical, self.pediatric = regimen, canonical, pediatric
        self.weight_kg, self.height_cm, self.birth_date = weight_kg, height_cm, birth_date
        self.first_cycle, self.chart = first_cycle, chart
        self.events: list[Event] = []
        self.infusion_windows: list[tuple[dt.datetime, dt.datetime]] = []
        self.offset = offset
        """The site's UTC offset for times written in local form (``None``: every time in ``Z``)."""

    def __repr__(self) -> str:  # hypothesis prints a failing example: the chart's hundreds of resources would drown it
        events = [(e.kind, e.cycle, e.at.isoformat()) for e in self.events]
        return (f"Course({self.regimen}, pediatric={self.pediatric}, {self.weight_kg} kg, {self.height_cm} cm, "
                f"BSA {self.bsa:.3f}, first cycle {self.first_cycle}, offset {self.offset}, "
                f"{len(self.chart.entries)} records, events={events})")

    @property
    def bsa(self) -> float:
        return math.sqrt(self.weight_kg * self.height_cm / 3600)

    def snapshot(self, now: dt.datetime, *, drafts: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]],
                                                                                  list[dict[str, Any]]]:
        stored, draft = self.chart.snapshot(now, drafts=drafts)
        return [self._local(r, i) for i, r in enumerate(stored)], [self._local(r, 0) for r in draft]

    def _local(self, resource: dict[str, Any], index: int) -> dict[str, Any]:
        """Every other resource with its times in the site's offset (as Epic sends them; Oracle Health sends Z)."""
        if self.offset is None or index % 2:
            return resource
        tz = dt.timezone(self.offset)

        def walk(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            if isinstance(value, str) and len(value) == 20 and value.endswith("Z") and value[10] == "T":
                return dt.datetime.fromisoformat(value).astimezone(tz).isoformat()
            return value

        return walk(resource)  # type: ignore[no-any-return]  # walk builds new dicts and lists

    def calls(self) -> Iterator[tuple[str, dt.datetime, tuple[str, ...], str]]:
        """(hook, now, draft ids, what is asked) for every event and a patient-view inside each infusion and
        treatment-free interval."""
        for e in self.events:
            if e.kind == "restart":
                continue  # a restart runs on under its order: nothing is signed
            drafts = (e.order,) if e.order else ()
            if e.premed is not None and e.premed_at is not None:
                # before the steroid is given its order is a draft too; after, it is on the chart
                yield "order-sign", e.premed_at - 20 * MIN, (*drafts, f"{e.premed}-mr"), f"{e.kind} c{e.cycle}"
                yield "order-sign", e.premed_at + (e.at - e.premed_at) / 2, drafts, f"{e.kind} c{e.cycle} premed given"
            elif drafts:
                yield "order-sign", e.at - 45 * MIN, drafts, f"{e.kind} c{e.cycle}"
        for start, end in self.infusion_windows:
            yield "patient-view", start + (end - start) * 0.37, (), "infusion running"
            yield "patient-view", end + 5 * DAY + 3 * HOUR, (), "treatment-free interval"


def premed_for(regimen: Regimen, pediatric: bool, bsa: float, *, variant: int) -> Premed:
    """The steroid the label asks for (``premedication.toml``), as a site would chart it."""
    if pediatric:
        return Premed("dexamethasone", min(20.0, math.ceil(5 * bsa * 10) / 10))
    if regimen == "mrd-positive":  # "prednisone 100 mg IV or equivalent (e.g. dexamethasone 16 mg)"
        return [Premed("prednisone", 100), Premed("dexamethasone", 16), Premed("methylprednisolone", 80)][variant % 3]
    return Premed("dexamethasone", 20)


def needs_premed(regimen: Regimen, pediatric: bool, kind: str, cycle: int) -> bool:
    """Whether the label asks for premedication at this event (``premedication.toml [[requirements]]``)."""
    if pediatric and cycle != 1:
        return False
    if kind == "cycle-start":
        return True
    if kind == "step":
        return regimen == "relapsed-refractory"
    if kind == "restart":
        return regimen == "relapsed-refractory" or pediatric
    return False


@st.composite
def courses(draw: st.DrawFn) -> Course:  # noqa: C901 - one course, top to bottom
    regimen: Regimen = draw(st.sampled_from(["relapsed-refractory", "relapsed-refractory", "mrd-positive",
                                             "consolidation"]))
    pediatric = draw(st.booleans())
    fixed_band = draw(st.sampled_from([True, False, not pediatric]))
    if fixed_band:
        weight = draw(st.sampled_from([45.0, 45.1, 52.3, 60.0, 78.4, 104.0]) | st.floats(45, 130).map(
            lambda w: round(w, 1)))
        height = draw(st.floats(150, 198).map(lambda h: round(h)))
    else:
        weight = draw(st.sampled_from([44.9, 40.0, 30.0, 20.0, 12.5, 8.2]) | st.floats(8, 44.9).map(
            lambda w: round(w, 1)))
        # a plausible height for the weight (BMI 12–30), so the BSA stays realistic (clinical-rules.md §1.5)
        low, high = math.sqrt(weight / 30) * 100, min(math.sqrt(weight / 12) * 100, 190)
        height = draw(st.floats(max(70, low), max(72, high)).map(lambda h: round(h)))
    age = draw(st.integers(1, 17) if pediatric else st.integers(18, 85))
    first_start = dt.datetime(2026, 1, 4, tzinfo=dt.UTC) + draw(st.integers(0, 200)) * DAY + draw(
        st.integers(6 * 60, 21 * 60)) * MIN
    birth = (first_start - dt.timedelta(days=int(age * 365.25) + draw(st.integers(10, 300)))).date().isoformat()
    max_cycles = MAX_CYCLES[regimen]
    first_cycle = draw(st.sampled_from([1, 1, 1]) | st.integers(1, max_cycles))
    n_cycles = draw(st.integers(1, min(3, max_cycles - first_cycle + 1)))
    canonical = regimen != "relapsed-refractory" or draw(st.booleans())
    offset = draw(st.sampled_from([None, dt.timedelta(hours=-5), dt.timedelta(hours=1), dt.timedelta(hours=-8)]))
    chart = Chart(f"prop-{draw(st.integers(0, 10**6))}")
    course = Course(regimen, canonical, pediatric, weight, height, birth, first_cycle, chart, offset=offset)
    chart.patient(family="Doe", given="Alex", gender=draw(st.sampled_from(["female", "male"])), birth_date=birth)
    chart.height("height", first_start - 3 * HOUR, height)
    premed = premed_for(regimen, pediatric, course.bsa, variant=draw(st.integers(0, 2)))
    record_bsa = draw(st.booleans())

    start = first_start
    for cycle in range(1, first_cycle + n_cycles):
        # the cycles before the first one asked about are on the chart too, charted lightly (7-day bags, day-1
        # weight and labs): a course is never judged without its history
        light = cycle < first_cycle
        end = _cycle(draw, course, cycle=cycle, start=start, tag=f"c{cycle}", premed=premed, record_bsa=record_bsa,
                     light=light)
        if not light:
            course.infusion_windows.append((start, end))
        tfi = 56 if regimen == "relapsed-refractory" and 6 <= cycle <= 8 else 14
        # the next start: after the whole interval, counted in calendar days from the last infusion day
        next_day = end.date() + dt.timedelta(days=tfi + draw(st.integers(0, 20)))
        start = dt.datetime.combine(next_day, dt.time(0, 0), tzinfo=dt.UTC) + draw(
            st.integers(7 * 60, 20 * 60)) * MIN
        while min(_calendar_days(start, end, offset)) - 1 < tfi:  # the site counts the interval in its own days
            start += DAY
    return course


def _cycle(draw: st.DrawFn, course: Course, *, cycle: int, start: dt.datetime, tag: str, premed: Premed,
           record_bsa: bool, light: bool) -> dt.datetime:
    """One cycle's records; returns when its infusion ended. A ``light`` cycle is history: no calls ask about it."""
    chart, regimen = course.chart, course.regimen
    fixed = course.weight_kg >= 45
    weight_at = start - 3 * HOUR
    events: list[Event] = [] if light else course.events
    for day in (1,) if light else (1, 8, 15, 22):
        jitter = draw(st.sampled_from([0.0, 0.1, -0.1, 0.3]))
        kg = round(course.weight_kg + jitter, 1)
        kg = max(kg, 45.0) if fixed else min(kg, 44.9)  # never across the band (E1 would rightly warn)
        chart.weight(f"{tag}d{day}-wt", weight_at + (day - 1) * DAY, kg)
        chart.liver_panel(f"{tag}d{day}-lft", weight_at + (day - 1) * DAY - 30 * MIN,
                          alt=draw(st.integers(8, 40)), ast=draw(st.integers(10, 40)), bili=draw(
                              st.sampled_from([0.2, 0.6, 1.0, 1.2])))
    if record_bsa:
        chart._obs(f"{tag}-bsa", {"coding": [{"system": "http://loinc.org", "code": "8277-6",
                                              "display": "Body surface area"}]},
                   weight_at + 5 * MIN, category="vital-signs", valueQuantity=q(round(course.bsa, 2), "m2"))
    step = regimen == "relapsed-refractory" and cycle == 1
    phases: list[tuple[float, float, float]] = (
        [(0.0, 9, 5), (7 * 24.0, 28, 15)] if step else [(0.0, 28, 15)])  # (infusion hour, µg/day, µg/m²/day)
    total_h = 28 * 24.0
    # an interruption of 4–24 h (line occluded, off the unit), never before the step: a 9 µg/day restart on
    # calendar day 8 is finding F3 (tests/properties/README.md)
    earliest = 8 * 24.0 if step else 30.0
    interruption = None if light else draw(st.one_of(st.none(), st.tuples(st.floats(earliest, total_h - 30),
                                                                          st.integers(240, 24 * 60))))
    bag_plan = [168] if light else draw(st.lists(st.sampled_from(BAGS_HOURS), min_size=1, max_size=6))
    style = draw(st.sampled_from(["rateQuantity", "rateRatio", "doseQuantity", "per-m2"]))
    if style == "per-m2" and fixed:
        style = "rateQuantity"
    text_cycle = course.first_cycle > 1 or draw(st.booleans())
    offset_min = 0.0  # minutes of clock time added by bag-change gaps and the interruption so far
    late_bag_hung = False
    hour = 0.0
    plan_i = 0
    bag_n = 0
    phase_i = 0
    end = start
    while hour < total_h - 1e-9:
        a = start + hour * HOUR + offset_min * MIN
        if step and phase_i == 0 and bag_n:
            # The step is due on calendar day 8 (the service counts days in the zone the cycle's first record is
            # written in, UTC or the site's). A bag change on day 8 in every zone hangs the step; no 9 µg/day bag is
            # hung on day 8 in any zone (finding F3): where the zones disagree the last bag runs on to the step.
            lo, hi = _calendar_days(a, start, course.offset)
            if lo >= 8:
                phases[1] = (hour, phases[1][1], phases[1][2])
                phase_i = 1
            elif hi >= 8:
                previous = chart.entries[_index_of(chart, f"{tag}-bag{bag_n}")]
                previous.end = a + (phases[1][0] - hour) * HOUR
                previous.resource["effectivePeriod"]["end"] = _iso(previous.end)
                previous.stop_status = "stopped"  # not the planned duration: its dose is not spread over it
                hour, end = phases[1][0], previous.end
                phase_i = 1
                continue
        # the next phase boundary (a step starts a new bag under a new order), the interruption, or the bag's end
        next_phase = phases[phase_i + 1][0] if phase_i + 1 < len(phases) else total_h
        bag_h = bag_plan[plan_i % len(bag_plan)]
        plan_i += 1
        until = min(hour + bag_h, next_phase, total_h)
        stop_for_interruption = interruption is not None and hour < interruption[0] < until
        if stop_for_interruption:
            assert interruption is not None
            until = interruption[0]
        b = start + until * HOUR + offset_min * MIN
        ug, ug_m2 = phases[phase_i][1], phases[phase_i][2]
        dose = ug if fixed else round(ug_m2 * course.bsa, 2)
        first_of_phase = bag_n == 0 or (phase_i > 0 and hour == phases[phase_i][0])
        order = f"{tag}-order{phase_i + 1}" if first_of_phase else None
        if order is not None:
            _order(chart, course, order, a, start + total_h * HOUR + 2 * DAY, style=style, ug=ug, ug_m2=ug_m2,
                   dose=dose, bag_h=bag_h, cycle=cycle, day=8 if phase_i else 1, text_cycle=text_cycle,
                   step_order=phase_i > 0)
        kind: Literal["cycle-start", "step", "bag", "restart"] = (
            "cycle-start" if bag_n == 0 else "step" if order is not None else "bag")
        if bag_n and kind == "bag" and events and events[-1].kind == "restart" and events[-1].at == a:
            kind = "restart"
        premed_id = premed_at = None
        if kind != "bag" and needs_premed(regimen, course.pediatric, kind, cycle):
            minutes = draw(st.sampled_from([0, 60, 45, 30]) | st.integers(0, 60))
            premed_at = a - minutes * MIN
            premed_id = f"{tag}-premed-{bag_n}"
            charted = "prednisone" if premed.agent == "methylprednisolone" else premed.agent  # recoded below
            chart.premed(premed_id, a, agent=charted, mg=premed.mg, minutes_before=minutes)
            if premed.agent == "methylprednisolone":
                _as_methylprednisolone(chart, premed_id)
        if kind == "bag" and order is None and not light and draw(st.integers(0, 3)) == 0:
            order = _bag_order(chart, f"{tag}-order{phase_i + 1}", f"{tag}-bagorder{bag_n + 1}", a, bag_h)
        if kind == "restart" and events and events[-1].kind == "restart":
            events[-1] = Event("restart", a, None, premed_id, premed_at, cycle)
        else:
            events.append(Event(kind, a, order, premed_id, premed_at, cycle))
        bag_id = f"{tag}-bag{bag_n + 1}"
        order_ref = f"{tag}-order{phase_i + 1}"
        chart.bag(bag_id, a, b, ug_per_day=dose, order=order_ref, bag_hours=bag_h,
                  # a bag taken down before its planned end (at the step, the cycle's end, a pause) is "stopped": a
                  # "completed" one would have its hung dose spread over the shorter time (finding F5)
                  stop_status="stopped" if stop_for_interruption or until < hour + bag_h else None,
                  stop_reason=draw(st.sampled_from(["Infusion line occluded; line replaced", "Pump alarm - occlusion",
                                                    "Patient off unit for imaging"])) if stop_for_interruption
                  else None)
        if not light:
            _chart_style(draw, chart, bag_id, a, b, dose=dose, bag_h=bag_h)
        bag_n += 1
        hour = until
        end = b
        if stop_for_interruption:
            assert interruption is not None
            offset_min += interruption[1]
            events.append(Event("restart", start + hour * HOUR + offset_min * MIN, None, None, None, cycle))
        elif hour < total_h:  # a bag change: minutes of gap or overlap; once a cycle, a bag hung up to 3 h 55 late
            late = not late_bag_hung and draw(st.integers(0, 5)) == 0
            late_bag_hung = late_bag_hung or late
            offset_min += draw(st.integers(150, 235) if late else st.sampled_from([0, 0, 5, 15, -10]) | st.integers(
                -30, 60))
            if hour >= next_phase:
                phase_i += 1
    if not light and draw(st.booleans()):
        _nursing(draw, chart, tag, start, days=3 if cycle == 1 else 2)
    return end


def _order(chart: Chart, course: Course, local: str, start: dt.datetime, end: dt.datetime, *, style: str, ug: float,
           ug_m2: float, dose: float, bag_h: int, cycle: int, day: int, text_cycle: bool, step_order: bool) -> None:
    """A blinatumomab order for one phase in one of the shapes EHRs use (real-world-charting.md §2, §7)."""
    if style == "per-m2":
        dosage: dict[str, Any] = {"doseAndRate": [{"rateQuantity": q(ug_m2, "ug/m2/d")}]}
        shown = f"{ug_m2:g} mcg/m2/day"
    elif style == "rateRatio":
        dosage = {"doseAndRate": [{"rateRatio": {"numerator": q(dose, "ug"), "denominator": q(1, "d")}}]}
        shown = f"{dose:g} mcg/day"
    elif style == "doseQuantity":
        dosage = {"doseAndRate": [{"doseQuantity": q(round(dose * bag_h / 24, 2), "ug"),
                                   "rateQuantity": q(ML_PER_H[bag_h], "mL/hr", "mL/h")}]}
        shown = f"{round(dose * bag_h / 24, 2):g} mcg per {bag_h} h bag"
    else:
        dosage = {"doseAndRate": [{"rateQuantity": q(dose, "mcg/d" if cycle % 2 else "ug/d", "ug/d")}]}
        shown = f"{dose:g} mcg/day"
    where = f", Cycle {cycle} Day {day}" if text_cycle else ""
    text = f"BLINCYTO {shown} continuous IV infusion{where}. Do not flush the line."
    regimen = course.regimen if course.canonical else None
    chart.blin_order(local, start, end, dosage=dosage, text=text, regimen=regimen, bsa_based=style == "per-m2",
                     stop_status="completed")
    if style == "doseQuantity":
        rep = chart.entries[-1].resource["dosageInstruction"][0]["timing"]["repeat"]
        rep["duration"], rep["durationUnit"] = bag_h, "h"
    if step_order:
        # the step is a new order; the cycle's first order ends when the step starts (real-world-charting #8)
        first = next(e for e in chart.entries if e.resource.get("id") == chart.id(local.rsplit("order", 1)[0]
                                                                                     + "order1"))
        first.end = start


def _calendar_days(t: dt.datetime, start: dt.datetime, offset: dt.timedelta | None) -> tuple[int, int]:
    """``t``'s cycle day counted in UTC and in the site's zone, lowest and highest (the service counts in the zone
    the cycle's first record was written in, which may be either)."""
    zones = [dt.UTC] + ([dt.timezone(offset)] if offset is not None else [])
    days = [(t.astimezone(z).date() - start.astimezone(z).date()).days + 1 for z in zones]
    return min(days), max(days)


def _index_of(chart: Chart, local: str) -> int:
    return next(i for i, e in enumerate(chart.entries) if e.resource.get("id") == chart.id(local))


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _bag_order(chart: Chart, phase_order: str, local: str, start: dt.datetime, bag_h: int) -> str:
    """One order per bag (some sites): the next bag's order, seen only as a draft at its order-sign. Its text names no
    cycle day (a copied "Day 1" would claim a cycle start)."""
    source = next(e.resource for e in chart.entries if e.resource.get("id") == chart.id(phase_order))
    order = copy.deepcopy(source)
    order["id"] = chart.id(local)
    dosage = order["dosageInstruction"][0]
    dosage["text"] = dosage["text"].split(" continuous")[0] + " continuous IV, next bag. Do not flush the line."
    bounds = {"start": _iso(start), "end": _iso(start + bag_h * HOUR)}
    dosage["timing"]["repeat"]["boundsPeriod"] = bounds
    chart.add(order, dt.datetime.max.replace(tzinfo=dt.UTC))  # never on the chart: only ever the draft
    return local


def _chart_style(draw: st.DrawFn, chart: Chart, bag_id: str, a: dt.datetime, b: dt.datetime, *, dose: float,
                 bag_h: int) -> None:
    """The bag's MAR record as sites chart it: µg/day, or the pump rate in mL/h with the dose in the line's text; and
    "Rate Verify" point records each shift at the same rate."""
    entry = next(e for e in reversed(chart.entries) if e.resource.get("id") == chart.id(bag_id))
    dosage = entry.resource["dosage"]
    shape = draw(st.sampled_from(["ug/d", "mL/h+text", "rateRatio"]))
    if shape == "mL/h+text":
        dosage["rateQuantity"] = q(ML_PER_H[bag_h], "mL/hr", "mL/h")
        dosage["text"] = f"{dose:g} mcg/24 hr at {ML_PER_H[bag_h]:g} mL/hr"
    elif shape == "rateRatio":
        dosage.pop("rateQuantity")
        dosage["rateRatio"] = {"numerator": q(dose, "ug"), "denominator": q(24, "h")}
    if draw(st.booleans()) and b - a > 13 * HOUR:
        verify = copy.deepcopy(entry.resource)
        verify["id"] = f"{verify['id']}-verify"
        verify.pop("effectivePeriod")
        verify["effectiveDateTime"] = (a + 12 * HOUR).isoformat().replace("+00:00", "Z")
        verify["note"] = [{"text": "Rate verified"}]
        chart.add(verify, a + 12 * HOUR)


def _as_methylprednisolone(chart: Chart, premed_id: str) -> None:
    """Solu-Medrol IV: how "prednisone 100 mg IV or equivalent" is charted (no IV prednisone product in the US)."""
    for e in chart.entries[-2:]:
        if e.resource.get("id", "").startswith(chart.id(premed_id)):
            e.resource["medicationCodeableConcept"] = {"coding": [dict(METHYLPRED)],
                                                       "text": "methylPREDNISolone sodium succinate (SOLU-MEDROL)"}


def _nursing(draw: st.DrawFn, chart: Chart, tag: str, start: dt.datetime, *, days: int) -> None:
    """Negative checks each 12-h shift (real-world-charting.md §3): none is an event."""
    values = [{"valueString": "Not observed"}, {"valueString": "None"}, {"valueInteger": 0}, {"valueBoolean": False},
              {"valueCodeableConcept": ABSENT}, {"valueString": "None noted"}]
    for i in range(days * 2):
        t = start + (i * 12 + 2) * HOUR
        value = values[draw(st.integers(0, len(values) - 1))]
        row = "Seizures this shift" if "valueInteger" in value else "Seizure activity"
        chart.flowsheet(f"{tag}-rn{i}-sz", t, row, row_id="3040110", **value)
        chart.flowsheet(f"{tag}-rn{i}-ice", t, "ICE score", row_id="3040120", valueQuantity={"value": 10, **SCORE})
        chart.flowsheet(f"{tag}-rn{i}-crs", t, "CRS assessment", row_id="3040130", category="vital-signs",
                        valueString=draw(st.sampled_from(["No CRS", "No CRS - afebrile, normotensive", "none"])))


__all__ = ["BLIN", "EPIC_FLO", "Course", "Event", "courses", "needs_premed", "premed_for", "REGIMEN_CANONICAL",
           "Mapping"]
