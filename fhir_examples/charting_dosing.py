"""Realistic-charting corpus: dosing and premedication.

Each example imitates how an EHR flowsheet, order set or problem list really records things; its comment says which
real charting it imitates. ``build.all_examples()`` adds these examples to the generated ``fhir_examples/``, so each
call runs through the HTTP API with full prefetch and through the FHIR fallback (``tests/test_examples.py``).

Sources for the shapes: ``real-world-charting.md`` (Epic MAR actions, Oracle Health infusion results, order sets,
the CDS Hooks Sandbox's drafts). Every resource stays searchable by the service's prefetch templates (the drug is
coded in ``medicationCodeableConcept``), so both data paths see the same chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fhir_examples.build import (
    ADULT,
    ADULT_F,
    BLIN,
    CHILD,
    DAY,
    DEX_ADULT,
    HOUR,
    IV,
    MIN,
    RR_C1,
    RR_C2,
    RXNORM,
    UCUM,
    Call,
    Chart,
    Cycle,
    Example,
    add_course,
    at,
    iso,
    patient_of,
    q,
    rr_c1,
    rr_cn,
)

DEX_CODING = {"system": RXNORM, "code": "3264", "display": "dexamethasone"}
MP_CODING = {"system": RXNORM, "code": "6902", "display": "methylprednisolone"}
ML_H = {"value": 10, "unit": "mL/hr", "system": UCUM, "code": "mL/h"}


# ====================================================================== raw records, as EHRs chart them


def mar(chart: Chart, local: str, start: dt.datetime, end: dt.datetime | None, *, rate: Mapping[str, Any] | None,
        text: str | None = None, med_text: str = "blinatumomab (BLINCYTO) 28 mcg/24 hr IV infusion",
        stop_status: str | None = None, stop_reason: str | None = None, status: str = "completed") -> None:
    """One blinatumomab MAR action (New Bag / Rate Change) as a MedicationAdministration with a period."""
    dosage: dict[str, Any] = {"route": IV}
    if rate is not None:
        dosage["rateQuantity"] = dict(rate)
    if text is not None:
        dosage["text"] = text
    res: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": chart.id(local),
        "status": status,
        "medicationCodeableConcept": {"coding": [dict(BLIN)], "text": med_text},
        "subject": chart.subject(),
        "effectivePeriod": {"start": iso(start)},
        "dosage": dosage,
    }
    if end is not None:
        res["effectivePeriod"]["end"] = iso(end)
    chart.add(res, start, end=end, stop_status=stop_status, stop_reason=stop_reason)


def rate_verify(chart: Chart, local: str, when: dt.datetime, ug_per_day: float) -> None:
    """Epic "Rate Verify": a point record each shift confirming the running rate."""
    chart.add({
        "resourceType": "MedicationAdministration",
        "id": chart.id(local),
        "status": "completed",
        "medicationCodeableConcept": {"coding": [dict(BLIN)], "text": "BLINCYTO (blinatumomab)"},
        "subject": chart.subject(),
        "effectiveDateTime": iso(when),
        "note": [{"text": "Rate verified at pump"}],
        "dosage": {"route": IV, "rateQuantity": q(ug_per_day, "mcg/24 hr", "ug/d")},
    }, when)


def ug_d(value: float) -> dict[str, Any]:
    return q(value, "mcg/24 hr", "ug/d")


def blin_draft(chart: Chart, local: str, start: dt.datetime, *, dosage: Mapping[str, Any], text: str,
               start_value: str | None = None, med: Mapping[str, Any] | None = None) -> None:
    """A blinatumomab order written the way order sets write it (text first, dose in one of several shapes)."""
    chart.add({
        "resourceType": "MedicationRequest",
        "id": chart.id(local),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": dict(med) if med else {"coding": [dict(BLIN)],
                                                            "text": "BLINCYTO (blinatumomab) for injection"},
        "subject": chart.subject(),
        "authoredOn": iso(start - 2 * HOUR),
        "dosageInstruction": [{
            "text": text,
            "timing": {"repeat": {"boundsPeriod": {"start": start_value or iso(start)}}},
            "route": IV,
            **dosage,
        }],
    }, start - 2 * HOUR)


def steroid_draft(chart: Chart, local: str, *, concept: Mapping[str, Any], dose: Mapping[str, Any],
                  text: str, timing: Mapping[str, Any] | None, authored: dt.datetime,
                  route: Mapping[str, Any] = IV) -> None:
    """A steroid order as an order set or a prescriber writes it (timing may be absent: text only)."""
    dosage: dict[str, Any] = {"text": text, "route": dict(route), "doseAndRate": [{"doseQuantity": dict(dose)}]}
    if timing is not None:
        dosage["timing"] = dict(timing)
    chart.add({
        "resourceType": "MedicationRequest",
        "id": chart.id(local),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": dict(concept),
        "subject": chart.subject(),
        "authoredOn": iso(authored),
        "dosageInstruction": [dosage],
    }, authored)


def steroid_mar(chart: Chart, local: str, when: dt.datetime, *, concept: Mapping[str, Any], mg: float) -> None:
    chart.add({
        "resourceType": "MedicationAdministration",
        "id": chart.id(local),
        "status": "completed",
        "medicationCodeableConcept": dict(concept),
        "subject": chart.subject(),
        "effectiveDateTime": iso(when),
        "dosage": {"route": IV, "dose": q(mg, "mg")},
    }, when)


DECADRON = {"coding": [DEX_CODING], "text": "Decadron (dexamethasone sodium phosphate) 4 mg/mL injection"}
SOLU_MEDROL = {"coding": [MP_CODING], "text": "Solu-Medrol (methylPREDNISolone sodium succinate) 125 mg injection"}


def both(*fns: Callable[[Chart], None]) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        for fn in fns:
            fn(chart)
    return build


# ====================================================================== (1) running pumps, Epic MAR style (R/R adult)

# Cycle 1 runs at 9 µg/day from RR_C1; the bag chain is cut on day 3 (48 h) and what happens next is charted by hand.
C1D3 = RR_C1 + 2 * DAY


def c1_until(hours: float, *, premed_step: bool = False) -> Callable[[Chart], None]:
    """The adult's cycle 1 (dexamethasone before the start) with the bag chain ending ``hours`` in."""
    def build(chart: Chart) -> None:
        patient_of(ADULT)(chart)
        add_course(chart, ADULT, [rr_c1(RR_C1, cut_after_hours=hours, cut_status="completed",
                                        premed_step=premed_step)])
    return build


