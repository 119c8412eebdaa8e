"""Pipeline step 4: findings + ``cards/<rule-id>.toml`` → spec-valid CDS Hooks cards.

Card wording lives only in ``cards/``; this module never writes a sentence a clinician reads. Templates
run in Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a template cannot reach
Python internals or mutate the facts, and a fact a template names but a finding lacks is an error,
not a silently blank sentence. Every interpolated value goes through ``service.chart_text`` (Markdown
rules for ``detail``, plain-text rules for the other fields), so text from the chart cannot inject HTML,
links or Markdown structure (the Sandbox renders raw HTML in ``detail``).

Every card gets a fresh ``uuid`` (feedback needs it); every suggestion too, with
``selectionBehavior`` set and its actions worded by the card file's ``[actions.<key>]`` tables.

Card files, as an analyst writes them:

* **Site overlay.** ``CardRenderer.load(site_dir, rule_ids, shipped_dir=SHIPPED)`` takes each file from the
  site's folder when it has one and from the shipped folder otherwise; a site's ``_defaults.toml`` is merged
  key by key over the shipped one. A site file for an unknown rule id stops start-up.
* **Shared pieces written once.** ``_defaults.toml [blocks]`` holds named templates (the context block, the
  source footer); a card uses them with ``{% include "context" %}`` or ``{% import "macros" as m %}``. A file
  whose name starts with ``_`` in the cards folder (e.g. ``_footer.md``) can be included by its name too.
* **Newlines behave as written.** A line holding only ``{% … %}`` tags (or a ``{# … #}`` comment) disappears
  with its newline; every other newline stays where it was typed, also after an inline ``{% endif %}``. An
  ``{% include %}`` line is a line of text: the included text ends where the line ended.
* **Provenance.** Every card's ``extension["blina-cds.provenance"]`` names the rule id, the hash of the
  effective knowledge, and the card file used (name, ``shipped`` or ``site``, and a hash of the wording).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import BaseLoader, ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service import chart_text
from service.errors import KnowledgeError
from service.rules.base import Finding
from service.schemas import Action, Card, Coding, Source, Suggestion

log = logging.getLogger("blina_cds.render")

SUMMARY_LIMIT = 139  # spec: "One-sentence, <140-character summary"
PROVENANCE_KEY = "blina-cds.provenance"
"""The card ``extension`` key (CDS Hooks 2.0: extensions are a JSON object; keys namespaced)."""
DEFAULTS_FILE = "_defaults.toml"
# A line holding only block tags and/or comments (and spaces): it is removed together with its newline.
# ``{% include %}`` writes text, so its line stays a line.
_TAG = r"(?:\{%-?(?!\s*include\b).*?%\}|\{#.*?#\})"
_TAG_ONLY_LINE = re.compile(rf"^[ \t]*({_TAG}(?:[ \t]*{_TAG})*)[ \t]*(\r?\n|\Z)", re.MULTILINE)


def _drop_tag_only_lines(source: str) -> str:
    """The newline of a tag-only line goes into a comment: no output, and line numbers stay the file's."""
    return _TAG_ONLY_LINE.sub(lambda m: m.group(1) + ("{#" + m.group(2) + "#}" if m.group(2) else ""), source)


