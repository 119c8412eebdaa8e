"""The hook requests every benchmark sends: realistic charts from ``fhir_examples/``, built once per process.

Each function returns a :class:`Workload`: the request body as bytes (orjson, compact, as an EHR sends it), the
service to post it to (``workload.path``), the rule ids of the cards the service must answer with, and the instant
its dates were moved to. Dates always move to the present when a workload is first built (as ``service.examples``
does), so a long bench run sees the same answer throughout; build them before timing anything.

1. :func:`order_sign_full` — order-sign with a complete prefetch: the ``treatment-free-interval/c3d1-early-sign``
   example (an adult R/R course: cycles 1–2 with their orders, bags and dexamethasone premedication, weekly weights
   and liver tests; cycle 3 ordered eight days after cycle 2 ended, with a dexamethasone draft). 99 prefetched
   resources (62 distinct: the Observations come again under ``toxicityObservations``), about 105 KB. Gives one
   card: ``treatment-free-interval`` (warning: the 14-day interval is not over).
2. :func:`small_chart` — the fixed per-call cost: ``rr-adult-course/c1d1-sign``, cycle 1 day 1 (9 µg/day) signed
   with its dexamethasone 20 mg draft. 11 prefetched resources (the Patient; weight and height under ``bodySize``;
   ALT, AST and bilirubin under ``labs``; the same five Observations under ``toxicityObservations``; no orders or
   administrations yet: the other keys are ``null``), about 13 KB. Correct: no card at all.
3. :func:`patient_view_history` — patient-view with the whole history in prefetch, as an EHR that ignores
   ``_count`` sends it (every Observation in ``toxicityObservations``, every liver test in ``labs``, every weight
   in ``bodySize``, every administration in ``medicationAdministrations``): an adult R/R course of four cycles
   charted correctly, viewed on cycle 4 day 10 with the infusion running. ``observations`` Observations
   (daily CBC and chemistry, the liver panel with its LOINC codes and reference ranges, flowsheet vital signs
   every few hours, nursing neuro/CRS checks with negative findings in every shape real flowsheets use, and
   free-text nursing notes) and ``administrations`` MedicationAdministrations (each bag of blinatumomab, Epic
   "Rate Verify" point records every shift, and the dexamethasone premedication before each start and step).
   500 Observations: 825 resources, about 0.75 MB; 5,000: 6,075 resources, about 6 MB. Correct: only
   ``therapy-status`` (info); no warning or critical.
4. :func:`order_sign_no_prefetch` — workload 1's call with no prefetch at all and a ``fhirServer``: the service
   fetches every key from it. :func:`fhir_data` holds what a local FHIR stand-in must answer for it
   (:meth:`FhirData.answer`: each search the service's templates make, ``_include`` of Medication honoured, and
   reads of ``Patient/<id>`` and ``Medication/<id>``). Gives the same card as workload 1.
5. Discovery: ``GET`` :data:`DISCOVERY_PATH`, no body.

    from tests.bench import workloads
    w = workloads.order_sign_full()
    httpx.post(base + w.path, content=w.body, headers={"content-type": "application/json"})
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_examples import build
from fhir_examples.charting_dosing import rate_verify
from service import examples
from service.catalog import prefetch_templates
from service.knowledge import load_knowledge
from service.settings import DEFAULT_KNOWLEDGE_DIR

ORDER_SIGN = "blinatumomab-order-sign"
PATIENT_VIEW = "blinatumomab-patient-view"
DISCOVERY_PATH = "/cds-services"


@dataclass(frozen=True)
class Workload:
    name: str
    service: str
    """The CDS service id: post ``body`` to ``path``."""
    body: bytes
    now: dt.datetime
    """The instant the chart's dates were moved to (pass it as ``now`` when calling a pipeline stage directly)."""
    resources: int
    """Resources in the prefetch (included Medications among them)."""
    expected: tuple[str, ...]
    """The rule ids of the cards the service answers with, sorted."""
    request: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    """The same request as a dict (shared: do not change it)."""

    @property
    def path(self) -> str:
        return f"/cds-services/{self.service}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _count(prefetch: Mapping[str, Any] | None) -> int:
    total = 0
    for value in (prefetch or {}).values():
        if isinstance(value, Mapping):
            total += len(value.get("entry") or ()) if value.get("resourceType") == "Bundle" else 1
    return total


def _workload(name: str, service: str, request: dict[str, Any], now: dt.datetime,
              expected: Sequence[str]) -> Workload:
    return Workload(name, service, orjson.dumps(request), now, _count(request.get("prefetch")),
                    tuple(sorted(expected)), request)


