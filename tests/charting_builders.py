"""One blinatumomab course charted in each vendor's style (real-world-charting.md §1), for timeline and rule tests.

- ``periods``: Epic-style, each bag an ``effectivePeriod`` in the chart's local offset (-06:00, then -05:00 after
  the daylight-saving change of 8 March 2026), the running bag open and ``in-progress``, the rate in mL/h with the
  dose on the MAR line;
- ``extension``: Oracle Health, each bag a ``completed`` instant in ``Z`` with the dose as a volume (mL), the rate in
  mL/h, the drug and its strength in a contained Medication and the infuse-over-time extension (minutes);
- ``volume``: the same without the extension (the run time is volume ÷ rate);
- ``instant``: the same with neither a volume nor the extension: the bag runs until the next record.

Pump rates per bag length are the label's (clinical-rules.md §5.3: 24 h 10 mL/h, 48 h 5 mL/h, 96 h 1.8 mL/h,
7 days 0.6 mL/h); each bag holds its length's dose at the strength it names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from tests.builders import BLIN_SCD, UCUM, iso

Style = Literal["periods", "extension", "volume", "instant"]
STYLES: tuple[Style, ...] = ("periods", "extension", "volume", "instant")
CST = dt.timezone(dt.timedelta(hours=-6), "CST")
CDT = dt.timezone(dt.timedelta(hours=-5), "CDT")
DST_2026 = dt.datetime(2026, 3, 8, 8, tzinfo=dt.UTC)  # 02:00 CST on 8 March 2026: clocks go to 03:00 CDT
INFUSE_OVER = "https://fhir-ehr.cerner.com/r4/StructureDefinition/infuse-over-time"
PUMP_ML_PER_H = {24: 10.0, 48: 5.0, 96: 1.8, 168: 0.6}


def chicago(month: int, day: int, hour: int, minute: int = 0, *, year: int = 2026) -> dt.datetime:
    """A wall-clock time in an America/Chicago-style chart, with the offset the EHR sends that day."""
    naive = dt.datetime(year, month, day, hour, minute)
    cst = naive.replace(tzinfo=CST)
    return naive.replace(tzinfo=CDT) if cst >= DST_2026 and month < 11 else cst


@dataclass(frozen=True)
class Bag:
    hung: dt.datetime
    hours: int
    ug_per_day: float

    @property
    def ends(self) -> dt.datetime:
        return self.hung + dt.timedelta(hours=self.hours)


def bag_record(id: str, bag: Bag, style: Style, *, now: dt.datetime, request: str = "MedicationRequest/ord1",
               ) -> dict[str, Any]:
    """One bag as the style charts it (the period style leaves the bag running at ``now`` open)."""
    rate = PUMP_ML_PER_H[bag.hours]
    volume = round(rate * bag.hours, 1)
    mcg = round(bag.ug_per_day * bag.hours / 24, 2)
    line = f"blinatumomab (BLINCYTO) {bag.ug_per_day:g} mcg/24 hr at {rate:g} mL/hr"
    out: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": id, "subject": {"reference": "Patient/p1"},
                           "request": {"reference": request}}
    rate_q = {"value": rate, "unit": "mL/hr" if style == "periods" else "milliliter per hour", "system": UCUM,
              "code": "mL/h"}
    dosage: dict[str, Any] = {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}],
                                        "text": "IV"}, "rateQuantity": rate_q}
    if style == "periods":
        running = bag.ends > now
        out.update(status="in-progress" if running else "completed",
                   medicationCodeableConcept={"coding": [BLIN_SCD], "text": "blinatumomab (BLINCYTO)"},
                   effectivePeriod={"start": iso(bag.hung)} if running else {"start": iso(bag.hung),
                                                                              "end": iso(bag.ends)})
        dosage["text"] = line
        out["dosage"] = dosage
        return out
    out.update(status="completed", effectiveDateTime=iso(bag.hung.astimezone(dt.UTC)),
               contained=[_medication(mcg, volume)], medicationReference={"reference": "#m1"})
    if style in ("extension", "volume"):
        dosage["dose"] = {"value": volume, "unit": "milliliter (iso1000)", "system": UCUM, "code": "mL"}
    if style == "extension":
        out["extension"] = [{"url": INFUSE_OVER, "valueQuantity": {"value": bag.hours * 60, "unit": "minutes",
                                                                   "system": UCUM, "code": "min"}}]
    out["dosage"] = dosage
    return out


def not_done(id: str, when: dt.datetime, reason: str, *, ug_per_day: float) -> dict[str, Any]:
    """An Oracle Health ``not-done`` row for a bag's "Infuse" task, with its text-only ``statusReason``."""
    return {"resourceType": "MedicationAdministration", "id": id, "status": "not-done",
            "subject": {"reference": "Patient/p1"}, "statusReason": [{"text": reason}],
            "contained": [_medication(ug_per_day, 240)], "medicationReference": {"reference": "#m1"},
            "effectiveDateTime": iso(when.astimezone(dt.UTC)),
            "note": [{"text": "Bag not hung at the scheduled time."}]}


def _medication(mcg: float, volume_ml: float) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": "m1",
            "code": {"text": f"blinatumomab {mcg:g} mcg + sodium chloride 0.9% {volume_ml:g} mL"},
            "ingredient": [{"itemCodeableConcept": {"text": "blinatumomab"},
                            "strength": {"numerator": {"value": mcg, "unit": "mcg", "system": UCUM, "code": "ug"},
                                         "denominator": {"value": volume_ml, "unit": "mL", "system": UCUM,
                                                         "code": "mL"}}}]}


def charted(bags: list[Bag], style: Style, *, now: dt.datetime, prefix: str = "bag", with_orders: bool = False,
            ) -> list[dict[str, Any]]:
    """The bags hung by ``now``, as the style charts them; ``with_orders``: each bag fulfils an Oracle Health-style
    order for its bag length and dose (:func:`bag_order`), and those orders are on the chart."""
    hung = [b for b in bags if b.hung <= now]
    records = [bag_record(f"{prefix}{i}", b, style, now=now, request=f"MedicationRequest/{_order_id(b)}")
               for i, b in enumerate(hung, 1)]
    if not with_orders:
        return records
    orders = {_order_id(b): bag_order(_order_id(b), b) for b in hung}
    return [*records, *orders.values()]


def _order_id(bag: Bag) -> str:
    return f"ord-{bag.hours}h-{bag.ug_per_day:g}".replace(".", "-")


def bag_order(id: str, bag: Bag) -> dict[str, Any]:
    """An Oracle Health-style continuous-infusion order (real-world-charting.md §2): the bag volume as
    ``doseQuantity``, the pump rate in mL/h, the drug and its strength in a contained Medication, text "over N hr"."""
    rate = PUMP_ML_PER_H[bag.hours]
    volume = round(rate * bag.hours, 1)
    return {
        "resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                  "code": "inpatient"}]}],
        "contained": [_medication(round(bag.ug_per_day * bag.hours / 24, 2), volume)],
        "medicationReference": {"reference": "#m1"},
        "authoredOn": iso(bag.hung - dt.timedelta(hours=2)),
        "dosageInstruction": [{
            "text": f"{rate:g} mL/hr, IV, Continuous, over {bag.hours} hr. Do not flush line.",
            "timing": {"repeat": {"boundsPeriod": {"start": iso(bag.hung)}}},
            "route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}], "text": "IV"},
            "doseAndRate": [{"doseQuantity": {"value": volume, "unit": "mL", "system": UCUM, "code": "mL"},
                             "rateQuantity": {"value": rate, "unit": "mL/hr", "system": UCUM, "code": "mL/h"}}]}],
    }
