"""Site overlays (a folder holding only what a site changes) and the provenance every card carries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service import examples
from service.errors import KnowledgeError
from service.knowledge import load_knowledge
from service.render import PROVENANCE_KEY, CardRenderer
from service.rules import RULE_IDS
from service.rules.base import Finding
from service.settings import DEFAULT_CARDS_DIR, DEFAULT_KNOWLEDGE_DIR
from service.tools.cards_check import example_findings
from tests.conftest import PATIENT_VIEW, AppFactory

SEIZURE = (DEFAULT_CARDS_DIR / "seizure.toml").read_text()


# ---------------------------------------------------------------- knowledge


def test_a_site_overrides_one_policy_value_and_keeps_every_other(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("[patient_view]\nlookback_days = 30\n")
    shipped = load_knowledge()
    site = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=tmp_path)

    assert site.policy.patient_view.lookback_days == 30
    assert shipped.policy.patient_view.lookback_days == 90
    assert site.policy.patient_view.source == shipped.policy.patient_view.source  # the rest of the table stays
    assert site.dosing == shipped.dosing
    assert site.fingerprint != shipped.fingerprint and site.fingerprint.startswith("sha256:")
    assert site.site_overrides == {str(tmp_path / "policy.toml"): ("patient_view.lookback_days",)}


def test_a_label_fact_cannot_be_overridden_by_a_site(tmp_path: Path) -> None:
    (tmp_path / "dosing.toml").write_text("[weight_band]\nthreshold_kg = 40\n")
    with pytest.raises(KnowledgeError, match="not site-tunable") as err:
        load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=tmp_path)
    assert err.value.file == str(tmp_path / "dosing.toml")
    assert err.value.key == "weight_band.threshold_kg"


def test_a_full_copy_with_one_tunable_change_loads(tmp_path: Path) -> None:
    """Sites that copied the whole folder before overlays existed keep working."""
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, tmp_path / "kb", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    dosing = tmp_path / "kb" / "dosing.toml"
    dosing.write_text(dosing.read_text().replace("weight_days = 30", "weight_days = 14"))
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=tmp_path / "kb")
    assert kb.dosing.freshness.weight_days == 14
    assert kb.site_overrides == {str(dosing): ("freshness.weight_days",)}


def test_a_site_value_is_validated_like_a_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("[patient_view]\nlookback_days = -1\n")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=tmp_path)
    assert err.value.file == str(tmp_path / "policy.toml")
    assert err.value.key == "patient_view.lookback_days"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("site_tunable.toml", "policy = []\n", "cannot change which values are site policy"),
    ("notes.toml", "x = 1\n", "not knowledge files: notes.toml"),
])
def test_a_site_cannot_widen_what_is_tunable(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=tmp_path)


# ---------------------------------------------------------------- cards


def finding(**facts: object) -> Finding:
    """A seizure finding: an example patient's (every fact the shipped card names), with these values."""
    example = example_findings(load_knowledge(DEFAULT_KNOWLEDGE_DIR))[0]["seizure"][0].finding
    base = {"at": "2026-02-19 11:00 UTC", "label": "Seizure", "cycle": 2, "day": 3, "seizure_limit": 2,
            "interrupt_grade": 3, "same_event_window_minutes": 60,
            "seizure_episodes": [{"at": "2026-02-19 11:00 UTC", "count": 1,
                                  "sources": [{"type": "Observation", "at": "2026-02-19 11:00 UTC"}]}]}
    return Finding(rule_id="seizure", indicator="critical", facts={**example.facts, **base, **facts})


def test_a_site_card_folder_holds_only_the_cards_it_rewords(tmp_path: Path) -> None:
    (tmp_path / "seizure.toml").write_text(SEIZURE.replace("Seizure during blinatumomab", "Our wording: seizure"))
    renderer = CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR, knowledge_hash="sha256:k")

    card = renderer.render(finding())
    assert card.summary.startswith("Our wording: seizure on 2026-02-19 11:00 UTC")
    assert card.source.label.startswith("BLINCYTO")  # _defaults.toml from the shipped folder
    assert card.extension == {PROVENANCE_KEY: {
        "ruleId": "seizure", "knowledgeHash": "sha256:k", "cardFile": "seizure.toml", "cardOrigin": "site",
        "cardHash": renderer.provenance("seizure")["cardHash"]}}
    assert renderer.provenance("crs-interrupt")["cardOrigin"] == "shipped"
    assert renderer.provenance("seizure")["cardHash"] != CardRenderer.load(
        DEFAULT_CARDS_DIR, RULE_IDS).provenance("seizure")["cardHash"]


