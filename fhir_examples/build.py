"""Generate the example patients and hook requests in ``fhir_examples/`` (run: ``python fhir_examples/build.py``).

Why a generator: a blinatumomab course is hundreds of dated records (bags, premedication, weights, labs) that must
agree with each other to the minute. Writing them by hand would drift; here each example is a short script over a
small chart builder, and the JSON it writes is committed (``tests/test_examples.py`` checks it is up to date).

Every example is authored at fixed past instants. ``service.examples`` shifts every date so that a call's
``reference_instant`` becomes "now" when the example is sent or loaded, so a weight never goes stale with age.

Layout written per example::

    <name>/manifest.json           name, title, description, reference_instant, calls[...]
    <name>/<call>.request.json     the full CDS Hooks request, prefetch filled as the service's templates return it
    <name>/<call>.bundle.json      a transaction Bundle (PUT, fixed ids) with the same data, for a FHIR server

Each call has its own patient id (``ex-<name>-<call>``), so loading every example never collides. Draft orders
appear only in the request's ``context.draftOrders``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CTCAE_GRADE_EXT = "http://hl7.org/fhir/us/ctcae/StructureDefinition/ctcae-grade"
CTCAE_GRADE_CS = "http://hl7.org/fhir/us/ctcae/CodeSystem/ctcae-grade-code-system"
NORMALIZATION_BASIS = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-normalization-basis"
LOCAL_TOX = "http://hospital.example.org/fhir/CodeSystem/oncology-toxicity"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REF_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
EHR_BASE = "https://ehr.example.org/fhir"
EPIC_FLO = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"

REGIMEN_CANONICAL = {
    "relapsed-refractory": "urn:blina-cds:regimen:relapsed-refractory",
    "mrd-positive": "urn:blina-cds:regimen:mrd-positive",
    "consolidation": "urn:blina-cds:regimen:consolidation",
}
BLIN = {"system": RXNORM, "code": "1597267", "display": "blinatumomab 0.035 MG Injection [Blincyto]"}
STEROIDS = {
    "dexamethasone": ({"system": RXNORM, "code": "3264", "display": "dexamethasone"},
                      "dexamethasone sodium phosphate injection"),
    "prednisone": ({"system": RXNORM, "code": "8640", "display": "prednisone"}, "predniSONE"),
}
IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
ALL_B = {"coding": [{"system": SNOMED, "code": "277571004",
                     "display": "B-cell acute lymphoblastic leukemia (disorder)"}]}

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MIN = dt.timedelta(minutes=1)


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def q(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code or unit}


def bsa_mosteller(kg: float, cm: float) -> float:
    return math.sqrt(kg * cm / 3600)


# ====================================================================== the chart builder


@dataclass
class Entry:
    """A resource with the instant it comes into existence, and (for infusions/orders) when it ends."""

    resource: dict[str, Any]
    t: dt.datetime
    end: dt.datetime | None = None
    stop_status: str | None = None
    stop_reason: str | None = None


@dataclass
class Chart:
    """One patient's record for one call. Ids are ``<pid>-<local>`` so every call's data is separate."""

    pid: str
    entries: list[Entry] = field(default_factory=list)
    drafts: list[dict[str, Any]] = field(default_factory=list)

    def id(self, local: str) -> str:
        return f"{self.pid}-{local}"

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def add(self, resource: dict[str, Any], t: dt.datetime, **kw: Any) -> dict[str, Any]:
        self.entries.append(Entry(resource, t, **kw))
        return resource

    # ------------------------------------------------------------------ demographics

    def patient(self, *, family: str, given: str, gender: str, birth_date: str) -> None:
        self.add({
            "resourceType": "Patient",
            "id": self.pid,
            "identifier": [{"system": "https://hospital.example.org/mrn", "value": f"MRN-{self.pid}"}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": gender,
            "birthDate": birth_date,
        }, dt.datetime.min.replace(tzinfo=dt.UTC))

    # ------------------------------------------------------------------ observations

    def _obs(self, local: str, code: Mapping[str, Any], when: dt.datetime, *, category: str = "laboratory",
             status: str = "final", **values: Any) -> dict[str, Any]:
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.id(local),
            "status": status,
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": dict(code),
            "subject": self.subject(),
            "effectiveDateTime": iso(when),
            "issued": iso(when + (2 * HOUR if category == "laboratory" else 5 * MIN)),
        }
        res.update(values)
        return self.add(res, when)

    def weight(self, local: str, when: dt.datetime, kg: float) -> None:
        self._obs(local, {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}],
                          "text": "Weight"}, when, category="vital-signs", valueQuantity=q(kg, "kg"))

    def height(self, local: str, when: dt.datetime, cm: float) -> None:
        self._obs(local, {"coding": [{"system": LOINC, "code": "8302-2", "display": "Body height"}],
                          "text": "Height"}, when, category="vital-signs", valueQuantity=q(cm, "cm"))

    def lab(self, local: str, when: dt.datetime, analyte: str, value: float, *, uln: float | None = None,
            unit: str | None = None, code: str | None = None, status: str = "final") -> None:
        spec = LAB_SPECS[analyte]
        unit = unit or spec["unit"]
        coding = {"system": LOINC, "code": code or spec["code"], "display": spec["display"]}
        extra: dict[str, Any] = {"valueQuantity": q(value, unit)}
        high = spec["uln"] if uln is None else uln
        if high is not False:
            extra["referenceRange"] = [{
                "low": q(spec["low"], unit) if spec.get("low") is not None and unit == spec["unit"] else None,
                "high": q(high, unit),
                "type": {"coding": [{"system": REF_MEANING, "code": "normal", "display": "Normal Range"}]},
            }]
            if extra["referenceRange"][0]["low"] is None:
                del extra["referenceRange"][0]["low"]
        self._obs(local, {"coding": [coding], "text": spec["text"]}, when, status=status, **extra)

    def liver_panel(self, local: str, when: dt.datetime, *, alt: float = 28, ast: float = 24,
                    bili: float = 0.6) -> None:
        self.lab(f"{local}-alt", when, "alt", alt)
        self.lab(f"{local}-ast", when, "ast", ast)
        self.lab(f"{local}-bili", when, "bili", bili)

    def toxicity_obs(self, local: str, when: dt.datetime, *, text: str, code: str | None = None,
                     grade: int | None = None, value_string: str | None = None,
                     system_text: str = "CTCAE v4.0") -> None:
        coding = [{"system": LOCAL_TOX, "code": code, "display": text}] if code else []
        concept: dict[str, Any] = {"text": text}
        if coding:
            concept["coding"] = coding
        values: dict[str, Any] = {"method": {"text": system_text}}
        if grade is not None:
            values["valueInteger"] = grade
        if value_string is not None:
            values["valueString"] = value_string
        self._obs(local, concept, when, category="exam", **values)

    def flowsheet(self, local: str, when: dt.datetime, row: str, *, row_id: str, category: str | None = "exam",
                  entered_after: dt.timedelta = 95 * MIN, **values: Any) -> dict[str, Any]:
        """A nursing flowsheet row as Epic sends it: the row's local id (FLO) and name, no standard code, ``issued``
        (entered) later than ``effective`` (taken); ``values`` are the value[x] and any other elements."""
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.id(local),
            "status": "final",
            "code": {"coding": [{"system": EPIC_FLO, "code": row_id, "display": row}], "text": row},
            "subject": self.subject(),
            "effectiveDateTime": iso(when),
            "issued": iso(when + entered_after),
        }
        if category:
            res["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": category}]}]
        res.update(values)
        return self.add(res, when)

    # ------------------------------------------------------------------ conditions and adverse events

    def condition(self, local: str, when: dt.datetime, *, system: str, code: str, display: str,
                  category: str = "encounter-diagnosis", note: str | None = None) -> None:
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self.id(local),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": self.subject(),
            "onsetDateTime": iso(when),
            "recordedDate": iso(when + 20 * MIN),
        }
        if note:
            res["note"] = [{"text": note}]
        self.add(res, when)

    def adverse_event(self, local: str, when: dt.datetime, *, text: str, grade: int | None = None,
                      coding: Mapping[str, Any] | None = None, suspect: str | None = None,
                      outcome: str = "ongoing") -> None:
        event: dict[str, Any] = {"text": text}
        if coding:
            event["coding"] = [dict(coding)]
        res: dict[str, Any] = {
            "resourceType": "AdverseEvent",
            "id": self.id(local),
            "actuality": "actual",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-category",
                "code": "medication-mishap" if grade is None else "product-use-error",
            }]}] if grade is None else None,
            "event": event,
            "subject": self.subject(),
            "date": iso(when),
            "detected": iso(when),
            "recordedDate": iso(when + 30 * MIN),
            "outcome": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                                    "code": outcome}]},
        }
        if res["category"] is None:
            del res["category"]
        if grade is not None:
            res["extension"] = [{"url": CTCAE_GRADE_EXT, "valueCodeableConcept": {
                "coding": [{"system": CTCAE_GRADE_CS, "code": str(grade), "display": f"Grade {grade}"}]}}]
            res["seriousness"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                "code": "serious" if grade >= 3 else "non-serious"}]}
        if suspect:
            res["suspectEntity"] = [{"instance": {"reference": f"MedicationAdministration/{self.id(suspect)}"}}]
        self.add(res, when)

    # ------------------------------------------------------------------ medications

    def blin_order(self, local: str, start: dt.datetime, end: dt.datetime, *, dosage: Mapping[str, Any],
                   text: str, regimen: str | None, authored: dt.datetime | None = None,
                   bsa_based: bool = False, note: str | None = None, stop_status: str | None = None) -> None:
        res: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": self.id(local),
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                "code": "inpatient"}]}],
            "medicationCodeableConcept": {"coding": [dict(BLIN)], "text": "BLINCYTO (blinatumomab) for injection"},
            "subject": self.subject(),
            "authoredOn": iso(authored or start - 2 * HOUR),
            "requester": {"display": "Dr. A. Oncologist"},
            "reasonCode": [ALL_B],
            "dosageInstruction": [{
                "text": text,
                "timing": {"repeat": {"boundsPeriod": {"start": iso(start), "end": iso(end)}}},
                "route": IV,
                **dosage,
            }],
        }
        if regimen:
            res["instantiatesCanonical"] = [REGIMEN_CANONICAL[regimen]]
        if bsa_based:
            res["extension"] = [{"url": NORMALIZATION_BASIS, "valueCodeableConcept": {"coding": [{
                "system": SNOMED, "code": "301898006", "display": "Body surface area (observable entity)"}]}}]
        if note:
            res["note"] = [{"text": note}]
        self.add(res, start - 2 * HOUR if authored is None else authored, end=end, stop_status=stop_status)

    def bag(self, local: str, start: dt.datetime, end: dt.datetime | None, *, ug_per_day: float, order: str,
            bag_hours: float, stop_status: str | None = None, stop_reason: str | None = None) -> None:
        res: dict[str, Any] = {
            "resourceType": "MedicationAdministration",
            "id": self.id(local),
            "status": "completed",
            "medicationCodeableConcept": {"coding": [dict(BLIN)], "text": "BLINCYTO (blinatumomab)"},
            "subject": self.subject(),
            "effectivePeriod": {"start": iso(start)},
            "request": {"reference": f"MedicationRequest/{self.id(order)}"},
            "note": [{"text": f"{bag_hours:g}-h bag"}],
            "dosage": {
                "route": IV,
                "dose": q(round(ug_per_day * bag_hours / 24, 2), "ug"),
                "rateQuantity": q(round(ug_per_day, 2), "ug/d"),
            },
        }
        if end is not None:
            res["effectivePeriod"]["end"] = iso(end)
        self.add(res, start, end=end, stop_status=stop_status, stop_reason=stop_reason)

    def steroid_order(self, local: str, when: dt.datetime, *, agent: str, mg: float, route: Mapping[str, Any] = IV,
                      text: str | None = None) -> None:
        coding, product = STEROIDS[agent]
        self.add({
            "resourceType": "MedicationRequest",
            "id": self.id(local),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [dict(coding)], "text": product},
            "subject": self.subject(),
            "authoredOn": iso(when - 3 * HOUR),
            "requester": {"display": "Dr. A. Oncologist"},
            "dosageInstruction": [{
                "text": text or f"{agent} {mg:g} mg IV once, 1 hour before BLINCYTO start (premedication)",
                "timing": {"repeat": {"count": 1, "boundsPeriod": {"start": iso(when)}}},
                "route": dict(route),
                "doseAndRate": [{"doseQuantity": q(mg, "mg")}],
            }],
        }, when - 3 * HOUR, end=when)

    def steroid_given(self, local: str, when: dt.datetime, *, agent: str, mg: float, order: str | None = None,
                      route: Mapping[str, Any] = IV) -> None:
        coding, product = STEROIDS[agent]
        res: dict[str, Any] = {
            "resourceType": "MedicationAdministration",
            "id": self.id(local),
            "status": "completed",
            "medicationCodeableConcept": {"coding": [dict(coding)], "text": product},
            "subject": self.subject(),
            "effectiveDateTime": iso(when),
            "dosage": {"route": dict(route), "dose": q(mg, "mg")},
        }
        if order:
            res["request"] = {"reference": f"MedicationRequest/{self.id(order)}"}
        self.add(res, when)

    def premed(self, local: str, t0: dt.datetime, *, agent: str, mg: float, minutes_before: float = 45) -> None:
        """A premedication order (authored 3 h before) and its administration ``minutes_before`` the start."""
        when = t0 - minutes_before * MIN
        self.steroid_order(f"{local}-mr", when, agent=agent, mg=mg)
        self.steroid_given(f"{local}-ma", when, agent=agent, mg=mg, order=f"{local}-mr")

    # ------------------------------------------------------------------ snapshot

    def snapshot(
        self, now: dt.datetime, *, drafts: Sequence[str] = ()
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The record as the EHR shows it at ``now``, and the draft orders (their locals) moved to the context."""
        draft_ids = {self.id(d) for d in drafts}
        stored: list[dict[str, Any]] = []
        draft_out: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if e.t > now and e.resource.get("id") not in draft_ids:
                continue  # not yet on the chart (checked before copying: the property tests snapshot often)
            res = copy.deepcopy(e.resource)
            if res.get("id") in draft_ids:
                res["status"] = "draft"
                res["authoredOn"] = iso(now)
                draft_out[res["id"]] = res
                continue
            rtype = res["resourceType"]
            if rtype == "MedicationAdministration" and "effectivePeriod" in res and res.get("status") not in (
                    "entered-in-error", "not-done"):  # a record that never happened keeps its status
                if e.end is None or e.end > now:
                    res["effectivePeriod"].pop("end", None)
                    res["status"] = "in-progress"
                elif e.stop_status:
                    res["status"] = e.stop_status
                    if e.stop_reason:
                        res["statusReason"] = [{"text": e.stop_reason}]
            elif rtype == "MedicationRequest" and e.end is not None and e.end <= now:
                res["status"] = e.stop_status or "completed"
            stored.append(res)
        missing = draft_ids - set(draft_out)
        if missing:
            raise ValueError(f"unknown draft ids {sorted(missing)}")
        return stored, [draft_out[self.id(d)] for d in drafts]