def rate_change_at(hours: float, ug: float, *, end: dt.datetime | None = None,
                   then: float | None = None) -> Callable[[Chart], None]:
    """A MAR "Rate Change" ``hours`` into cycle 1: a new administration at ``ug`` µg/day (charted mcg/24 hr)."""
    def build(chart: Chart) -> None:
        t = RR_C1 + hours * HOUR
        mar(chart, "rate-change", t, end, rate=ug_d(ug), text=f"Rate change to {ug:g} mcg/24 hr")
        if then is not None and end is not None:
            mar(chart, "rate-corrected", end, None, rate=ug_d(then), text=f"Rate corrected to {then:g} mcg/24 hr")
    return build


EX_PUMP = Example(
    "charting-running-pump",
    "Running infusion checked as charted on the MAR",
    "Adult R/R, cycle 1 at 9 µg/day; the MAR then records a Rate Change (Epic action stream: the new rate is a new "
    "MedicationAdministration charted in 'mcg/24 hr'). The pump is judged against the dose due on the day the rate "
    "was set, at every hook; a rate increase that is no scheduled step never produces a premedication card.",
    [
        # Epic "Rate Change" on C1D3 to 28 mcg/24 hr: the pump programmed with the step dose five days early.
        Call("c1d3-28-view", "patient-view", C1D3 + 3 * HOUR, "Pump changed to 28 mcg/24 hr on cycle 1 day 3",
             both(c1_until(48), rate_change_at(48, 28)), expect=["dose-schedule", "therapy-status"]),
        # The same pump error seen when an unrelated blinatumomab order is signed: the running pump is checked too.
        Call("c1d3-28-sign", "order-sign", C1D3 + 4 * HOUR, "A correct 9 µg/day order signed while the pump runs 28",
             both(c1_until(48), rate_change_at(48, 28),
                  lambda ch: blin_draft(ch, "bag-order", C1D3 + 5 * HOUR, dosage={"doseAndRate": [
                      {"rateQuantity": ug_d(9)}]}, text="BLINCYTO 9 mcg/24 hr continuous IV, Cycle 1 Day 3")),
             drafts=["bag-order"], expect=["dose-schedule"]),
        # Draft reorder carrying the same error as the pump: one card (the order's, which can fix it).
        Call("c1d3-28-same-sign", "order-sign", C1D3 + 4 * HOUR, "Reorder at 28 while the pump runs 28 on day 3",
             both(c1_until(48), rate_change_at(48, 28),
                  lambda ch: blin_draft(ch, "re-order", C1D3 + 5 * HOUR, dosage={"doseAndRate": [
                      {"rateQuantity": ug_d(28)}]}, text="BLINCYTO 28 mcg/24 hr continuous IV")),
             drafts=["re-order"], expect=["dose-schedule"]),
        # Pump programmed at 10× the maximum (280 mcg/24 hr) on day 3.
        Call("c1d3-280-view", "patient-view", C1D3 + 2 * HOUR, "Pump at 280 mcg/24 hr",
             both(c1_until(48), rate_change_at(48, 280)), expect=["dose-limit", "therapy-status"]),
        # Pump error found at the next bag change 6 h later and corrected: the stopped administration (within 24 h)
        # still gets its card.
        Call("c1d3-corrected-view", "patient-view", C1D3 + 10 * HOUR, "28 for 6 h, corrected back to 9",
             both(c1_until(48), rate_change_at(48, 28, end=C1D3 + 6 * HOUR, then=9)),
             expect=["dose-schedule", "therapy-status"]),
        # A day and a half later the corrected error is history: quiet.
        Call("c1d5-corrected-view", "patient-view", C1D3 + 6 * HOUR + 36 * HOUR, "The corrected error 36 h later",
             both(c1_until(48), rate_change_at(48, 28, end=C1D3 + 6 * HOUR, then=9)),
             expect=["therapy-status"], quiet=True),
        # Pump below the schedule on cycle 2: 9 mcg/24 hr hung on C2D1 instead of 28 (R/R cycle 2 has no step).
        Call("c2d2-9-view", "patient-view", RR_C2 + 26 * HOUR, "Cycle 2 pump hung at 9 mcg/24 hr",
             lambda ch: (patient_of(ADULT)(ch), add_course(ch, ADULT, [rr_c1(RR_C1), Cycle(
                 2, RR_C2, [(1, 9, None)], DEX_ADULT, bag_plan=(48, 168))])),
             expect=["dose-schedule", "therapy-status"]),
    ],
)