# ---------------------------------------------------------------- 1, 2: examples as they are

_FULL = ("treatment-free-interval", "c3d1-early-sign")
_SMALL = ("rr-adult-course", "c1d1-sign")


@functools.cache
def order_sign_full() -> Workload:
    """Order-sign, complete prefetch, 99 resources (~105 KB): cycle 3 ordered 8 days after cycle 2 ended.

    Cards: ``treatment-free-interval`` (warning), nothing else."""
    now = _now()
    return _workload("order-sign, full prefetch", ORDER_SIGN, examples.request_for(*_FULL, now=now), now,
                     ["treatment-free-interval"])


@functools.cache
def small_chart() -> Workload:
    """Order-sign of cycle 1 day 1 with its dexamethasone draft, 11 prefetched resources (~13 KB), complete prefetch.

    Cards: none (a correct order)."""
    now = _now()
    return _workload("order-sign, small chart", ORDER_SIGN, examples.request_for(*_SMALL, now=now), now, [])


# ---------------------------------------------------------------- 4: no prefetch, a FHIR stand-in


@functools.cache
def order_sign_no_prefetch(fhir_server: str = "http://127.0.0.1:8091/fhir") -> Workload:
    """Workload 1 without ``prefetch`` and with ``fhirServer``: every key is fetched (8 requests, concurrently).

    Cards: ``treatment-free-interval`` (warning), as workload 1. Serve :func:`fhir_data` at ``fhir_server``."""
    full = order_sign_full()
    request = {k: v for k, v in full.request.items() if k != "prefetch"}
    request["hookInstance"] = str(uuid.uuid4())
    request["fhirServer"] = fhir_server
    return Workload("order-sign, no prefetch", ORDER_SIGN, orjson.dumps(request), full.now, 0, full.expected,
                    request)


def _normalised(relative: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``Type?query`` (or ``Type/id``) as (path, sorted decoded query pairs), whatever the encoding and order."""
    parts = urlsplit(relative.lstrip("/"))
    return parts.path.strip("/"), tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))


def _empty_searchset() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}


@dataclass(frozen=True)
class FhirData:
    """What a FHIR stand-in serves for :func:`order_sign_no_prefetch`."""

    resources: tuple[Mapping[str, Any], ...]
    """Every resource of the chart (dates moved as the workload's), as a transaction Bundle would load them."""
    searches: Mapping[str, bytes]
    """Each search the service makes (its template with the patient id), relative to the base → searchset JSON."""
    _answers: Mapping[tuple[str, tuple[tuple[str, str], ...]], bytes] = field(repr=False)

    def answer(self, relative: str) -> bytes | None:
        """The JSON body for a GET of ``relative`` (``Observation?patient=…&code=…``, ``Patient/<id>``,
        ``Medication/<id>``; encoding and parameter order do not matter); ``None`` for a 404."""
        return self._answers.get(_normalised(relative))


@functools.cache
def fhir_data() -> FhirData:
    """The resources and answers for :func:`order_sign_no_prefetch` (the prefetch of workload 1, as searches)."""
    full = order_sign_full()
    pid = str(full.request["context"]["patientId"])
    templates = prefetch_templates(load_knowledge(DEFAULT_KNOWLEDGE_DIR))
    prefetch = full.request["prefetch"]
    answers: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
    searches: dict[str, bytes] = {}
    for key, template in templates.items():
        relative = template.replace("{{context.patientId}}", pid)
        value = prefetch.get(key)
        body = orjson.dumps(value if value is not None else _empty_searchset())
        if "?" in relative:
            searches[relative] = body
        answers[_normalised(relative)] = body
    bundle = examples.bundle_for(*_FULL, now=full.now)
    resources = tuple(entry["resource"] for entry in bundle["entry"])
    for resource in resources:  # reads: the Patient, and any Medication a record or draft names
        if resource["resourceType"] in ("Patient", "Medication"):
            answers[(f"{resource['resourceType']}/{resource['id']}", ())] = orjson.dumps(resource)
    return FhirData(resources, searches, answers)


# ---------------------------------------------------------------- 3: the whole history


HISTORY_C1 = build.at(2025, 10, 6, 9)
HISTORY_CYCLE_DAYS = 43            # 28 infusion days + 15 treatment-free days
HISTORY_VIEW = HISTORY_C1 + 3 * HISTORY_CYCLE_DAYS * build.DAY + 9 * build.DAY + 5 * build.HOUR
"""Cycle 4 day 10, 14:00: the 7-day bag of cycle 4 running."""

_LOCAL_LAB = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"   # a site's own lab codes (big_charts.py)
_LOINC_CHEM = {"potassium": ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.1),
               "creatinine": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.9)}
