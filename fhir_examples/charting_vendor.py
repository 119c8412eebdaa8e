"""Vendor-shaped courses: a pediatric course as Oracle Health (Cerner Millennium) sends it, an adult course as Epic
sends it, and the failure variants of the Oracle course.

``build.all_examples()`` adds these examples to the generated ``fhir_examples/``, so each call runs through the HTTP
API with full prefetch and through the FHIR fallback against the real FHIR server (``tests/test_examples.py``).

Shapes (real-world-charting.md §1–4; [V] read in the vendor's documentation, [I] inferred or illustrative):

- **Oracle Health** [V]: every bag is one ``completed`` MedicationAdministration with an instant ``effectiveDateTime``
  (the "Infuse" result), ``dose`` = the volume in mL, ``rateQuantity`` in mL/h (unit "milliliter per hour"), the
  drug and its strength in a contained Medication (here on some records; on the others a ``Medication/<id>``
  reference to a Medication resource with ``ingredient.strength`` and no display), the run time in the
  ``infuse-over-time`` extension on some; statuses are only ``completed``/``not-done``/``entered-in-error``, so a
  missed bag is a ``not-done`` row with its text ``statusReason`` and a pause is a gap. Conditions come as
  problem-list items (ids ``p…``, date-only onsets) and encounter diagnoses (ids ``d…``), SNOMED or ICD-10-CM; there
  are no AdverseEvents. Labs carry a local ``codeSet/72`` code beside LOINC, ids ``L-…``, ``Z`` times. The MAR
  times keep the local offset, across the change to daylight-saving time.
- **Epic** [V for the actions, I for their FHIR rendering]: each New Bag an ``effectivePeriod`` (open while it
  runs), the drug a ``Medication/<id>`` reference with a display, Rate Verify point records each shift, flowsheet
  rows with local FLO ids (ICE, CRS, seizure checks, their negatives), orders and steroids by brand name.

Numbers: the pump rates per bag (24 h 10 mL/h, 48 h 5 mL/h, 72 h and 96 h 1.8 mL/h, 7 days 0.6 mL/h) are the
manufacturer's (clinical-rules-verification.md §6). The prepared bag volumes are illustrative [I]; each bag's
strength is the drug in its prepared volume, so that the volume infused at the pump rate carries the day's dose
(the overfill primes the line; the dose is never the bag's content).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fhir_examples.build import (
    BLIN,
    DAY,
    HOUR,
    ICD10CM,
    IV,
    LAB_SPECS,
    LOINC,
    MIN,
    NCIT,
    OBS_CATEGORY,
    REF_MEANING,
    RXNORM,
    SCORE,
    SNOMED,
    UCUM,
    Call,
    Chart,
    Example,
    Person,
    at,
    iso,
    nursing_checks,
    patient_of,
    q,
)
from fhir_examples.charting_dosing import DECADRON, ug_d

Build = Callable[[Chart], None]

CERNER = "https://fhir.cerner.com/example-tenant"
"""An Oracle Health tenant's base for its local code sets (codeSet 72 = result codes, 4003 = frequencies); the local
codes below are the example site's own, as every Millennium site has its own."""
CS72 = f"{CERNER}/codeSet/72"
CS4003 = f"{CERNER}/codeSet/4003"
INFUSE_OVER = "https://fhir-ehr.cerner.com/r4/StructureDefinition/infuse-over-time"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ORACLE_IV = {"coding": [{"system": SNOMED, "code": "47625008"}], "text": "IV"}
ML_PER_H = {"unit": "milliliter per hour", "system": UCUM, "code": "mL/h"}
BLIN_IN = {"system": RXNORM, "code": "1597258", "display": "blinatumomab"}
DEX_IN = {"system": RXNORM, "code": "3264", "display": "dexamethasone"}

PUMP_ML_H = {24: 10.0, 48: 5.0, 72: 1.8, 96: 1.8, 168: 0.6}
"""Manufacturer pump rate per bag duration (hours)."""
PREPARED_ML = {24: 250.0, 48: 250.0, 72: 140.0, 96: 180.0, 168: 110.0}
"""Prepared bag volume per bag duration [I]."""
PRESERVED = (72, 96, 168)
"""Bags prepared with bacteriostatic saline (benzyl alcohol): 72 h, 96 h and 7 days."""


def with_offset(t: dt.datetime, hours: float) -> str:
    """``t`` written in a fixed local offset (``2026-03-02T14:00:00-06:00``)."""
    return t.astimezone(dt.timezone(dt.timedelta(hours=hours))).isoformat()


CHICAGO_DST_2026 = at(2026, 3, 8, 8)
"""US Central time moves from CST (−06:00) to CDT (−05:00) on 8 March 2026 at 02:00 local (08:00Z)."""


def central(t: dt.datetime) -> str:
    """A MAR time as an Oracle Health site in US Central time writes it: local offset, across the DST change."""
    return with_offset(t, -5 if t >= CHICAGO_DST_2026 else -6)


def eastern_summer(t: dt.datetime) -> str:
    """A time as an Epic site in US Eastern time writes it in April (EDT, −04:00)."""
    return with_offset(t, -4)


def bag_medication(mid: str, *, ug_per_day: float, bag_hours: int) -> dict[str, Any]:
    """A prepared blinatumomab bag as a Medication: drug and diluent in ``code.text``, the drug's ``strength`` per
    prepared volume (contained as ``#mid`` or stored as ``Medication/<mid>``)."""
    rate, prepared = PUMP_ML_H[bag_hours], PREPARED_ML[bag_hours]
    amount = round(ug_per_day / (rate * 24) * prepared, 2)
    diluent = ("bacteriostatic sodium chloride 0.9% (benzyl alcohol 0.9%)" if bag_hours in PRESERVED
               else "sodium chloride 0.9%")
    return {
        "resourceType": "Medication",
        "id": mid,
        "code": {"coding": [dict(BLIN)],
                 "text": f"blinatumomab {amount:g} mcg + {diluent} {prepared:g} mL ({bag_hours} h bag)"},
        "ingredient": [
            {"itemCodeableConcept": {"coding": [dict(BLIN_IN)], "text": "blinatumomab"}, "isActive": True,
             "strength": {"numerator": q(amount, "mcg", "ug"), "denominator": q(prepared, "mL")}},
            {"itemCodeableConcept": {"text": diluent}, "isActive": False},
        ],
    }


