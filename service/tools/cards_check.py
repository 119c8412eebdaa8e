"""``blina-cds cards check``: every card and knowledge file parses, and every card renders for its rule's examples.

    blina-cds cards check [--cards-dir DIR] [--knowledge-dir DIR]

Start-up runs the same check (``service.main``): a broken card stops the service with file, line and reason.

Where the example findings come from: every call of every example patient in ``fhir_examples/`` is run through
pipeline steps 1–3 (prefetch, timeline, rules) with the knowledge under check, at the call's reference instant.
So the facts a card is rendered against are exactly the facts its rule gives today, and stay so as rules evolve:
no list of example facts to keep in step by hand. Each finding is rendered twice: as found, and in a worst case
where the facts that carry chart text (``WORST_CASE_TEXT``: event names, order text, references) are as long
as a chart plausibly makes them.

A problem is reported as ``file:line: reason`` (line when known), for:

* a TOML or template syntax error, a missing or unknown key, a card file for an unknown rule id (as start-up);
* an unknown placeholder: a variable the template uses that no finding of its rule ever provides;
* a render error for an example (a fact missing in that finding, an action the card does not word);
* a summary of 140 characters or more, for an example or its worst case;
* a rule no example fires (its card could never be checked): add an example to ``fhir_examples/``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from jinja2 import Environment, TemplateError, meta

from service import examples
from service.catalog import build_catalog
from service.errors import CdsServiceError, KnowledgeError
from service.fhir import prefetch
from service.knowledge import Knowledge, load_knowledge
from service.render import SUMMARY_LIMIT, CardRenderer, CardTemplate, file_line
from service.rules import RULE_IDS, evaluate
from service.rules.base import Finding
from service.schemas import HookRequest
from service.settings import DEFAULT_CARDS_DIR, DEFAULT_KNOWLEDGE_DIR
from service.timeline import build_timeline

log = logging.getLogger("blina_cds.cards")

T = TypeVar("T")

_ID64 = "x" * 64  # FHIR ids are at most 64 characters
WORST_CASE_TEXT: Mapping[str, str] = {
    # the event's name as charted (Observation/Condition/AdverseEvent text): the longest name a label event has
    "label": "Immune effector cell-associated neurotoxicity syndrome (ICANS)",
    # the same name as the toxicity cards print it (the event as charted, else its family's name)
    "toxicity_name": "Immune effector cell-associated neurotoxicity syndrome (ICANS)",
    "summary_toxicity_name": "Immune effector cell-associated neurotoxicity syndrome (ICANS)",
    # the order's dose as written in the draft
    "dose_display": "blinatumomab 28 mcg/day IV continuous infusion, 7-day bag",
    # a protocol reference or coded diagnosis from the chart
    "regimen_evidence": "https://protocols.example-hospital.org/oncology/all/blinatumomab-consolidation-v12",
    "order_ref": f"MedicationRequest/{_ID64}",
    "given_ref": f"MedicationAdministration/{_ID64}",
    "ref": f"Observation/{_ID64}",
}
"""Fact → its worst-case value, applied where an example finding has that fact as a string.

Chart text can be longer still; the renderer then cuts the summary below 140 characters and logs it. These are
the longest values a card must word whole: a template that overflows with them fails the check."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Example:
    """One finding an example call gives: ``where`` is ``<example>/<call>``."""

    where: str
    finding: Finding


# ---------------------------------------------------------------- example findings


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("cards check never fetches: an example must carry its whole prefetch", request=request)


async def _example_findings(kb: Knowledge, names: Iterable[str]) -> tuple[dict[str, list[Example]], list[Problem]]:
    catalog = build_catalog(kb)
    found: dict[str, list[Example]] = {}
    problems: list[Problem] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(_refuse)) as http:
        for name in names:
            for call in examples.load_manifest(name)["calls"]:
                where = f"{name}/{call['id']}"
                now = examples.parse_instant(call["reference_instant"])
                try:
                    request = HookRequest.model_validate(examples.request_for(name, call["id"], now=now))
                    service = catalog[call["service"]]
                    resolved = await prefetch.resolve(service.prefetch, request, http=http, allowed_servers=None,
                                                      timeout_s=5.0, max_pages=1, max_response_bytes=0,
                                                      max_total_bytes=0)  # never fetches (``_refuse``)
                    timeline = build_timeline(hook=service.hook, context=request.context, data=resolved.data,
                                              kb=kb, now=now)
                    findings = evaluate(timeline, kb, rule_ids=service.rule_ids)
                except (CdsServiceError, ValueError, KeyError, TypeError) as exc:
                    problems.append(Problem(f"fhir_examples/{name}", None, f"call {call['id']} failed: {exc}"))
                    continue
                for finding in findings:
                    found.setdefault(finding.rule_id, []).append(Example(where, finding))
    return found, problems