class _CardEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with "newlines behave as written": only a line of nothing but tags vanishes."""

    def preprocess(self, source: str, name: str | None = None, filename: str | None = None) -> str:
        return super().preprocess(_drop_tag_only_lines(source), name, filename)


def _environments(loader: BaseLoader | None = None) -> tuple[ImmutableSandboxedEnvironment,
                                                             ImmutableSandboxedEnvironment]:
    """(plain-text env for summaries and labels, Markdown env for ``detail``), sharing one loader.

    ``auto_reload`` is off: an included file is read once, never re-checked on disk per render, so a card shows
    the wording its provenance hash names.
    """
    text = _CardEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                            finalize=chart_text.finalize_plain, loader=loader, auto_reload=False)
    md = _CardEnvironment(undefined=StrictUndefined, autoescape=False, finalize=chart_text.finalize_markdown,
                          loader=loader, auto_reload=False)
    return text, md


_TEXT_ENV, _MD_ENV = _environments()


@dataclass(frozen=True)
class CardFile:
    """Which file worded a card: audits and ``/preview`` show it."""

    name: str
    """e.g. ``seizure.toml``."""
    origin: Literal["shipped", "site"]
    path: Path
    sha256: str
    """Of the card file and the shared files (``_defaults.toml``, ``_*`` partials) it may use."""


@dataclass(frozen=True)
class CardTemplate:
    rule_id: str
    summary: Template
    detail: Template
    source: Source
    override_reasons: tuple[Coding, ...]
    suggestion_label: Template | None
    action_descriptions: Mapping[str, Template]
    file: CardFile | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The card file's parsed TOML (``cards check`` maps a template back to its line)."""