# ====================================================================== (2) quiet charting variants

def c1_rate_verified(chart: Chart) -> None:
    """Cycle 1 with an Epic 'Rate Verify' each shift (07:00, 19:00) at the running rate: not bags of their own."""
    c1_until(7 * 24)(chart)
    for d in range(7):
        for hh in (7, 19):
            t = RR_C1.replace(hour=hh) + d * DAY
            if RR_C1 < t < RR_C1 + 7 * 24 * HOUR:
                rate_verify(chart, f"rv-d{d + 1}-{hh}", t, 9)


def c1_text_rate(chart: Chart) -> None:
    """Oracle-style MAR line: rate in mL/hr only, the dose stated beside it in the line's text."""
    c1_until(48)(chart)
    mar(chart, "ml-bag", RR_C1 + 48 * HOUR, None, rate=ML_H, text="blinatumomab 9 mcg/24 hr at 10 mL/hr",
        med_text="blinatumomab 9 mcg + sodium chloride 0.9% 240 mL")


def c1_ml_only(chart: Chart) -> None:
    """Epic-style bag charted only as 10 mL/hr: the rate cannot be checked; therapy-status says so (no alarm)."""
    c1_until(48)(chart)
    mar(chart, "ml-bag", RR_C1 + 48 * HOUR, None, rate=ML_H, med_text="BLINCYTO infusion")


def c1_bag_change_gap(chart: Chart) -> None:
    """A 48-h bag hung 2 h 50 min late (bag change under 4 h: no restart, no premedication)."""
    c1_until(48)(chart)
    mar(chart, "late-bag", RR_C1 + 48 * HOUR + 170 * MIN, None, rate=ug_d(9), text="New bag 9 mcg/24 hr")


def c1_entered_in_error(chart: Chart) -> None:
    """A wrong-rate entry charted then re-versioned as entered-in-error, next to its corrected twin."""
    c1_until(48)(chart)
    mar(chart, "wrong-entry", RR_C1 + 48 * HOUR, None, rate=ug_d(90), status="entered-in-error",
        text="Charted in error")
    mar(chart, "right-entry", RR_C1 + 48 * HOUR + 5 * MIN, None, rate=ug_d(9), text="New bag 9 mcg/24 hr")


PAUSE_AT = 9 * 24 + 16  # infusion hours: cycle 1 day 10 at 01:00, on 28 µg/day


def c1_paused(hours: float) -> Callable[[Chart], None]:
    """Epic "Paused" (on-hold record, rate 0 mL/hr, reason in text) then "Restarted" at the running rate; a pause of
    4 h or more gets dexamethasone 30 min before the restart."""
    def build(chart: Chart) -> None:
        c1_until(PAUSE_AT, premed_step=True)(chart)
        pause = RR_C1 + PAUSE_AT * HOUR
        resume = pause + hours * HOUR
        mar(chart, "paused", pause, None, status="on-hold", rate={"value": 0, "unit": "mL/hr", "system": UCUM,
                                                                   "code": "mL/h"},
            text="Paused - patient to CT")
        chart.entries[-1].resource["statusReason"] = [{"text": "Paused: patient off unit for CT"}]
        chart.entries[-1].end = pause  # the snapshot must keep it on-hold, not make it a running bag
        chart.entries[-1].stop_status = "on-hold"
        if hours >= 4:
            steroid_mar(chart, "restart-dex", resume - 30 * MIN, concept=DECADRON, mg=20)
        mar(chart, "restarted", resume, None, rate=ug_d(28), text="Restarted 28 mcg/24 hr")
    return build


