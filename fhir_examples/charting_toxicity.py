"""Realistic-charting corpus: toxicity.

Each example imitates how an EHR flowsheet, order set or problem list really records things; its comment says which
real charting it imitates. ``build.all_examples()`` adds these examples to the generated ``fhir_examples/``, so each
call runs through the HTTP API with full prefetch and through the FHIR fallback (``tests/test_examples.py``).

The patient is the adult R/R course of ``build.rr_two_cycles`` (cycle 1 complete, cycle 2 running at 28 µg/day
from ``RR_C2``); each call adds the toxicity charting it is about. Flowsheet rows carry Epic-style local row ids
only (no standard code exists for ICE, ICANS, CRS or seizure rows: real-world-charting.md §3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fhir_examples.build import (
    ABSENT,
    DAY,
    HOUR,
    ICD10CM,
    MIN,
    NCIT,
    RR_C1,
    RR_C2,
    SCORE,
    SNOMED,
    Call,
    Chart,
    Example,
    both,
    iso,
    nursing_checks,
    rate_ug_d,
    rr_cn,
    rr_two_cycles,
)

Build = Callable[[Chart], None]
T = RR_C2 + 2 * DAY + 2 * HOUR          # cycle 2 day 3, 11:00
SEIZURE = {"system": SNOMED, "code": "91175000", "display": "Seizure (finding)"}
ROW = {"seizure": "3040110", "seizures": "3040111", "ice": "3040120", "icans": "3040122", "neuro": "3040123",
       "crs": "3040130", "crs-grade": "3040131", "pain": "3040201", "note": "3040900", "ae": "3040300"}


def row(local: str, when: dt.datetime, name: str, key: str, **values: Any) -> Build:
    """One flowsheet row (``ROW[key]`` is its local id)."""
    def build(ch: Chart) -> None:
        ch.flowsheet(local, when, name, row_id=ROW[key], **values)
    return build


def condition(local: str, onset: dt.datetime | str, *, code: Mapping[str, Any], category: str = "encounter-diagnosis",
              status: str = "active", abated: dt.datetime | None = None, verification: str = "confirmed",
              recorded: dt.datetime | None = None, note: str | None = None) -> Build:
    """A Condition as Oracle Health sends it: problem-list item or encounter diagnosis; a problem's onset may be a bare
    date; an abatement goes with clinicalStatus resolved (FHIR con-4)."""
    def build(ch: Chart) -> None:
        when = onset if isinstance(onset, dt.datetime) else dt.datetime.fromisoformat(onset).replace(tzinfo=dt.UTC)
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "id": ch.id(local),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": status}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": category}]}],
            "code": {"coding": [dict(code)], "text": code["display"]},
            "subject": ch.subject(),
            "onsetDateTime": onset if isinstance(onset, str) else iso(onset),
            "recordedDate": iso(recorded or when + 20 * MIN),
        }
        if abated is not None:
            res["abatementDateTime"] = iso(abated)
        if note:
            res["note"] = [{"text": note}]
        ch.add(res, max(when, recorded or when))
    return build


def adverse_event(local: str, when: dt.datetime, text: str, *, grade: int | None = None,
                  coding: Mapping[str, Any] | None = None, suspects: tuple[Mapping[str, Any], ...] = (),
                  recorded: dt.datetime | None = None) -> Build:
    """A research-style AdverseEvent (AE-IG shape): CTCAE grade extension, suspectEntity with causality."""
    def build(ch: Chart) -> None:
        event: dict[str, Any] = {"text": text}
        if coding:
            event["coding"] = [dict(coding)]
        res: dict[str, Any] = {
            "resourceType": "AdverseEvent", "id": ch.id(local), "actuality": "actual", "event": event,
            "subject": ch.subject(), "date": iso(when), "recordedDate": iso(recorded or when + 40 * MIN),
        }
        if grade is not None:
            res["extension"] = [{"url": "http://hl7.org/fhir/us/ctcae/StructureDefinition/ctcae-grade",
                                 "valueCodeableConcept": {"coding": [{
                                     "system": "http://hl7.org/fhir/us/ctcae/CodeSystem/ctcae-grade-code-system",
                                     "code": str(grade), "display": f"Grade {grade}"}]}}]
        if suspects:
            res["suspectEntity"] = [_suspect(ch, s) for s in suspects]
        ch.add(res, recorded or when + 40 * MIN)
    return build


def _suspect(ch: Chart, spec: Mapping[str, Any]) -> dict[str, Any]:
    instance = ({"reference": f"MedicationAdministration/{ch.id(spec['ref'])}"} if "ref" in spec
                else {"display": spec["display"]})
    out: dict[str, Any] = {"instance": instance}
    if "causality" in spec:
        out["causality"] = [{"assessment": {"text": spec["causality"]}}]
    return out


def cycle2(*extra: Build, cut: float | None = None, reason: str = "") -> Build:
    return rr_two_cycles(rr_cn(2, RR_C2, cut_after_hours=cut, cut_reason=reason), extra=both(*extra))


def view(id: str, now: dt.datetime, title: str, build: Build, *, expect: tuple[str, ...] = (),
         quiet: bool = False) -> Call:
    """A patient-view call (it also gives the therapy-status info card, which the manifest does not need)."""
    return Call(id, "patient-view", now, title, build, expect=list(expect), quiet=quiet)


# ---------------------------------------------------------------------------------------------- seizures

SZ_A = T + 3 * HOUR + 20 * MIN          # cycle 2 day 3, 14:20

EX_SEIZURES = Example(
    "chart-seizure",
    "Seizures as nurses, physicians and problem lists chart them",
    "Adult R/R, cycle 2 running at 28 µg/day. One seizure charted by the nurse (flowsheet), the physician (encounter "
    "diagnosis, problem list with a date-only onset) and an AE report counts once; a resolved problem is one seizure; "
    "two seizures hours apart, a seizure in each cycle, or 'Seizures this shift: 2' discontinue; negative checks, "
    "seizure precautions, an attributed or entered-in-error seizure never count.",
    [
        # Nurse charts the flowsheet row at 14:20; the physician adds an encounter diagnosis 5 min later (onset
        # 14:25, recorded 14:45): one seizure, the first of the course.
        view("nurse-and-physician-view", SZ_A + 2 * HOUR, "Seizure charted by nurse and physician minutes apart",
             cycle2(row("sz-rn", SZ_A, "Seizure activity", "seizure",
                        valueString="Generalized tonic-clonic seizure x1, 2 min, lorazepam 2 mg IV given"),
                    condition("sz-md", SZ_A + 5 * MIN, code=SEIZURE, note="Witnessed GTC seizure on blinatumomab")),
             expect=("seizure",)),
        # The same seizure also reported as a research-style AdverseEvent 45 min later (pharmacovigilance form).
        view("three-sources-view", SZ_A + 2 * HOUR, "One seizure: flowsheet, encounter diagnosis and AE report",
             cycle2(row("sz-rn", SZ_A, "Seizure activity", "seizure", valueString="Seizure x1 at 14:20"),
                    condition("sz-md", SZ_A + 10 * MIN, code=SEIZURE),
                    adverse_event("sz-ae", SZ_A + 45 * MIN, "Seizure",
                                  coding={"system": NCIT, "code": "C146700", "display": "Seizure"},
                                  suspects=({"ref": "c2-bag2"},))),
             expect=("seizure",)),
        # Problem list: onset entered as a bare date; the encounter diagnosis carries the time (Oracle Health keeps
        # both, real-world-charting §4).
        view("problem-list-date-only-view", SZ_A + 3 * HOUR, "Problem-list seizure (date-only onset) and diagnosis",
             cycle2(condition("sz-problem", SZ_A.date().isoformat(), code=SEIZURE, category="problem-list-item",
                              recorded=SZ_A + 2 * HOUR),
                    condition("sz-dx", SZ_A + 5 * MIN, code=SEIZURE)),
             expect=("seizure",)),
        # A resolved problem-list seizure: abatement 4 min after onset is the resolution, not a second seizure.
        view("resolved-condition-view", SZ_A + DAY, "One seizure Condition, resolved with an abatement time",
             cycle2(condition("sz", SZ_A, code=SEIZURE, category="problem-list-item", status="resolved",
                              abated=SZ_A + 4 * MIN)),
             expect=("seizure",)),
        # Two distinct seizures 6 h apart, both on the flowsheet (the second with a physician note too).
        view("two-seizures-6h-view", SZ_A + 7 * HOUR, "Two seizures six hours apart",
             cycle2(row("sz1", SZ_A - 6 * HOUR, "Seizure activity", "seizure", valueString="Focal seizure R arm x1"),
                    row("sz2", SZ_A, "Seizure activity", "seizure", valueString="tonic-clonic seizure witnessed"),
                    condition("sz2-md", SZ_A + 15 * MIN, code=SEIZURE)),
             expect=("neuro-discontinue",)),
        # A seizure in cycle 1 (resolved problem) and another in cycle 2: "more than one" counts the course.
        view("one-per-cycle-view", SZ_A + HOUR, "A seizure in cycle 1 and another in cycle 2",
             cycle2(condition("sz-c1", RR_C1 + 12 * DAY, code=SEIZURE, category="problem-list-item", status="resolved",
                              abated=RR_C1 + 12 * DAY + 3 * MIN),
                    row("sz-c2", SZ_A, "Seizure activity", "seizure", valueString="Seizure x1, 1 min, self-limited")),
             expect=("neuro-discontinue",)),
        # A count row: two seizures in the night shift.
        view("count-two-view", SZ_A + HOUR, "Flowsheet count 'Seizures this shift: 2'",
             cycle2(row("sz-count", SZ_A, "Seizures this shift", "seizures", valueInteger=2)),
             expect=("neuro-discontinue",)),
        # Every shift: negative checks in all their shapes, a seizure-precautions row and levetiracetam prophylaxis
        # in a note: nothing is an event.
        view("negative-checks-view", RR_C2 + 3 * DAY, "Negative seizure checks every shift, precautions in place",
             cycle2(lambda ch: nursing_checks(ch, "c2", RR_C2, 3, every_hours=8),
                    row("precautions", RR_C2 + 2 * HOUR, "Seizure precautions", "note",
                        valueString="In place, padded rails"),
                    row("sz-na", RR_C2 + 2 * DAY, "Seizure activity", "seizure", valueString="N/A"),
                    row("sz-dar", RR_C2 + 2 * DAY + 8 * HOUR, "Seizure activity", "seizure",
                        dataAbsentReason={"coding": [{
                            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "code": "not-performed"}], "text": "Patient off unit"})),
             quiet=True),
        # The team attributes the seizure to intrathecal methotrexate given that morning (AE suspectEntity).
        view("attributed-elsewhere-view", SZ_A + HOUR, "Seizure AE attributed to intrathecal methotrexate only",
             cycle2(adverse_event("sz-ae", SZ_A, "Seizure", suspects=({"display": "methotrexate (intrathecal)"},))),
             quiet=True),
        # A seizure problem entered in error and a refuted one (pseudo-seizure on video EEG).
        view("entered-in-error-view", SZ_A + HOUR, "Seizure Conditions entered in error or refuted",
             cycle2(condition("sz-err", SZ_A, code=SEIZURE, verification="entered-in-error"),
                    condition("sz-ref", SZ_A + 30 * MIN, code=SEIZURE, verification="refuted",
                              note="Non-epileptic event on video EEG")),
             quiet=True),
    ],
)

# ---------------------------------------------------------------------------------------------- CRS

EX_CRS = Example(
    "chart-crs",
    "CRS as flowsheet grade rows, diagnoses and notes",
    "Adult R/R, cycle 2 day 3. A 'CRS grade' row holding a bare '3' or 'III' is grade 3; the flowsheet grade and an "
    "ICD-10-CM D89.833 diagnosis charted 20 min apart give one card; 'Resolved' and 'No CRS' end an episode; a row "
    "that does not say 'grade' is never read as one.",
    [
        # Epic custom-list row "CRS grade" with the value typed as "3".
        view("grade-field-3-view", T + HOUR, "CRS grade field holding a bare '3'",
             cycle2(row("crs", T, "CRS grade", "crs-grade", valueString="3")), expect=("crs-interrupt",)),
        view("grade-field-roman-view", T + HOUR, "CRS grade field holding 'III'",
             cycle2(row("crs", T, "CRS grade", "crs-grade", valueString="III", method={"text": "ASTCT 2019"})),
             expect=("crs-interrupt",)),
        # Nurse flowsheet grade 3 at 11:00, physician encounter diagnosis D89.833 at 11:20: one episode, one card.
        view("flowsheet-and-icd-view", T + 2 * HOUR, "CRS grade 3 on the flowsheet and as D89.833 minutes later",
             cycle2(row("crs", T, "CRS grade", "crs-grade", valueInteger=3),
                    condition("crs-dx", T + 20 * MIN, code={"system": ICD10CM, "code": "D89.833",
                                                            "display": "Cytokine release syndrome, grade 3"})),
             expect=("crs-interrupt",)),
        # Grade 3 yesterday, then the CRS row says "Resolved" after tocilizumab and steroids.
        view("resolved-view", T + DAY + 2 * HOUR, "CRS grade 3, then 'Resolved'",
             cycle2(row("crs-g3", T, "CRS grade", "crs-grade", valueInteger=3),
                    row("crs-res", T + DAY, "CRS assessment", "crs", valueString="Resolved")),
             expect=("therapy-status",), quiet=True),
        # A note says "severe CRS" (no grade), the next shift charts "No CRS - afebrile off pressors".
        view("severe-then-no-crs-view", T + 14 * HOUR, "'Severe CRS' in a note, then 'No CRS'",
             cycle2(row("note", T, "Progress note", "note", valueString="Severe CRS overnight, tocilizumab given"),
                    row("crs-neg", T + 12 * HOUR, "CRS assessment", "crs",
                        valueString="No CRS - afebrile, off pressors")),
             quiet=True),
        view("astct-grade-2-view", T + HOUR, "CRS 'Gr 2 (ASTCT)' (no dose change)",
             cycle2(row("crs", T, "CRS", "crs", valueString="Gr 2 (ASTCT)")), quiet=True),
        # A coded grade value: NCIt C41337 (grade 4) on a "Cytokine release syndrome" row.
        view("ncit-grade-4-view", T + HOUR, "CRS row valued with NCIt C41337 (grade 4)",
             cycle2(row("crs", T, "Cytokine release syndrome", "crs",
                        valueCodeableConcept={"coding": [{"system": NCIT, "code": "C41337",
                                                          "display": "Grade 4 Life Threatening or Disabling AE"}]}),
                    cut=2 * 24 + 2.5, reason="Cytokine release syndrome grade 4"),
             expect=("crs-discontinue",)),
        # A site's "CRS" row holds a number but never says it is a grade (nor names a grading system): it is not read
        # as one; the toxicity is there, so the grade is asked for.
        view("number-not-a-grade-view", T + HOUR, "'CRS' row with 3 that does not say grade",
             cycle2(row("crs", T, "CRS", "crs", valueInteger=3)), expect=("toxicity-grade-unknown",)),
    ],
)

# ---------------------------------------------------------------------------------------------- neurotoxicity

EX_NEURO = Example(
    "chart-icans",
    "ICE scores and ICANS rows",
    "Adult R/R, cycle 2 at 28 µg/day. ICE 10/10 and 'no ICANS' every shift are normal findings; ICE 6/10 is at "
    "least ICANS grade 2 (no dose change), ICE 2/10 at least grade 3 (withhold); 'unable to assess' and 'denies "
    "headache/confusion' are not events.",
    [
        view("ice-10-every-shift-view", RR_C2 + 3 * DAY, "ICE 10/10 - no ICANS every shift",
             cycle2(lambda ch: nursing_checks(ch, "c2", RR_C2, 3)), quiet=True),
        view("ice-6-view", T + HOUR, "Neuro assessment 'ICE score 6/10'",
             cycle2(row("neuro", T, "Neuro assessment", "neuro",
                        valueString="ICE score 6/10, word-finding difficulty, oriented x2")), quiet=True),
        view("ice-2-view", T + HOUR, "ICE score 2 at 28 µg/day",
             cycle2(row("ice", T, "ICE score", "ice", valueQuantity={"value": 2, **SCORE})),
             expect=("neuro-interrupt",)),
        view("icans-grade-3-view", T + HOUR, "ICANS grade row 'Grade 3' at 28 µg/day",
             cycle2(row("icans", T, "ICANS grade", "icans", valueString="Grade 3")), expect=("neuro-interrupt",)),
        view("ice-unable-view", T + HOUR, "ICE 'Unable to assess - sedated for MRI'",
             cycle2(row("ice", T, "ICE score", "ice", valueString="Unable to assess - sedated for MRI")), quiet=True),
        view("denies-view", T + HOUR, "Neuro check 'Pt denies headache/confusion'",
             cycle2(row("neuro", T, "Neuro checks", "neuro", valueString="Pt denies headache/confusion"),
                    row("icans", T, "ICANS", "icans", valueCodeableConcept=ABSENT)), quiet=True),
    ],
)

# ---------------------------------------------------------------------------------------------- other adverse events

PANC = T                                      # pancreatitis grade 3 on cycle 2 day 3; infusion stopped 30 min later
PANC_G1 = PANC + 16 * DAY                     # back to grade 1 only 16 days later
RESTART = PANC_G1 + 3 * DAY + 2 * HOUR


def pancreatitis_course(*extra: Build) -> Build:
    ctcae = {"method": {"text": "CTCAE v5.0"}}
    return cycle2(row("panc-g3", PANC, "Pancreatitis", "ae", valueInteger=3, **ctcae),
                  row("panc-g2", PANC + 8 * DAY, "Pancreatitis", "ae", valueInteger=2, **ctcae),
                  row("panc-g1", PANC_G1, "Pancreatitis", "ae", valueInteger=1, **ctcae),
                  *extra, cut=2 * 24 + 2.5, reason="Adverse reaction: pancreatitis grade 3")


def restart_order(ch: Chart) -> None:
    ch.blin_order("restart-order", RESTART, RESTART + 28 * DAY, dosage=rate_ug_d(9), regimen="relapsed-refractory",
                  text="BLINCYTO 9 mcg/day continuous IV infusion, restart after pancreatitis, Cycle 3 Day 1. "
                       "Do not flush the line.")
    ch.steroid_order("restart-premed-mr", RESTART - 45 * MIN, agent="dexamethasone", mg=20)


EX_AE = Example(
    "chart-ae",
    "Other adverse events as graded Observations and attributed AdverseEvents",
    "Adult R/R, cycle 2. A grade 4 tumour lysis syndrome charted as an Observation valued with NCIt C41337; febrile "
    "neutropenia graded by CTCAE; a pancreatitis grade 3 that took 16 days to reach grade 1 (at the chart and at the "
    "restart order); events the team attributes to another drug, and numbers that are not grades.",
    [
        # Research/oncology-module style: the event is the code, the value is the NCIt grade (German MII oncology).
        view("tls-grade-4-obs-view", T + HOUR, "Tumour lysis syndrome Observation valued NCIt C41337",
             cycle2(row("tls", T, "Tumor lysis syndrome", "ae",
                        valueCodeableConcept={"coding": [{"system": NCIT, "code": "C41337",
                                                          "display": "Grade 4 Life Threatening or Disabling AE"}]})),
             expect=("adverse-event-discontinue",)),
        view("febrile-neutropenia-g3-view", T + HOUR, "Febrile neutropenia grade 3 (method CTCAE v5.0)",
             cycle2(row("fn", T, "Febrile neutropenia", "ae", valueInteger=3, method={"text": "CTCAE v5.0"})),
             expect=("adverse-event-interrupt",)),
        view("pain-score-view", T + HOUR, "Pain score 4/10 and 'Diarrhea episodes: 3' (not grades)",
             cycle2(row("pain", T, "Pain score (0-10)", "pain", category="vital-signs", valueInteger=4),
                    row("stools", T, "Diarrhea episodes", "note", valueString="3")),
             quiet=True),
        # Pancreatitis grade 4 reported as an AE whose only suspect is pegaspargase (asparaginase pancreatitis).
        view("attributed-to-pegaspargase-view", T + HOUR, "Pancreatitis grade 4 AE, suspect pegaspargase only",
             cycle2(adverse_event("panc", T, "Pancreatitis", grade=4,
                                  coding={"system": NCIT, "code": "C146789", "display": "Pancreatitis"},
                                  suspects=({"display": "pegaspargase (ONCASPAR)"},))),
             quiet=True),
        # TLS grade 3 AE naming the running BLINCYTO bag, assessed "Unrelated" by the investigator.
        view("causality-unrelated-view", T + HOUR, "TLS grade 3 AE, blinatumomab assessed unrelated",
             cycle2(adverse_event("tls", T, "Tumor lysis syndrome", grade=3,
                                  coding={"system": NCIT, "code": "C146688", "display": "Tumor lysis syndrome"},
                                  suspects=({"ref": "c2-bag2", "causality": "Unrelated"},))),
             quiet=True),
        # Same AE, but blinatumomab is one of two suspects: the blinatumomab rule applies.
        view("two-suspects-view", T + HOUR, "TLS grade 3 AE naming cytarabine and the BLINCYTO bag",
             cycle2(adverse_event("tls", T, "Tumor lysis syndrome", grade=3,
                                  suspects=({"display": "cytarabine"}, {"ref": "c2-bag2", "causality": "Possible"}))),
             expect=("adverse-event-interrupt",)),
        view("slow-grade-3-view", PANC_G1 + 2 * HOUR, "Pancreatitis grade 3 that took 16 days to reach grade 1",
             pancreatitis_course(), expect=("adverse-event-discontinue",)),
        Call("slow-grade-3-restart-sign", "order-sign", RESTART - 30 * MIN,
             "Restart order after a grade 3 that took 16 days to resolve",
             pancreatitis_course(restart_order), drafts=["restart-order", "restart-premed-mr"],
             expect=["adverse-event-discontinue"]),
        view("rash-grade-2-view", T + HOUR, "Rash graded 2 with a CTCAE grade code (no dose change)",
             cycle2(row("rash", T, "Rash maculo-papular", "ae", valueCodeableConcept={"coding": [{
                 "system": "http://hl7.org/fhir/us/ctcae/CodeSystem/ctcae-grade-code-system", "code": "2"}]})),
             quiet=True),
    ],
)

EXAMPLES: tuple[Example, ...] = (EX_SEIZURES, EX_CRS, EX_NEURO, EX_AE)
