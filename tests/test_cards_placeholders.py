"""cards/README.md lists, per rule, every placeholder its card uses with an example value (generated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.rules import RULE_IDS
from service.settings import DEFAULT_CARDS_DIR
from service.tools import cards_placeholders as tool
from service.tools.commands import cards_placeholders
from tests.test_cards_check import SEIZURE, site


def test_the_committed_list_is_up_to_date() -> None:
    committed = tool.section_of(tool.README.read_text(encoding="utf-8"))
    assert committed is not None, "cards/README.md lacks the generated placeholder list"
    assert committed == tool.generate(), "cards/README.md is out of date: run `blina-cds cards placeholders --write`"


def test_every_rule_and_every_placeholder_of_its_card_is_listed_with_an_example() -> None:
    section = tool.generate()
    for rule_id in RULE_IDS:
        assert f"### `{rule_id}`" in section, rule_id
    seizure = section.split("### `seizure`", 1)[1].split("### ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", seizure, re.MULTILINE))
    # the card's own placeholders, and the shared context block's (it includes it)
    assert rows["next_ordinal"] == '"second"' and rows["interrupt_grade"] == "3"
    assert rows["at"].startswith('"20') and rows["at"].endswith(' UTC"')
    assert "position_phrase" in rows and "(no example gives it)" not in seizure
    assert "Includes: `context`." in seizure


def test_a_placeholder_no_example_gives_is_marked(tmp_path: Path) -> None:
    folder = site(tmp_path, "seizure.toml", SEIZURE.replace("recorded {{ at }}", "recorded {{ at }} by {{ nurse }}"))
    (folder / "_defaults.toml").write_text((DEFAULT_CARDS_DIR / "_defaults.toml").read_text(encoding="utf-8"))
    section = tool.generate(folder, ["seizure"])
    assert "| `nurse` | (no example gives it) |" in section


def test_write_replaces_only_the_generated_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Intro by hand\n\n{tool.BEGIN}\nold list\n{tool.END}\n\nAfter, by hand.\n", encoding="utf-8")
    assert tool.write(readme, f"{tool.BEGIN}\nnew list\n{tool.END}\n")
    assert readme.read_text(encoding="utf-8") == (
        f"# Intro by hand\n\n{tool.BEGIN}\nnew list\n{tool.END}\n\nAfter, by hand.\n")
    assert not tool.write(readme, f"{tool.BEGIN}\nnew list\n{tool.END}\n")


def test_the_subcommand_prints_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    assert cards_placeholders(argparse.Namespace(write=False)) == 0
    assert capsys.readouterr().out == tool.generate()