def brand_named_course(chart: Chart) -> None:
    """Cycle 1 with every steroid charted by brand (Decadron) and the drug as 'BLINCYTO' text beside the code."""
    patient_of(ADULT)(chart)
    add_course(chart, ADULT, [Cycle(1, RR_C1, [(1, 9, None), (8, 28, None)], None)])
    for local, t0 in (("d1", RR_C1), ("d8", RR_C1 + 7 * DAY)):
        steroid_draft(chart, f"decadron-{local}-mr", concept=DECADRON, dose=q(20, "mg"),
                      text="Decadron 20 mg IV once, 1 hour prior to BLINCYTO", authored=t0 - 3 * HOUR,
                      timing={"event": [iso(t0 - HOUR)]})
        steroid_mar(chart, f"decadron-{local}-ma", t0 - 40 * MIN, concept=DECADRON, mg=20)


EX_QUIET = Example(
    "charting-quiet-variants",
    "Correct courses charted the way real MARs and order sets chart them — quiet",
    "Adult R/R cycle 1 at 9 µg/day then 28 µg/day from day 8. Epic 'Rate Verify' point records every shift, a bag "
    "hung 2 h 50 min late, a wrong entry re-versioned as entered-in-error beside its corrected twin, a MAR line in "
    "mL/hr with the dose stated in its text, and steroids by brand name (Decadron) ordered with timing.event 1 h "
    "before: no warning or critical card at any call.",
    [
        # Epic MAR 'Rate Verify' action charted at 07:00 and 19:00 each shift as point MedicationAdministrations.
        Call("rate-verify-view", "patient-view", RR_C1 + 5 * DAY + 9 * HOUR, "Rate Verify each shift (Epic)",
             c1_rate_verified, expect=["therapy-status"], quiet=True),
        # Oracle Health-style MAR line: rate 10 mL/hr (unit 'mL/hr', code mL/h), the dose stated in the line's text.
        Call("ml-with-text-view", "patient-view", RR_C1 + 3 * DAY, "10 mL/hr with '9 mcg/24 hr' in the MAR text",
             c1_text_rate, expect=["therapy-status"], quiet=True),
        # Epic-style bag charted only as 10 mL/hr (no concentration anywhere): named on therapy-status, not guessed.
        Call("ml-only-view", "patient-view", RR_C1 + 3 * DAY, "10 mL/hr with no concentration: named, not guessed",
             c1_ml_only, expect=["therapy-status"], quiet=True),
        # A 48-h bag hung 2 h 50 min late at the bag change: a gap, not a restart (< 4 h).
        Call("bag-change-view", "patient-view", RR_C1 + 3 * DAY, "Bag hung 2 h 50 min late", c1_bag_change_gap,
             expect=["therapy-status"], quiet=True),
        # A wrong-rate entry re-versioned as entered-in-error (Epic 'Canceled Entry') next to its corrected twin.
        Call("eie-view", "patient-view", RR_C1 + 3 * DAY, "Wrong entry marked entered-in-error",
             c1_entered_in_error, expect=["therapy-status"], quiet=True),
        # Order set: BLINCYTO 9 mcg/24 hr with Decadron 20 mg IV, timing.event 1 h before (brand name in text).
        Call("decadron-d1-sign", "order-sign", RR_C1 - 2 * HOUR, "C1D1 with Decadron 20 mg timed 1 h before",
             both(patient_of(ADULT), lambda ch: (
                 blin_draft(ch, "c1-order", RR_C1, dosage={"doseAndRate": [{"rateQuantity": ug_d(9)}]},
                            text="BLINCYTO 9 mcg/24 hr continuous IV infusion, Cycle 1 Day 1. Do not flush."),
                 steroid_draft(ch, "decadron", concept=DECADRON, dose=q(20, "mg"),
                               text="Decadron 20 mg IV once, 1 hour prior to BLINCYTO", authored=RR_C1 - 3 * HOUR,
                               timing={"event": [iso(RR_C1 - HOUR)]}),
                 ch.weight("wt", RR_C1 - 3 * HOUR, ADULT.weight_kg), ch.height("ht", RR_C1 - 3 * HOUR,
                                                                               ADULT.height_cm))),
             drafts=["c1-order", "decadron"], quiet=True),
        # Epic "Paused" (on-hold, rate 0 mL/hr) for 2 h, then "Restarted" at 28: no restart, no step, no dose card.
        Call("paused-2h-view", "patient-view", RR_C1 + (PAUSE_AT + 6) * HOUR, "Paused 2 h for CT, restarted",
             c1_paused(2), expect=["therapy-status"], quiet=True),
        # The same pause for 5 h, restarted with Decadron 30 min before (the label's ≥ 4 h restart).
        Call("paused-5h-view", "patient-view", RR_C1 + (PAUSE_AT + 9) * HOUR, "Paused 5 h, restarted with Decadron",
             c1_paused(5), expect=["therapy-status"], quiet=True),
        # Decadron by brand name ordered and given (MAR) 40 min before day 1 and the day-8 step; BLINCYTO as text.
        Call("decadron-d8-view", "patient-view", RR_C1 + 8 * DAY, "Step given with Decadron by brand name",
             brand_named_course, expect=["therapy-status"], quiet=True),
    ],
)