class CardRenderer:
    """Compiled card templates, loaded and checked once at start-up."""

    def __init__(self, templates: Mapping[str, CardTemplate], *, topic_system: str, knowledge_hash: str = "") -> None:
        self._templates = dict(templates)
        self._topic_system = topic_system
        self.knowledge_hash = knowledge_hash

    @property
    def templates(self) -> Mapping[str, CardTemplate]:
        return self._templates

    @classmethod
    def load(cls, cards_dir: Path, rule_ids: Iterable[str], *, shipped_dir: Path | None = None,
             knowledge_hash: str = "") -> CardRenderer:
        """Load ``_defaults.toml`` and one file per rule id; a missing, extra or broken file stops start-up.

        With ``shipped_dir`` (a different folder), ``cards_dir`` is a site overlay: it may hold only the files
        the site rewords, the rest come from ``shipped_dir``.
        """
        dirs = [cards_dir]
        if shipped_dir is not None and shipped_dir.resolve() != cards_dir.resolve():
            if not cards_dir.is_dir():
                raise KnowledgeError("not a directory", file=str(cards_dir))
            dirs.append(shipped_dir)
        site = len(dirs) > 1

        def locate(name: str) -> tuple[Path, Literal["shipped", "site"]] | None:
            for i, d in enumerate(dirs):
                if (d / name).is_file():
                    return d / name, ("site" if site and i == 0 else "shipped")
            return None

        defaults: dict[str, Any] = {}
        for d in reversed(dirs):  # the shipped defaults first, the site's merged over them
            if (d / DEFAULTS_FILE).is_file():
                defaults = _merge(defaults, _read(d / DEFAULTS_FILE))
        if not defaults:
            raise KnowledgeError("file missing", file=str(cards_dir / DEFAULTS_FILE))
        try:
            base_source = defaults["source"]
            systems = defaults["systems"]
            topic_system, reason_system = str(systems["topic"]), str(systems["override_reason"])
        except KeyError as exc:
            raise KnowledgeError(f"missing key {exc}", file=DEFAULTS_FILE) from None
        if unknown := sorted(set(defaults) - {"source", "systems", "blocks"}):
            raise KnowledgeError(f"unknown keys {unknown}", file=DEFAULTS_FILE)
        blocks = defaults.get("blocks", {})
        if not isinstance(blocks, Mapping) or not all(isinstance(v, str) for v in blocks.values()):
            raise KnowledgeError("must be a table of named template strings", file=DEFAULTS_FILE, key="blocks")
        loader = ChoiceLoader([DictLoader(dict(blocks)), FileSystemLoader([str(d) for d in dirs])])
        text_env, md_env = _environments(loader)
        shared = hashlib.sha256()
        partials: set[str] = set()
        for d in dirs:
            for p in sorted(d.glob("_*")):
                if p.is_file():
                    shared.update(p.name.encode() + b"\0" + p.read_bytes())
                    partials.add(p.name)
        for name in sorted(partials - {DEFAULTS_FILE}):  # read and compiled now, as the hash above saw them
            for env in (text_env, md_env):
                try:
                    env.get_template(name)
                except TemplateError as exc:
                    raise KnowledgeError(f"template error: {exc}", file=name,
                                         line=getattr(exc, "lineno", None)) from None

        wanted = set(rule_ids)
        present = {p.stem for p in cards_dir.glob("*.toml") if not p.stem.startswith("_")}
        if extra := sorted(present - wanted):
            raise KnowledgeError(f"card files for unknown rule ids: {', '.join(extra)}", file=str(cards_dir))
        templates: dict[str, CardTemplate] = {}
        for rule_id in sorted(wanted):
            found = locate(f"{rule_id}.toml")
            if found is None:
                raise KnowledgeError("card file missing for this rule id", file=f"{rule_id}.toml")
            path, origin = found
            label = path.name if origin == "shipped" else str(path)
            digest = hashlib.sha256(shared.digest() + path.read_bytes()).hexdigest()
            raw = _read(path, label=label)
            try:
                compiled = _compile(rule_id, raw, base_source=base_source, reason_system=reason_system,
                                    file=label, envs=(text_env, md_env))
            except KnowledgeError as exc:
                if exc.key is None:
                    raise
                line = file_line(path.read_text(encoding="utf-8"), exc.key, exc.line)
                raise KnowledgeError(exc.reason, file=exc.file, key=exc.key, line=line) from None
            templates[rule_id] = CardTemplate(
                **{**vars(compiled), "file": CardFile(name=path.name, origin=origin, path=path, sha256=digest),
                   "raw": raw})
        return cls(templates, topic_system=topic_system, knowledge_hash=knowledge_hash)

    def provenance(self, rule_id: str) -> dict[str, Any]:
        """What a card's ``extension`` records about where it came from."""
        card_file = self._templates[rule_id].file
        return {
            "ruleId": rule_id,
            "knowledgeHash": self.knowledge_hash or None,
            "cardFile": card_file.name if card_file else None,
            "cardOrigin": card_file.origin if card_file else None,
            "cardHash": f"sha256:{card_file.sha256}" if card_file else None,
        }

    @staticmethod
    def facts_of(finding: Finding) -> dict[str, Any]:
        """What a card template sees: the finding's facts plus ``rule_id`` and ``indicator``."""
        return {**finding.facts, "rule_id": finding.rule_id, "indicator": finding.indicator}

    def full_summary(self, finding: Finding) -> str:
        """The summary as the template words it, before any cut (``cards check`` measures this)."""
        return " ".join(self._templates[finding.rule_id].summary.render(self.facts_of(finding)).split())

    def render(self, finding: Finding) -> Card:
        tpl = self._templates[finding.rule_id]
        facts = self.facts_of(finding)
        summary = self.full_summary(finding)
        if len(summary) > SUMMARY_LIMIT:
            log.warning("card summary truncated", extra={"rule_id": finding.rule_id, "length": len(summary)})
            summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
        detail = tpl.detail.render(facts).strip() or None
        suggestions = None
        if finding.actions:
            if tpl.suggestion_label is None:
                raise KnowledgeError("finding has actions but the card has no [suggestion]", file=finding.rule_id)
            actions = [
                Action(
                    type=a.type,
                    description=" ".join(tpl.action_descriptions[a.key].render(facts).split()),
                    resource=dict(a.resource) if a.resource is not None else None,
                    resourceId=a.resource_id,
                )
                for a in finding.actions
            ]
            label = " ".join(tpl.suggestion_label.render(facts).split())
            suggestions = [Suggestion(label=label, uuid=str(uuid.uuid4()), isRecommended=True, actions=actions)]
        topic = Coding(system=self._topic_system, code=finding.rule_id)
        return Card(
            uuid=str(uuid.uuid4()),
            summary=summary,
            detail=detail,
            indicator=finding.indicator,
            source=tpl.source.model_copy(update={"topic": topic}),
            suggestions=suggestions,
            selectionBehavior="at-most-one" if suggestions else None,
            overrideReasons=list(tpl.override_reasons) or None,
            extension={PROVENANCE_KEY: self.provenance(finding.rule_id)},
        )