def stored_medication(chart: Chart, med: dict[str, Any], t: dt.datetime) -> dict[str, str]:
    """A Medication resource in the EHR, on record from the first stored record that names it (``t``); returns the
    bare ``Medication/<id>`` reference (no display: the drug is named only by the reference)."""
    med = {**med, "id": chart.id(med["id"])}
    for e in chart.entries:
        if e.resource.get("resourceType") == "Medication" and e.resource.get("id") == med["id"]:
            e.t = min(e.t, t)
            break
    else:
        chart.add(med, t)
    return {"reference": f"Medication/{med['id']}"}


# ====================================================================== Oracle Health: records


def oracle_bag(chart: Chart, local: str, hung: dt.datetime, *, bag_hours: int, ug_per_day: float, order: str,
               style: str, infuse_over: bool, status: str = "completed", reason: str | None = None,
               note: str | None = None, rate: float | None = None) -> None:
    """One "Infuse" result: an instant, the bag's volume (mL) and the pump rate (mL/h; the manufacturer's for the bag
    unless ``rate`` says otherwise), the drug contained (``style="contained"``) or referenced
    (``style="reference"``), optionally the infuse-over-time extension."""
    volume = round(PUMP_ML_H[bag_hours] * bag_hours, 1)
    rate = rate if rate is not None else PUMP_ML_H[bag_hours]
    med = bag_medication(f"blin-{ug_per_day:g}-{bag_hours}h", ug_per_day=ug_per_day, bag_hours=bag_hours)
    res: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": chart.id(local), "status": status}
    if style == "contained":
        res["contained"] = [{**med, "id": "m1"}]
        res["medicationReference"] = {"reference": "#m1"}
    else:
        res["medicationReference"] = stored_medication(chart, med, hung)
    if infuse_over:
        res["extension"] = [{"url": INFUSE_OVER, "valueQuantity": {"value": bag_hours * 60, "unit": "minutes",
                                                                   "system": UCUM, "code": "min"}}]
    res.update({
        "subject": chart.subject(),
        "effectiveDateTime": central(hung),
        "request": {"reference": f"MedicationRequest/{chart.id(order)}"},
        "dosage": {"route": dict(ORACLE_IV),
                   "dose": {"value": volume, "unit": "milliliter (iso1000)", "system": UCUM,
                            "code": "mL"},
                   "rateQuantity": {"value": rate, **ML_PER_H}},
    })
    if reason:
        res["statusReason"] = [{"text": reason}]
    if note:
        res["note"] = [{"text": note}]
    chart.add(res, hung)


def oracle_blin_order(chart: Chart, local: str, start: dt.datetime, end: dt.datetime | None, *, ug_per_day: float,
                      ug_per_m2: float, bag_hours: int, medication: Mapping[str, str] | None = None,
                      rate: float | None = None) -> None:
    """A continuous infusion order in the Millennium shape: contained Medication named with the dose (or a bare
    ``Medication/<id>`` reference), text "10 mL/hr, IV, Continuous", bag volume as doseQuantity, mL/hr rate,
    boundsPeriod start only; ``end`` is when the next order replaced it (the stored copy is then completed)."""
    rate = rate if rate is not None else PUMP_ML_H[bag_hours]
    med = bag_medication("m1", ug_per_day=ug_per_day, bag_hours=bag_hours)
    res: dict[str, Any] = {"resourceType": "MedicationRequest", "id": chart.id(local), "status": "active",
                           "intent": "order"}
    if medication is None:
        res["contained"] = [med]
        diluent = med["code"]["text"].split(" + ")[1]
        res["medicationReference"] = {
            "reference": "#m1", "display": f"blinatumomab {ug_per_day:g} mcg [{ug_per_m2:g} mcg/m2/day] + {diluent}"}
    else:
        res["medicationReference"] = dict(medication)
    res.update({
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                  "code": "inpatient"}]}],
        "subject": chart.subject(),
        "authoredOn": central(start - 2 * HOUR),
        "requester": {"display": "Dr. P. Hematologist"},
        "dosageInstruction": [{
            "text": f"{rate:g} mL/hr, IV, Continuous, over {bag_hours} hr. Do not flush line.",
            "timing": {"repeat": {"boundsPeriod": {"start": central(start)}}},
            "route": dict(ORACLE_IV),
            "doseAndRate": [{"doseQuantity": {"value": PREPARED_ML[bag_hours], "unit": "mL", "system": UCUM,
                                              "code": "mL"},
                             "rateQuantity": {"value": rate, "unit": "mL/hr", "system": UCUM, "code": "mL/h"}}],
        }],
    })
    chart.add(res, start - 2 * HOUR, end=end)


DEX_VIAL = {"resourceType": "Medication", "id": "m1",
            "code": {"coding": [dict(DEX_IN)], "text": "dexamethasone 4 mg/mL injection"}}