_CACHE: dict[tuple[str, str], tuple[dict[str, list[Example]], list[Problem]]] = {}


def example_findings(kb: Knowledge, *, examples_dir: Path | None = None) -> tuple[dict[str, list[Example]],
                                                                                   list[Problem]]:
    """Rule id → the findings the example calls give with this knowledge (cached per knowledge and folder)."""
    root = examples_dir or examples.examples_dir()
    key = (kb.fingerprint, str(root.resolve()))
    if not kb.fingerprint or key not in _CACHE:
        names = examples.names() if examples_dir is None else sorted(
            p.parent.name for p in root.glob("*/manifest.json"))
        if not names:
            return {}, [Problem(str(root), None, "no example patients here: cards are checked against the findings "
                                                 "of fhir_examples/; set BLINA_CDS_EXAMPLES_DIR to that folder")]
        result = _run(lambda: _example_findings(kb, names))
        if not kb.fingerprint:
            return result
        _CACHE[key] = result
    found, problems = _CACHE[key]
    return dict(found), list(problems)  # copies: callers add to them


def findings_for_check(kb: Knowledge, *, examples_dir: Path | None = None) -> tuple[dict[str, list[Example]],
                                                                                      list[Problem]]:
    """The example findings with this knowledge; a rule a site's values leave without one gets the shipped ones.

    (A site's local codes may make an example's lab unreadable, say: its card must still be checked.)
    """
    found, problems = example_findings(kb, examples_dir=examples_dir)
    if kb.site_overrides and not set(RULE_IDS) <= set(found):
        shipped, _ = example_findings(load_knowledge(DEFAULT_KNOWLEDGE_DIR), examples_dir=examples_dir)
        found = {**{r: v for r, v in shipped.items() if r not in found}, **found}
    return found, problems


def worst_case(finding: Finding) -> Finding | None:
    """The finding with its chart-text facts at their longest; None when it has none."""
    longer = {k: WORST_CASE_TEXT[k] for k, v in finding.facts.items() if k in WORST_CASE_TEXT and isinstance(v, str)}
    if not longer:
        return None
    return dataclasses.replace(finding, facts={**finding.facts, **longer})


# ---------------------------------------------------------------- the check


def _template_fields(tpl: CardTemplate) -> list[tuple[str, str]]:
    """(key as errors name it, template source) of every text a card file holds."""
    raw = tpl.raw
    fields = [("summary", str(raw.get("summary", ""))), ("detail", str(raw.get("detail", "")))]
    suggestion = raw.get("suggestion")
    if isinstance(suggestion, Mapping) and isinstance(suggestion.get("label"), str):
        fields.append(("suggestion.label", suggestion["label"]))
    for key, spec in (raw.get("actions") or {}).items():
        if isinstance(spec, Mapping) and isinstance(spec.get("description"), str):
            fields.append((f"actions.{key}.description", spec["description"]))
    return fields


