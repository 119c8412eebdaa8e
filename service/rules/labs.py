"""Liver-test rules: hepatic-interrupt and lab-unevaluable.

The label: interrupt blinatumomab if the transaminases rise to greater than 5 times the upper limit of
normal or bilirubin to more than 3 times. The timeline already holds, per analyte, the latest accepted
result and the ratio to its ULN (``service.timeline.labs``); these rules compare the ratio with the
knowledge's multiple and report what they used. An earlier breach that has since normalised is not
the latest result, so it gives no card.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from service.knowledge import Knowledge
from service.rules import phrases
from service.rules.base import Finding
from service.rules.medication import context_facts, num
from service.rules.suggestions import remove_order
from service.timeline.course import CURRENT
from service.timeline.model import CoursePosition, LabResult, Timeline

_UNEVALUABLE = ("no-uln", "uln-ambiguous", "unit-not-convertible")


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    yield from hepatic_interrupt(timeline, kb)
    yield from lab_unevaluable(timeline, kb)


def hepatic_interrupt(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    """When the latest accepted ALT or AST is more than 5×ULN, or total bilirubin more than 3×ULN
    (strictly greater; the multiples come from ``labs.toml``),
    Then one critical finding lists every breach; at order-sign/order-select it suggests removing each
    draft blinatumomab order in focus.
    """
    # Rounded before comparing so float noise (3.6 / 1.2 = 3.0000000000000004) never makes "exactly 3×" fire.
    breaches = [
        lab for lab in timeline.labs
        if lab.ratio is not None and round(lab.ratio, 9) > kb.labs.analytes[lab.analyte].multiple_of_uln
    ]
    if not breaches:
        return
    removable = [o for o in timeline.focus_orders if o.draft] if timeline.hook != "patient-view" else []
    listed = [_lab_facts(lab, kb) for lab in breaches]
    facts: dict[str, Any] = {
        **card_context(timeline, kb),
        "breaches": listed,
        "uses_site_default": any(lab.uln_source == "site-default" for lab in breaches),
        "orders": [o.ref for o in removable],
        "uln_multiples": uln_multiples(kb),
        # phrases the card prints as they are
        "breach_list": ", ".join(f"{b['display']} {b['ratio_display']}×ULN" for b in listed),
        "limit_list": "/".join(f"{b['limit']}×" for b in listed),
        "breach_lines": [_breach_line(b) for b in listed],
        "removes_draft_order": bool(removable),
        **threshold_facts(kb),
    }
    yield Finding(
        rule_id="hepatic-interrupt",
        indicator="critical",
        facts=facts,
        actions=tuple(remove_order(o) for o in removable),
        about=breaches[0].ref,
    )


def lab_unevaluable(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    """When the latest ALT, AST or total bilirubin has no usable ULN (no normal reference range and no
    site default, or ranges that disagree) or a unit that cannot be converted to its ULN's unit,
    Then one warning lists those results (the ×ULN threshold cannot be checked).
    """
    problems = [lab for lab in timeline.labs if lab.problem in _UNEVALUABLE]
    if not problems:
        return
    yield Finding(
        rule_id="lab-unevaluable",
        indicator="warning",
        facts={**card_context(timeline, kb), "labs": (listed := [_lab_facts(lab, kb) for lab in problems]),
               "uln_multiples": uln_multiples(kb),
               "lab_list": ", ".join(lab["display"] for lab in listed),
               "lab_lines": [_unevaluable_line(lab) for lab in listed],
               **threshold_facts(kb)},
        about=problems[0].ref,
    )


def uln_multiples(kb: Knowledge) -> dict[str, float | int | None]:
    """Each analyte's interruption threshold (× ULN), for cards that state the rule, not only a breach."""
    return {name: num(analyte.multiple_of_uln) for name, analyte in kb.labs.analytes.items()}


def threshold_facts(kb: Knowledge) -> dict[str, Any]:
    """The label's multiples as the cards state the rule: ``alt_limit``… and whether ALT and AST share one."""
    multiples = uln_multiples(kb)
    return {"alt_limit": multiples.get("alt"), "ast_limit": multiples.get("ast"),
            "bilirubin_limit": multiples.get("bilirubin"),
            "same_transaminase_limit": multiples.get("alt") == multiples.get("ast")}