def oracle_dex(chart: Chart, local: str, t0: dt.datetime, *, mg: float, minutes_before: float = 45) -> None:
    """Premedication: a one-time order ("Once": boundsPeriod start = end) and its administration charted before
    the start it covers, both with a contained Medication."""
    when = t0 - minutes_before * MIN
    chart.add({
        "resourceType": "MedicationRequest", "id": chart.id(f"{local}-mr"), "status": "active", "intent": "order",
        "contained": [dict(DEX_VIAL)],
        "medicationReference": {"reference": "#m1", "display": "dexamethasone"},
        "subject": chart.subject(), "authoredOn": central(when - 3 * HOUR),
        "dosageInstruction": [{
            "text": f"{mg:g} mg, IV, Once, 30-60 minutes prior to blinatumomab",
            "timing": {"code": {"coding": [{"system": CS4003, "code": "696530", "display": "Once"}], "text": "Once"},
                       "repeat": {"boundsPeriod": {"start": central(when), "end": central(when)}}},
            "route": dict(ORACLE_IV),
            "doseAndRate": [{"doseQuantity": q(mg, "mg")}],
        }],
    }, when - 3 * HOUR, end=when)
    chart.add({
        "resourceType": "MedicationAdministration", "id": chart.id(f"{local}-ma"), "status": "completed",
        "contained": [dict(DEX_VIAL)], "medicationReference": {"reference": "#m1"},
        "subject": chart.subject(), "effectiveDateTime": central(when),
        "request": {"reference": f"MedicationRequest/{chart.id(f'{local}-mr')}"},
        "dosage": {"route": dict(ORACLE_IV), "dose": q(mg, "mg")},
    }, when)


ORACLE_LABS = {"alt": ("2919231", "ALT"), "ast": ("2919245", "AST"), "bili": ("2921431", "Bilirubin Total")}


def oracle_lab(chart: Chart, local: str, when: dt.datetime, analyte: str, value: float) -> None:
    """A Millennium result: local codeSet/72 code and LOINC, local label as text, ``L-`` id, ``Z`` times, typed
    normal range, interpretation N."""
    spec = LAB_SPECS[analyte]
    code, label = ORACLE_LABS[analyte]
    chart.add({
        "resourceType": "Observation", "id": chart.id(f"L-{local}"), "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory", "display": "Laboratory"}],
                      "text": "Laboratory"}],
        "code": {"coding": [{"system": CS72, "code": code, "display": label, "userSelected": True},
                            {"system": LOINC, "code": spec["code"], "display": spec["display"]}], "text": label},
        "subject": chart.subject(),
        "effectiveDateTime": iso(when), "issued": iso(when + 95 * MIN),
        "valueQuantity": q(value, spec["unit"]),
        "interpretation": [{"coding": [{"system": V3_INTERP, "code": "N", "display": "Normal"}], "text": "Normal"}],
        "referenceRange": [{"low": q(spec["low"], spec["unit"]), "high": q(spec["uln"], spec["unit"]),
                            "type": {"coding": [{"system": REF_MEANING, "code": "normal"}], "text": "Normal Range"}}],
    }, when)


def oracle_vital(chart: Chart, local: str, when: dt.datetime, *, loinc: str, loinc_display: str, label: str,
                 code: str, value: float, unit: str) -> None:
    chart.add({
        "resourceType": "Observation", "id": chart.id(f"V-{local}"), "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}], "text": "Vital Signs"}],
        "code": {"coding": [{"system": CS72, "code": code, "display": label},
                            {"system": LOINC, "code": loinc, "display": loinc_display}], "text": label},
        "subject": chart.subject(), "effectiveDateTime": iso(when), "issued": iso(when + 10 * MIN),
        "valueQuantity": q(value, unit),
    }, when)


def oracle_finding(chart: Chart, local: str, when: dt.datetime, label: str, code: str, **value: Any) -> None:
    """A nursing assessment result: local codeSet/72 code and label, entered 40 min after it was taken."""
    chart.add({
        "resourceType": "Observation", "id": chart.id(f"N-{local}"), "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "exam"}], "text": "Exam"}],
        "code": {"coding": [{"system": CS72, "code": code, "display": label}], "text": label},
        "subject": chart.subject(), "effectiveDateTime": iso(when), "issued": iso(when + 40 * MIN), **value,
    }, when)


NORMAL = [{"coding": [{"system": V3_INTERP, "code": "N", "display": "Normal"}], "text": "Normal"}]
ABSENT_SCT = {"coding": [{"system": SNOMED, "code": "2667000", "display": "Absent (qualifier value)"}],
              "text": "Absent"}


def oracle_nursing(chart: Chart, start: dt.datetime, days: int) -> None:
    """Negative checks every 8-hour shift, in the shapes Millennium sends (real-world-charting.md §3): seizure
    activity "None" / SNOMED Absent / "No" with interpretation N / a masked value; CAPD (a child ≤ 12 has no ICE);
    ICANS grade 0; "No signs or symptoms of CRS"."""
    seizure: list[dict[str, Any]] = [
        {"valueString": "None"}, {"valueCodeableConcept": ABSENT_SCT}, {"valueString": "No", "interpretation": NORMAL},
        {"valueString": "None observed"},
    ]
    for i in range(days * 3):
        t = start + (i * 8 + 2) * HOUR
        k = f"s{i}"
        if i == 7:  # a result hidden from the API (Oracle sends masked with text): no finding either way
            oracle_finding(chart, f"{k}-sz", t, "Seizure Activity", "4160701",
                           dataAbsentReason={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                         "data-absent-reason", "code": "masked"}],
                                             "text": "Masked"})
        else:
            oracle_finding(chart, f"{k}-sz", t, "Seizure Activity", "4160701", **seizure[i % len(seizure)])
        oracle_finding(chart, f"{k}-capd", t, "CAPD Score", "4160702", valueQuantity={"value": 3, **SCORE})
        oracle_finding(chart, f"{k}-icans", t, "ICANS Grade", "4160703", valueString="0", interpretation=NORMAL)
        oracle_finding(chart, f"{k}-crs", t, "CRS Assessment", "4160704",
                       valueString="No signs or symptoms of CRS")


