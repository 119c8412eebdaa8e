"""The analyst and tester subcommands of ``blina-cds`` (``service.cli`` registers them)::

    blina-cds cards check [--cards-dir DIR] [--knowledge-dir DIR]
    blina-cds cards placeholders [--write]
    blina-cds preview REQUEST.json [--json] [--cards-dir DIR] [--knowledge-dir DIR]
    blina-cds feedback report [--since DATE] [--format table|json|csv]

Folders default to ``BLINA_CDS_CARDS_DIR`` / ``BLINA_CDS_KNOWLEDGE_DIR`` (site overlays over the shipped files);
the report reads ``BLINA_CDS_DATABASE_URL``. Exit status: 0 fine, 1 problems found (``cards check``), 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from service.errors import CdsServiceError, KnowledgeError


def add_commands(sub: Any) -> None:
    """Register ``cards``, ``preview`` and ``feedback`` on ``blina-cds``'s subparsers."""
    cards = sub.add_parser("cards", help="card files: check them")
    cards_sub = cards.add_subparsers(dest="cards_cmd", required=True)
    check = cards_sub.add_parser("check", help="parse every card and knowledge file and render every card "
                                              "against its rule's example findings (worst case included)")
    _folders(check)
    check.set_defaults(func=cards_check)
    placeholders = cards_sub.add_parser("placeholders", help="per rule, every placeholder its card uses with an "
                                                            "example value (the list in cards/README.md)")
    placeholders.add_argument("--write", action="store_true", help="update the list in cards/README.md")
    placeholders.set_defaults(func=cards_placeholders)

    preview = sub.add_parser("preview", help="the cards a hook request gives, as text or the exact JSON response")
    preview.add_argument("request", help="a hook request JSON file ('-' for standard input)")
    preview.add_argument("--json", action="store_true", help="print the exact CDS Hooks response")
    _folders(preview)
    preview.set_defaults(func=preview_request)

    feedback = sub.add_parser("feedback", help="override analytics")
    fb_sub = feedback.add_subparsers(dest="feedback_cmd", required=True)
    report = fb_sub.add_parser("report", help="per rule: cards issued, accepted, overridden, reasons, comments")
    report.add_argument("--since", help="only cards issued / feedback received since (YYYY-MM-DD or ISO instant)")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.set_defaults(func=feedback_report)


def _folders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cards-dir", type=Path, default=_env_path("BLINA_CDS_CARDS_DIR"),
                        help="a site's card folder (only the files it rewords; default BLINA_CDS_CARDS_DIR)")
    parser.add_argument("--knowledge-dir", type=Path, default=_env_path("BLINA_CDS_KNOWLEDGE_DIR"),
                        help="a site's knowledge folder (only site-policy values; default BLINA_CDS_KNOWLEDGE_DIR)")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


# ---------------------------------------------------------------- cards check