def file_line(text: str, key: str, template_line: int | None = None) -> int | None:
    """The line of ``text`` (a card file) where ``key``'s value is, plus ``template_line - 1`` into it.

    ``key`` is as errors name it: ``detail``, ``suggestion.label``, ``actions.<k>.description``.
    """
    *tables, leaf = key.split(".")
    lines = text.splitlines()
    start, table = 0, ".".join(tables)
    if table:
        header = re.compile(r"^\s*\[\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
        start = next((i + 1 for i, ln in enumerate(lines) if header.match(ln)), 0)
    assign = re.compile(r"^\s*" + re.escape(leaf) + r"\s*=\s*(.*)$")
    for i in range(start, len(lines)):
        if not table and lines[i].lstrip().startswith("["):
            break
        m = assign.match(lines[i])
        if m:
            opens_block = m.group(1).strip() in ('"""', "'''")  # a newline right after it is not content
            return i + 1 + (1 if opens_block else 0) + ((template_line or 1) - 1)
    return None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping) else v
    return merged


def _read(path: Path, *, label: str | None = None) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError("file missing", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise KnowledgeError(f"not valid TOML ({exc})", file=label or path.name, line=line) from None


def _compile(
    rule_id: str, raw: Mapping[str, Any], *, base_source: Mapping[str, Any], reason_system: str, file: str,
    envs: tuple[ImmutableSandboxedEnvironment, ImmutableSandboxedEnvironment] = (_TEXT_ENV, _MD_ENV),
) -> CardTemplate:
    allowed = {"summary", "detail", "override_reasons", "suggestion", "actions", "source"}
    if unknown := sorted(set(raw) - allowed):
        raise KnowledgeError(f"unknown keys {unknown}", file=file)

    text_env, md_env = envs

    def compile_text(key: str, text: Any, env: ImmutableSandboxedEnvironment = text_env) -> Template:
        if not isinstance(text, str) or not text.strip():
            raise KnowledgeError("must be a non-empty string", file=file, key=key)
        try:
            return env.from_string(text)
        except TemplateError as exc:
            raise KnowledgeError(f"template error: {exc}", file=file, key=key,
                                 line=getattr(exc, "lineno", None)) from None

    reasons = []
    for i, r in enumerate(raw.get("override_reasons", ())):
        if not isinstance(r, Mapping) or not r.get("code") or not r.get("display"):
            raise KnowledgeError("each override reason needs code and display", file=file, key=f"override_reasons[{i}]")
        reasons.append(Coding(system=reason_system, code=str(r["code"]), display=str(r["display"])))
    suggestion = raw.get("suggestion")
    actions = raw.get("actions", {})
    if not isinstance(actions, Mapping):
        raise KnowledgeError("must be a table of [actions.<key>] tables", file=file, key="actions")
    source = {**base_source, **raw.get("source", {})}
    return CardTemplate(
        rule_id=rule_id,
        summary=compile_text("summary", raw.get("summary")),
        detail=compile_text("detail", raw.get("detail"), md_env),
        source=Source(label=str(source["label"]), url=source.get("url"), icon=source.get("icon")),
        override_reasons=tuple(reasons),
        suggestion_label=(
            compile_text("suggestion.label", suggestion.get("label")) if isinstance(suggestion, Mapping) else None
        ),
        action_descriptions={
            key: compile_text(
                f"actions.{key}.description", spec.get("description") if isinstance(spec, Mapping) else None
            )
            for key, spec in actions.items()
        },
    )