def oracle_condition(chart: Chart, local: str, *, onset: dt.datetime | str, recorded: dt.datetime, problem: bool,
                     code: list[dict[str, Any]], text: str, grade: int | None = None,
                     resolved: dt.datetime | None = None, note: str | None = None) -> None:
    """A problem (``p…``, may have a date-only onset, resolved with an abatement) or an encounter diagnosis
    (``d…``, with the diagnosis-type extension), SNOMED "Medical" category beside the FHIR one; a grade, when
    charted, in ``stage.summary`` (NCIt grade code and text)."""
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": chart.id(local),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "resolved" if resolved else "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [
            {"coding": [{"system": CONDITION_CATEGORY,
                         "code": "problem-list-item" if problem else "encounter-diagnosis"}]},
            {"coding": [{"system": SNOMED, "code": "74188005", "display": "Medical"}], "text": "Medical"},
        ],
        "code": {"coding": code, "text": text},
        "subject": chart.subject(),
        "onsetDateTime": onset if isinstance(onset, str) else iso(onset),
        "recordedDate": iso(recorded),
    }
    if not problem:
        res["extension"] = [{"url": "https://fhir-ehr.cerner.com/r4/StructureDefinition/diagnosis-type",
                             "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "89100005",
                                                                  "display": "Final diagnosis (discharge)"}],
                                                      "text": "Final"}}]
    if grade is not None:
        ncit = {3: ("C41340", "Grade 3 Severe Adverse Event"), 4: ("C41337", "Grade 4 Life Threatening or "
                                                                           "Disabling Adverse Event")}[grade]
        res["stage"] = [{"summary": {"coding": [{"system": NCIT, "code": ncit[0], "display": ncit[1]}],
                                     "text": f"Grade {grade}"}}]
    if resolved is not None:
        res["abatementDateTime"] = iso(resolved)
    if note:
        res["note"] = [{"text": note}]
    chart.add(res, recorded)


# ====================================================================== Oracle Health: the pediatric course

OR_CHILD = Person("Castillo", "Mateo", "male", "2017-10-19", 28.8, 125.0)
"""8-year-old, 28.8 kg / 125 cm: BSA 1.0 m² (Mosteller), so 5 and 15 µg/m²/day are 5 and 15 µg/day and
dexamethasone 5 mg/m² is 5 mg. Over 22 kg: a 7-day (preservative) bag is allowed by the current and the older
weight limit (clinical-rules-verification.md §6)."""
OR_T0 = at(2026, 3, 2, 20)          # C1D1 14:00 CST (−06:00); the step on C1D8 is 15:00 CDT (−05:00)
OR_DEX_MG = 5.0
STEP_H = 7 * 24
NOT_DONE_H = 8 * 24                 # C1D9: the next bag's "Infuse" task not done (patient in MRI) ...
D9_DELAY = 50 * MIN                 # ... the bag hung 50 min later
SEVEN_DAY_H = 10 * 24               # C1D11 (+ the 50 min): the 7-day bag


def _bags(late: dt.timedelta) -> list[tuple[str, dt.timedelta, int, float, str, bool, str]]:
    """(local, offset from C1D1, bag hours, µg/day, contained/reference, infuse-over-time, order)."""
    d18 = SEVEN_DAY_H * HOUR + D9_DELAY + 168 * HOUR + late
    return [
        ("bag1", dt.timedelta(0), 24, 5, "contained", True, "c1-order1"),
        ("bag2", 24 * HOUR, 48, 5, "reference", False, "c1-order1"),
        ("bag3", 72 * HOUR, 96, 5, "contained", True, "c1-order1"),           # runs across the DST change
        ("bag4", STEP_H * HOUR, 24, 15, "reference", True, "c1-order2"),      # the step dose
        ("bag5", NOT_DONE_H * HOUR + D9_DELAY, 48, 15, "contained", False, "c1-order2"),
        ("bag6", SEVEN_DAY_H * HOUR + D9_DELAY, 168, 15, "reference", True, "c1-order3"),
        ("bag7", d18, 96, 15, "contained", False, "c1-order3"),
        ("bag8", d18 + 96 * HOUR, 96, 15, "reference", True, "c1-order3"),
        ("bag9", d18 + 192 * HOUR, 72, 15, "contained", True, "c1-order3"),   # to C1D28 (28 days of infusion)
    ]


