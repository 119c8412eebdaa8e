"""Card rendering (service/render.py) and the card files in cards/."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.errors import KnowledgeError
from service.render import CardRenderer
from service.rules import RULE_IDS
from service.rules.base import Action, Finding
from service.settings import DEFAULT_CARDS_DIR

DEFAULTS = (DEFAULT_CARDS_DIR / "_defaults.toml").read_text()


def cards_dir(tmp_path: Path, **files: str) -> Path:
    (tmp_path / "_defaults.toml").write_text(DEFAULTS)
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


DOSE_CARD = '''
summary = "Blinatumomab {{ dose }} µg/day exceeds the {{ limit }} µg/day maximum"
detail = """Ordered **{{ dose }} µg/day** as "{{ ordered_as }}"."""

[[override_reasons]]
code = "verified"
display = "Dose verified with pharmacy"

[suggestion]
label = "Change the order to {{ limit }} µg/day"

[actions.update-dose]
description = "Update the blinatumomab order to {{ limit }} µg/day"
'''


def test_renders_a_spec_valid_card_with_suggestion(tmp_path: Path) -> None:
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": DOSE_CARD}), ["dose-limit"])
    finding = Finding(
        rule_id="dose-limit", indicator="critical", facts={"dose": 28000, "limit": 28, "ordered_as": "28 mg/d"},
        actions=(Action(type="update", key="update-dose", resource={"resourceType": "MedicationRequest", "id": "m1"}),),
    )
    card = renderer.render(finding).model_dump(mode="json", exclude_none=True)
    assert card["summary"] == "Blinatumomab 28000 µg/day exceeds the 28 µg/day maximum"
    assert card["indicator"] == "critical"
    assert card["source"]["topic"] == {"system": "urn:blina-cds:rule", "code": "dose-limit"}
    assert card["source"]["label"]
    assert card["selectionBehavior"] == "at-most-one"
    [suggestion] = card["suggestions"]
    assert suggestion["uuid"] and suggestion["uuid"] != card["uuid"]
    assert suggestion["actions"] == [{"type": "update", "description": "Update the blinatumomab order to 28 µg/day",
                                      "resource": {"resourceType": "MedicationRequest", "id": "m1"}}]
    assert card["overrideReasons"] == [{"system": "urn:blina-cds:override-reason", "code": "verified",
                                        "display": "Dose verified with pharmacy"}]
    assert "links" not in card  # optional and empty: omitted, never null or []


def test_every_card_gets_a_fresh_uuid(tmp_path: Path) -> None:
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": DOSE_CARD}), ["dose-limit"])
    finding = Finding(rule_id="dose-limit", indicator="warning", facts={"dose": 1, "limit": 2, "ordered_as": "x"})
    assert renderer.render(finding).uuid != renderer.render(finding).uuid
    card = renderer.render(finding).model_dump(exclude_none=True)
    assert "suggestions" not in card and "selectionBehavior" not in card


def test_chart_text_cannot_inject_markdown_or_html_into_detail(tmp_path: Path) -> None:
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": DOSE_CARD}), ["dose-limit"])
    evil = '<img src=x onerror=alert(1)> [click](javascript:alert(1))'
    card = renderer.render(Finding(rule_id="dose-limit", indicator="warning",
                                   facts={"dose": 1, "limit": 2, "ordered_as": evil}))
    assert card.detail is not None
    assert "<img" not in card.detail and "](javascript" not in card.detail
    assert "**1 µg/day**" in card.detail  # the template's own Markdown is kept


def test_long_summary_is_cut_below_140_characters(tmp_path: Path) -> None:
    card_text = 'summary = "{{ text }}"\ndetail = "d"\n'
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": card_text}), ["dose-limit"])
    card = renderer.render(Finding(rule_id="dose-limit", indicator="info", facts={"text": "x" * 300}))
    assert len(card.summary) < 140


def test_a_template_that_renders_empty_never_gives_an_empty_card_field(tmp_path: Path) -> None:
    from pydantic import ValidationError

    card_text = 'summary = "{% if x %}x{% endif %}"\ndetail = "d"\n'
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": card_text}), ["dose-limit"])
    with pytest.raises(ValidationError, match="summary"):
        renderer.render(Finding(rule_id="dose-limit", indicator="info", facts={"x": ""}))


def test_missing_fact_is_an_error_not_a_blank(tmp_path: Path) -> None:
    from jinja2 import UndefinedError

    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": DOSE_CARD}), ["dose-limit"])
    with pytest.raises(UndefinedError):
        renderer.render(Finding(rule_id="dose-limit", indicator="info", facts={"dose": 1}))


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    from jinja2.exceptions import SecurityError

    card_text = 'summary = "{{ x.__class__.__mro__ }}"\ndetail = "d"\n'
    renderer = CardRenderer.load(cards_dir(tmp_path, **{"dose-limit": card_text}), ["dose-limit"])
    with pytest.raises(SecurityError):
        renderer.render(Finding(rule_id="dose-limit", indicator="info", facts={"x": "s"}))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "dose-limit.toml: card file missing"),
        ({"dose-limit": DOSE_CARD, "not-a-rule": DOSE_CARD}, "unknown rule ids: not-a-rule"),
        ({"dose-limit": 'summary = "x"\ndetail = "d"\nwords = "y"\n'}, "unknown keys ['words']"),
        ({"dose-limit": 'detail = "d"\n'}, "dose-limit.toml: summary"),
        ({"dose-limit": 'summary = "{{ x"\ndetail = "d"\n'}, "dose-limit.toml:1: summary: template error"),
        ({"dose-limit": 'summary = "x"\ndetail = "d"\n[[override_reasons]]\ncode = "c"\n'},
         "dose-limit.toml: override_reasons[0]"),
        ({"dose-limit": "summary = \n"}, "not valid TOML"),
    ],
)
def test_bad_card_files_stop_start_up_naming_file_and_key(tmp_path: Path, files: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(KnowledgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CardRenderer.load(cards_dir(tmp_path, **files), ["dose-limit"])


# ---------------------------------------------------------------- the shipped card files


def test_card_files_and_rule_ids_match_one_to_one() -> None:
    present = {p.stem for p in DEFAULT_CARDS_DIR.glob("*.toml") if not p.stem.startswith("_")}
    assert present == set(RULE_IDS)
    CardRenderer.load(DEFAULT_CARDS_DIR, RULE_IDS)  # every file compiles


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_shipped_cards_offer_override_reasons_and_cite_no_label_section_numbers(rule_id: str) -> None:
    raw = tomllib.loads((DEFAULT_CARDS_DIR / f"{rule_id}.toml").read_text())
    if rule_id != "therapy-status":
        assert raw.get("override_reasons"), f"{rule_id}: a clinician needs reasons to pick when overriding"
    import re

    for key in ("summary", "detail"):
        assert not re.search(r"\(\s*\d+\.\d+\s*\)|section\s+\d", raw[key], re.IGNORECASE), (rule_id, key)


@pytest.mark.parametrize(
    "action",
    [
        {"type": "delete", "description": "Remove the order"},
        {"type": "delete", "description": "Remove the order", "resourceId": "MedicationRequest/1",
         "resource": {"resourceType": "MedicationRequest", "id": "1"}},
        {"type": "create", "description": "Order dexamethasone"},
        {"type": "update", "description": "Set the dose", "resourceId": "MedicationRequest/1"},
    ],
    ids=["delete-without-resourceId", "delete-with-resource", "create-without-resource", "update-without-resource"],
)
def test_action_shape_follows_its_type(action: dict[str, object]) -> None:
    """cds-resp-2 and the Action table: create/update carry the resource, delete only its resourceId."""
    from pydantic import ValidationError

    from service.schemas import Action as WireAction

    with pytest.raises(ValidationError):
        WireAction.model_validate(action)
    WireAction.model_validate({"type": "delete", "description": "Remove it", "resourceId": "MedicationRequest/1"})