# ====================================================================== (3) orders as order sets write them

ORDER_T = RR_C2  # cycle 2 day 1 after a compliant cycle 1


def adult_c1(chart: Chart) -> None:
    patient_of(ADULT)(chart)
    add_course(chart, ADULT, [rr_c1(RR_C1)])


def c2_order(local: str, dosage: Mapping[str, Any], text: str, *, with_dex: bool = True,
             start_value: str | None = None, med: Mapping[str, Any] | None = None) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        adult_c1(chart)
        blin_draft(chart, local, ORDER_T, dosage=dosage, text=text, start_value=start_value, med=med)
        if with_dex:
            steroid_draft(chart, f"{local}-dex", concept=DECADRON, dose=q(20, "mg"),
                          text="dexamethasone 20 mg IV once, 1 hour prior to BLINCYTO (premedication)",
                          authored=ORDER_T - 3 * HOUR, timing={"event": [iso(ORDER_T - HOUR)]})
    return build


EX_ORDER_TEXT = Example(
    "charting-order-text",
    "Blinatumomab orders as order sets write them: dose units and cycle/day in text",
    "Adult R/R, cycle 2 day 1 after a compliant cycle 1 (dexamethasone 20 mg drafted with timing.event 1 h "
    "before). The dose arrives as 'mcg/24 hr' (Epic's unit text), only in dosageInstruction.text ('28 mcg/24 hr', "
    "'28 mcg per day'), or as 'blina' shorthand; a 'Cycle 1 Day 8' order whose start is cycle 1 day 5 by the "
    "administration history is checked on the derived day.",
    [
        # Epic sends the unit text "mcg/24 hr" with the UCUM code ug/d.
        Call("mcg-24hr-unit-sign", "order-sign", ORDER_T - 2 * HOUR, "rateQuantity 28 'mcg/24 hr'",
             c2_order("o", {"doseAndRate": [{"rateQuantity": ug_d(28)}]},
                      "BLINCYTO 28 mcg/24 hr continuous IV, Cycle 2 Day 1"), drafts=["o", "o-dex"], quiet=True),
        # Unit as free text only, no UCUM code (an interface that drops the code).
        Call("mcg-24hr-nocode-sign", "order-sign", ORDER_T - 2 * HOUR, "rateQuantity unit 'mcg/24hr' without a code",
             c2_order("o", {"doseAndRate": [{"rateQuantity": {"value": 28, "unit": "mcg/24hr"}}]},
                      "BLINCYTO continuous IV, Cycle 2 Day 1"), drafts=["o", "o-dex"], quiet=True),
        # Dose only in text ("28 mcg per day"), no doseAndRate at all (order-set free text).
        Call("per-day-text-sign", "order-sign", ORDER_T - 2 * HOUR, "Dose only in text: '28 mcg per day'",
             c2_order("o", {}, "blinatumomab 28 mcg per day continuous IV infusion over 24 hours. Do not flush."),
             drafts=["o", "o-dex"], quiet=True),
        # 'blina' shorthand in text with the RxNorm code; the dose below the schedule: a warning.
        Call("blina-9-text-sign", "order-sign", ORDER_T - 2 * HOUR, "'blina 9 mcg/24 hr' on cycle 2 day 1",
             c2_order("o", {}, "blina 9 mcg/24 hr CIV C2D1",
                      med={"coding": [dict(BLIN)], "text": "blina"}), drafts=["o", "o-dex"],
             expect=["dose-schedule"]),
        # Pump rate per hour written as text: "1.2 mcg/hr" is 28.8 µg/day (per hour, never per day): above 28.
        Call("per-hour-text-sign", "order-sign", ORDER_T - 2 * HOUR, "'1.2 mcg/hr' is 28.8 µg/day",
             c2_order("o", {}, "BLINCYTO 1.2 mcg/hr continuous IV"), drafts=["o", "o-dex"], expect=["dose-limit"]),
        # An order labelled "Cycle 1 Day 8" (step to 28) whose start is day 5 by the history: critical on day 5.
        Call("c1d8-label-on-day5-sign", "order-sign", RR_C1 + 4 * DAY - 2 * HOUR,
             "'Cycle 1 Day 8' step order starting on cycle 1 day 5",
             both(c1_until(4 * 24), lambda ch: (
                 blin_draft(ch, "step", RR_C1 + 4 * DAY, dosage={"doseAndRate": [{"rateQuantity": ug_d(28)}]},
                            text="BLINCYTO 28 mcg/24 hr continuous IV, Cycle 1 Day 8 (step dose)"),
                 steroid_draft(ch, "step-dex", concept=DECADRON, dose=q(20, "mg"),
                               text="dexamethasone 20 mg IV 1 hour prior to step dose",
                               authored=RR_C1 + 4 * DAY - 3 * HOUR,
                               timing={"event": [iso(RR_C1 + 4 * DAY - HOUR)]}))),
             drafts=["step", "step-dex"], expect=["dose-schedule"]),
    ],
)


