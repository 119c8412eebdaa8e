"""A CDS Hooks card (the JSON an EHR receives) → what the preview page shows, as an EHR would show it.

Card text comes from card files an analyst edits and from the chart, so nothing here trusts it: the page's
templates autoescape every string, the Markdown ``detail`` is rendered with raw HTML disabled (markdown-it
escapes it and refuses ``javascript:`` links), and a link or source URL is only ever an ``href`` when it is
http(s). Which card file a card came from: the provenance the card carries in its ``extension`` when there
is one (a file name and whether the site's folder or the shipped one held it), else ``<rule id>.toml`` in the
site's card folder, else in the shipped one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_PROVENANCE_DEPTH = 3


@dataclass(frozen=True)
class Reason:
    system: str
    code: str
    display: str


@dataclass(frozen=True)
class SuggestionView:
    uuid: str | None
    label: str
    recommended: bool
    actions: tuple[str, ...]


@dataclass(frozen=True)
class LinkView:
    label: str
    url: str | None
    """``None`` when the URL is not http(s): shown as text, never as a link."""
    type: str


@dataclass(frozen=True)
class CardView:
    uuid: str | None
    indicator: str
    summary: str
    detail_html: Markup | None
    source_label: str
    source_url: str | None
    rule_id: str | None
    card_file: str | None
    suggestions: tuple[SuggestionView, ...]
    override_reasons: tuple[Reason, ...]
    links: tuple[LinkView, ...]


def markdown_html(text: str) -> Markup:
    """Card Markdown as HTML; raw HTML in the text is shown escaped, never interpreted."""
    return Markup(_MARKDOWN.render(text))  # markdown-it escapes all text; raw HTML is off


def http_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def card_view(card: Mapping[str, Any], *, cards_dir: Path, shipped_cards_dir: Path) -> CardView:
    source = _mapping(card.get("source"))
    topic = _mapping(source.get("topic"))
    provenance = _provenance(card.get("extension"))
    rule_id = provenance.get("ruleid") or _str(topic.get("code"))
    detail = _str(card.get("detail"))
    return CardView(
        uuid=_str(card.get("uuid")),
        indicator=str(card.get("indicator", "info")) if card.get("indicator") in ("info", "warning", "critical")
        else "info",
        summary=str(card.get("summary", "")),
        detail_html=markdown_html(detail) if detail else None,
        source_label=str(source.get("label", "")),
        source_url=http_url(source.get("url")),
        rule_id=rule_id,
        card_file=card_file_of(rule_id, name=provenance.get("cardfile"), origin=provenance.get("cardorigin"),
                               cards_dir=cards_dir, shipped_cards_dir=shipped_cards_dir),
        suggestions=tuple(_suggestion(s) for s in _dicts(card.get("suggestions"))),
        override_reasons=tuple(
            Reason(system=str(r.get("system", "")), code=str(r.get("code", "")),
                   display=str(r.get("display") or r.get("code", "")))
            for r in _dicts(card.get("overrideReasons"))
        ),
        links=tuple(
            LinkView(label=str(link.get("label", "")), url=http_url(link.get("url")), type=str(link.get("type", "")))
            for link in _dicts(card.get("links"))
        ),
    )


def card_file_of(rule_id: str | None, *, name: str | None = None, origin: str | None = None, cards_dir: Path,
                 shipped_cards_dir: Path) -> str | None:
    """The card file a card was rendered from, as a path an analyst can open.

    ``name`` and ``origin`` (``site`` or ``shipped``) are the card's own provenance when it carries one; without
    it the file is ``<rule id>.toml``, looked up in the site's folder first, then in the shipped one. A name that
    resolves to no file is shown as given.
    """
    name = name or (f"{rule_id}.toml" if rule_id else None)
    if not name:
        return None
    given = Path(name)
    if given.is_absolute():
        return name
    folders = {"site": (cards_dir,), "shipped": (shipped_cards_dir,)}.get(origin or "", (cards_dir, shipped_cards_dir))
    if given.name == name and not name.startswith("."):  # a bare file name, never a path out of the folders
        for folder in folders:
            if (folder / name).is_file():
                return str(folder / name)
    return name


def _provenance(extension: Any, depth: int = 0) -> dict[str, str]:
    """Rule id and card file from a card's ``extension``, wherever a namespaced key put them.

    Keys are compared without case, ``-`` and ``_``: ``cardFile``, ``card_file`` and ``card-file`` all count,
    under any namespace object, to a small depth. Anything that is not a string is ignored.
    """
    found: dict[str, str] = {}
    if not isinstance(extension, Mapping) or depth > _PROVENANCE_DEPTH:
        return found
    for key, value in extension.items():
        name = str(key).lower().replace("-", "").replace("_", "").rsplit(".", 1)[-1].rsplit("/", 1)[-1]
        if isinstance(value, str) and value.strip() and name in ("cardfile", "cardorigin", "ruleid"):
            found.setdefault(name, value.strip())
        elif isinstance(value, Mapping):
            for k, v in _provenance(value, depth + 1).items():
                found.setdefault(k, v)
    return found


def _suggestion(s: Mapping[str, Any]) -> SuggestionView:
    return SuggestionView(
        uuid=_str(s.get("uuid")),
        label=str(s.get("label", "")),
        recommended=s.get("isRecommended") is True,
        actions=tuple(str(a.get("description", "")) for a in _dicts(s.get("actions"))),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
