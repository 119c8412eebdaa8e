"""The CDS services we offer: id, hook, words, prefetch templates and the rule ids each may emit.

Discovery (``GET /cds-services``) is generated from this catalog, and so is the list of prefetch keys
the pipeline resolves. Prefetch templates follow CDS Hooks 2.0 exactly: tokens are only root-level
context fields (``{{context.patientId}}``), queries stay in the spec's subset (read; type search by
reference and token with ``system|code``; ``_sort``; ``_count``) but for one ``_include``, and searches are
by patient and code wherever a rule looks at specific codes and the code sits on the resource searched.
Code lists come from ``codes.toml``.

Medication records are the exception. FHIR's ``code`` parameter of MedicationRequest and MedicationAdministration
reads ``medicationCodeableConcept`` only, so a chart whose records point at a Medication (``Medication/<id>``,
real-world-charting.md §1–2) would lose every one of them. So ``medicationRequests`` and
``medicationAdministrations`` search by patient alone, filtered
locally by the timeline, with ``_include=<type>:medication`` so the referenced Medications come in the same answer
(``_include`` is outside the subset the spec recommends; a client or server that ignores it costs one read per
needed Medication, ``service.fhir.prefetch``). ``_count=200`` keeps a long chart within the page cap.

Toxicity records (CRS, ICANS, other adverse events) have no standard code: sites record them with
local codes or only as text, so the ``toxicityObservations``, ``conditions`` and ``adverseEvents``
templates deliberately carry no code filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from service.knowledge import Knowledge
from service.rules import RULE_IDS
from service.schemas import OrderSelectContext, OrderSignContext, PatientViewContext
from service.timeline.model import HookName

# order-select / order-sign: every rule but the therapy summary.
_ORDER_RULES: tuple[str, ...] = tuple(r for r in RULE_IDS if r != "therapy-status")

# patient-view: threshold and administration rules (the running infusion's dose among them), plus the therapy
# summary — not the checks that only an order being placed has (cycle text, unverifiable order data).
_PATIENT_VIEW_RULES: tuple[str, ...] = tuple(
    r for r in RULE_IDS if r not in ("dose-unverifiable", "cycle-new-required")
)


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: HookName
    title: str
    description: str
    prefetch: dict[str, str]
    rule_ids: tuple[str, ...]
    context_model: type[BaseModel]
    usage_requirements: str | None = None

    def discovery(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": self.prefetch,
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


_MEDICATION_PAGE = 200
"""``_count`` of the medication searches: with ``BLINA_CDS_FHIR_MAX_PAGES`` (20) up to 4,000 orders or
administrations are read before a 412 (they are unsorted: the record left unread could be the one that matters)."""


def prefetch_templates(kb: Knowledge) -> dict[str, str]:
    """The prefetch templates every service advertises (the rules need all of them)."""
    codes = kb.codes
    patient = "{{context.patientId}}"
    return {
        "patient": f"Patient/{patient}",
        "medicationRequests": (
            f"MedicationRequest?patient={patient}&_include=MedicationRequest:medication&_count={_MEDICATION_PAGE}"
        ),
        "medicationAdministrations": (
            f"MedicationAdministration?patient={patient}&_include=MedicationAdministration:medication"
            f"&_count={_MEDICATION_PAGE}"
        ),
        "bodySize": (
            f"Observation?patient={patient}"
            f"&code={codes.token_list('body_weight', 'body_height', 'body_surface_area')}&_sort=-date&_count=50"
        ),
        "labs": (
            f"Observation?patient={patient}"
            f"&code={codes.token_list('alt', 'ast', 'bilirubin_total')}&_sort=-date&_count=100"
        ),
        "toxicityObservations": f"Observation?patient={patient}&_sort=-date&_count=200",
        "conditions": f"Condition?patient={patient}",
        "adverseEvents": f"AdverseEvent?subject=Patient/{patient}",
    }


_USAGE = (
    "Works best with every prefetch key honoured; any key not prefetched is fetched from fhirServer "
    "(with fhirAuthorization when given). Without either, the service answers 412."
)


def build_catalog(kb: Knowledge) -> dict[str, CdsService]:
    prefetch = prefetch_templates(kb)
    services = (
        CdsService(
            id="blinatumomab-order-sign",
            hook="order-sign",
            title="Blinatumomab (Blincyto) order safety check",
            description=(
                "At signing, checks a blinatumomab order for the dose due on this cycle day, weight/BSA "
                "band and maximum, the required dexamethasone premedication, and label interruption rules "
                "(CRS, neurotoxicity, seizures, other grade 3-4 events, ALT/AST > 5x ULN, bilirubin > 3x ULN)."
            ),
            prefetch=prefetch,
            rule_ids=_ORDER_RULES,
            context_model=OrderSignContext,
            usage_requirements=_USAGE,
        ),
        CdsService(
            id="blinatumomab-order-select",
            hook="order-select",
            title="Blinatumomab (Blincyto) order entry check",
            description=(
                "When a blinatumomab order is selected, checks the selected order's dose, premedication and "
                "the label's interruption rules, so problems are fixed before signing."
            ),
            prefetch=prefetch,
            rule_ids=_ORDER_RULES,
            context_model=OrderSelectContext,
            usage_requirements=_USAGE,
        ),
        CdsService(
            id="blinatumomab-patient-view",
            hook="patient-view",
            title="Blinatumomab (Blincyto) therapy status and safety",
            description=(
                "For a patient on blinatumomab in the last 90 days: regimen, cycle and day, current dose, next "
                "premedication due, and any label interruption or discontinuation rule the chart meets."
            ),
            prefetch=prefetch,
            rule_ids=_PATIENT_VIEW_RULES,
            context_model=PatientViewContext,
            usage_requirements=_USAGE,
        ),
    )
    return {s.id: s for s in services}