LAB_SPECS: dict[str, dict[str, Any]] = {
    "alt": {"code": "1742-6", "display": "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "text": "ALT", "unit": "U/L", "uln": 40, "low": 7},
    "ast": {"code": "1920-8", "display": "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "text": "AST", "unit": "U/L", "uln": 40, "low": 10},
    "bili": {"code": "1975-2", "display": "Bilirubin.total [Mass/volume] in Serum or Plasma",
             "text": "Bilirubin, total", "unit": "mg/dL", "uln": 1.2, "low": 0.1},
    "bili-si": {"code": "14631-6", "display": "Bilirubin.total [Moles/volume] in Serum or Plasma",
                "text": "Bilirubin, total", "unit": "umol/L", "uln": 21, "low": 3},
}


# ====================================================================== dosing representations


def rate_ug_d(ug: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": q(ug, "ug/d")}]}


def rate_ratio(ug: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateRatio": {"numerator": q(ug, "ug"), "denominator": q(1, "d")}}]}


def bag_dose(ug_per_day: float, hours: int) -> dict[str, Any]:
    """``doseQuantity`` per bag with the bag duration in ``timing.repeat.duration`` (merged into the timing)."""
    return {"doseAndRate": [{"doseQuantity": q(round(ug_per_day * hours / 24, 2), "ug")}],
            "_timing_duration": (hours, "h")}


def label_48h(ug_per_day: float) -> dict[str, Any]:
    """The clinical-rules.md §5.3 example: 48-h bag dose + pump rate in one entry, rateRatio in another."""
    return {"doseAndRate": [
        {"doseQuantity": q(ug_per_day * 2, "ug"), "rateQuantity": q(5, "mL/h")},
        {"rateRatio": {"numerator": q(ug_per_day, "ug"), "denominator": q(1, "d")}},
    ], "_timing_duration": (48, "h")}


def per_m2(ug_per_m2: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": q(ug_per_m2, "ug/m2/d", "ug/m2/d")}]}


def ml_per_h(ml: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": q(ml, "mL/h")}]}


def _apply_dosage(chart_dosage: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in chart_dosage.items() if not k.startswith("_")}


# ====================================================================== a course


@dataclass
class Person:
    family: str
    given: str
    gender: str
    birth_date: str
    weight_kg: float
    height_cm: float

    @property
    def bsa(self) -> float:
        return bsa_mosteller(self.weight_kg, self.height_cm)


@dataclass
class Cycle:
    """One blinatumomab cycle of 28 infusion days starting at ``start``.

    ``phases``: (infusion day it starts, µg/day, dosage representation factory or None for rateQuantity).
    ``gaps``: (infusion hours from start, minutes stopped, MedicationAdministration status, statusReason).
    ``premed``: (agent, mg, minutes before) given before the start, the step, and any restart that needs it.
    """

    number: int
    start: dt.datetime
    phases: Sequence[tuple[int, float, Callable[[float], dict[str, Any]] | None]]
    premed: tuple[str, float, float] | None
    regimen: str | None = "relapsed-refractory"
    gaps: Sequence[tuple[float, float, str, str]] = ()
    premed_restarts: bool = True
    bag_plan: Sequence[int] = (48, 48, 72, 96, 96, 96, 96, 96, 96, 96, 96)
    infusion_days: float = 28
    bsa_based: bool = False
    cut_after_hours: float | None = None
    """Stop the infusion for good this many infusion hours in (an interruption that has not ended)."""
    cut_status: str = "stopped"
    cut_reason: str = ""
    premed_step: bool = True
    lab_days: Sequence[int] = (1, 8, 15, 22)
    weight_days: Sequence[int] = (1, 8, 15, 22)


def add_course(chart: Chart, person: Person, cycles: Sequence[Cycle], *, weekly_labs: bool = True,
               weights: bool = True, label: str = "c") -> None:
    """A course as the EHR records it: orders, bags, premedication, weekly weights and liver tests."""
    chart.height("height", cycles[0].start - 2 * HOUR - 10 * MIN, person.height_cm)
    for cyc in cycles:
        tag = f"{label}{cyc.number}"
        # ---------------- infusion segments in infusion-hours → clock
        total_h = cyc.infusion_days * 24
        cut = cyc.cut_after_hours
        gaps = sorted(cyc.gaps)

        def clock(h: float, *, after_gap: bool, gaps: Sequence[tuple[float, float, str, str]] = gaps,
                  start: dt.datetime = cyc.start) -> dt.datetime:
            extra = sum(g[1] for g in gaps if g[0] < h or (after_gap and g[0] == h))
            return start + h * HOUR + extra * MIN

        phase_hours = [(p[0] - 1) * 24 for p in cyc.phases]
        # bag boundaries: bag plan, restarted at each phase start and after each gap
        breaks: set[float] = {0.0, total_h}
        breaks.update(float(h) for h in phase_hours)
        breaks.update(float(g[0]) for g in gaps)
        if cut is not None:
            breaks.add(float(cut))
        # add bag changes between breaks
        points = sorted(breaks)
        segments: list[tuple[float, float, int]] = []
        plan_i = 0
        for a, b in zip(points, points[1:], strict=False):
            h = a
            while h < b:
                bag_h = cyc.bag_plan[min(plan_i, len(cyc.bag_plan) - 1)]
                plan_i += 1
                segments.append((h, min(h + bag_h, b), bag_h))
                h += bag_h
        # ---------------- orders per phase
        for i, (day, ug, repr_) in enumerate(cyc.phases):
            ph_start = clock(phase_hours[i], after_gap=True)
            ph_end_h = phase_hours[i + 1] if i + 1 < len(cyc.phases) else total_h
            ph_end = clock(ph_end_h, after_gap=False)
            if cut is not None and cut < ph_end_h:
                ph_end = clock(cut, after_gap=False)
            dosage = (repr_ or rate_ug_d)(ug)
            text = (f"BLINCYTO {_fmt(ug)} {'mcg/m2/day' if cyc.bsa_based and repr_ is per_m2 else 'mcg/day'} "
                    f"continuous IV infusion, Cycle {cyc.number} Day {day}. Do not flush the line.")
            dur = dosage.get("_timing_duration")
            stopped = cut is not None and phase_hours[i] <= cut < ph_end_h
            chart.blin_order(f"{tag}-order{i + 1}", ph_start, ph_end, dosage=_apply_dosage(dosage), text=text,
                             regimen=cyc.regimen, bsa_based=cyc.bsa_based,
                             stop_status="stopped" if stopped else None)
            if dur:
                rep = chart.entries[-1].resource["dosageInstruction"][0]["timing"]["repeat"]
                rep["duration"], rep["durationUnit"] = dur
        # ---------------- bags
        for j, (a, b, bag_h) in enumerate(segments):
            if cut is not None and a >= cut:
                break
            phase_i = max(i for i, ph in enumerate(phase_hours) if ph <= a)
            ug = cyc.phases[phase_i][1]
            if cyc.bsa_based and cyc.phases[phase_i][2] is per_m2:
                ug = ug * person.bsa
            start = clock(a, after_gap=True)
            end = clock(b, after_gap=False)
            gap = next((g for g in gaps if g[0] == b), None)
            status = reason = None
            if gap is not None:
                status, reason = gap[2], gap[3]
            if cut is not None and b == cut:
                status, reason = cyc.cut_status, cyc.cut_reason
            chart.bag(f"{tag}-bag{j + 1}", start, end, ug_per_day=ug, order=f"{tag}-order{phase_i + 1}",
                      bag_hours=bag_h, stop_status=status, stop_reason=reason)
        # ---------------- premedication: cycle start, step (phase change upward), restarts ≥ 4 h
        if cyc.premed:
            agent, mg, before = cyc.premed
            chart.premed(f"{tag}-premed-d1", cyc.start, agent=agent, mg=mg, minutes_before=before)
            for i in range(1, len(cyc.phases) if cyc.premed_step else 1):
                if cyc.phases[i][1] > cyc.phases[i - 1][1]:
                    chart.premed(f"{tag}-premed-d{cyc.phases[i][0]}", clock(phase_hours[i], after_gap=True),
                                 agent=agent, mg=mg, minutes_before=before)
            if cyc.premed_restarts:
                for g in gaps:
                    if g[1] >= 240:
                        chart.premed(f"{tag}-premed-restart{int(g[0])}", clock(g[0], after_gap=True),
                                     agent=agent, mg=mg, minutes_before=before)
        # ---------------- weekly weight and liver tests (07:00 before the day's bag change)
        for day in sorted(set(cyc.lab_days) | set(cyc.weight_days)):
            t = cyc.start + (day - 1) * DAY - 2 * HOUR
            if weights and day in cyc.weight_days:
                chart.weight(f"{tag}d{day}-wt", t, round(person.weight_kg + (0.2 if day % 2 == 0 else 0), 1))
            if weekly_labs and day in cyc.lab_days:
                chart.liver_panel(f"{tag}d{day}-lft", t - 30 * MIN)


def _fmt(v: float) -> str:
    return f"{v:g}"


SCORE = {"system": UCUM, "code": "{score}"}
ABSENT = {"coding": [{"system": SNOMED, "code": "2667000", "display": "Absent (qualifier value)"}], "text": "Absent"}


def nursing_checks(chart: Chart, tag: str, start: dt.datetime, days: float, *, every_hours: int = 12,
                   child: bool = False) -> None:
    """Negative neuro and CRS checks every nursing shift, charted the many ways real flowsheets do (real-world-
    charting.md §3): seizure activity "Not observed" / "None" / a count of 0 / "No" on a yes-no row / SNOMED Absent,
    ICE 10/10 (CAPD and "ICANS grade 0" for a child), "No CRS", and a row charted twice at the same time.
    None of it is an event: a correct course stays silent."""
    seizure_values: list[dict[str, Any]] = [
        {"valueString": "Not observed"}, {"valueString": "None"}, {"valueInteger": 0},
        {"valueBoolean": False}, {"valueCodeableConcept": ABSENT}, {"valueString": "None noted"},
    ]
    shifts = int(days * 24 // every_hours)
    for i in range(shifts):
        t = start + (i * every_hours + 2) * HOUR
        k = f"{tag}-rn{i}"
        values = seizure_values[i % len(seizure_values)]
        row = "Seizures this shift" if "valueInteger" in values else ("Seizure?" if "valueBoolean" in values
                                                                      else "Seizure activity")
        chart.flowsheet(f"{k}-sz", t, row, row_id="3040110", **values)
        if i % 5 == 2:  # the same row charted twice (a late entry re-documented by the next nurse)
            chart.flowsheet(f"{k}-sz2", t, "Seizure activity", row_id="3040110", valueString="Not observed",
                            entered_after=9 * HOUR)
        if child:
            chart.flowsheet(f"{k}-capd", t, "CAPD score", row_id="3040121", valueQuantity={"value": 2, **SCORE})
            chart.flowsheet(f"{k}-icans", t, "ICANS grade", row_id="3040122", valueString="0")
        else:
            chart.flowsheet(f"{k}-ice", t, "ICE score", row_id="3040120", valueQuantity={"value": 10, **SCORE})
            if i % 3 == 0:
                chart.flowsheet(f"{k}-icans", t, "Neuro assessment", row_id="3040123",
                                valueString="ICE 10/10 - no ICANS, A&O x4, follows commands")
        chart.flowsheet(f"{k}-crs", t, "CRS assessment", row_id="3040130", category="vital-signs",
                        valueString=["No CRS", "No CRS - afebrile, normotensive", "none"][i % 3])


# ====================================================================== examples


@dataclass
class Call:
    id: str
    hook: str
    now: dt.datetime
    title: str
    build: Callable[[Chart], None]
    drafts: Sequence[str] = ()
    selections: Sequence[str] | None = None
    expect: Sequence[str] = ()
    quiet: bool = False
    indicators: Mapping[str, str] = field(default_factory=dict)
    """The indicator each expected rule's card must carry (``{"premed-missing": "critical"}``), where it matters."""


@dataclass
class Example:
    name: str
    title: str
    description: str
    calls: Sequence[Call]


SERVICE = {"order-sign": "blinatumomab-order-sign", "order-select": "blinatumomab-order-select",
           "patient-view": "blinatumomab-patient-view"}

ADULT = Person("Marsh", "Daniel", "male", "1979-05-14", 78.4, 178)
ADULT_F = Person("Okafor", "Grace", "female", "1968-11-02", 64.0, 165)
CHILD = Person("Lindqvist", "Maja", "female", "2016-09-03", 30.0, 135)
CHILD_MRD = Person("Haddad", "Omar", "male", "2018-04-21", 25.0, 125)
CHILD_CONS = Person("Nguyen", "Linh", "female", "2013-06-30", 36.0, 142)

DEX_ADULT = ("dexamethasone", 20.0, 45.0)


def rr_c1(start: dt.datetime, **kw: Any) -> Cycle:
    return Cycle(1, start, [(1, 9, None), (8, 28, None)], DEX_ADULT, **kw)


def rr_cn(n: int, start: dt.datetime, **kw: Any) -> Cycle:
    kw.setdefault("bag_plan", (48, 168, 168, 168, 96, 24))
    return Cycle(n, start, [(1, 28, kw.pop("repr_", None))], kw.pop("premed", DEX_ADULT), **kw)


def patient_of(person: Person) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        chart.patient(family=person.family, given=person.given, gender=person.gender, birth_date=person.birth_date)
    return build


# ---------------------------------------------------------------- (a) adult R/R course through cycle 3 — quiet

RR_C1 = at(2026, 1, 5, 9)
RR_C2 = at(2026, 2, 17, 9)   # C1 infusion ends 2026-02-02 11:30 (2.5 h bag-change gap); TFI 14 d 21 h
RR_C3 = at(2026, 4, 1, 9)    # C2 infusion ends 2026-03-17 09:00; TFI 15 d


def rr_adult_chart(cycles: int) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        patient_of(ADULT)(chart)
        course = [
            rr_c1(RR_C1, gaps=[(11 * 24, 150, "completed", "")]),  # next bag hung 2.5 h late
            rr_cn(2, RR_C2, repr_=rate_ratio),
            rr_cn(3, RR_C3),
        ][:cycles]
        add_course(chart, ADULT, course)
        # inpatient nursing checks: cycle 1 days 1–9, cycle 2 (and 3) days 1–2, every 12-h shift
        for cyc, days in zip(course, (9, 2, 2), strict=False):
            nursing_checks(chart, f"c{cyc.number}", cyc.start, days)
        # a transient cycle-1 ALT rise below 5 × ULN, and a grade 1 CRS on day 2: no card
        chart.lab("c1d3-alt", RR_C1 + 2 * DAY - 2 * HOUR, "alt", 112)
        chart.lab("c1d3-ast", RR_C1 + 2 * DAY - 2 * HOUR, "ast", 86)
        chart.toxicity_obs("c1d2-crs", RR_C1 + 30 * HOUR, text="Cytokine release syndrome grade", code="crs-grade",
                           grade=1)
        chart.toxicity_obs("c1d4-crs", RR_C1 + 3 * DAY, text="Cytokine release syndrome grade", code="crs-grade",
                           grade=0)
    return build


EX_RR_ADULT = Example(
    "rr-adult-course",
    "Adult relapsed/refractory B-ALL, cycles 1–3, correct throughout",
    "78 kg adult, R/R regimen (instantiatesCanonical). Cycle 1 at 9 µg/day, step to 28 µg/day on day 8 with "
    "dexamethasone 20 mg IV 45 min before each start, a bag change on day 12 with the new bag hung 2.5 h late "
    "(under 4 h: no premedication), a day-3 ALT rise to 2.8 × ULN and a grade 1 CRS. Cycle 2 (rateRatio "
    "28 µg/1 d) after a 14-day treatment-free interval; cycle 3 after 15 days. Nursing flowsheets "
    "chart the negative checks of every inpatient shift (seizure activity 'Not observed', a count of 0, SNOMED "
    "Absent, ICE 10/10, 'No CRS', a row charted twice): none is an event. No call may give a "
    "warning or critical card.",
    [
        Call("c1d1-sign", "order-sign", RR_C1 - HOUR, "C1D1: 9 µg/day order with a dexamethasone 20 mg draft",
             rr_adult_chart(1), drafts=["c1-order1", "c1-premed-d1-mr"], quiet=True),
        Call("c1d8-step-sign", "order-sign", RR_C1 + 7 * DAY - 30 * MIN,
             "C1D8 step to 28 µg/day; dexamethasone given 45 min before the new bag",
             rr_adult_chart(1), drafts=["c1-order2"], quiet=True),
        Call("c1d18-view", "patient-view", RR_C1 + 17 * DAY + 5 * HOUR,
             "Mid-cycle chart view after the day-12 bag hung 2.5 h late", rr_adult_chart(1),
             expect=["therapy-status"], quiet=True),
        Call("c2d1-sign", "order-sign", RR_C2 - HOUR, "C2D1 after the 14-day treatment-free interval",
             rr_adult_chart(2), drafts=["c2-order1", "c2-premed-d1-mr"], quiet=True),
        Call("c3d1-select", "order-select", RR_C3 - HOUR, "C3D1 order selected (dexamethasone draft alongside)",
             rr_adult_chart(3), drafts=["c3-order1", "c3-premed-d1-mr"], selections=["c3-order1"], quiet=True),
        Call("c3d1-sign", "order-sign", RR_C3 - 50 * MIN, "C3D1 order signed", rr_adult_chart(3),
             drafts=["c3-order1", "c3-premed-d1-mr"], quiet=True),
    ],
)

# ---------------------------------------------------------------- (b) child < 45 kg on BSA dosing — quiet

CH_C1 = at(2026, 2, 2, 9)
CH_C2 = at(2026, 3, 16, 9)
CH_DEX = ("dexamethasone", round(5 * CHILD.bsa, 1), 40.0)   # 5 mg/m² × 1.061 m² = 5.3 mg


def child_chart(cycles: int) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        patient_of(CHILD)(chart)
        c2_dose = round(15 * CHILD.bsa, 1)
        course = [
            Cycle(1, CH_C1, [(1, 5, per_m2), (8, round(15 * CHILD.bsa, 1), None)], CH_DEX, bsa_based=True),
            # pediatric premedication: first cycle only (verification §5)
            Cycle(2, CH_C2, [(1, c2_dose, bag_dose_48)], None, bag_plan=(48,), bsa_based=True),
        ][:cycles]
        add_course(chart, CHILD, course)
        for cyc, days in zip(course, (9, 2), strict=False):
            nursing_checks(chart, f"c{cyc.number}", cyc.start, days, every_hours=8, child=True)
    return build


def bag_dose_48(ug: float) -> dict[str, Any]:
    return bag_dose(ug, 48)


EX_CHILD = Example(
    "rr-child-bsa",
    "Child 30 kg / 135 cm (BSA 1.061 m²) on BSA dosing, correct throughout",
    "9-year-old, R/R. Cycle 1: 5 µg/m²/day (ordered in ug/m2/d with the mCODE normalizationBasis) then 15.9 µg/day "
    "(15 µg/m²/day) from day 8, dexamethasone 5.3 mg (5 mg/m²) IV 40 min before each start. Cycle 2 at 15.9 µg/day "
    "as 31.8 µg per 48-h bag with no steroid: pediatric premedication covers the first cycle only. Every 8-h shift "
    "charts a negative seizure check, a CAPD score (children use CAPD, not ICE) and 'ICANS grade 0'.",
    [
        Call("c1d1-sign", "order-sign", CH_C1 - HOUR, "C1D1: 5 µg/m²/day with dexamethasone 5.3 mg draft",
             child_chart(1), drafts=["c1-order1", "c1-premed-d1-mr"], quiet=True),
        Call("c1d8-step-sign", "order-sign", CH_C1 + 7 * DAY - 30 * MIN, "C1D8 step to 15.9 µg/day",
             child_chart(1), drafts=["c1-order2"], quiet=True),
        Call("c1d12-view", "patient-view", CH_C1 + 11 * DAY + 6 * HOUR, "Mid-cycle chart view", child_chart(1),
             expect=["therapy-status"], quiet=True),
        Call("c2d1-sign", "order-sign", CH_C2 - HOUR, "C2D1, 48-h bags, no premedication (first cycle only)",
             child_chart(2), drafts=["c2-order1"], quiet=True),
    ],
)

# ---------------------------------------------------------------- (c) MRD-positive adult on prednisone — quiet

MRD_C1 = at(2026, 1, 12, 10)
MRD_C2 = at(2026, 2, 24, 10)
PRED = ("prednisone", 100.0, 50.0)


def mrd_chart(cycles: int) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        patient_of(ADULT_F)(chart)
        course = [
            Cycle(1, MRD_C1, [(1, 28, bag_dose_48)], PRED, regimen="mrd-positive", bag_plan=(48,),
                  gaps=[(5 * 24 + 2, 300, "stopped", "Infusion line dislodged; line replaced")]),
            Cycle(2, MRD_C2, [(1, 28, bag_dose_48)], PRED, regimen="mrd-positive", bag_plan=(48,)),
        ][:cycles]
        add_course(chart, ADULT_F, course)
        for cyc, days in zip(course, (3, 2), strict=False):
            nursing_checks(chart, f"c{cyc.number}", cyc.start, days)
    return build


EX_MRD = Example(
    "mrd-adult-prednisone",
    "MRD-positive adult on prednisone 100 mg premedication, correct throughout",
    "64 kg adult, MRD-positive regimen (instantiatesCanonical urn:blina-cds:regimen:mrd-positive): 28 µg/day from "
    "day 1 (no step), ordered as 56 µg per 48-h bag; prednisone 100 mg IV 50 min before each cycle start. A 5-hour "
    "stop on day 6 (line replaced) is restarted with prednisone too; the adult MRD-positive label asks for "
    "premedication at each cycle start only, so either way no card. Nursing flowsheets "
    "chart the negative checks of every inpatient shift (seizure activity 'Not observed', a count of 0, SNOMED "
    "Absent, ICE 10/10, 'No CRS', a row charted twice): none is an event.",
    [
        Call("c1d1-sign", "order-sign", MRD_C1 - HOUR, "C1D1 at 28 µg/day with a prednisone 100 mg draft",
             mrd_chart(1), drafts=["c1-order1", "c1-premed-d1-mr"], quiet=True),
        Call("c1d10-view", "patient-view", MRD_C1 + 9 * DAY + 4 * HOUR, "Mid-cycle chart view", mrd_chart(1),
             expect=["therapy-status"], quiet=True),
        Call("c2d1-sign", "order-sign", MRD_C2 - 30 * MIN, "C2D1: prednisone already given 20 min ago",
             mrd_chart(2), drafts=["c2-order1"], quiet=True),
    ],
)

# ---------------------------------------------------------------- clinical-rules-verification §9 item 10

ADULT_CONS = Person("Reyes", "Carmen", "female", "1974-03-09", 82.0, 170)
CONS_C1 = at(2026, 2, 9, 9)


def consolidation_adult_chart(chart: Chart) -> None:
    patient_of(ADULT_CONS)(chart)
    add_course(chart, ADULT_CONS, [
        Cycle(1, CONS_C1, [(1, 28, label_48h)], ("dexamethasone", 20.0, 50.0), regimen="consolidation",
              bag_plan=(48,)),
    ])
    nursing_checks(chart, "c1", CONS_C1, 3)


EX_CONS_ADULT = Example(
    "consolidation-adult",
    "Consolidation adult: dexamethasone 20 mg IV 50 min before C1D1",
    "82 kg adult in the consolidation phase (urn:blina-cds:regimen:consolidation), 28 µg/day from day 1 ordered as "
    "the clinical-rules §5.3 48-h bag (56 µg/bag at 5 mL/h plus a rateRatio 28 µg/1 d). Dexamethasone 20 mg IV was "
    "given 50 min before the planned start (verification §9 item 10a: no card). Nursing flowsheets "
    "chart the negative checks of every inpatient shift (seizure activity 'Not observed', a count of 0, SNOMED "
    "Absent, ICE 10/10, 'No CRS', a row charted twice): none is an event.",
    [
        Call("c1d1-sign", "order-sign", CONS_C1 - 30 * MIN, "C1D1 signed after dexamethasone given 50 min before start",
             consolidation_adult_chart, drafts=["c1-order1"], quiet=True),
        Call("c1d2-view", "patient-view", CONS_C1 + 26 * HOUR, "Day 2 chart view", consolidation_adult_chart,
             expect=["therapy-status"], quiet=True),
    ],
)

CONS_CH_C1 = at(2025, 12, 1, 9)
CONS_CH_C2 = at(2026, 1, 13, 9)


def consolidation_child_chart(chart: Chart) -> None:
    patient_of(CHILD_CONS)(chart)
    add_course(chart, CHILD_CONS, [
        Cycle(1, CONS_CH_C1, [(1, 15, per_m2)], ("dexamethasone", round(5 * CHILD_CONS.bsa, 1), 40.0),
              regimen="consolidation", bsa_based=True),
        Cycle(2, CONS_CH_C2, [(1, 15, per_m2)], None, regimen="consolidation", bsa_based=True),
    ])
    nursing_checks(chart, "c1", CONS_CH_C1, 3, every_hours=8, child=True)
    nursing_checks(chart, "c2", CONS_CH_C2, 2, every_hours=8, child=True)


EX_CONS_CHILD = Example(
    "consolidation-child-c2",
    "Consolidation child, cycle 2 day 1 without steroid",
    "12-year-old, 36 kg / 142 cm (BSA 1.19 m²), consolidation regimen at 15 µg/m²/day. Cycle 1 had dexamethasone "
    "6 mg (5 mg/m²); cycle 2 starts with no steroid, which the label's pediatric consolidation premedication "
    "(first cycle only) allows (verification §9 item 10b: no premedication card). Every 8-h inpatient shift charts "
    "a negative seizure check, a CAPD score and 'ICANS grade 0'.",
    [
        Call("c2d1-sign", "order-sign", CONS_CH_C2 - HOUR, "C2D1 with no steroid ordered or given",
             consolidation_child_chart, drafts=["c2-order1"], quiet=True),
    ],
)

MRD_CH_C1 = at(2026, 2, 23, 10)
MRD_CH_STOP = 4 * 24 + 16        # infusion hours: day 6 at 02:00


def mrd_child_restart_chart(chart: Chart) -> None:
    patient_of(CHILD_MRD)(chart)
    add_course(chart, CHILD_MRD, [
        Cycle(1, MRD_CH_C1, [(1, 15, per_m2)], ("dexamethasone", round(5 * CHILD_MRD.bsa, 1), 45.0),
              regimen="mrd-positive", bsa_based=True, cut_after_hours=MRD_CH_STOP,
              cut_reason="Central line occlusion; catheter replaced"),
    ])
    restart = MRD_CH_C1 + MRD_CH_STOP * HOUR + 5 * HOUR
    chart.blin_order("restart-order", restart, MRD_CH_C1 + 28 * DAY + 5 * HOUR, dosage=per_m2(15),
                     text="BLINCYTO 15 mcg/m2/day continuous IV infusion, restart after line replacement, "
                          "Cycle 1 Day 6. Do not flush the line.", regimen="mrd-positive", bsa_based=True)


EX_MRD_CHILD = Example(
    "mrd-child-restart",
    "MRD-positive child: cycle 1 restart after a 5-hour stop without dexamethasone",
    "7-year-old, 25 kg / 125 cm (BSA 0.93 m²), MRD-positive at 15 µg/m²/day. The infusion stopped on day 6 at 02:00 "
    "(line occlusion); the restart order for 07:00 comes with no steroid. Pediatric MRD-positive premedication "
    "includes a restart after ≥ 4 h in the first cycle (verification §9 item 10c).",
    [
        Call("c1d6-restart-sign", "order-sign", MRD_CH_C1 + MRD_CH_STOP * HOUR + 4 * HOUR + 30 * MIN,
             "Restart order 5 h after the stop, no dexamethasone", mrd_child_restart_chart,
             drafts=["restart-order"], expect=["premed-missing"]),
    ],
)


def rr_two_cycles(c2: Cycle | None = None, *, c1: Cycle | None = None,
                  extra: Callable[[Chart], None] | None = None, person: Person = ADULT) -> Callable[[Chart], None]:
    """The adult R/R history (compliant cycle 1) plus a cycle 2 variant and extra records."""
    def build(chart: Chart) -> None:
        patient_of(person)(chart)
        cycles = [c1 or rr_c1(RR_C1)]
        if c2 is not None:
            cycles.append(c2)
        add_course(chart, person, cycles)
        if extra:
            extra(chart)
    return build


EX_CRS_ICD = Example(
    "crs-icd10-grade3",
    "CRS grade 3 recorded as an ICD-10-CM Condition (D89.833)",
    "Adult R/R on 28 µg/day, cycle 2 day 3: a Condition coded ICD-10-CM D89.833 'Cytokine release syndrome, "
    "grade 3' was recorded an hour ago (verification §9 item 10d: treated as CRS grade 3).",
    [
        Call("c2d3-view", "patient-view", RR_C2 + 2 * DAY + 3 * HOUR,
             "Chart opened with CRS grade 3 on the problem list",
             rr_two_cycles(rr_cn(2, RR_C2), extra=lambda ch: ch.condition(
                 "crs", RR_C2 + 2 * DAY + 2 * HOUR, system=ICD10CM, code="D89.833",
                 display="Cytokine release syndrome, grade 3", note="Hypotension requiring norepinephrine")),
             expect=["crs-interrupt", "therapy-status"]),
    ],
)

# ---------------------------------------------------------------- premedication rules

EX_PREMED_MISSING = Example(
    "premed-missing",
    "Missing dexamethasone premedication",
    "Adult R/R. Cycle 2 ordered with no steroid (warning with a suggestion to create dexamethasone 20 mg IV), then the "
    "same cycle already running without one (critical); the cycle 1 step without a step premedication; and the "
    "interruption boundary: a 4 h 0 min stop restarted without steroid needs it, a 3 h 59 min stop does not.",
    [
        Call("c2d1-sign", "order-sign", RR_C2 - HOUR, "C2D1 order, no steroid ordered or given",
             rr_two_cycles(rr_cn(2, RR_C2, premed=None)), drafts=["c2-order1"], expect=["premed-missing"]),
        Call("c2d2-view", "patient-view", RR_C2 + 26 * HOUR, "Cycle 2 running since yesterday without premedication",
             rr_two_cycles(rr_cn(2, RR_C2, premed=None)), expect=["premed-missing", "therapy-status"]),
        Call("c1d8-step-sign", "order-sign", RR_C1 + 7 * DAY - 30 * MIN, "C1D8 step order, no steroid for the step",
             rr_two_cycles(c1=rr_c1(RR_C1, premed_step=False)), drafts=["c1-order2"],
             expect=["premed-missing"]),
        Call("c2d10-view-gap-240min", "patient-view", RR_C2 + 9 * DAY + 6 * HOUR,
             "Restarted after a 4 h 0 min stop without steroid",
             rr_two_cycles(rr_cn(2, RR_C2, premed_restarts=False,
                                 gaps=[(9 * 24 - 2, 240, "stopped", "Pump malfunction; pump replaced")])),
             expect=["premed-missing", "therapy-status"]),
        Call("c2d10-view-gap-239min", "patient-view", RR_C2 + 9 * DAY + 6 * HOUR,
             "Restarted after a 3 h 59 min stop without steroid (no premedication needed)",
             rr_two_cycles(rr_cn(2, RR_C2, premed_restarts=False,
                                 gaps=[(9 * 24 - 2, 239, "stopped", "Pump malfunction; pump replaced")])),
             expect=["therapy-status"], quiet=True),
    ],
)

EX_PREMED_TIMING = Example(
    "premed-timing",
    "Dexamethasone given 2 hours before the cycle start",
    "Adult R/R, cycle 2: dexamethasone 20 mg IV was given 120 min before the planned start, outside the label's "
    "'1 hour prior' window.",
    [
        Call("c2d1-sign", "order-sign", RR_C2 - 30 * MIN,
             "C2D1 signed; dexamethasone given 90 min ago for a 09:00 start",
             rr_two_cycles(rr_cn(2, RR_C2, premed=("dexamethasone", 20.0, 120.0))), drafts=["c2-order1"],
             expect=["premed-timing"]),
        Call("c2d2-view", "patient-view", RR_C2 + 26 * HOUR, "Cycle 2 running; premedication was 2 h early",
             rr_two_cycles(rr_cn(2, RR_C2, premed=("dexamethasone", 20.0, 120.0))),
             expect=["premed-timing", "therapy-status"]),
    ],
)

EX_PREMED_DOSE = Example(
    "premed-dose",
    "Dexamethasone 8 mg instead of 20 mg",
    "Adult R/R, cycle 2: the premedication draft is dexamethasone 8 mg IV; the label asks for 20 mg.",
    [
        Call("c2d1-sign", "order-sign", RR_C2 - HOUR, "C2D1 with a dexamethasone 8 mg draft",
             rr_two_cycles(rr_cn(2, RR_C2, premed=("dexamethasone", 8.0, 45.0))),
             drafts=["c2-order1", "c2-premed-d1-mr"], expect=["premed-dose"]),
    ],
)


# ---------------------------------------------------------------- dose rules

def c2_with(dosage: Callable[[float], dict[str, Any]], ug: float = 28, **kw: Any) -> Cycle:
    return Cycle(2, RR_C2, [(1, ug, dosage)], DEX_ADULT, bag_plan=(48, 168, 168, 168, 96, 24), **kw)


def mg_per_d(value: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": q(value, "mg/d")}]}


def ug_per_h(value: float) -> dict[str, Any]:
    return {"doseAndRate": [{"rateQuantity": q(value, "ug/h")}]}


EX_DOSE_SCHEDULE = Example(
    "dose-schedule",
    "Dose does not match the cycle and day",
    "Adult R/R. Cycle 2 ordered at 9 µg/day (the schedule is 28 µg/day: below, warning); cycle 1 day 1 ordered at "
    "28 µg/day (the schedule is 9 µg/day on days 1–7: above, critical; within the 28 µg/day absolute maximum, so "
    "one dose-schedule card and no dose-limit card).",
    [
        Call("c2d1-9ug-sign", "order-sign", RR_C2 - HOUR, "C2D1 ordered at 9 µg/day",
             rr_two_cycles(c2_with(rate_ug_d, 9)), drafts=["c2-order1", "c2-premed-d1-mr"],
             expect=["dose-schedule"]),
        Call("c1d1-28ug-sign", "order-sign", RR_C1 - HOUR, "C1D1 ordered at 28 µg/day",
             rr_two_cycles(c1=Cycle(1, RR_C1, [(1, 28, None)], DEX_ADULT)), drafts=["c1-order1", "c1-premed-d1-mr"],
             expect=["dose-schedule"]),
    ],
)

EX_DOSE_LIMIT = Example(
    "dose-limit",
    "Unit slips: 28 mg/day and 28 µg/hour",
    "Adult R/R, cycle 2: the order says 28 mg/day (1000 × the dose) in one call and 28 µg/h (672 µg/day) in the "
    "other. Both exceed the 28 µg/day maximum: one dose-limit card each (a dose over the maximum is not also "
    "a dose-schedule card).",
    [
        Call("c2d1-mg-select", "order-select", RR_C2 - HOUR, "C2D1 order selected: 28 mg/day",
             rr_two_cycles(c2_with(mg_per_d)), drafts=["c2-order1", "c2-premed-d1-mr"], selections=["c2-order1"],
             expect=["dose-limit"]),
        Call("c2d1-per-hour-sign", "order-sign", RR_C2 - HOUR, "C2D1 order signed: 28 µg/h",
             rr_two_cycles(c2_with(ug_per_h)), drafts=["c2-order1", "c2-premed-d1-mr"],
             expect=["dose-limit"]),
    ],
)


def child_c2(dosage: Callable[[float], dict[str, Any]], ug: float) -> Callable[[Chart], None]:
    def build(chart: Chart) -> None:
        patient_of(CHILD)(chart)
        add_course(chart, CHILD, [
            Cycle(1, CH_C1, [(1, 5, per_m2), (8, round(15 * CHILD.bsa, 1), None)], CH_DEX, bsa_based=True),
            Cycle(2, CH_C2, [(1, ug, dosage)], None, bag_plan=(48,)),
        ])
    return build


ADULT_BSA = Person("Kowalski", "Piotr", "male", "1985-07-19", 62.0, 165)

EX_WEIGHT_BAND = Example(
    "dose-weight-band",
    "Weight band errors at 45 kg",
    "A 30 kg child (BSA 1.061 m²) ordered the adult fixed 28 µg/day in cycle 2 (BSA dose 15.9 µg/day: critical); an "
    "62 kg adult (BSA 1.69 m²) ordered 15 µg/m²/day = 25.3 µg/day (the label uses the fixed 28 µg/day at "
    "≥ 45 kg: warning).",
    [
        Call("child-c2d1-28ug-sign", "order-sign", CH_C2 - HOUR, "Child C2D1 at the adult 28 µg/day",
             child_c2(rate_ug_d, 28), drafts=["c2-order1"], expect=["dose-weight-band"]),
        Call("adult-c2d1-per-m2-sign", "order-sign", RR_C2 - HOUR, "62 kg adult C2D1 ordered at 15 µg/m²/day",
             rr_two_cycles(Cycle(2, RR_C2, [(1, 15, per_m2)], DEX_ADULT, bsa_based=True), person=ADULT_BSA),
             drafts=["c2-order1", "c2-premed-d1-mr"], expect=["dose-weight-band"]),
    ],
)

# ---------------------------------------------------------------- preservative (7-day) bag for an infant under 5.4 kg

INFANT = Person("Sato", "Hana", "female", "2025-11-20", 4.8, 57)   # 2.4 months at C1D1; BSA 0.275 m²
INF_DEX = ("dexamethasone", round(5 * INFANT.bsa, 1), 40.0)        # 5 mg/m² × 0.275 m² = 1.4 mg


def infant_chart(c2_bag_hours: int) -> Callable[[Chart], None]:
    """Cycle 1 in 24-h bags (preservative-free), then cycle 2 ordered as µg per bag of ``c2_bag_hours``."""
    def build(chart: Chart) -> None:
        patient_of(INFANT)(chart)
        c2_dose = round(15 * INFANT.bsa, 1)

        def per_bag(ug: float) -> dict[str, Any]:
            return bag_dose(ug, c2_bag_hours)

        add_course(chart, INFANT, [
            Cycle(1, CH_C1, [(1, 5, per_m2), (8, round(15 * INFANT.bsa, 1), None)], INF_DEX, bsa_based=True,
                  bag_plan=(24,)),
            Cycle(2, CH_C2, [(1, c2_dose, per_bag)], None, bag_plan=(c2_bag_hours,), bsa_based=True),
        ])
    return build


EX_PRESERVATIVE_BAG = Example(
    "preservative-bag-weight",
    "7-day bag (bacteriostatic saline with benzyl alcohol) for an infant under 5.4 kg",
    "2-month-old, 4.8 kg / 57 cm (BSA 0.275 m²), R/R, correct BSA doses throughout. Cycle 1 ran in 24-h bags. "
    "Cycle 2 is ordered as 28.7 µg per 7-day bag (4.1 µg/day): the label does not recommend preservative-containing "
    "bags (72 h, 96 h, 7 days) below 5.4 kg (22 kg in the 2020 label), so the order and then the running bag get a "
    "warning. The same cycle ordered in 48-h bags is quiet.",
    [
        Call("c2d1-7day-sign", "order-sign", CH_C2 - HOUR, "C2D1 ordered as 7-day bags", infant_chart(168),
             drafts=["c2-order1"], expect=["preservative-bag-weight"]),
        Call("c2d3-7day-view", "patient-view", CH_C2 + 2 * DAY + 4 * HOUR, "C2D3 with the 7-day bag running",
             infant_chart(168), expect=["preservative-bag-weight", "therapy-status"]),
        Call("c2d1-48h-sign", "order-sign", CH_C2 - HOUR, "C2D1 ordered as 48-h bags", infant_chart(48),
             drafts=["c2-order1"], quiet=True),
    ],
)

EX_UNVERIFIABLE = Example(
    "dose-unverifiable",
    "Dose cannot be verified",
    "Adult R/R, cycle 2. One call has no weight newer than 43 days (stale: band not verifiable); the other orders "
    "only a pump rate of 10 mL/h with no concentration (never guessed).",
    [
        Call("c2d1-stale-weight-sign", "order-sign", RR_C2 - HOUR, "C2D1; last weight 43 days old",
             rr_two_cycles(rr_cn(2, RR_C2, weight_days=(15,)), c1=rr_c1(RR_C1, weight_days=(1,))),
             drafts=["c2-order1", "c2-premed-d1-mr"], expect=["dose-unverifiable"]),
        Call("c2d1-ml-per-hour-sign", "order-sign", RR_C2 - HOUR, "C2D1 ordered as 10 mL/h only",
             rr_two_cycles(c2_with(ml_per_h, 10)), drafts=["c2-order1", "c2-premed-d1-mr"],
             expect=["dose-unverifiable"]),
    ],
)

# ---------------------------------------------------------------- labs


def c1_lab(*labs: tuple[str, float, float, float | bool | None]) -> Callable[[Chart], None]:
    """Cycle 1 history plus extra liver tests: (analyte, value, hours after C1D1 start, ULN / False = no range)."""
    def extra(chart: Chart) -> None:
        for i, (analyte, value, hours, uln) in enumerate(labs):
            chart.lab(f"extra{i}-{analyte}", RR_C1 + hours * HOUR, analyte, value, uln=uln)
    return rr_two_cycles(extra=extra)


EX_HEPATIC = Example(
    "hepatic",
    "Liver tests over the label thresholds (and at them)",
    "Adult R/R, cycle 1. ALT 265 U/L (ULN 40: 6.6 ×) before the day-8 step order (critical, suggestion removes the "
    "draft); total bilirubin 72 µmol/L (ULN 21: 3.4 ×) on day 10. Boundaries: ALT exactly 200 U/L (5.0 × ULN) and an "
    "ALT of 310 that has since fallen to 90 give no card (strictly greater; latest result governs).",
    [
        Call("c1d8-alt-sign", "order-sign", RR_C1 + 7 * DAY - 30 * MIN, "Step order with ALT 6.6 × ULN this morning",
             c1_lab(("alt", 265, 7 * 24 - 1.25, None)), drafts=["c1-order2"],
             expect=["hepatic-interrupt"]),
        Call("c1d10-bili-view", "patient-view", RR_C1 + 9 * DAY + 4 * HOUR, "Bilirubin 72 µmol/L (3.4 × ULN)",
             c1_lab(("bili-si", 72, 9 * 24 - 1, None)), expect=["hepatic-interrupt", "therapy-status"]),
        Call("c1d10-alt-exactly-5x-view", "patient-view", RR_C1 + 9 * DAY + 4 * HOUR, "ALT exactly 5.0 × ULN",
             c1_lab(("alt", 200, 9 * 24 - 1, None)), expect=["therapy-status"], quiet=True),
        Call("c1d10-alt-normalised-view", "patient-view", RR_C1 + 9 * DAY + 4 * HOUR, "ALT 310 yesterday, 90 today",
             c1_lab(("alt", 310, 8 * 24 - 1, None), ("alt", 90, 9 * 24 - 1, None)),
             expect=["therapy-status"], quiet=True),
    ],
)

EX_LAB_UNEVALUABLE = Example(
    "lab-unevaluable",
    "ALT without a reference range",
    "Adult R/R, cycle 1 day 10: the latest ALT (150 U/L) arrived from an outside lab with no referenceRange, and no "
    "site default ULN is configured, so the 5 × ULN rule cannot be evaluated.",
    [
        Call("c1d10-view", "patient-view", RR_C1 + 9 * DAY + 4 * HOUR, "Latest ALT has no reference range",
             c1_lab(("alt", 150, 9 * 24 - 1, False)), expect=["lab-unevaluable", "therapy-status"]),
    ],
)

# ---------------------------------------------------------------- toxicity


def c2_tox(extra: Callable[[Chart], None], *, cut: float | None = None, reason: str = "",
           c1: Cycle | None = None, c2: bool = True) -> Callable[[Chart], None]:
    cycle2 = rr_cn(2, RR_C2, cut_after_hours=cut, cut_reason=reason) if c2 else None
    return rr_two_cycles(cycle2, c1=c1, extra=extra)


def tox_obs(local: str, when: dt.datetime, kind: str, grade: int | None = None, value_string: str | None = None,
            ) -> Callable[[Chart], None]:
    text = {"crs": "Cytokine release syndrome grade", "icans": "ICANS grade (immune effector cell-associated "
            "neurotoxicity syndrome)"}[kind]
    code = {"crs": "crs-grade", "icans": "icans-grade"}[kind]
    return lambda ch: ch.toxicity_obs(local, when, text=text, code=code, grade=grade, value_string=value_string)


def both(*fns: Callable[[Chart], None]) -> Callable[[Chart], None]:
    def run(chart: Chart) -> None:
        for f in fns:
            f(chart)
    return run


T_C2D3 = RR_C2 + 2 * DAY + 2 * HOUR

EX_CRS = Example(
    "crs",
    "Cytokine release syndrome grade 3 and grade 4",
    "Adult R/R, cycle 2 day 3. Grade 3 CRS recorded as an Observation with a local code and valueInteger (critical: "
    "interrupt, dexamethasone 8 mg q8h, restart at 9 µg/day); grade 4 CRS recorded as an AdverseEvent with the CTCAE "
    "grade extension, infusion stopped (critical: discontinue permanently).",
    [
        Call("obs-grade3-view", "patient-view", T_C2D3 + HOUR, "CRS grade 3 charted an hour ago",
             c2_tox(tox_obs("crs-g3", T_C2D3, "crs", 3)), expect=["crs-interrupt", "therapy-status"]),
        Call("ae-grade4-view", "patient-view", T_C2D3 + 2 * HOUR, "CRS grade 4 adverse event, infusion stopped",
             c2_tox(lambda ch: ch.adverse_event(
                 "crs-g4", T_C2D3, text="Cytokine release syndrome", grade=4, suspect="c2-bag2",
                 coding={"system": NCIT, "code": "C143394", "display": "Cytokine release syndrome"}),
                 cut=2 * 24 + 2.5, reason="Cytokine release syndrome grade 4"),
             expect=["crs-discontinue", "therapy-status"]),
    ],
)

EX_NEURO = Example(
    "neurotoxicity",
    "Neurological toxicity (ICANS) and seizures",
    "Adult R/R. ICANS grade 3 at 28 µg/day (critical: withhold until ≤ grade 1 for 3 days); ICANS grade 3 during "
    "the 9 µg/day phase of cycle 1 (critical: discontinue); the same grade 3 written only as text 'ICANS gr III' "
    "(parsed); a second seizure in the course (critical: discontinue).",
    [
        Call("icans-g3-at-28-view", "patient-view", T_C2D3 + HOUR, "ICANS grade 3 on 28 µg/day",
             c2_tox(tox_obs("icans-g3", T_C2D3, "icans", 3)), expect=["neuro-interrupt", "therapy-status"]),
        Call("icans-g3-at-9-view", "patient-view", RR_C1 + 3 * DAY + 3 * HOUR,
             "ICANS grade 3 on cycle 1 day 4 (9 µg/day)",
             c2_tox(tox_obs("icans-g3", RR_C1 + 3 * DAY + 2 * HOUR, "icans", 3), c2=False),
             expect=["neuro-discontinue", "therapy-status"]),
        Call("icans-text-view", "patient-view", T_C2D3 + HOUR, "ICANS grade only in text: 'ICANS gr III'",
             c2_tox(tox_obs("icans-text", T_C2D3, "icans", value_string="ICANS gr III - somnolent, ICE score 2")),
             expect=["neuro-interrupt", "therapy-status"]),
        Call("second-seizure-view", "patient-view", RR_C2 + 5 * DAY + 3 * HOUR, "Second seizure this course",
             c2_tox(both(
                 lambda ch: ch.condition("seizure-1", RR_C1 + 12 * DAY, system=SNOMED, code="91175000",
                                         display="Seizure (finding)", note="Focal seizure, resolved with lorazepam"),
                 lambda ch: ch.condition("seizure-2", RR_C2 + 5 * DAY + 2 * HOUR, system=SNOMED, code="91175000",
                                         display="Seizure (finding)", note="Generalised tonic-clonic seizure"))),
             expect=["neuro-discontinue", "therapy-status"]),
    ],
)

EX_SEIZURE = Example(
    "seizure-first",
    "First seizure during therapy",
    "Adult R/R, cycle 2 day 3: a first seizure (Condition SNOMED 91175000). Warning: the label discontinues after "
    "more than one.",
    [
        Call("c2d3-view", "patient-view", T_C2D3 + HOUR, "First seizure an hour ago",
             c2_tox(lambda ch: ch.condition("seizure-1", T_C2D3, system=SNOMED, code="91175000",
                                            display="Seizure (finding)", note="Focal seizure, 2 min")),
             expect=["seizure", "therapy-status"]),
    ],
)

EX_AE = Example(
    "adverse-events",
    "Other adverse events grade 3 and grade 4",
    "Adult R/R, cycle 2 day 3: tumor lysis syndrome grade 3 (AdverseEvent, NCIt C146688, CTCAE grade extension: "
    "interrupt); pancreatitis grade 4 (NCIt C146789: discontinue).",
    [
        Call("tls-g3-view", "patient-view", T_C2D3 + HOUR, "Tumor lysis syndrome grade 3",
             c2_tox(lambda ch: ch.adverse_event(
                 "tls", T_C2D3, text="Tumor lysis syndrome", grade=3, suspect="c2-bag2",
                 coding={"system": NCIT, "code": "C146688", "display": "Tumor lysis syndrome"})),
             expect=["adverse-event-interrupt", "therapy-status"]),
        Call("pancreatitis-g4-view", "patient-view", T_C2D3 + HOUR, "Pancreatitis grade 4",
             c2_tox(lambda ch: ch.adverse_event(
                 "pancreatitis", T_C2D3, text="Pancreatitis", grade=4, suspect="c2-bag2",
                 coding={"system": NCIT, "code": "C146789", "display": "Pancreatitis"})),
             expect=["adverse-event-discontinue", "therapy-status"]),
    ],
)

EX_GRADE_UNKNOWN = Example(
    "toxicity-grade-unknown",
    "CRS recorded without a grade",
    "Adult R/R, cycle 2 day 3: a nursing note Observation says 'Severe CRS, tocilizumab given' with no grade number.",
    [
        Call("c2d3-view", "patient-view", T_C2D3 + HOUR, "CRS charted as 'severe' only",
             c2_tox(tox_obs("crs-text", T_C2D3, "crs", value_string="Severe CRS, tocilizumab given")),
             expect=["toxicity-grade-unknown", "therapy-status"]),
    ],
)

# ---------------------------------------------------------------- restarts and cycles

STOP_C2D5 = 4 * 24 - 6                   # infusion hours: cycle 2 day 5 at 03:00
T_STOP = RR_C2 + STOP_C2D5 * HOUR


def restart_chart(extra: Callable[[Chart], None] | None, *, reason: str, restart: dt.datetime, ug: float,
                  day: int) -> Callable[[Chart], None]:
    def more(chart: Chart) -> None:
        if extra:
            extra(chart)
        chart.blin_order("restart-order", restart, RR_C2 + 30 * DAY, dosage=rate_ug_d(ug),
                         text=f"BLINCYTO {ug:g} mcg/day continuous IV infusion, restart, Cycle 2 Day {day}. "
                              "Do not flush the line.", regimen="relapsed-refractory")
        chart.steroid_order("restart-premed-mr", restart - 45 * MIN, agent="dexamethasone", mg=20)
    return rr_two_cycles(rr_cn(2, RR_C2, cut_after_hours=STOP_C2D5, cut_reason=reason), extra=more)


T_NEURO_G1 = T_STOP + 2 * DAY + 5 * HOUR

EX_RESTART = Example(
    "restart-premature",
    "Restart ordered before its criteria are met",
    "Adult R/R, cycle 2. The line was flushed at a bag change (statusReason on the stopped administration) and a "
    "restart is ordered 6 h later (< 12 h); an overdose reported as an AdverseEvent with a restart 8 h later; ICANS "
    "grade 3 that fell to grade 1 only 23 h before the 9 µg/day restart order (needs ≤ grade 1 for 3 days).",
    [
        Call("flush-restart-sign", "order-sign", T_STOP + 5 * HOUR, "Restart 6 h after a line flush",
             restart_chart(None, reason="Line flushed at bag change - bolus of BLINCYTO", restart=T_STOP + 6 * HOUR,
                           ug=28, day=5),
             drafts=["restart-order", "restart-premed-mr"], expect=["restart-premature"]),
        Call("overdose-ae-restart-sign", "order-sign", T_STOP + 7 * HOUR, "Restart 8 h after an overdose",
             restart_chart(lambda ch: ch.adverse_event(
                 "overdose", T_STOP, text="Medication error: overdose - 7-day bag infused at the 24-h rate",
                 suspect="c2-bag2", outcome="resolved"),
                 reason="Infusion stopped by pharmacist, see incident report", restart=T_STOP + 8 * HOUR, ug=28, day=5),
             drafts=["restart-order", "restart-premed-mr"], expect=["restart-premature"]),
        Call("neuro-early-restart-sign", "order-sign", T_NEURO_G1 + 22 * HOUR,
             "9 µg/day restart 23 h after ICANS fell to grade 1",
             restart_chart(both(tox_obs("icans-g3", T_STOP - HOUR, "icans", 3),
                                tox_obs("icans-g2", T_STOP + DAY, "icans", 2),
                                tox_obs("icans-g1", T_NEURO_G1, "icans", 1)),
                           reason="Adverse reaction: ICANS grade 3", restart=T_NEURO_G1 + 23 * HOUR, ug=9, day=5),
             drafts=["restart-order", "restart-premed-mr"], expect=["restart-premature"]),
    ],
)

T_CRS_G3 = RR_C2 + 9 * DAY + 4 * HOUR

EX_CYCLE_NEW = Example(
    "cycle-new-required",
    "Interruption over 7 days, order continues the old cycle",
    "Adult R/R, cycle 2: CRS grade 3 stopped the infusion on day 10; it resolved (grade 1 on day 12, grade 0 on "
    "day 14). The restart ordered 10 days after the stop still says 'Cycle 2 Day 10'; an adverse-event interruption "
    "longer than 7 days starts a new cycle.",
    [
        Call("c2-restart-sign", "order-sign", T_CRS_G3 + 10 * DAY, "Restart after 10 days labelled Cycle 2 Day 10",
             rr_two_cycles(
                 rr_cn(2, RR_C2, cut_after_hours=9 * 24 + 4.5, cut_reason="Adverse reaction: CRS grade 3"),
                 extra=both(tox_obs("crs-g3", T_CRS_G3, "crs", 3), tox_obs("crs-g1", T_CRS_G3 + 2 * DAY, "crs", 1),
                            tox_obs("crs-g0", T_CRS_G3 + 4 * DAY, "crs", 0),
                            lambda ch: ch.weight("restart-wt", T_CRS_G3 + 10 * DAY - HOUR, 77.6),
                            lambda ch: ch.liver_panel("restart-lft", T_CRS_G3 + 10 * DAY - 2 * HOUR),
                            lambda ch: ch.blin_order(
                                "restart-order", T_CRS_G3 + 10 * DAY + HOUR, T_CRS_G3 + 30 * DAY,
                                dosage=rate_ug_d(9), regimen="relapsed-refractory",
                                text="BLINCYTO 9 mcg/day continuous IV infusion, restart after CRS, Cycle 2 Day 10. "
                                     "Do not flush the line."),
                            lambda ch: ch.steroid_order("restart-premed-mr", T_CRS_G3 + 10 * DAY + 15 * MIN,
                                                        agent="dexamethasone", mg=20))),
             drafts=["restart-order", "restart-premed-mr"], expect=["cycle-new-required"]),
    ],
)


def mrd_cycles(n: int, first: dt.datetime, *, every_days: int = 43) -> list[Cycle]:
    return [Cycle(i + 1, first + i * every_days * DAY, [(1, 28, bag_dose_48)], PRED, regimen="mrd-positive",
                  bag_plan=(48,), lab_days=(1, 15), weight_days=(1, 15)) for i in range(n)]


MRD5_C1 = at(2025, 9, 1, 10)
MRD5_C5 = MRD5_C1 + 4 * 43 * DAY + 5 * DAY


def mrd_five_chart(chart: Chart) -> None:
    patient_of(ADULT_F)(chart)
    cycles = mrd_cycles(5, MRD5_C1)
    cycles[4] = Cycle(5, MRD5_C5, [(1, 28, bag_dose_48)], PRED, regimen="mrd-positive", bag_plan=(48,),
                      lab_days=(1,), weight_days=(1,))
    add_course(chart, ADULT_F, cycles)


EX_CYCLE_LIMIT = Example(
    "cycle-limit",
    "MRD-positive cycle 5 (the label allows 4)",
    "64 kg adult, MRD-positive: four completed cycles with prednisone premedication, then a 'Cycle 5 Day 1' order.",
    [
        Call("c5d1-sign", "order-sign", MRD5_C5 - HOUR, "Cycle 5 ordered", mrd_five_chart,
             drafts=["c5-order1", "c5-premed-d1-mr"], expect=["cycle-limit"]),
    ],
)

RR6_C1 = at(2025, 3, 3, 9)


def rr_long_chart(chart: Chart) -> None:
    patient_of(ADULT)(chart)
    starts = [RR6_C1 + i * 43 * DAY for i in range(6)]
    cycles = [rr_c1(starts[0], lab_days=(1, 8), weight_days=(1, 15))]
    cycles += [rr_cn(i + 1, s, lab_days=(1, 15), weight_days=(1, 15)) for i, s in enumerate(starts) if i > 0]
    c7 = starts[5] + 28 * DAY + 30 * DAY
    cycles.append(rr_cn(7, c7, lab_days=(1,), weight_days=(1,)))
    add_course(chart, ADULT, cycles)


RR6_C7 = RR6_C1 + 5 * 43 * DAY + 58 * DAY


def rr_adult_c3_early(chart: Chart) -> None:
    patient_of(ADULT)(chart)
    add_course(chart, ADULT, [rr_c1(RR_C1), rr_cn(2, RR_C2), rr_cn(3, RR_C2 + 36 * DAY)])

EX_TFI = Example(
    "treatment-free-interval",
    "New cycle before the treatment-free interval",
    "Adult R/R. Cycle 3 ordered 8 days after cycle 2's infusion ended (14 days required); cycle 7 ordered 30 days "
    "after continued-therapy cycle 6 ended (56 days required).",
    [
        Call("c3d1-early-sign", "order-sign", RR_C2 + 36 * DAY - HOUR, "Cycle 3 eight days after cycle 2",
             rr_adult_c3_early, drafts=["c3-order1", "c3-premed-d1-mr"], expect=["treatment-free-interval"]),
        Call("c7d1-early-sign", "order-sign", RR6_C7 - HOUR, "Cycle 7 thirty days after cycle 6", rr_long_chart,
             drafts=["c7-order1", "c7-premed-d1-mr"], expect=["treatment-free-interval"]),
    ],
)


EXAMPLES: tuple[Example, ...] = (
    EX_RR_ADULT, EX_CHILD, EX_MRD, EX_CONS_ADULT, EX_CONS_CHILD, EX_MRD_CHILD, EX_CRS_ICD,
    EX_PREMED_MISSING, EX_PREMED_TIMING, EX_PREMED_DOSE, EX_DOSE_SCHEDULE, EX_DOSE_LIMIT, EX_WEIGHT_BAND,
    EX_UNVERIFIABLE, EX_HEPATIC, EX_LAB_UNEVALUABLE, EX_CRS, EX_NEURO, EX_SEIZURE, EX_AE, EX_GRADE_UNKNOWN,
    EX_RESTART, EX_CYCLE_NEW, EX_CYCLE_LIMIT, EX_TFI,
    EX_PRESERVATIVE_BAG,
)


def all_examples() -> tuple[Example, ...]:
    """The examples above plus the realistic-charting corpus.

    The corpus lives in its own modules (``charting_*.py``), which build on the chart builder of this one; they are
    imported here, when the examples are written, so this file stays importable on its own.
    """
    from fhir_examples import charting_dosing, charting_toxicity, charting_vendor

    return (EXAMPLES + tuple(charting_dosing.EXAMPLES) + tuple(charting_toxicity.EXAMPLES)
            + tuple(charting_vendor.EXAMPLES))


# ====================================================================== output


def _templates() -> dict[str, str]:
    from service.catalog import prefetch_templates
    from service.knowledge import load_knowledge
    from service.settings import DEFAULT_KNOWLEDGE_DIR

    return prefetch_templates(load_knowledge(DEFAULT_KNOWLEDGE_DIR))


def _obs_time(r: Mapping[str, Any]) -> str:
    return str(r.get("effectiveDateTime", ""))


def _codes_of(r: Mapping[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in (r.get("code") or {}).get("coding", ())}


def _searchset(resources: Sequence[Mapping[str, Any]], url: str,
               included: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """A searchset Bundle as a FHIR server returns it; ``None`` (prefetch null) when nothing matched."""
    if not resources:
        return None
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": f"{EHR_BASE}/{url}"}],
        "entry": [{"fullUrl": f"{EHR_BASE}/{r['resourceType']}/{r['id']}", "resource": dict(r),
                   "search": {"mode": mode}}
                  for rs, mode in ((resources, "match"), (included, "include")) for r in rs],
    }


def _medications_of(records: Sequence[Mapping[str, Any]], medications: Sequence[Mapping[str, Any]]
                    ) -> list[Mapping[str, Any]]:
    """The Medications the records point at (``medicationReference`` ``Medication/<id>``): what the medication keys'
    ``_include=<type>:medication`` brings."""
    wanted = {str(r["medicationReference"]["reference"]).rsplit("/", 1)[-1] for r in records
              if str((r.get("medicationReference") or {}).get("reference", "#")).startswith("Medication/")}
    return [m for m in medications if m["id"] in wanted]


def prefetch_for(pid: str, resources: Sequence[Mapping[str, Any]], templates: Mapping[str, str]) -> dict[str, Any]:
    """Each prefetch key filled as the service's template would be answered (search results, sort, count)."""
    url = {k: v.replace("{{context.patientId}}", pid) for k, v in templates.items()}
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    obs = sorted(by_type.get("Observation", []), key=_obs_time, reverse=True)
    body = {"29463-7", "3141-9", "8302-2", "3137-7", "8306-3", "8277-6"}
    labs = {"1742-6", "1743-4", "1744-2", "77144-4", "76625-3", "1920-8", "30239-8", "88112-8", "1975-2", "14631-6",
            "77137-8"}
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    medications = by_type.get("Medication", [])
    return {
        "patient": dict(patient),
        "medicationRequests": _searchset(by_type.get("MedicationRequest", []), url["medicationRequests"],
                                         _medications_of(by_type.get("MedicationRequest", []), medications)),
        "medicationAdministrations": _searchset(
            by_type.get("MedicationAdministration", []), url["medicationAdministrations"],
            _medications_of(by_type.get("MedicationAdministration", []), medications)),
        "bodySize": _searchset([o for o in obs if _codes_of(o) & body][:50], url["bodySize"]),
        "labs": _searchset([o for o in obs if _codes_of(o) & labs][:100], url["labs"]),
        "toxicityObservations": _searchset(obs[:200], url["toxicityObservations"]),
        "conditions": _searchset(by_type.get("Condition", []), url["conditions"]),
        "adverseEvents": _searchset(by_type.get("AdverseEvent", []), url["adverseEvents"]),
    }


def transaction(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": dict(r), "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                  for r in resources],
    }


def build_call(example: Example, call: Call, templates: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    pid = f"ex-{example.name}-{call.id}"
    chart = Chart(pid)
    call.build(chart)
    resources, drafts = chart.snapshot(call.now, drafts=call.drafts)
    context: dict[str, Any] = {"userId": "Practitioner/ex-oncologist", "patientId": pid}
    if call.hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
        if call.selections is not None:
            context["selections"] = [f"MedicationRequest/{chart.id(s)}" for s in call.selections]
    elif drafts:
        raise ValueError(f"{pid}: patient-view takes no drafts")
    request = {
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:blina-cds:example:{pid}")),
        "hook": call.hook,
        "context": context,
        "prefetch": prefetch_for(pid, resources, templates),
    }
    return request, transaction(resources)


def write_all(out: Path) -> list[Path]:
    """Write every example under ``out``; returns the files written."""
    templates = _templates()
    written: list[Path] = []
    for ex in all_examples():
        folder = out / ex.name
        folder.mkdir(parents=True, exist_ok=True)
        calls = []
        for call in ex.calls:
            request, bundle = build_call(ex, call, templates)
            for suffix, doc in (("request", request), ("bundle", bundle)):
                path = folder / f"{call.id}.{suffix}.json"
                path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                written.append(path)
            calls.append({
                "id": call.id,
                "title": call.title,
                "hook": call.hook,
                "service": SERVICE[call.hook],
                "reference_instant": iso(call.now),
                "request": f"{call.id}.request.json",
                "bundle": f"{call.id}.bundle.json",
                "expect_rule_ids": sorted(call.expect),
                "quiet": call.quiet,
                **({"expect_indicators": dict(sorted(call.indicators.items()))} if call.indicators else {}),
            })
        manifest = {
            "name": ex.name,
            "title": ex.title,
            "description": ex.description,
            "reference_instant": max(c["reference_instant"] for c in calls),
            "calls": calls,
        }
        path = folder / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


README_HEAD = """\
# Example patients and hook requests

Generated by `python fhir_examples/build.py` (do not edit the JSON or this file by hand; edit `build.py` and
re-run it). `tests/test_examples.py` checks that the committed files are what the generator writes, that every
resource validates as FHIR R4 (`fhir.resources.R4B`), and that every call gives exactly the cards listed below,
both with prefetch and through a real FHIR server without prefetch.

Each example folder holds `manifest.json`, and per call `<call>.request.json` (the full CDS Hooks request with
`prefetch` filled as the service's templates would return it: searchset Bundles, the Patient, `null` where a
search finds nothing) and `<call>.bundle.json` (a transaction Bundle of the same data, `PUT` with fixed ids, so
loading is idempotent). Draft orders are only in the request's `context.draftOrders`. Every call has its own
patient, `ex-<example>-<call>`.

**Dates move to the present.** Each call is authored at a fixed past `reference_instant`. `service.examples`
shifts every date, dateTime and instant by *now − reference_instant* (date-only values by whole days) whenever an
example is sent or loaded, so a weight never becomes stale and an infusion is always running "now".
Sending the raw JSON files as they are gives stale data: use the commands below.

## Load and send

```sh
blina-cds examples list
blina-cds examples load --fhir-server http://127.0.0.1:8091/fhir          # every example, dates shifted to now
blina-cds examples load --fhir-server http://127.0.0.1:8091/fhir --name rr-adult-course

# one request, shifted to now, sent with its prefetch (auth off: BLINA_CDS_AUTH=off)
blina-cds examples request premed-missing c2d1-sign > /tmp/req.json
curl -s -XPOST -H 'content-type: application/json' --data-binary @/tmp/req.json \\
  http://127.0.0.1:8000/cds-services/blinatumomab-order-sign | python -m json.tool

# the same call without prefetch, fetched from the FHIR server the example was loaded into
blina-cds examples request premed-missing c2d1-sign --fhir-server http://127.0.0.1:8091/fhir > /tmp/req-np.json
curl -s -XPOST -H 'content-type: application/json' --data-binary @/tmp/req-np.json \\
  http://127.0.0.1:8000/cds-services/blinatumomab-order-sign | python -m json.tool
```

Load with the same "now" you send with (within minutes): the shift is recomputed on every load.

## Calls

"Expected" lists the warning/critical rule ids that must appear (exactly these), plus `therapy-status` (info) on
patient-view calls; **quiet** means no warning or critical card at all.

| example / call | hook | what it shows | expected |
|---|---|---|---|
"""


def readme(examples: Sequence[Example]) -> str:
    rows = []
    for ex in examples:
        for call in ex.calls:
            expect = ", ".join(f"`{r}`" for r in sorted(call.expect))
            if call.quiet:
                expect = "**quiet**" + (f" ({expect})" if expect else "")
            rows.append(f"| `{ex.name}/{call.id}` | {call.hook} | {ex.title}: {call.title} | {expect} |")
    details = "\n".join(f"- **{ex.name}**: {ex.description}" for ex in examples)
    return (README_HEAD + "\n".join(rows) + "\n\n## Examples\n\n" + details + "\n\n" + SANDBOX_HEAD
            + "\n".join(sandbox_rows(examples)) + "\n")


SANDBOX_HEAD = """\
## Open in the CDS Hooks Sandbox

Each link opens one example patient's patient-view call in a locally built Sandbox on `http://127.0.0.1:8080`
(its URL parameters `fhirServiceUrl`, `patientId`, `serviceDiscoveryURL`), with the FHIR server of `make fhir-dev`
and the service of `make run`; load the examples first (see the project README, "Trying it in the CDS Hooks
Sandbox"). Another port: change it in the link.

| example / call | cards expected (patient-view) | Sandbox |
|---|---|---|
"""
SANDBOX_URL = "http://127.0.0.1:8080/"
SANDBOX_FHIR = "http://127.0.0.1:8091/fhir"
SANDBOX_DISCOVERY = "http://127.0.0.1:8000/cds-services"


def sandbox_rows(examples: Sequence[Example]) -> list[str]:
    from urllib.parse import urlencode

    rows = []
    for ex in examples:
        for call in ex.calls:
            if call.hook != "patient-view":
                continue
            query = urlencode({"fhirServiceUrl": SANDBOX_FHIR, "patientId": f"ex-{ex.name}-{call.id}",
                               "serviceDiscoveryURL": SANDBOX_DISCOVERY})
            expect = ", ".join(f"`{r}`" for r in sorted({*call.expect, "therapy-status"}))
            rows.append(f"| {ex.name} / {call.id} | {expect} | [open]({SANDBOX_URL}?{query}) |")
    return rows


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT, help="output folder (default: fhir_examples/)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    files = write_all(args.out)
    examples = all_examples()
    (args.out / "README.md").write_text(readme(examples), encoding="utf-8")
    print(f"wrote {len(files)} files for {len(examples)} examples under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