# ====================================================================== (4) premedication orders with a time

def c2_with_steroid(timing: Mapping[str, Any] | None, *, concept: Mapping[str, Any] = DECADRON, mg: float = 20,
                    text: str = "Decadron 20 mg IV once (premedication)", unit: str = "mg",
                    dose: Mapping[str, Any] | None = None) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        adult_c1(chart)
        blin_draft(chart, "o", ORDER_T, dosage={"doseAndRate": [{"rateQuantity": ug_d(28)}]},
                   text="BLINCYTO 28 mcg/24 hr continuous IV, Cycle 2 Day 1")
        steroid_draft(chart, "dex", concept=concept, dose=dose or q(mg, unit), text=text,
                      authored=ORDER_T - 3 * HOUR, timing=timing)
    return build


EX_PREMED_TIME = Example(
    "charting-premed-time",
    "Premedication orders counted by their scheduled time",
    "Adult R/R, cycle 2 day 1 at 28 µg/day after a compliant cycle 1. The dexamethasone draft beside the blinatumomab "
    "order counts only when its scheduled time (timing.event, boundsPeriod.start) falls in the hour before the "
    "start; timed after the start it counts as nothing; untimed ('1 hour prior' in text only) it counts, by the "
    "service's stated policy.",
    [
        # Order set: Decadron with timing.event 1 h before the start — on time.
        Call("event-1h-before-sign", "order-sign", ORDER_T - 2 * HOUR, "Decadron timing.event 1 h before",
             c2_with_steroid({"event": [iso(ORDER_T - HOUR)]}), drafts=["o", "dex"], quiet=True),
        # Prescriber picked tomorrow's date: dexamethasone timed 3 days after the start — premed-missing.
        Call("dex-3-days-after-sign", "order-sign", ORDER_T - 2 * HOUR, "Dexamethasone timed 3 days after the start",
             c2_with_steroid({"repeat": {"count": 1, "boundsPeriod": {"start": iso(ORDER_T + 3 * DAY)}}}),
             drafts=["o", "dex"], expect=["premed-missing"]),
        # Given the evening before (3 h before an early-morning start is charted as 3 h before): premed-timing.
        Call("dex-3h-before-sign", "order-sign", ORDER_T - 4 * HOUR, "Dexamethasone timed 3 h before",
             c2_with_steroid({"event": [iso(ORDER_T - 3 * HOUR)]}), drafts=["o", "dex"], expect=["premed-timing"]),
        # Order-set text only ("1 hour prior to BLINCYTO"), no Timing: counted (policy), quiet.
        Call("untimed-text-sign", "order-sign", ORDER_T - 2 * HOUR, "'Dex 20 mg IV 1 hr prior to blina', no timing",
             c2_with_steroid(None, concept={"coding": [DEX_CODING], "text": "Dex 20 mg IV"},
                             text="Dex 20 mg IV 1 hr prior to blina"), drafts=["o", "dex"], quiet=True),
        # Untimed and only 8 mg (a CRS-treatment order reused): premed-dose, and the card states the assumption.
        Call("untimed-8mg-sign", "order-sign", ORDER_T - 2 * HOUR, "Untimed dexamethasone 8 mg",
             c2_with_steroid(None, mg=8, text="dexamethasone 8 mg IV q8h"), drafts=["o", "dex"],
             expect=["premed-dose"]),
        # Solu-Medrol 125 mg IV (brand) for an R/R adult: the label names dexamethasone — premed-dose.
        Call("solu-medrol-rr-sign", "order-sign", ORDER_T - 2 * HOUR, "Solu-Medrol 125 mg IV for R/R",
             c2_with_steroid({"event": [iso(ORDER_T - HOUR)]}, concept=SOLU_MEDROL, mg=125,
                             text="Solu-Medrol 125 mg IV once prior to BLINCYTO"), drafts=["o", "dex"],
             expect=["premed-dose"]),
        # CDS Hooks Sandbox-style draft: date-only bounds, {pill} with no unit (Dexamethasone 4 MG Oral Tablet).
        Call("sandbox-pill-sign", "order-sign", ORDER_T - 2 * HOUR, "Sandbox draft: date-only, 5 {pill}",
             c2_with_steroid({"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {
                 "start": ORDER_T.date().isoformat(), "end": (ORDER_T + DAY).date().isoformat()}}},
                 concept={"coding": [{"system": RXNORM, "code": "197582", "display": "Dexamethasone 4 MG Oral Tablet"}],
                          "text": "Dexamethasone 4 MG Oral Tablet"},
                 dose={"value": 5, "system": UCUM, "code": "{pill}"}, text="Dexamethasone 4 MG Oral Tablet"),
             drafts=["o", "dex"], expect=["dose-unverifiable"]),
    ],
)


