"""A course given within the label never yields a warning or critical card, at patient-view or at order-sign.

The course is drawn by :func:`tests.properties.courses.courses` (weights and heights, BSA or fixed dosing, the R/R
cycle 1 step on day 8, later cycles after their treatment-free interval, MRD-positive and consolidation regimens,
premedication 0–60 minutes before each start, step and restart, bag changes of 24 h to 7 days with short gaps);
each call sees the chart as the EHR shows it at that moment (``Chart.snapshot``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.catalog import build_catalog
from service.rules import evaluate
from service.timeline import build_timeline
from tests.builders import bundle
from tests.med_helpers import renderer
from tests.properties.courses import Course, courses
from tests.properties.profiles import PROFILE, knowledge

kb = knowledge()
SERVICES = {"order-sign": "blinatumomab-order-sign", "patient-view": "blinatumomab-patient-view"}


def alarms_at(course: Course, hook: str, now: Any, drafts: tuple[str, ...]) -> list[tuple[str, str, dict[str, Any]]]:
    stored, draft = course.snapshot(now, drafts=drafts)
    context: dict[str, Any] = {"userId": "Practitioner/1", "patientId": course.chart.pid}
    if hook == "order-sign":
        context["draftOrders"] = bundle(*draft)
    timeline = build_timeline(hook=hook, context=context, data={"all": stored}, kb=kb, now=now)  # type: ignore[arg-type]
    findings = evaluate(timeline, kb, rule_ids=build_catalog(kb)[SERVICES[hook]].rule_ids)
    for f in findings:
        renderer().render(f)
    return [(f.rule_id, f.indicator, dict(f.facts)) for f in findings if f.indicator != "info"]


@PROFILE
@given(course=courses(), data=st.data())
def test_a_course_within_the_label_gets_no_warning_or_critical_card(course: Course, data: st.DataObject) -> None:
    """Every cycle start and step is asked about (order-sign with the steroid still a draft, and once it is given);
    a few of the other calls (next bags, patient-view while running and in the treatment-free interval) are drawn."""
    calls = list(course.calls())
    starts = [c for c in calls if c[3].startswith(("cycle-start", "step"))]
    others = [c for c in calls if c not in starts]
    picked = data.draw(st.lists(st.sampled_from(others), max_size=3, unique=True)) if others else []
    for hook, now, drafts, what in starts + picked:
        got = alarms_at(course, hook, now, drafts)
        assert not got, f"{hook} at {now.isoformat()} ({what}), drafts {drafts}: " + "; ".join(
            f"{r} {i} {({k: v for k, v in facts.items() if v not in (None, [], {}, False)})}" for r, i, facts in got)