def oracle_course(*, late: dt.timedelta = 5 * MIN, dex_before_late: bool = False, seven_day_rate: float | None = None,
                  extra: Build | None = None) -> Build:
    """The child's cycle 1 (R/R, BSA dosing) as Millennium charts it; ``late``: how long after the 7-day bag ran
    out the C1D18 bag was hung (its infuse-over-time and volume ÷ rate both say when it ran out);
    ``seven_day_rate``: the 7-day bag charted at this pump rate (and without infuse-over-time)."""
    def build(chart: Chart) -> None:
        patient_of(OR_CHILD)(chart)
        t0 = OR_T0
        oracle_vital(chart, "ht", t0 - 5 * HOUR, loinc="8302-2", loinc_display="Body height", label="Height/Length "
                     "Measured", code="4154126", value=OR_CHILD.height_cm, unit="cm")
        for day in (1, 8, 15, 22):
            t = t0 + (day - 1) * DAY - 6 * HOUR
            oracle_vital(chart, f"wt{day}", t, loinc="29463-7", loinc_display="Body weight", label="Weight Measured",
                         code="4099503", value=OR_CHILD.weight_kg, unit="kg")
        for day in (1, 4, 8, 11, 15, 18, 22):
            t = t0 + (day - 1) * DAY - 8 * HOUR
            for analyte, value in (("alt", 31), ("ast", 35), ("bili", 0.4)):
                oracle_lab(chart, f"d{day}-{analyte}", t, analyte, value)
        oracle_condition(chart, "p70011201", onset="2026-02-09", recorded=at(2026, 2, 9, 18), problem=True,
                         code=[{"system": SNOMED, "code": "277571004",
                                "display": "B-cell acute lymphoblastic leukemia (disorder)"}],
                         text="B-cell acute lymphoblastic leukemia, relapsed")
        # CRS grade 1 (fever) on C1D2: an encounter diagnosis with its ICD-10-CM grade code and the same episode on
        # the problem list (date-only onset), resolved on C1D4. Grade 1: no dose change, no card.
        crs = [{"system": ICD10CM, "code": "D89.831", "display": "Cytokine release syndrome, grade 1"}]
        oracle_condition(chart, "d2572382197", onset=t0 + 22 * HOUR, recorded=t0 + 23 * HOUR, problem=False,
                         code=crs, text="Cytokine release syndrome, grade 1", note="Tmax 38.6 C, no hypotension")
        oracle_condition(chart, "p70011202", onset=(t0 + 22 * HOUR).date().isoformat(), recorded=t0 + 26 * HOUR,
                         problem=True, code=crs, text="Cytokine release syndrome, grade 1",
                         resolved=t0 + 3 * DAY)
        oracle_nursing(chart, t0, 9)
        # Orders: one per phase and bag type (a reorder at the step and for the 7-day bag).
        step, seven = t0 + STEP_H * HOUR, t0 + SEVEN_DAY_H * HOUR + D9_DELAY
        oracle_blin_order(chart, "c1-order1", t0, step, ug_per_day=5, ug_per_m2=5, bag_hours=24)
        oracle_blin_order(chart, "c1-order2", step, seven, ug_per_day=15, ug_per_m2=15, bag_hours=24)
        oracle_blin_order(chart, "c1-order3", seven, None, ug_per_day=15, ug_per_m2=15, bag_hours=168)
        oracle_dex(chart, "dex-d1", t0, mg=OR_DEX_MG)
        oracle_dex(chart, "dex-d8", step, mg=OR_DEX_MG)
        for local, offset, hours, ug, style, over, order in _bags(late):
            wrong = seven_day_rate if hours == 168 else None
            oracle_bag(chart, local, t0 + offset, bag_hours=hours, ug_per_day=ug, order=order, style=style,
                       infuse_over=over and wrong is None, rate=wrong)
        # C1D9: the bag's "Infuse" task charted not done (the patient was in MRI); hung on return.
        oracle_bag(chart, "bag5-nd", t0 + NOT_DONE_H * HOUR, bag_hours=48, ug_per_day=15, order="c1-order2",
                   style="contained", infuse_over=False, status="not-done",
                   reason="Not Done: Change in Patient Status", note="Patient off unit for MRI; bag hung on return")
        if late >= HOUR:
            # The C1D18 "Infuse" task due when the 7-day bag ran out, charted not done: the bag was not ready.
            ran_out = t0 + _bags(late)[5][1] + 168 * HOUR
            oracle_bag(chart, "bag7-nd", ran_out, bag_hours=96, ug_per_day=15, order="c1-order3", style="contained",
                       infuse_over=False, status="not-done", reason="Not Done: Medication Not Available",
                       note="Bag not yet received from pharmacy")
        if dex_before_late:
            restart = t0 + _bags(late)[6][1]
            oracle_dex(chart, "dex-restart", restart, mg=OR_DEX_MG, minutes_before=40)
        if extra:
            extra(chart)
    return build


def at_bag(local: str, *, late: dt.timedelta = 5 * MIN) -> dt.datetime:
    return OR_T0 + next(b[1] for b in _bags(late) if b[0] == local)


OR_D18 = at_bag("bag7")

EX_ORACLE = Example(
    "vendor-oracle",
    "Oracle Health (Millennium) pediatric course: instants, volumes, contained and referenced Medications",
    "8-year-old, 28.8 kg / 125 cm (BSA 1.0 m²), relapsed B-ALL, cycle 1 charted the way Oracle Health's FHIR API "
    "sends it: each bag one completed MedicationAdministration at the instant it was hung, dose the volume in mL at "
    "the manufacturer's pump rate (24 h 10 mL/h, 48 h 5 mL/h, 96 h and 72 h 1.8 mL/h, 7 days 0.6 mL/h), the drug "
    "and its strength in a contained Medication on some bags and a bare Medication/<id> reference on the others, "
    "the infuse-over-time extension on some; 5 µg/day, the step to 15 µg/day on day 8 (after the change to "
    "daylight-saving time: MAR times keep their local offset, −06:00 then −05:00), a 7-day bag from day 11; "
    "dexamethasone 5 mg IV charted 45 min before the start and the step; a not-done 'Infuse' row on day 9 "
    "(patient in MRI, bag hung 50 min later); a CRS grade 1 as ICD-10-CM D89.831 on the problem list and as an "
    "encounter diagnosis; labs with local codeSet 72 codes beside LOINC; negative nursing checks. Every call quiet.",
    [
        Call("c1d1-sign", "order-sign", OR_T0 - HOUR, "C1D1 order (contained Medication, mL/hr) and dexamethasone",
             oracle_course(), drafts=["c1-order1", "dex-d1-mr"], quiet=True),
        Call("c1d3-view", "patient-view", OR_T0 + 2 * DAY + 5 * HOUR,
             "48-h bag charted as an instant with volume and rate only", oracle_course(),
             expect=["therapy-status"], quiet=True),
        Call("c1d7-view-after-dst", "patient-view", OR_T0 + 6 * DAY + 2 * HOUR,
             "96-h bag hung before the daylight-saving change, viewed after it", oracle_course(),
             expect=["therapy-status"], quiet=True),
        Call("c1d8-step-sign", "order-sign", OR_T0 + STEP_H * HOUR - HOUR, "C1D8 step order at 15 µg/day (CDT)",
             oracle_course(), drafts=["c1-order2", "dex-d8-mr"], quiet=True),
        Call("c1d9-view", "patient-view", OR_T0 + NOT_DONE_H * HOUR + 4 * HOUR,
             "Not-done 'Infuse' row, bag hung 50 min later", oracle_course(), expect=["therapy-status"], quiet=True),
        Call("c1d11-7day-sign", "order-sign", OR_T0 + SEVEN_DAY_H * HOUR + D9_DELAY - HOUR,
             "Order for the 7-day bag (bacteriostatic saline) at 28.8 kg", oracle_course(), drafts=["c1-order3"],
             quiet=True),
        Call("c1d14-view", "patient-view", OR_T0 + 13 * DAY + 2 * HOUR, "7-day bag named by Medication/<id> running",
             oracle_course(), expect=["therapy-status"], quiet=True),
        Call("c1d19-view", "patient-view", OR_D18 + DAY, "Next bag hung as the 7-day bag ran out", oracle_course(),
             expect=["therapy-status"], quiet=True),
    ],
)


