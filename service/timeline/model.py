"""The patient timeline: the vocabulary shared by the timeline builders and every rule.

Built once per hook call from FHIR dicts (``service.timeline.build_timeline``); rules read it and
never see FHIR JSON. Times are timezone-aware; a value that arrived as a bare date keeps
``date_only=True`` so interval rules can refuse to guess.

Ownership: the medication side (orders, infusions, steroids, body size, course, regimen) and the
threshold side (labs, toxicity) are built by separate modules of this package; both read this file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

HookName = Literal["order-sign", "order-select", "patient-view"]
UlnSource = Literal["reference-range", "reference-range-text", "site-default"]
"""Where a lab's ULN came from: a range's ``high``, a range's ``text`` ("<40 U/L"), or the site's default."""


@dataclass(frozen=True)
class DailyDose:
    """An order's or administration's blinatumomab dose, normalised to µg/day.

    ``ug_per_day`` is ``None`` when it cannot be computed (then ``problem`` says why, e.g.
    ``rate-without-concentration``, ``unit-not-convertible``, ``no-dose``). A BSA-based order keeps its
    ``ug_per_m2_per_day``; ``ug_per_day`` is then filled only when a BSA is known.
    """

    ug_per_day: float | None
    basis: str
    """How it was derived: ``rateQuantity``, ``rateRatio``, ``doseQuantity/duration``, ``doseQuantity/day``…"""
    display: str
    """As ordered, e.g. ``"28 ug/d"`` or ``"5 mL/h"``."""
    ug_per_m2_per_day: float | None = None
    per_kg: bool = False
    problem: str | None = None
    unit_slip: str | None = None
    """A recognised slip the dose-limit card names: ``mg-for-ug`` or ``per-hour-for-per-day``."""


@dataclass(frozen=True)
class BlinOrder:
    """A blinatumomab MedicationRequest (draft, active or past)."""

    ref: str
    """``MedicationRequest/<id>``"""
    resource: Mapping[str, Any]
    """The order as received, for ``update``/``delete`` suggestions."""
    status: str
    draft: bool
    """Came from ``context.draftOrders``."""
    in_focus: bool
    """The order the hook asks about: every blinatumomab draft at order-sign, the ``selections`` at order-select."""
    start: dt.datetime | None
    start_date_only: bool
    dose: DailyDose
    explicit_cycle: int | None = None
    explicit_day: int | None = None
    """From "Cycle N Day D" / "CnDd" in ``dosageInstruction.text`` or ``note`` (wins over history)."""
    instantiates: tuple[str, ...] = ()
    bag_hours: float | None = None
    medication_unresolved: str | None = None
    """``Medication/<id>`` of a draft whose Medication could not be had (not prefetched, not on ``fhirServer``):
    the drug is known only from the order's text, its strength not at all (dose-unverifiable names it)."""


@dataclass(frozen=True)
class InfusionPeriod:
    """One blinatumomab MedicationAdministration (one bag or a run of bags)."""

    ref: str
    start: dt.datetime
    end: dt.datetime | None
    """``None`` while the infusion is running."""
    status: str
    ug_per_day: float | None
    stop_reason: Literal["overdose", "flush", "adverse-event"] | None = None
    date_only: bool = False
    dose: DailyDose | None = None
    """The administration's dose as charted (rate, display, problem); ``ug_per_day`` repeats its value."""


@dataclass(frozen=True)
class SteroidEvent:
    """A corticosteroid order or administration (candidate premedication)."""

    ref: str
    agent: str
    """Ingredient concept: ``dexamethasone``, ``prednisone``, ``prednisolone``, ``methylprednisolone``."""
    kind: Literal["order", "administration"]
    time: dt.datetime | None
    date_only: bool
    dose_mg: float | None
    draft: bool = False
    dose_mg_per_m2: float | None = None
    """A BSA-based steroid dose (``mg/m2``); ``dose_mg`` is then filled only when a BSA is known."""
    status: str = ""
    scheduled: tuple[dt.datetime, ...] = ()
    """An order's scheduled times (``timing.event``, ``timing.repeat.boundsPeriod.start``); empty when untimed.
    ``authoredOn`` is when it was written, never when it is given."""
    dose_unit: str | None = None
    """The dose unit as charted when it is not a mass (``{pill}``): the dose check is then skipped."""


@dataclass(frozen=True)
class BodySize:
    weight_kg: float | None = None
    weight_at: dt.datetime | None = None
    weight_stale: bool = False
    weight_problem: str | None = None
    """``missing``, ``unit-missing``, ``unit-not-convertible``, ``straddles-45kg``…"""
    height_cm: float | None = None
    bsa_m2: float | None = None
    bsa_method: Literal["observation", "mosteller"] | None = None
    age_years: float | None = None


@dataclass(frozen=True)
class Regimen:
    id: str
    """``relapsed-refractory``, ``mrd-positive`` or ``consolidation`` (keys of ``regimens.toml``)."""
    why: str
    """``order-canonical``, ``condition``, ``default`` — the card says which."""
    evidence: str | None = None


@dataclass(frozen=True)
class Interruption:
    """A stop of the blinatumomab infusion and the restart after it (the restart may be the order now being placed)."""

    stopped: dt.datetime
    restarted: dt.datetime | None
    gap: dt.timedelta
    reason: Literal["overdose", "flush", "adverse-event"] | None = None


