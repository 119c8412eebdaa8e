"""Pipeline step 4: findings + ``cards/<rule-id>.toml`` → spec-valid CDS Hooks cards.

Card wording lives only in ``cards/``; this module never writes a sentence a clinician reads. Templates
run in Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a template cannot reach
Python internals or mutate the facts, and a fact a template names but a finding lacks is an error,
not a silently blank sentence. Every interpolated value goes through ``service.chart_text`` (Markdown
rules for ``detail``, plain-text rules for the other fields), so text from the chart cannot inject HTML,
links or Markdown structure (the Sandbox renders raw HTML in ``detail``).

Every card gets a fresh ``uuid`` (feedback needs it); every suggestion too, with
``selectionBehavior`` set and its actions worded by the card file's ``[actions.<key>]`` tables.
"""

from __future__ import annotations

import logging
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service import chart_text
from service.errors import KnowledgeError
from service.rules.base import Finding
from service.schemas import Action, Card, Coding, Source, Suggestion

log = logging.getLogger("blina_cds.render")

SUMMARY_LIMIT = 139  # spec: "One-sentence, <140-character summary"

_TEXT_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=chart_text.finalize_plain
)
_MD_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, finalize=chart_text.finalize_markdown, trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class CardTemplate:
    rule_id: str
    summary: Template
    detail: Template
    source: Source
    override_reasons: tuple[Coding, ...]
    suggestion_label: Template | None
    action_descriptions: Mapping[str, Template]


class CardRenderer:
    """Compiled card templates, loaded and checked once at start-up."""

    def __init__(self, templates: Mapping[str, CardTemplate], *, topic_system: str) -> None:
        self._templates = dict(templates)
        self._topic_system = topic_system

    @classmethod
    def load(cls, cards_dir: Path, rule_ids: Iterable[str]) -> CardRenderer:
        """Load ``_defaults.toml`` and one file per rule id; a missing, extra or broken file stops start-up."""
        defaults = _read(cards_dir / "_defaults.toml")
        try:
            base_source = defaults["source"]
            systems = defaults["systems"]
            topic_system, reason_system = str(systems["topic"]), str(systems["override_reason"])
        except KeyError as exc:
            raise KnowledgeError(f"missing key {exc}", file="_defaults.toml") from None
        wanted = set(rule_ids)
        present = {p.stem for p in cards_dir.glob("*.toml") if not p.stem.startswith("_")}
        if extra := sorted(present - wanted):
            raise KnowledgeError(f"card files for unknown rule ids: {', '.join(extra)}", file=str(cards_dir))
        templates: dict[str, CardTemplate] = {}
        for rule_id in sorted(wanted):
            path = cards_dir / f"{rule_id}.toml"
            if not path.exists():
                raise KnowledgeError("card file missing for this rule id", file=path.name)
            templates[rule_id] = _compile(rule_id, _read(path), base_source=base_source, reason_system=reason_system,
                                          file=path.name)
        return cls(templates, topic_system=topic_system)

    def render(self, finding: Finding) -> Card:
        tpl = self._templates[finding.rule_id]
        facts: dict[str, Any] = {**finding.facts, "rule_id": finding.rule_id, "indicator": finding.indicator}
        summary = " ".join(tpl.summary.render(facts).split())
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
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError("file missing", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"not valid TOML ({exc})", file=path.name) from None


def _compile(
    rule_id: str, raw: Mapping[str, Any], *, base_source: Mapping[str, Any], reason_system: str, file: str
) -> CardTemplate:
    allowed = {"summary", "detail", "override_reasons", "suggestion", "actions", "source"}
    if unknown := sorted(set(raw) - allowed):
        raise KnowledgeError(f"unknown keys {unknown}", file=file)

    def compile_text(key: str, text: Any, env: ImmutableSandboxedEnvironment = _TEXT_ENV) -> Template:
        if not isinstance(text, str) or not text.strip():
            raise KnowledgeError("must be a non-empty string", file=file, key=key)
        try:
            return env.from_string(text)
        except TemplateError as exc:
            raise KnowledgeError(f"template error: {exc}", file=file, key=key) from None

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
        detail=compile_text("detail", raw.get("detail"), _MD_ENV),
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