# ====================================================================== Oracle Health: failure variants

def tls_conditions(chart: Chart) -> None:
    """Tumour lysis syndrome grade 3 on C1D4 as the physician charts it in Millennium: an encounter diagnosis and
    the same episode on the problem list (date-only onset), the grade in stage.summary; no AdverseEvent."""
    onset = OR_T0 + 3 * DAY - 5 * HOUR
    code = [{"system": NCIT, "code": "C146688", "display": "Tumor lysis syndrome"}]
    oracle_condition(chart, "d2572389911", onset=onset, recorded=onset + 40 * MIN, problem=False, code=code,
                     text="Tumor lysis syndrome", grade=3, note="K 7.1, creatinine 2x baseline; rasburicase given")
    oracle_condition(chart, "p70011233", onset=onset.date().isoformat(), recorded=onset + 70 * MIN, problem=True,
                     code=code, text="Tumor lysis syndrome, grade 3", grade=3)


def overdose_order(chart: Chart) -> None:
    """C1D9: the next 24-h bag ordered by picking the pharmacy product already on the MAR (the step bag's
    Medication/<id>, no display) at 30 mL/hr instead of 10: 45 µg/day, three times the dose."""
    med = bag_medication("blin-15-24h", ug_per_day=15, bag_hours=24)
    ref = stored_medication(chart, med, OR_T0 + STEP_H * HOUR)
    oracle_blin_order(chart, "next-bag-order", OR_T0 + NOT_DONE_H * HOUR, None, ug_per_day=15, ug_per_m2=15,
                      bag_hours=24, medication=ref, rate=30)


EX_ORACLE_FAIL = Example(
    "vendor-oracle-fail",
    "Oracle Health pediatric course: overdose by reference, late bags, grade 3 as a Condition",
    "The Oracle Health-charted child of vendor-oracle (cycle 1, BSA 1.0 m², 15 µg/day since day 8). The next "
    "bag ordered with the drug named only by Medication/<id> at 30 mL/hr (45 µg/day, over the 28 µg/day maximum); "
    "the 7-day bag, whose strength lives in its referenced Medication, programmed at the 24-h bag's 10 mL/hr "
    "(250 µg/day); the day-18 bag hung 3 h 30 min after the 7-day bag ran out (a bag change), 4 h 20 min after "
    "it without dexamethasone (a restart in the first cycle: a child needs 5 mg/m²; the Infuse task due at the change "
    "charted not done, medication not available), and 4 h 20 min after it with "
    "dexamethasone 40 min before; tumour lysis syndrome grade 3 recorded only as Conditions.",
    [
        Call("overdose-ref-sign", "order-sign", OR_T0 + NOT_DONE_H * HOUR - HOUR,
             "Next bag at 30 mL/hr, drug named only by Medication/<id>", oracle_course(extra=overdose_order),
             drafts=["next-bag-order"], expect=["dose-limit"], indicators={"dose-limit": "critical"}),
        Call("late-210min-view", "patient-view", at_bag("bag7", late=210 * MIN) + 2 * HOUR,
             "Day-18 bag hung 3 h 30 min after the 7-day bag ran out", oracle_course(late=210 * MIN),
             expect=["therapy-status"], quiet=True),
        Call("late-260min-view", "patient-view", at_bag("bag7", late=260 * MIN) + 2 * HOUR,
             "Day-18 bag hung 4 h 20 min late, no dexamethasone", oracle_course(late=260 * MIN),
             expect=["premed-missing", "therapy-status"], indicators={"premed-missing": "critical"}),
        Call("late-260min-dex-view", "patient-view", at_bag("bag7", late=260 * MIN) + 2 * HOUR,
             "Day-18 bag hung 4 h 20 min late, dexamethasone 40 min before",
             oracle_course(late=260 * MIN, dex_before_late=True), expect=["therapy-status"], quiet=True),
        Call("seven-day-at-24h-rate-view", "patient-view", at_bag("bag6") + 2 * HOUR,
             "7-day bag (Medication/<id>) running at the 24-h bag's 10 mL/hr", oracle_course(seven_day_rate=10),
             expect=["dose-limit", "therapy-status"], indicators={"dose-limit": "critical"}),
        Call("tls-condition-view", "patient-view", OR_T0 + 3 * DAY - 2 * HOUR,
             "Tumour lysis syndrome grade 3 as problem and diagnosis", oracle_course(extra=tls_conditions),
             expect=["adverse-event-interrupt", "therapy-status"],
             indicators={"adverse-event-interrupt": "critical"}),
    ],
)