# CBC and the rest of the chemistry panel: local codes only (no LOINC code for them in our sources).
_LOCAL_LABS = {"wbc": ("1525101", "WBC", "10*3/uL", 5.2), "hgb": ("1525102", "Hemoglobin", "g/dL", 11.8),
               "plt": ("1525103", "Platelet count", "10*3/uL", 182), "anc": ("1525104", "Neutrophils, absolute",
                                                                            "10*3/uL", 3.1),
               "sodium": ("1525110", "Sodium", "mmol/L", 139), "glucose": ("1525111", "Glucose", "mg/dL", 96)}
# Epic flowsheet rows (real-world-charting.md §3: FLO 5 BP, 8 Heart Rate, 9 Resp + LOINC 9279-1); temperature
# and SpO2 rows carry a site's local ids.
_VITALS: list[tuple[str, str, dict[str, Any]]] = [
    ("8", "Heart Rate", {"valueQuantity": build.q(78, "/min")}),
    ("5", "BP", {"valueString": "118/72"}),
    ("9", "Resp", {"valueQuantity": build.q(16, "/min")}),
    ("6", "Temp", {"valueQuantity": build.q(36.8, "Cel")}),
    ("10", "SpO2", {"valueQuantity": build.q(97, "%")}),
]
_NEURO: list[tuple[str, str, dict[str, Any]]] = [
    ("3040110", "Seizure activity", {"valueString": "Not observed"}),
    ("3040110", "Seizure activity", {"valueCodeableConcept": build.ABSENT}),
    ("3040120", "ICE score", {"valueQuantity": {"value": 10, **build.SCORE}}),
    ("3040123", "Neuro assessment", {"valueString": "ICE 10/10 - no ICANS, A&O x4, follows commands"}),
    ("3040130", "CRS assessment", {"valueString": "No CRS - afebrile, normotensive"}),
]
_NOTES = [
    "Tolerating BLINCYTO infusion well. Pump running, line intact, site clean and dry.",
    "Ambulating in hallway, eating 75% of meals. Family at bedside.",
    "Home infusion visit: bag changed per schedule, patient denies complaints.",
]
# One round of the mix: 9 labs, 5 vital signs, 3 neuro/CRS checks, 1 free-text note (18 Observations).
_MIX = (["liver"] * 3 + ["chem"] * 2 + ["cbc"] * 4 + ["vital"] * 5 + ["neuro"] * 3 + ["note"])


def _history_chart(observations: int, administrations: int) -> tuple[str, list[dict[str, Any]]]:
    pid = f"bench-history-{observations}-{administrations}"
    chart = build.Chart(pid)
    build.patient_of(build.ADULT)(chart)
    starts = [HISTORY_C1 + i * HISTORY_CYCLE_DAYS * build.DAY for i in range(4)]
    course = [build.rr_c1(starts[0])] + [build.rr_cn(n + 1, s) for n, s in enumerate(starts) if n > 0]
    build.add_course(chart, build.ADULT, course)
    for cyc, days in zip(course, (9, 2, 2, 2), strict=True):
        build.nursing_checks(chart, f"c{cyc.number}", cyc.start, days)

    def kinds(rtype: str) -> int:
        return sum(1 for e in chart.entries if e.resource["resourceType"] == rtype and e.t <= HISTORY_VIEW)

    # Rate Verify at 07:00 and 19:00 while a bag runs, at its rate, until the administrations are all there.
    bags = [e for e in chart.entries if e.resource["resourceType"] == "MedicationAdministration"
            and "effectivePeriod" in e.resource and e.t <= HISTORY_VIEW]
    slots: list[tuple[dt.datetime, float]] = []
    for bag in bags:
        end = min(bag.end or HISTORY_VIEW, HISTORY_VIEW)
        t = bag.t.replace(minute=0) + build.HOUR
        while t < end - build.HOUR:
            if t.hour in (7, 19):
                slots.append((t, float(bag.resource["dosage"]["rateQuantity"]["value"])))
            t += build.HOUR
    verify = administrations - kinds("MedicationAdministration")
    if not 0 <= verify <= len(slots):
        raise ValueError(f"administrations must be between {kinds('MedicationAdministration')} and "
                         f"{kinds('MedicationAdministration') + len(slots)}")
    step = len(slots) / verify if verify else 0
    for i in range(verify):
        t, ug = slots[int(i * step)]
        rate_verify(chart, f"rv-{t:%Y%m%d%H}", t, ug)

    # Observations: the rest of the record, spread evenly from a day before cycle 1 to an hour before the view.
    filler = observations - kinds("Observation")
    if filler < 0:
        raise ValueError(f"observations must be at least {kinds('Observation')}")
    first, last = HISTORY_C1 - build.DAY, HISTORY_VIEW - build.HOUR
    for i in range(filler):
        when = first + (last - first) * i / max(filler, 1)
        when = when.replace(second=0, microsecond=0)
        _history_observation(chart, i, _MIX[i % len(_MIX)], when)
    resources, _ = chart.snapshot(HISTORY_VIEW)
    return pid, resources