def cards_check(args: argparse.Namespace) -> int:
    from service.tools.cards_check import check

    problems = check(args.cards_dir, args.knowledge_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"cards check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("cards check: every card and knowledge file is fine")
    return 0


def cards_placeholders(args: argparse.Namespace) -> int:
    from service.tools import cards_placeholders as tool

    section = tool.generate()
    if args.write:
        changed = tool.write(tool.README, section)
        print(f"{tool.README}: {'updated' if changed else 'already up to date'}")
    else:
        print(section, end="")
    return 0


# ---------------------------------------------------------------- preview


def preview_request(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        raw = sys.stdin.read() if args.request == "-" else Path(args.request).read_text(encoding="utf-8")
        request = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"blina-cds: cannot read the request: {exc}", file=sys.stderr)
        return 2
    try:
        response, files = asyncio.run(_preview(request, cards_dir=args.cards_dir, knowledge_dir=args.knowledge_dir))
    except KnowledgeError as exc:
        print(f"blina-cds: {exc}", file=sys.stderr)
        return 2
    except CdsServiceError as exc:
        print(f"blina-cds: the service would answer {exc.status_code}: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(response, indent=1, ensure_ascii=False), file=out)
    else:
        out.write(cards_as_text(response, files))
    return 0


async def _preview(request: Any, *, cards_dir: Path | None,
                   knowledge_dir: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The response the service gives ``request`` (same pipeline and renderer), and card uuid → card file."""
    import httpx
    from pydantic import ValidationError

    from service import pipeline
    from service.auth import AUTH_OFF_CALLER
    from service.catalog import build_catalog
    from service.errors import InvalidRequest
    from service.knowledge import load_knowledge
    from service.render import PROVENANCE_KEY, CardRenderer
    from service.rules import RULE_IDS
    from service.schemas import HookRequest
    from service.settings import DEFAULT_CARDS_DIR, DEFAULT_KNOWLEDGE_DIR, Settings
    from service.store import CardMap

    settings = Settings(auth="off")
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=knowledge_dir)
    catalog = build_catalog(kb)
    renderer = CardRenderer.load(cards_dir or DEFAULT_CARDS_DIR, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR,
                                 knowledge_hash=kb.fingerprint)
    if not isinstance(request, dict):
        raise InvalidRequest("the request must be a JSON object")
    try:
        body = HookRequest.model_validate(request)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    service = next((s for s in catalog.values() if s.hook == body.hook), None)
    if service is None:
        raise InvalidRequest(f"no service for hook '{body.hook}' (services: {', '.join(sorted(catalog))})")
    try:
        service.context_model.model_validate(body.context)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(f"context.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    # A FHIR fetch happens only for prefetch keys the request lacks, and only from its own fhirServer.
    async with httpx.AsyncClient(timeout=httpx.Timeout(settings.fhir_timeout_s), follow_redirects=False,
                                 trust_env=False) as http:
        engine = pipeline.Engine(kb=kb, catalog=catalog, renderer=renderer, http=http,
                                 card_map=CardMap(ttl_s=settings.card_map_ttl_s),
                                 fhir_timeout_s=settings.fhir_timeout_s, fhir_max_pages=settings.fhir_max_pages,
                                 fhir_max_medication_reads=settings.fhir_max_medication_reads)
        response = await pipeline.run(service, body, caller=AUTH_OFF_CALLER, engine=engine,
                                      now=dt.datetime.now(dt.UTC))
    files = {}
    for card in response.cards:
        prov = (card.extension or {}).get(PROVENANCE_KEY, {})
        files[card.uuid] = f"{prov.get('cardFile')} ({prov.get('cardOrigin')})"
    return response.model_dump(mode="json", exclude_none=True), files


def cards_as_text(response: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """Cards as an EHR shows them, in plain text: indicator, summary, detail, source, suggestions, reasons."""
    cards = response.get("cards") or []
    if not cards:
        return "No cards (the service would answer {\"cards\": []}).\n"
    lines: list[str] = []
    for n, card in enumerate(cards, 1):
        lines.append(f"[{card['indicator'].upper()}] {card['summary']}")
        for text in (card.get("detail") or "").splitlines():
            lines.append(f"    {text}".rstrip())
        source = card.get("source") or {}
        lines.append(f"  Source: {source.get('label', '')}" + (f" <{source['url']}>" if source.get("url") else ""))
        for suggestion in card.get("suggestions") or ():
            mark = " (recommended)" if suggestion.get("isRecommended") else ""
            lines.append(f"  Suggestion: {suggestion['label']}{mark}")
            for action in suggestion.get("actions") or ():
                lines.append(f"    - {action['type']}: {action.get('description', '')}")
        for link in card.get("links") or ():
            lines.append(f"  Link: {link.get('label')} <{link.get('url')}>")
        reasons = [r.get("display") or r.get("code") for r in card.get("overrideReasons") or ()]
        if reasons:
            lines.append("  Override reasons: " + "; ".join(str(r) for r in reasons))
        if files and card.get("uuid") in files:
            lines.append(f"  Card file: {files[card['uuid']]}")
        if n < len(cards):
            lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- feedback report


def feedback_report(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from service.analytics import parse_since, report_body
    from service.settings import Settings
    from service.store import open_store

    out = out or sys.stdout
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"blina-cds: {exc}", file=sys.stderr)
        return 2
    settings = Settings(auth="off")  # the report needs the database and its bounds, not the EHR's trust
    reasons_max, comments_max = settings.analytics_reasons_max, settings.analytics_comments_max
    try:
        store = open_store(settings.database_url)
    except Exception as exc:  # noqa: BLE001 — the message names the problem, never the password
        print(f"blina-cds: cannot open the feedback store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    async def run() -> Any:
        try:
            return await store.feedback_report(since=since, reasons_max=reasons_max, comments_max=comments_max)
        finally:
            await store.close()

    rules = asyncio.run(run())
    body = report_body(rules, since)
    if args.format == "json":
        print(json.dumps(body, indent=1, ensure_ascii=False), file=out)
    elif args.format == "csv":
        out.write(_csv(body["rules"]))
    else:
        out.write(_table(body["rules"], since))
    return 0


def _reasons_text(rule: dict[str, Any]) -> str:
    return "; ".join(f"{r['code']} ({r['count']})" for r in rule["top_override_reasons"])


def _csv(rules: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rule_id", "issued", "accepted", "overridden", "override_rate", "top_override_reasons",
                     "comments"])
    for r in rules:
        rate = "" if r["override_rate"] is None else r["override_rate"]
        writer.writerow([r["rule_id"], r["issued"], r["accepted"], r["overridden"], rate, _reasons_text(r),
                         " | ".join(r["comments"])])
    return buffer.getvalue()


def _table(rules: list[dict[str, Any]], since: dt.datetime | None) -> str:
    head = f"Feedback per rule{' since ' + since.isoformat() if since else ''}\n"
    if not rules:
        return head + "No cards issued and no feedback on record.\n"
    rows = [("rule", "issued", "accepted", "overridden", "override rate", "top override reasons")]
    for r in rules:
        rate = "-" if r["override_rate"] is None else f"{r['override_rate'] * 100:.1f} %"
        rows.append((r["rule_id"], str(r["issued"]), str(r["accepted"]), str(r["overridden"]), rate,
                     _reasons_text(r) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [head]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=False)))
                     + "  " + row[-1])
    for r in rules:
        if r["comments"]:
            lines.append(f"\nComments on {r['rule_id']} (newest first):")
            lines.extend(f"  - {c}" for c in r["comments"])
    return "\n".join(lines) + "\n"