def test_a_site_defaults_file_is_merged_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "_defaults.toml").write_text('[source]\nlabel = "St Elsewhere oncology pharmacy"\n')
    renderer = CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR)
    card = renderer.render(finding())
    assert card.source.label == "St Elsewhere oncology pharmacy"
    assert card.source.url and "dailymed" in card.source.url  # the shipped url stays
    assert card.source.topic is not None and card.source.topic.system == "urn:blina-cds:rule"


def test_a_site_card_for_an_unknown_rule_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "sezure.toml").write_text(SEIZURE)
    with pytest.raises(KnowledgeError, match="unknown rule ids: sezure"):
        CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR)


def test_shared_blocks_and_partials_are_written_once(tmp_path: Path) -> None:
    (tmp_path / "_defaults.toml").write_text(
        '[blocks]\ncontext = "Course position: cycle {{ cycle }}, day {{ day }}."\n'
        'macros = "{% macro when(at) %}on {{ at }}{% endmacro %}"\n')
    (tmp_path / "_footer.md").write_text("Source: the current label.\n")
    (tmp_path / "seizure.toml").write_text(
        'summary = "{% import \'macros\' as m %}Seizure {{ m.when(at) }}"\n'
        + 'detail = """\n{% include "context" %}\n\n{% include "_footer.md" %}\n"""\n'
        + '[[override_reasons]]\ncode = "x"\ndisplay = "X"\n')
    card = CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR).render(finding())
    assert card.summary == "Seizure on 2026-02-19 11:00 UTC"
    assert card.detail == "Course position: cycle 2, day 3.\n\nSource: the current label."


def test_a_partial_is_read_at_start_up_and_not_again(tmp_path: Path) -> None:
    """The wording a card shows is the wording its provenance hash was taken of, even if the file changes later."""
    footer = tmp_path / "_footer.md"
    footer.write_text("Source: the current label.\n")
    (tmp_path / "seizure.toml").write_text(
        'summary = "s"\ndetail = """\n{% include "_footer.md" %}\n"""\n[[override_reasons]]\ncode = "x"\n'
        'display = "X"\n')
    renderer = CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR)
    footer.write_text("Source: edited after start-up.\n")
    assert renderer.render(finding()).detail == "Source: the current label."
    footer.unlink()
    assert renderer.render(finding()).detail == "Source: the current label."


def test_a_broken_partial_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "_footer.md").write_text("Source: {% if %}\n")
    with pytest.raises(KnowledgeError, match="template error") as err:
        CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR)
    assert err.value.file == "_footer.md"


def test_newlines_behave_as_written(tmp_path: Path) -> None:
    """A line of only tags vanishes; a newline after an inline {% endif %} stays (no {{ "" }} needed)."""
    (tmp_path / "seizure.toml").write_text(
        'summary = "s"\n'
        'detail = """\n'
        "First line{% if cycle %}, cycle {{ cycle }}{% endif %}\n"
        "Second line\n"
        "{% if day %}\n"
        "- day {{ day }}\n"
        "{% endif %}\n"
        "  {# a comment line #}\n"
        "Last line\n"
        '"""\n[[override_reasons]]\ncode = "x"\ndisplay = "X"\n')
    card = CardRenderer.load(tmp_path, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR).render(finding())
    assert card.detail == "First line, cycle 2\nSecond line\n- day 3\nLast line"


# ---------------------------------------------------------------- through the service


async def test_every_card_of_a_hook_call_carries_its_provenance(make_app: AppFactory, tmp_path: Path) -> None:
    site_cards, site_kb = tmp_path / "cards", tmp_path / "kb"
    site_cards.mkdir()
    site_kb.mkdir()
    (site_cards / "crs-interrupt.toml").write_text(
        (DEFAULT_CARDS_DIR / "crs-interrupt.toml").read_text().replace("Interrupt blinatumomab", "STOP blinatumomab"))
    (site_kb / "policy.toml").write_text("[patient_view]\nlookback_days = 60\n")
    app, client = await make_app(cards_dir=site_cards, knowledge_dir=site_kb)
    request = examples.request_for("crs", "obs-grade3-view", now=examples.parse_instant("2026-02-19T12:00:00Z"))

    response = await client.post(f"/cds-services/{PATIENT_VIEW}", json=request)
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["crs-interrupt", "therapy-status"]
    kb_hash = app.state.engine.kb.fingerprint
    assert kb_hash != load_knowledge().fingerprint  # the hash is of the effective (overlaid) knowledge
    for card in cards:
        prov = card["extension"][PROVENANCE_KEY]
        assert prov["ruleId"] == card["source"]["topic"]["code"]
        assert prov["knowledgeHash"] == kb_hash
        assert prov["cardFile"] == f"{prov['ruleId']}.toml"
    assert cards[0]["summary"].startswith("STOP blinatumomab")
    assert cards[0]["extension"][PROVENANCE_KEY]["cardOrigin"] == "site"
    assert cards[1]["extension"][PROVENANCE_KEY]["cardOrigin"] == "shipped"