ULN_SOURCES: dict[str | None, str] = {
    "site-default": "the site's configured default ULN, because the result carried no reference range",
    "reference-range-text": "read from the text of the result's reference range, which gave no usable numeric "
                            "upper limit",
}
"""Where a ULN came from, as a card says it (any other source: the result's reference range)."""

PROBLEMS: dict[str | None, str] = {
    "no-uln": "no usable upper limit in the result's normal reference range (none given, or its text could not "
              "be read) and no site default ULN configured",
    "uln-ambiguous": "several reference ranges apply and give different upper limits",
}
"""Why a result cannot be compared, as a card says it (any other problem: the unit cannot be converted)."""


def _with_unit(value: float | int | None, unit: str | None) -> str:
    return f"{value} {unit}" if unit else f"{value}"


def _breach_line(b: dict[str, Any]) -> str:
    """``ALT 200 U/L on …: 5.01 × ULN (ULN 40 U/L, from the result's reference range); the threshold is …``."""
    source = ULN_SOURCES.get(b["uln_source"], "from the result's reference range")
    return (f"{b['display']} {_with_unit(b['value'], b['unit'])} on {b['at']}: {b['ratio_display']} × ULN "
            f"(ULN {_with_unit(b['uln'], b['uln_unit'])}, {source}); the threshold is more than {b['limit']} × ULN.")


def _unevaluable_line(lab: dict[str, Any]) -> str:
    """``ALT 200 U/L on …: no usable upper limit …``."""
    value = _with_unit(lab["value"], lab["unit"]) if lab["value"] is not None else "(no value)"
    reason = PROBLEMS.get(lab["problem"], "the result's unit cannot be converted to the unit of its upper limit "
                                          "of normal")
    return f"{lab['display']} {value} on {lab['at']}: {reason}."


def _lab_facts(lab: LabResult, kb: Knowledge) -> dict[str, Any]:
    analyte = kb.labs.analytes[lab.analyte]
    return {
        "analyte": lab.analyte,
        "display": analyte.display,
        "value": num(lab.value),
        "unit": lab.unit,
        "uln": num(lab.uln),
        "uln_unit": lab.uln_unit,
        "uln_source": lab.uln_source,
        "ratio": round(lab.ratio, 2) if lab.ratio is not None else None,
        "ratio_display": ratio_display(lab.ratio, analyte.multiple_of_uln),
        "limit": num(analyte.multiple_of_uln),
        "at": when(lab.at),
        "ref": lab.ref,
        "problem": lab.problem,
    }


def ratio_display(ratio: float | None, limit: float, *, min_digits: int = 1, max_digits: int = 4) -> str | None:
    """A multiple of ULN as a card prints it, never rounded onto (or across) its limit.

    ``5.004`` next to "> 5×" is shown ``5.004``, not ``5.0``; ``4.996`` is shown ``4.996``, not ``5.0``. Digits are
    added (up to ``max_digits``) until the printed value is on the same side of the limit as the true one.
    """
    if ratio is None:
        return None
    above = round(ratio, 9) > limit
    for digits in range(min_digits, max_digits + 1):
        shown = round(ratio, digits)
        if (shown > limit) == above and shown != limit:
            return f"{ratio:.{digits}f}"
    return f"{ratio:.{max_digits}f}"


def position_in_focus(timeline: Timeline) -> CoursePosition | None:
    """The course position of the order in focus, else of the running infusion; ``None`` when unknown."""
    return next((timeline.positions[o.ref] for o in timeline.focus_orders if o.ref in timeline.positions),
                timeline.positions.get(CURRENT))


def course_position_facts(timeline: Timeline) -> dict[str, Any]:
    """``cycle``/``day`` of the order in focus (else of the running infusion), ``None`` when unknown."""
    position = position_in_focus(timeline)
    return {"cycle": position.cycle if position else None, "day": position.day if position else None}


def card_context(timeline: Timeline, kb: Knowledge) -> dict[str, Any]:
    """The context every card shows (regimen, course position, weight band, age: the shared ``context`` block),
    for the position in focus. A finding puts its own facts after these, so its ``event_at`` or ``weight_kg``
    is the one it means."""
    return context_facts(timeline, kb, position_in_focus(timeline))


def when(value: dt.datetime | None) -> str | None:
    """A time as every card prints it (``phrases.clock``: ``2026-03-09 06:00 UTC``, ``… UTC+01:00``)."""
    return phrases.clock(value)