def _history_observation(chart: build.Chart, i: int, kind: str, when: dt.datetime) -> None:
    local = f"h{i:05d}"
    envelope = {"meta": {"versionId": "1", "lastUpdated": build.iso(when + 2 * build.HOUR)},
                "encounter": {"reference": f"Encounter/{chart.id('enc')}-{when:%Y%m}",
                              "display": "Hematology Oncology"}}
    if kind == "liver":
        analyte = ("alt", "ast", "bili")[i // len(_MIX) % 3]
        value = {"alt": 24 + i % 9, "ast": 21 + i % 7, "bili": 0.5 + (i % 4) / 10}[analyte]
        chart.lab(local, when, analyte, value)
        chart.entries[-1].resource.update(envelope)
    elif kind in ("chem", "cbc"):
        if kind == "chem":
            name = ("potassium", "creatinine", "sodium", "glucose")[i // len(_MIX) % 4]
        else:
            name = ("wbc", "hgb", "plt", "anc")[i // len(_MIX) % 4]
        if name in _LOINC_CHEM:
            code, display, unit, value = _LOINC_CHEM[name]
            coding = [{"system": build.LOINC, "code": code, "display": display}]
        else:
            code, display, unit, value = _LOCAL_LABS[name]
            coding = [{"system": _LOCAL_LAB, "code": code, "display": display}]
        chart._obs(local, {"coding": coding, "text": display}, when,
                   valueQuantity=build.q(value, unit),
                   interpretation=[{"coding": [{"system":
                                                "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                "code": "N", "display": "Normal"}], "text": "Normal"}],
                   **envelope)
    elif kind == "vital":
        row_id, row, value = _VITALS[i % len(_VITALS)]
        chart.flowsheet(local, when, row, row_id=row_id, category="vital-signs", entered_after=12 * build.MIN,
                        **value, **envelope)
    elif kind == "neuro":
        row_id, row, value = _NEURO[i % len(_NEURO)]
        chart.flowsheet(local, when, row, row_id=row_id, **value, **envelope)
    else:
        chart.flowsheet(local, when, "Nursing note", row_id="3040900", category=None,
                        valueString=_NOTES[i // len(_MIX) % len(_NOTES)], **envelope)


def _whole(resources: Sequence[Mapping[str, Any]], template: str, pid: str) -> dict[str, Any] | None:
    url = template.replace("{{context.patientId}}", pid)
    return build._searchset(list(resources), url)


@functools.cache
def patient_view_history(observations: int, administrations: int = 200) -> Workload:
    """Patient-view, cycle 4 day 10 of a correct adult R/R course, every record in prefetch (``_count`` ignored).

    Cards: ``therapy-status`` (info) only — no warning, no critical."""
    pid, resources = _history_chart(observations, administrations)
    templates = prefetch_templates(load_knowledge(DEFAULT_KNOWLEDGE_DIR))
    prefetch = build.prefetch_for(pid, resources, templates)
    obs = sorted((r for r in resources if r["resourceType"] == "Observation"), key=build._obs_time, reverse=True)
    body_codes = {"29463-7", "8302-2"}
    liver = {spec["code"] for spec in build.LAB_SPECS.values()}
    prefetch["bodySize"] = _whole([o for o in obs if build._codes_of(o) & body_codes], templates["bodySize"], pid)
    prefetch["labs"] = _whole([o for o in obs if build._codes_of(o) & liver], templates["labs"], pid)
    prefetch["toxicityObservations"] = _whole(obs, templates["toxicityObservations"], pid)
    request: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()), "hook": "patient-view",
        "context": {"userId": "Practitioner/bench-oncologist", "patientId": pid},
        "prefetch": prefetch,
    }
    now = _now()
    delta = dt.timedelta(seconds=int((now - HISTORY_VIEW).total_seconds()))
    days = (now.date() - HISTORY_VIEW.date()).days
    shifted: dict[str, Any] = examples.shift_dates(request, delta=delta, days=days)
    return _workload(f"patient-view, {observations} Observations", PATIENT_VIEW, shifted, now, ["therapy-status"])