# ====================================================================== (5) MRD-positive and the "or equivalent"

MRD_T = at(2026, 1, 12, 10)
MRD_CANON = "urn:blina-cds:regimen:mrd-positive"


def mrd_order(chart: Chart) -> None:
    patient_of(ADULT_F)(chart)
    chart.weight("wt", MRD_T - 3 * HOUR, ADULT_F.weight_kg)
    chart.height("ht", MRD_T - 3 * HOUR, ADULT_F.height_cm)
    blin_draft(chart, "o", MRD_T, dosage={"doseAndRate": [{"rateQuantity": ug_d(28)}]},
               text="BLINCYTO 28 mcg/24 hr continuous IV (MRD), Cycle 1 Day 1")
    chart.entries[-1].resource["instantiatesCanonical"] = [MRD_CANON]


EX_MRD = Example(
    "charting-mrd-premed",
    "MRD-positive premedication as charted: methylprednisolone IV, or nothing yet",
    "64 kg adult, MRD-positive (instantiatesCanonical). No IV prednisone product is marketed in the US, so the "
    "label's 'prednisone 100 mg IV or equivalent' is charted as Solu-Medrol 80 mg IV or dexamethasone 16 mg IV.",
    [
        # Solu-Medrol 80 mg IV timed 45 min before: the label's "or equivalent" (prednisone 100 mg).
        Call("solu-medrol-80-sign", "order-sign", MRD_T - 2 * HOUR, "Solu-Medrol 80 mg IV 45 min before",
             both(mrd_order, lambda ch: steroid_draft(
                 ch, "mp", concept=SOLU_MEDROL, dose=q(80, "mg"), text="Solu-Medrol 80 mg IV once",
                 authored=MRD_T - 3 * HOUR, timing={"event": [iso(MRD_T - 45 * MIN)]})),
             drafts=["o", "mp"], quiet=True),
        # No steroid: the card quotes the label, the suggestion creates dexamethasone 16 mg IV.
        Call("no-steroid-sign", "order-sign", MRD_T - 2 * HOUR, "No steroid ordered", mrd_order, drafts=["o"],
             expect=["premed-missing"]),
        # Pump hung at 9 mcg/24 hr on MRD C1D1 (R/R step dosing applied to an MRD patient): below, warning.
        Call("mrd-9-view", "patient-view", MRD_T + 30 * HOUR, "MRD cycle 1 running at 9 mcg/24 hr",
             both(patient_of(ADULT_F), lambda ch: add_course(ch, ADULT_F, [Cycle(
                 1, MRD_T, [(1, 9, None)], ("prednisone", 100.0, 50.0), regimen="mrd-positive",
                 bag_plan=(48,))])), expect=["dose-schedule", "therapy-status"]),
    ],
)


# ====================================================================== (6) therapy status between cycles; children

C1_END = RR_C1 + 28 * DAY + 150 * MIN  # the compliant adult cycle 1 (one bag hung 2.5 h late) ends here


def child_pump(ug: float) -> Callable[[Chart], None]:
    """Child 30 kg / 135 cm (BSA 1.061 m²), cycle 2 pump at ``ug`` µg/day charted in mcg/24 hr."""
    def build(chart: Chart) -> None:
        patient_of(CHILD)(chart)
        c2 = at(2026, 3, 16, 9)
        add_course(chart, CHILD, [Cycle(1, at(2026, 2, 2, 9), [(1, 5.3, None), (8, 15.9, None)],
                                        ("dexamethasone", 5.3, 40.0), bsa_based=False),
                                  Cycle(2, c2, [(1, ug, None)], None, bag_plan=(48, 96))])
    return build


