"""Bag preparation for the patient's weight: preservative-bag-weight.

Bags for 72 h, 96 h and 7 days are prepared with Bacteriostatic 0.9% Sodium Chloride (0.9% benzyl alcohol), which
the label advises against below a weight (``dosing.toml [preservative_bags]``: 5.4 kg now, 22 kg in the 2020 label;
clinical-rules.md E32). The timeline says which orders and administrations are such bags (``timeline/bags.py``);
this rule compares them with the latest weight.

A family of its own rather than a kind of ``dose-weight-band``: the dose may be right to the microgram while the
diluent is wrong for the child, the fix is a different preparation (not a different dose), and feedback analytics
should count it apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service.knowledge import Knowledge
from service.rules.base import Finding
from service.rules.medication import administration_facts, context_facts, day, num, order_facts, when
from service.rules.phrases import bag_phrase, either
from service.timeline.course import CURRENT
from service.timeline.model import BagPreparation, BlinOrder, InfusionPeriod, Timeline


def evaluate(timeline: Timeline, kb: Knowledge) -> Iterator[Finding]:
    """preservative-bag-weight — When a blinatumomab order in focus (order-sign, order-select) or the bag running
    now is preservative-containing (its duration is 72 h, 96 h or 7 days, or its text names bacteriostatic saline,
    benzyl alcohol or a preservative) and the latest weight is below ``min_weight_kg`` (5.4 kg; exactly 5.4 kg is
    not below),
    Then warning: prepare preservative-free bags (24 h or 48 h) instead. No suggestion: the fix is a new preparation
    by pharmacy, not an edit of the order.

    One error, one card: when a draft order and the running bag both are such bags, the order's card names the
    running bag. No weight on record: no card (dose-unverifiable asks for the weight at order time).
    """
    rule = kb.dosing.preservative_bags
    weight = timeline.body.weight_kg
    if weight is None or weight >= rule.min_weight_kg:
        return
    running = _running(timeline)
    running_bag = timeline.bags.get(running.ref) if running is not None else None
    if running_bag is not None and not running_bag.preservative:
        running_bag = None
    found = False
    for order in timeline.focus_orders if timeline.hook != "patient-view" else ():
        bag = timeline.bags.get(order.ref)
        if bag is None or not bag.preservative:
            continue
        found = True
        also = running if running_bag is not None else None
        yield _finding(timeline, kb, bag, order=order, infusion=None, also=also)
    if running is not None and running_bag is not None and not found:
        yield _finding(timeline, kb, running_bag, order=None, infusion=running, also=None)


def _running(timeline: Timeline) -> InfusionPeriod | None:
    """The newest blinatumomab administration running now."""
    return next((p for p in reversed(timeline.infusions) if p.end is None and p.start <= timeline.now), None)


def _finding(timeline: Timeline, kb: Knowledge, bag: BagPreparation, *, order: BlinOrder | None,
             infusion: InfusionPeriod | None, also: InfusionPeriod | None) -> Finding:
    rule = kb.dosing.preservative_bags
    ref = order.ref if order is not None else bag.ref
    position = timeline.positions.get(ref) if order is not None else timeline.positions.get(CURRENT)
    preservative_free = sorted(set(kb.dosing.bags.durations_hours) - set(rule.durations_hours))
    facts: dict[str, Any] = {
        **context_facts(timeline, kb, position),
        **order_facts(order),
        **administration_facts(infusion),
        "bag_hours": num(bag.hours),
        "bag_phrase": bag_phrase(bag.hours),
        "evidence": bag.evidence,
        "evidence_timing": bag.evidence == "timing",
        "evidence_infuse_over": bag.evidence == "infuse-over-time",
        "evidence_preservative_text": bag.evidence == "preservative-text",
        "evidence_text": bag.evidence_text,
        "from_order": bag.from_order,
        "min_weight_kg": num(rule.min_weight_kg, 1),
        "legacy_min_weight_kg": num(rule.legacy_min_weight_kg, 1),
        "preservative_durations_phrase": either([bag_phrase(h) for h in rule.durations_hours]),
        "preservative_free_phrase": either([bag_phrase(h) for h in preservative_free]),
        "threshold_confidence": rule.confidence,
        "weight_date": day(timeline.body.weight_at),
        "freshness_days": kb.dosing.freshness.weight_days,
        "also_administration_ref": also.ref if also else None,
        "also_administration_start": when(also.start) if also else None,
    }
    return Finding("preservative-bag-weight", "warning", facts, about=ref)
