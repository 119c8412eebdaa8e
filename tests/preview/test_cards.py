"""How /preview shows one card: the card file it came from, and which of its text may become markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.preview.cards import card_view, http_url, markdown_html


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    site, shipped = tmp_path / "site", tmp_path / "shipped"
    site.mkdir()
    shipped.mkdir()
    for name in ("dose-schedule.toml", "premed-missing.toml"):
        (shipped / name).write_text("", encoding="utf-8")
    (site / "premed-missing.toml").write_text("", encoding="utf-8")
    return site, shipped


def card(**extra: Any) -> dict[str, Any]:
    return {
        "uuid": "c-1", "summary": "s", "indicator": "warning",
        "source": {"label": "L", "url": "https://example.org/pi", "topic": {"system": "x", "code": "dose-schedule"}},
        **extra,
    }


def view(c: dict[str, Any], folders: tuple[Path, Path]) -> Any:
    return card_view(c, cards_dir=folders[0], shipped_cards_dir=folders[1])


def test_without_provenance_the_site_file_wins_over_the_shipped_one(folders: tuple[Path, Path]) -> None:
    site, shipped = folders
    assert view(card(), folders).card_file == str(shipped / "dose-schedule.toml")
    premed = card(source={"label": "L", "topic": {"code": "premed-missing"}})
    assert view(premed, folders).card_file == str(site / "premed-missing.toml")
    assert view(premed, folders).rule_id == "premed-missing"


@pytest.mark.parametrize(("provenance", "expected"), [
    ({"ruleId": "premed-missing", "cardFile": "premed-missing.toml", "cardOrigin": "shipped"},
     "{shipped}/premed-missing.toml"),
    ({"ruleId": "premed-missing", "cardFile": "premed-missing.toml", "cardOrigin": "site"},
     "{site}/premed-missing.toml"),
    ({"rule_id": "premed-missing", "card-file": "premed-missing.toml"}, "{site}/premed-missing.toml"),
    ({"ruleId": "premed-missing", "cardFile": "/srv/site-cards/premed-missing.toml"},
     "/srv/site-cards/premed-missing.toml"),
    ({"ruleId": "premed-missing", "cardFile": "../../etc/passwd"}, "../../etc/passwd"),  # shown, never resolved
    ({"ruleId": "premed-missing", "cardFile": 42}, "{site}/premed-missing.toml"),  # not a string: ignored
])
def test_the_card_s_own_provenance_names_the_file(folders: tuple[Path, Path], provenance: dict[str, Any],
                                                  expected: str) -> None:
    site, shipped = folders
    v = view(card(extension={"blina-cds.provenance": provenance}), folders)
    assert v.rule_id == "premed-missing"
    assert v.card_file == expected.format(site=site, shipped=shipped)


def test_only_http_urls_become_links(folders: tuple[Path, Path]) -> None:
    v = view(card(source={"label": "L", "url": "javascript:alert(1)"},
                  links=[{"label": "a", "url": "data:text/html,x", "type": "absolute"},
                         {"label": "b", "url": "https://example.org/b", "type": "smart"}]), folders)
    assert v.source_url is None
    assert [(link.label, link.url, link.type) for link in v.links] == [
        ("a", None, "absolute"), ("b", "https://example.org/b", "smart")]
    assert http_url("https://") is None and http_url("http://h/p") == "http://h/p"


def test_markdown_detail_keeps_its_formatting_and_drops_raw_html() -> None:
    html = markdown_html("**Ordered:** 28 µg/day\n\n- a <script>x()</script>\n\n[pi](https://example.org/pi) "
                         "[bad](javascript:alert(1))")
    assert "<strong>Ordered:</strong> 28 µg/day" in html
    assert "<li>a &lt;script&gt;x()&lt;/script&gt;</li>" in html
    assert '<a href="https://example.org/pi">pi</a>' in html
    assert "[bad](javascript:alert(1))" in html and 'href="javascript' not in html  # shown as text, not a link


def test_suggestions_and_override_reasons_are_kept_in_order(folders: tuple[Path, Path]) -> None:
    v = view(card(
        suggestions=[{"label": "Change it", "uuid": "s-1", "isRecommended": True,
                      "actions": [{"type": "update", "description": "Update the order"}]}],
        overrideReasons=[{"system": "r", "code": "a", "display": "Reason A"}, {"system": "r", "code": "b"}],
    ), folders)
    assert [(s.uuid, s.label, s.recommended, s.actions) for s in v.suggestions] == [
        ("s-1", "Change it", True, ("Update the order",))]
    assert [(r.code, r.display) for r in v.override_reasons] == [("a", "Reason A"), ("b", "b")]