EX_STATUS = Example(
    "charting-status",
    "Therapy status in the treatment-free interval; a child's pump in the adult dose",
    "Adult R/R: the chart opened 6 days after cycle 1 ended — therapy-status names the treatment-free interval and "
    "counts its days. Child 30 kg (BSA 1.061 m²) in cycle 2: a pump at 15.9 mcg/24 hr is correct; at the adult "
    "28 mcg/24 hr it is 176 % of the BSA dose (dose-weight-band, critical).",
    [
        # Chart opened in the treatment-free interval: status names it and counts its days (6 of 14).
        Call("tfi-day6-view", "patient-view", C1_END + 6 * DAY, "Six days into the 14-day interval",
             lambda ch: (patient_of(ADULT)(ch), add_course(ch, ADULT, [rr_c1(RR_C1, gaps=[(11 * 24, 150, "completed",
                                                                                          "")])])),
             expect=["therapy-status"], quiet=True),
        # Child on BSA dosing, cycle 2 pump charted 'mcg/24 hr' at the BSA dose (15 mcg/m²/day × 1.061 m²).
        Call("child-ok-view", "patient-view", at(2026, 3, 18, 12), "Child pump at 15.9 mcg/24 hr",
             child_pump(15.9), expect=["therapy-status"], quiet=True),
        # Child's cycle 2 pump programmed at the adult fixed 28 mcg/24 hr (wrong weight band).
        Call("child-28-view", "patient-view", at(2026, 3, 18, 12), "Child pump at the adult 28",
             child_pump(28), expect=["dose-weight-band", "therapy-status"]),
    ],
)


# ====================================================================== (7) restart after an adverse event, on the pump

AE_STOP = RR_C2 + 4 * DAY
AE_RESTART = AE_STOP + 2 * DAY


def ae_restart(escalate_after: dt.timedelta | None) -> Callable[[Chart], None]:
    """Cycle 2 stopped 'Paused: CRS grade 3' on day 5, restarted 2 days later at 9 mcg/24 hr with dexamethasone,
    then (optionally) the pump is turned up to 28 ``escalate_after`` the restart."""
    def build(chart: Chart) -> None:
        patient_of(ADULT)(chart)
        add_course(chart, ADULT, [rr_c1(RR_C1), rr_cn(2, RR_C2, cut_after_hours=4 * 24, cut_status="stopped",
                                                      cut_reason="Paused - adverse reaction (CRS) per Dr. X")])
        steroid_mar(chart, "restart-dex", AE_RESTART - 45 * MIN, concept=DECADRON, mg=20)
        end = AE_RESTART + escalate_after if escalate_after is not None else None
        mar(chart, "restart-9", AE_RESTART, end, rate=ug_d(9), text="Restart at 9 mcg/24 hr")
        if end is not None:
            steroid_mar(chart, "escalate-dex", end - 40 * MIN, concept=DECADRON, mg=20)
            mar(chart, "escalate-28", end, None, rate=ug_d(28), text="Escalate to 28 mcg/24 hr")
    return build


EX_AE_PUMP = Example(
    "charting-ae-restart-pump",
    "Restart after an adverse-reaction pause, as the pump records it",
    "Adult R/R cycle 2 paused on day 5 ('Paused - adverse reaction (CRS)'), restarted 2 days later at 9 mcg/24 hr "
    "with dexamethasone. Escalation to 28 after 7 days (with dexamethasone) is the label's re-escalation; after 3 "
    "days it is an early escalation: a dose-schedule warning, and never a premedication card for a 'step'.",
    [
        # Pump restarted at 9 mcg/24 hr after 'Paused - adverse reaction (CRS)', with Decadron 45 min before.
        Call("restart-9-view", "patient-view", AE_RESTART + 2 * DAY, "Running at 9 two days after the restart",
             ae_restart(None), expect=["therapy-status"], quiet=True),
        # Pump turned up to 28 mcg/24 hr 7 days after the restart, Decadron 40 min before (the label's re-escalation).
        Call("escalated-day7-view", "patient-view", AE_RESTART + 7 * DAY + 3 * HOUR, "Escalated after 7 days",
             ae_restart(7 * DAY), expect=["therapy-status"], quiet=True),
        # Pump turned up to 28 mcg/24 hr only 3 days after the restart: early escalation (dose card, no 'step').
        Call("escalated-day3-view", "patient-view", AE_RESTART + 3 * DAY + 3 * HOUR, "Escalated after 3 days",
             ae_restart(3 * DAY), expect=["dose-schedule", "therapy-status"]),
    ],
)


EXAMPLES: tuple[Example, ...] = (
    EX_PUMP, EX_QUIET, EX_ORDER_TEXT, EX_PREMED_TIME, EX_MRD, EX_STATUS, EX_AE_PUMP,
)
