"""Every shipped card file is prose an analyst edits: sentences, ``{{ placeholders }}`` and plain ``{% if %}``.

The rules hand the templates ready-made phrases (``service/rules/phrases.py``,
``service/rules/medication_phrases.py``); a card that starts computing again — ``{% set %}``, a dict literal, a
filter, an index, a comparison, a string built with ``~`` — or grows a line past 120 characters fails here.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import DEFAULT_CARDS_DIR

MAX_LINE = 120
NAME = r"[a-z_][a-z0-9_]*"
PLACEHOLDER = re.compile(rf"^{NAME}(\.{NAME})?$")
"""``{{ fact }}``, or ``{{ item.field }}`` inside a loop over a ready-made list."""
CONDITION = re.compile(rf"^(not )?{NAME}(\.{NAME})?$")
"""``{% if flag %}``, ``{% if not flag %}``, ``{% if item.field %}``: no comparison, no test, no filter."""
TAGS = {
    "if": CONDITION, "elif": CONDITION,
    "else": re.compile("^$"), "endif": re.compile("^$"), "endfor": re.compile("^$"),
    "include": re.compile(r'^"[a-z_]+"$'),
    "for": re.compile(rf"^{NAME} in {NAME}$"),  # over a list the rule made, nothing computed
}


def problems(text: str) -> Iterator[str]:
    """What makes a card file (or block) not prose, one reason per problem, with its line."""
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            yield f"line {number}: {len(line)} characters (at most {MAX_LINE})"
    for m in re.finditer(r"\{\{-?(.*?)-?\}\}", text, re.DOTALL):
        if not PLACEHOLDER.match(m.group(1).strip()):
            yield f"line {text.count(chr(10), 0, m.start()) + 1}: {{{{{m.group(1)}}}}} is not a plain placeholder"
    for m in re.finditer(r"\{%-?\s*(\w+)(.*?)-?%\}", text, re.DOTALL):
        tag, rest = m.group(1), m.group(2).strip()
        where = f"line {text.count(chr(10), 0, m.start()) + 1}"
        if tag not in TAGS:
            yield f"{where}: {{% {tag} %}} (only if/elif/else/endif, include, and for over a ready-made list)"
        elif not TAGS[tag].match(rest):
            yield f"{where}: {{% {tag} {rest} %}} is not plain (a flag, a block name, or a list of phrases)"


def card_files() -> list[Path]:
    return sorted(p for p in DEFAULT_CARDS_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", card_files(), ids=lambda p: p.name)
def test_every_shipped_card_file_is_prose(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tomllib.loads(text)  # a card file is TOML first
    found = list(problems(text))
    assert not found, f"{path.name}: " + "; ".join(sorted(set(found)))


def test_the_prose_check_catches_the_logic_it_forbids() -> None:
    logic = [
        '{% set ev = {"step": "step dose"} %}',
        "{{ ev[event] }}",
        "{{ infusion_start[:10] }}",
        "{{ given_agent|capitalize }}",
        "{% if event == \"restart\" %}x{% endif %}",
        "{% if required_dose_mg is not none %}x{% endif %}",
        "{{ 'scheduled' if given_kind == 'order' else 'given' }}",
        "{% for e in label_equivalents if e.agent != required_agent %}{% endfor %}",
        "{% macro m() %}{% endmacro %}",
        "x" * (MAX_LINE + 1),
    ]
    for text in logic:
        assert list(problems(text)), text
    prose = ('The label asks for {{ requirement_phrase }}.\n{% if is_restart %}\nRestart.\n{% endif %}\n'
             '{% if not agent_ok %}x{% elif p.note %}y{% else %}z{% endif %}\n{% include "context" %}\n'
             '{% for p in problem_items %}\n- **{{ p.what }}**\n{% endfor %}')
    assert list(problems(prose)) == []
