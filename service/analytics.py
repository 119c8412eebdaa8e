"""``GET /analytics/feedback``: override analytics per rule, for informatics teams.

Same authentication as the CDS endpoints (the EHR's JWT, ``aud`` = this URL; none with ``BLINA_CDS_AUTH=off``)::

    GET /analytics/feedback?since=2026-11-01
    → {"since": "2026-11-01T00:00:00+00:00", "rules": [{"rule_id": "premed-missing", "issued": 40, "accepted": 22,
       "overridden": 9, "override_rate": 0.225, "top_override_reasons": [{"code": …, "display": …, "count": 5}],
       "comments": ["…"]}]}

``since`` is a date (midnight UTC) or an ISO instant with an offset; cards are counted by issue time and
feedback by the time it was received. ``blina-cds feedback report`` prints the same numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from service import openapi
from service.errors import CdsServiceError, InvalidRequest, StoreUnavailable
from service.routes import CallerDep, JSONResponse, StoreDep
from service.store import RuleReport

router = APIRouter()
log = logging.getLogger("blina_cds.analytics")


class ReportUnavailable(StoreUnavailable):
    """503: the store could not be read."""

    def __init__(self) -> None:
        CdsServiceError.__init__(self, "The feedback store could not be read; please retry")


def parse_since(value: str | None) -> dt.datetime | None:
    """``2026-11-01`` (midnight UTC) or an ISO instant with an offset; raises ``ValueError`` otherwise."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: '{value[:40]}' is not a date (YYYY-MM-DD) or an instant with a time zone") from None
    if parsed.tzinfo is None:
        raise ValueError("since: an instant needs a time zone (e.g. 2026-11-01T00:00:00Z)")
    return parsed


def report_body(rules: list[RuleReport], since: dt.datetime | None) -> dict[str, Any]:
    return {"since": since.isoformat() if since else None, "rules": [r.as_dict() for r in rules]}


@router.get("/analytics/feedback", openapi_extra=openapi.ANALYTICS)
async def feedback_analytics(request: Request, caller: CallerDep, store: StoreDep,
                             since: Annotated[str | None, Query(max_length=40)] = None) -> JSONResponse:
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise InvalidRequest(str(exc), expression=["since"]) from None
    reasons_max, comments_max = request.app.state.analytics_limits
    try:
        rules = await store.feedback_report(since=start, reasons_max=reasons_max, comments_max=comments_max)
    except Exception:
        log.exception("feedback report failed")
        raise ReportUnavailable() from None
    return JSONResponse(report_body(rules, start))