def _template_line(exc: BaseException) -> int | None:
    """The line inside the template where rendering failed (Jinja keeps it in the traceback)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if isinstance(line, int) else None


def check_renderer(renderer: CardRenderer, found: Mapping[str, list[Example]],
                   rule_ids: Iterable[str] = RULE_IDS) -> list[Problem]:
    """Placeholders, rendering and summary length of every card, against its rule's example findings.

    With no findings at all (no examples, or every one failed: reported by ``example_findings``), nothing to add.
    """
    problems: list[Problem] = []
    if not found:
        return problems
    env = Environment()  # parsing only: the sandbox and loaders play no part in finding variable names
    for rule_id in rule_ids:
        tpl = renderer.templates[rule_id]
        path = tpl.file.path if tpl.file else DEFAULT_CARDS_DIR / f"{rule_id}.toml"
        label = str(path) if tpl.file and tpl.file.origin == "site" else path.name
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        ours = found.get(rule_id, [])
        if not ours:
            problems.append(Problem(label, None, f"no example in fhir_examples/ gives a '{rule_id}' finding, so this "
                                                 "card cannot be checked: add an example call that fires the rule"))
            continue
        provided = {"rule_id", "indicator"} | {k for ex in ours for k in ex.finding.facts} | set(env.globals)
        for key, source in _template_fields(tpl):
            try:
                used = meta.find_undeclared_variables(env.parse(source))
            except TemplateError:
                continue  # start-up already refused a syntax error
            for name in sorted(used - provided):
                word = re.compile(rf"\b{re.escape(name)}\b")
                at = next((i + 1 for i, ln in enumerate(source.split("\n")) if word.search(ln)), None)
                problems.append(Problem(label, file_line(text, key, at),
                                        f"{key}: unknown placeholder '{name}': rule {rule_id} never provides it"))
        seen: set[tuple[int | None, str]] = set()  # one report per line and kind: the first example that shows it
        for ex in ours:
            for variant, finding in (("", ex.finding), (" (worst case: long chart text)", worst_case(ex.finding))):
                if finding is None:
                    continue
                problem = _render_one(renderer, finding, label=label, text=text, where=ex.where + variant)
                if problem is None:
                    continue
                once = (problem.line, problem.reason.split(" ", 1)[0])
                if once not in seen:
                    seen.add(once)
                    problems.append(problem)
    return problems


def _render_one(renderer: CardRenderer, finding: Finding, *, label: str, text: str, where: str) -> Problem | None:
    try:
        summary = renderer.full_summary(finding)
    except Exception as exc:  # noqa: BLE001 — any template failure is the analyst's to see, with its line
        return Problem(label, file_line(text, "summary", _template_line(exc)), f"summary: {_reason(exc)} ({where})")
    if len(summary) > SUMMARY_LIMIT:
        return Problem(label, file_line(text, "summary"),
                       f"summary is {len(summary)} characters, the limit is {SUMMARY_LIMIT} ({where}): {summary!r}")
    try:
        renderer.render(finding)
    except KeyError as exc:
        return Problem(label, None, f"missing key actions.{exc.args[0]}: the rule proposes this action ({where})")
    except Exception as exc:  # noqa: BLE001
        line = _template_line(exc)
        return Problem(label, file_line(text, "detail", line) if line else None, f"{_reason(exc)} ({where})")
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KnowledgeError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- entry points


def check(cards_dir: Path | None = None, knowledge_dir: Path | None = None, *,
          examples_dir: Path | None = None) -> list[Problem]:
    """Everything ``cards check`` reports, for a site's folders (None: the shipped ones)."""
    try:
        kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=knowledge_dir)
    except KnowledgeError as exc:
        return [Problem(exc.file, exc.line, f"{exc.key}: {exc.reason}" if exc.key else exc.reason)]
    try:
        renderer = CardRenderer.load(cards_dir or DEFAULT_CARDS_DIR, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR,
                                     knowledge_hash=kb.fingerprint)
    except KnowledgeError as exc:
        return [Problem(exc.file, exc.line, f"{exc.key}: {exc.reason}" if exc.key else exc.reason)]
    found, problems = findings_for_check(kb, examples_dir=examples_dir)
    return problems + check_renderer(renderer, found)


_PASSED: set[tuple[str, ...]] = set()
PASSED_ENV = "_BLINA_CDS_CARDS_CHECKED"
"""Set by a process whose check passed, for the processes it starts: ``blina-cds serve`` checks before uvicorn
starts its workers, and each worker then skips the same check of the same files (a check takes seconds of CPU)."""


def _start_up_key(renderer: CardRenderer, kb: Knowledge) -> tuple[str, ...]:
    return (kb.fingerprint, str(examples.examples_dir().resolve()),
            *sorted(f"{r}:{t.file.origin}:{t.file.sha256}" for r, t in renderer.templates.items() if t.file))


def start_up_mark(renderer: CardRenderer, kb: Knowledge) -> str:
    """The value of ``PASSED_ENV`` that lets a started process skip the check of these card files and knowledge."""
    return hashlib.sha256("\0".join(_start_up_key(renderer, kb)).encode()).hexdigest()


def check_at_start_up(renderer: CardRenderer, kb: Knowledge) -> None:
    """Raise ``KnowledgeError`` naming every problem (start-up stops), as ``cards check`` reports them.

    Checked once per set of card files, knowledge and examples folder: in a process (tests build many apps) and
    in the processes it starts (``PASSED_ENV``).
    """
    key = _start_up_key(renderer, kb)
    digest = start_up_mark(renderer, kb)
    if kb.fingerprint and (key in _PASSED or os.environ.get(PASSED_ENV) == digest):
        return
    if not examples.names():  # a deployment without fhir_examples/: the files parsed and compiled; say what is skipped
        log.warning("cards not rendered at start-up: no example patients in %s (run `blina-cds cards check` where "
                    "they are)", examples.examples_dir())
        return
    found, problems = findings_for_check(kb)
    problems = problems + check_renderer(renderer, found)
    if not problems:
        _PASSED.add(key)
        if kb.fingerprint:
            os.environ[PASSED_ENV] = digest
    if problems:
        first = problems[0]
        more = "".join(f"\n  {p}" for p in problems[1:])
        raise KnowledgeError(f"{first.reason}{more}", file=first.file, line=first.line)