# ====================================================================== Epic: the adult course

EP_ADULT = Person("Brennan", "Siobhan", "female", "1981-08-27", 70.0, 168.0)
EP_T0 = at(2026, 4, 6, 13)          # C1D1 09:00 EDT
EP_STEP = EP_T0 + 7 * DAY
EP_7DAY = EP_T0 + 10 * DAY + 5 * MIN
BLINCYTO_ORDER = {"coding": [dict(BLIN)], "text": "BLINCYTO 35 MCG IV SOLR"}
EPIC_BAGS: list[tuple[str, dt.datetime, int, float]] = [
    ("bag1", EP_T0, 24, 9), ("bag2", EP_T0 + DAY + 4 * MIN, 48, 9), ("bag3", EP_T0 + 3 * DAY + 6 * MIN, 96, 9),
    ("bag4", EP_STEP, 24, 28), ("bag5", EP_STEP + DAY + 3 * MIN, 48, 28), ("bag6", EP_7DAY, 168, 28),
    ("bag7", EP_7DAY + 7 * DAY + 4 * MIN, 168, 28), ("bag8", EP_7DAY + 14 * DAY + 6 * MIN, 96, 28),
]
"""(local, hung, bag hours, µg/day): bag changes a few minutes apart; 28 days of infusion in all."""


EPIC_INFUSION = {"resourceType": "Medication", "id": "erx-blincyto-infusion",
                 "code": {"coding": [dict(BLIN)], "text": "BLINCYTO 35 MCG IV SOLR"}}
"""The site's BLINCYTO infusion record (drug only); the 7-day bag mixture is its own record, with its strength."""


def epic_bag(chart: Chart, local: str, start: dt.datetime, end: dt.datetime, *, ug: float, hours: int,
             order: str) -> None:
    """Epic "New Bag": an effectivePeriod (the snapshot leaves it open and in-progress while it runs), the drug a
    Medication reference with a display; the 7-day bag's rate in mL/hr, whose strength lives in its Medication."""
    if hours == 168:
        seven_day = stored_medication(chart, bag_medication("erx-blincyto-7day", ug_per_day=28, bag_hours=168),
                                      start)
        med = {**seven_day, "display": "blinatumomab (BLINCYTO) 28 mcg/24 hr IV infusion, 7-day bag"}
        rate: dict[str, Any] = {"value": PUMP_ML_H[168], "unit": "mL/hr", "system": UCUM, "code": "mL/h"}
    else:
        med = {**stored_medication(chart, EPIC_INFUSION, start),
               "display": f"blinatumomab (BLINCYTO) {ug:g} mcg/24 hr IV infusion"}
        rate = ug_d(ug)
    chart.add({
        "resourceType": "MedicationAdministration", "id": chart.id(local), "status": "completed",
        "medicationReference": med, "subject": chart.subject(),
        "effectivePeriod": {"start": eastern_summer(start), "end": eastern_summer(end)},
        "request": {"reference": f"MedicationRequest/{chart.id(order)}"},
        "note": [{"text": "New Bag"}],
        "dosage": {"route": IV, "rateQuantity": rate},
    }, start, end=end)
    # Rate Verify at 07:00 and 19:00 (EDT) while the bag runs: point records at the running rate, and the pump rate
    # on the IV flowsheet row beside it.
    t = start.replace(minute=0) + HOUR
    while t < end:
        if t.astimezone(dt.timezone(dt.timedelta(hours=-4))).hour in (7, 19):
            chart.add({
                "resourceType": "MedicationAdministration", "id": chart.id(f"{local}-rv{t:%d%H}"),
                "status": "completed", "medicationReference": med, "subject": chart.subject(),
                "effectiveDateTime": eastern_summer(t), "note": [{"text": "Rate Verify"}],
                "request": {"reference": f"MedicationRequest/{chart.id(order)}"},
                "dosage": {"route": IV, "rateQuantity": rate},
            }, t)
            ml_h = PUMP_ML_H[hours]
            chart.flowsheet(f"{local}-iv{t:%d%H}", t, "BLINCYTO infusion rate (mL/hr)", row_id="3040410",
                            category=None, entered_after=20 * MIN,
                            valueQuantity={"value": ml_h, "unit": "mL/hr", "system": UCUM, "code": "mL/h"})
        t += HOUR


def epic_order(chart: Chart, local: str, start: dt.datetime, end: dt.datetime | None, *, ug: float, day: int,
               seven_day: bool = False) -> None:
    """A BLINCYTO order by brand name: mcg/24 hr (Epic's unit text) or, for the 7-day bag, 196 mcg per 7 days at
    0.6 mL/hr."""
    if seven_day:
        dar = [{"doseQuantity": q(ug * 7, "mcg", "ug"),
                "rateQuantity": {"value": PUMP_ML_H[168], "unit": "mL/hr", "system": UCUM, "code": "mL/h"}}]
        timing: dict[str, Any] = {"repeat": {"boundsPeriod": {"start": eastern_summer(start)}, "duration": 7,
                                             "durationUnit": "d"}}
        text = f"BLINCYTO {ug * 7:g} mcg in bacteriostatic NS over 7 days at 0.6 mL/hr ({ug:g} mcg/24 hr), Cycle 1 " \
               f"Day {day}. Do not flush."
    else:
        dar = [{"rateQuantity": ug_d(ug)}]
        timing = {"repeat": {"boundsPeriod": {"start": eastern_summer(start)}}}
        text = f"BLINCYTO {ug:g} mcg/24 hr continuous IV infusion, Cycle 1 Day {day}. Do not flush."
    chart.add({
        "resourceType": "MedicationRequest", "id": chart.id(local), "status": "active", "intent": "order",
        "medicationCodeableConcept": dict(BLINCYTO_ORDER), "subject": chart.subject(),
        "authoredOn": eastern_summer(start - 2 * HOUR), "requester": {"display": "Dr. R. Oncologist"},
        "dosageInstruction": [{"text": text, "timing": timing, "route": IV, "doseAndRate": dar}],
    }, start - 2 * HOUR, end=end)