@dataclass(frozen=True)
class CoursePosition:
    """Where an order (or today's infusion) sits in the course."""

    cycle: int
    day: int
    source: Literal["order-text", "history", "default"]
    event: Literal["cycle-start", "step", "re-escalation", "restart", "continuation", "dose-change"]
    """What starts at ``at``: the trigger for premedication and dose checks. ``dose-change``: a rate increase
    that is no scheduled step (not R/R C1 from day 8, not a re-escalation ≥ 7 days after an adverse-event
    restart) — a dose problem for the dose rules, never a premedication trigger."""
    at: dt.datetime | None
    course_start: dt.datetime | None = None
    """First infusion of the current course (seizures are counted from here)."""
    cycle_start: dt.datetime | None = None
    interruption: Interruption | None = None
    previous_cycle_end: dt.datetime | None = None
    previous_cycle_complete: bool = False
    """The previous cycle reached its last infusion day (a TFI applies only after a completed cycle)."""
    ae_restart_at: dt.datetime | None = None
    """The latest restart after an adverse-event interruption in this cycle (the 7-day escalation hold)."""
    derived_cycle: int | None = None
    derived_day: int | None = None
    """What history alone says when the order text named the cycle (``cycle-new-required`` compares them)."""
    date_only: bool = False
    """A time this position rests on arrived as a bare date: interval rules must not guess."""
    previous_cycle: int | None = None
    """The number, as on record, of the cycle before this one (``None`` when no earlier cycle is on record)."""


@dataclass(frozen=True)
class LabResult:
    analyte: Literal["alt", "ast", "bilirubin"]
    ref: str
    at: dt.datetime
    value: float | None
    unit: str | None
    uln: float | None
    uln_source: UlnSource | None
    ratio: float | None
    """value ÷ ULN in the same unit; ``None`` when not evaluable (``problem`` says why)."""
    problem: str | None = None
    uln_unit: str | None = None
    """The unit of ``uln`` as given (the range's or the site default's), which may differ from ``unit``."""


@dataclass(frozen=True)
class ToxicityRecord:
    kind: Literal["crs", "neuro", "seizure", "other", "overdose", "flush"]
    ref: str
    at: dt.datetime
    grade: int | None
    grade_from_text: bool = False
    label: str = ""
    """What the record calls the event (its text or display), for the card."""
    grading_system: str | None = None
    absent: bool = False
    """A negative, absent or resolved finding ("Seizure activity: Not observed", "No CRS", a Condition's
    abatement): never an event; for a graded kind it has grade 0 and shows an earlier episode resolved."""
    count: int = 1
    """Seizures this record reports ("Seizures this shift: 2"); 1 for every other record."""
    date_only: bool = False
    """The time arrived as a bare date (a problem-list onset): episodes match it by calendar day."""
    attributed_elsewhere: str | None = None
    """An AdverseEvent attributed to something other than blinatumomab: what it names (a drug, or
    ``"unrelated"``). Such an event gives no blinatumomab interrupt/discontinue card."""
    name_key: str = ""
    """An "other" event's name without grade words, so records of one event group together."""


@dataclass(frozen=True)
class BagPreparation:
    """How a blinatumomab order's or administration's bag is prepared, as far as the record says (``bags.py``)."""

    ref: str
    hours: float | None
    """The bag's duration (24, 48, 72, 96, 168 h), when the record states one."""
    preservative: bool
    """Preservative-containing (bacteriostatic saline with benzyl alcohol): by its duration or by its text."""
    evidence: Literal["timing", "infuse-over-time", "duration-text", "preservative-text"] | None = None
    """What says so: the order's ``timing``, the MAR's infuse-over-time extension, a duration written in text
    ("over 96 hr"), or text naming the preservative ("Bacteriostatic 0.9% Sodium Chloride")."""
    evidence_text: str | None = None
    """The chart text read, for the two text evidences."""
    from_order: str | None = None
    """An administration that says nothing itself: the order (``request``) whose bag it is."""


@dataclass(frozen=True)
class Timeline:
    """Everything the rules see for one hook call."""

    now: dt.datetime
    hook: HookName
    orders: tuple[BlinOrder, ...] = ()
    """Blinatumomab orders: drafts first, then active and past ones."""
    infusions: tuple[InfusionPeriod, ...] = ()
    """Blinatumomab administrations, oldest first."""
    steroids: tuple[SteroidEvent, ...] = ()
    body: BodySize = field(default_factory=BodySize)
    regimen: Regimen = field(default_factory=lambda: Regimen(id="relapsed-refractory", why="default"))
    positions: Mapping[str, CoursePosition] = field(default_factory=dict)
    """Course position of each in-focus order (by ``BlinOrder.ref``); the running infusion's under ``"current"``."""
    labs: tuple[LabResult, ...] = ()
    toxicities: tuple[ToxicityRecord, ...] = ()
    patient_ref: str | None = None
    """``Patient/<id>`` from ``context.patientId``: the subject of the orders our suggestions create."""
    bags: Mapping[str, BagPreparation] = field(default_factory=dict)
    """Bag preparation of the blinatumomab orders and administrations, by ref (only those the record describes)."""

    @property
    def focus_orders(self) -> tuple[BlinOrder, ...]:
        return tuple(o for o in self.orders if o.in_focus)