def epic_decadron(chart: Chart, local: str, t0: dt.datetime) -> None:
    """Decadron 20 mg IV: an order timed 1 h before (timing.event) and its administration 45 min before."""
    when = t0 - 45 * MIN
    chart.add({
        "resourceType": "MedicationRequest", "id": chart.id(f"{local}-mr"), "status": "active", "intent": "order",
        "medicationCodeableConcept": dict(DECADRON), "subject": chart.subject(),
        "authoredOn": eastern_summer(t0 - 4 * HOUR),
        "dosageInstruction": [{"text": "Decadron 20 mg IV once, 1 hour prior to BLINCYTO",
                               "timing": {"event": [eastern_summer(t0 - HOUR)]}, "route": IV,
                               "doseAndRate": [{"doseQuantity": q(20, "mg")}]}],
    }, t0 - 4 * HOUR, end=t0 - HOUR)
    chart.add({
        "resourceType": "MedicationAdministration", "id": chart.id(f"{local}-ma"), "status": "completed",
        "medicationCodeableConcept": dict(DECADRON), "subject": chart.subject(),
        "effectiveDateTime": eastern_summer(when),
        "request": {"reference": f"MedicationRequest/{chart.id(f'{local}-mr')}"},
        "dosage": {"route": IV, "dose": q(20, "mg")},
    }, when)


def epic_course(chart: Chart) -> None:
    patient_of(EP_ADULT)(chart)
    chart.height("height", EP_T0 - 3 * HOUR, EP_ADULT.height_cm)
    for day in (1, 8, 15, 22):
        t = EP_T0 + (day - 1) * DAY - 2 * HOUR
        chart.weight(f"d{day}-wt", t, EP_ADULT.weight_kg)
        chart.liver_panel(f"d{day}-lft", t - 30 * MIN)
    epic_order(chart, "c1-order1", EP_T0, EP_STEP, ug=9, day=1)
    epic_order(chart, "c1-order2", EP_STEP, EP_7DAY, ug=28, day=8)
    epic_order(chart, "c1-order3", EP_7DAY, None, ug=28, day=11, seven_day=True)
    epic_decadron(chart, "dex-d1", EP_T0)
    epic_decadron(chart, "dex-d8", EP_STEP)
    ends = [b[1] for b in EPIC_BAGS[1:]]
    for (local, start, hours, ug), nxt in zip(EPIC_BAGS, [*ends, None], strict=True):
        end = start + hours * HOUR
        order = "c1-order1" if start < EP_STEP else "c1-order2" if start < EP_7DAY else "c1-order3"
        epic_bag(chart, local, start, end if nxt is None else min(end, nxt), ug=ug, hours=hours, order=order)
    # Flowsheets: negative CRS/ICANS/seizure checks every 12-h shift of the 9 inpatient days, and a CRS grade 1 row.
    nursing_checks(chart, "c1", EP_T0, 9)
    chart.flowsheet("crs-g1", EP_T0 + 30 * HOUR, "CRS grade", row_id="3040131", valueString="1",
                    method={"text": "ASTCT 2019"})


EX_EPIC = Example(
    "vendor-epic",
    "Epic adult course: effectivePeriod bags, Rate Verify points, flowsheet rows, brand-name orders",
    "70 kg adult, relapsed B-ALL, cycle 1 charted the way Epic sends it: each New Bag a MedicationAdministration "
    "with an effectivePeriod (open while it runs) and the drug as a Medication/<id> reference with a display, "
    "rates in 'mcg/24 hr' and, for the 7-day bag, 0.6 mL/hr whose strength lives in the referenced Medication; "
    "Rate Verify point records at 07:00 and 19:00 with the pump rate on the IV flowsheet row; BLINCYTO and "
    "Decadron orders by brand name, Decadron 20 mg IV "
    "45 min before the start and the day-8 step; flowsheet rows with local FLO ids (ICE 10/10, 'No CRS', seizure "
    "checks in every negative shape) and a CRS grade 1. Every call quiet.",
    [
        Call("c1d1-sign", "order-sign", EP_T0 - HOUR, "C1D1 BLINCYTO 9 mcg/24 hr and Decadron 20 mg", epic_course,
             drafts=["c1-order1", "dex-d1-mr"], quiet=True),
        Call("c1d3-view", "patient-view", EP_T0 + 2 * DAY + 3 * HOUR, "48-h bag running, Rate Verify each shift",
             epic_course, expect=["therapy-status"], quiet=True),
        Call("c1d8-step-sign", "order-sign", EP_STEP - HOUR, "C1D8 step to 28 mcg/24 hr with Decadron",
             epic_course, drafts=["c1-order2", "dex-d8-mr"], quiet=True),
        Call("c1d10-view", "patient-view", EP_STEP + 2 * DAY + 2 * HOUR, "28 mcg/24 hr running", epic_course,
             expect=["therapy-status"], quiet=True),
        Call("c1d11-7day-sign", "order-sign", EP_7DAY - HOUR, "7-day bag order: 196 mcg at 0.6 mL/hr",
             epic_course, drafts=["c1-order3"], quiet=True),
        Call("c1d14-view", "patient-view", EP_7DAY + 3 * DAY + 3 * HOUR,
             "7-day bag at 0.6 mL/hr, strength in the referenced Medication", epic_course,
             expect=["therapy-status"], quiet=True),
    ],
)


EXAMPLES: tuple[Example, ...] = (EX_ORACLE, EX_ORACLE_FAIL, EX_EPIC)
