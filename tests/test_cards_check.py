"""``blina-cds cards check`` and the same check at start-up; ``blina-cds preview``."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from service import cli, examples
from service.errors import KnowledgeError
from service.knowledge import load_knowledge
from service.main import create_app
from service.render import PROVENANCE_KEY, CardRenderer
from service.rules import RULE_IDS
from service.settings import DEFAULT_CARDS_DIR, DEFAULT_KNOWLEDGE_DIR, Settings
from service.tools import cards_check
from service.tools.cards_check import WORST_CASE_TEXT, check, findings_for_check
from tests.test_knowledge import serve_exit_code

SEIZURE = (DEFAULT_CARDS_DIR / "seizure.toml").read_text()


def site(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "cards"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["cards", "check", *args])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_the_shipped_cards_and_knowledge_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(capsys)
    assert code == 0, output
    assert "every card and knowledge file is fine" in output


def test_every_rule_has_example_findings_to_render_against() -> None:
    found, problems = findings_for_check(load_knowledge())
    assert problems == []
    assert set(found) == set(RULE_IDS)


def test_a_template_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = SEIZURE.replace("**{{ toxicity_name }}** recorded {{ at }}", "**{{ toxicity_name }}** recorded {{ at }")
    folder = site(tmp_path, "seizure.toml", broken)
    line = next(i for i, ln in enumerate(broken.splitlines(), 1) if "{{ at }" in ln and "{{ at }}" not in ln)

    code, output = run_check(capsys, "--cards-dir", str(folder))
    assert code == 1
    assert f"{folder / 'seizure.toml'}:{line}: detail: template error" in output


def test_an_unknown_placeholder_names_file_line_and_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SEIZURE.replace("recorded {{ at }}", "recorded {{ at }} by {{ nurse_name }}")
    folder = site(tmp_path, "seizure.toml", text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "nurse_name" in ln)

    code, output = run_check(capsys, "--cards-dir", str(folder))
    assert code == 1
    assert (f"{folder / 'seizure.toml'}:{line}: detail: unknown placeholder 'nurse_name': "
            "rule seizure never provides it") in output


def test_a_placeholder_guarded_by_is_defined_is_still_unknown(tmp_path: Path) -> None:
    """A fact the rule never gives is a typo even behind a guard: the sentence would never show."""
    text = SEIZURE.replace("recorded {{ at }}", "recorded {{ at }}{% if grade_text is defined %} {{ grade_text }}"
                                                "{% endif %}")
    problems = check(site(tmp_path, "seizure.toml", text))
    assert [p.reason for p in problems] == ["detail: unknown placeholder 'grade_text': rule seizure never provides it"]


def test_a_summary_too_long_for_long_chart_text_fails(tmp_path: Path) -> None:
    text = SEIZURE.replace("summary = \"Seizure during blinatumomab on {{ at }}:",
                           "summary = \"Seizure ({{ label }}) during blinatumomab on {{ at }}:")
    problems = check(site(tmp_path, "seizure.toml", text))
    assert len(problems) == 1
    problem = problems[0]
    assert problem.file == str(tmp_path / "cards" / "seizure.toml")
    assert problem.line == next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("summary"))
    assert "summary is" in problem.reason and "the limit is 139" in problem.reason
    assert "worst case: long chart text" in problem.reason
    assert WORST_CASE_TEXT["label"] in problem.reason


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("seizur.toml", SEIZURE, "card files for unknown rule ids: seizur"),
    ("seizure.toml", SEIZURE.replace('summary = "', 'summary = ', 1), "not valid TOML"),
    ("seizure.toml", SEIZURE.replace("summary =", "sumary ="), "unknown keys ['sumary']"),
])
def test_unknown_rule_ids_broken_toml_and_unknown_keys_fail(tmp_path: Path, name: str, text: str,
                                                             reason: str) -> None:
    [problem] = check(site(tmp_path, name, text))
    assert reason in problem.reason


def test_a_missing_action_key_fails(tmp_path: Path) -> None:
    premed = (DEFAULT_CARDS_DIR / "premed-missing.toml").read_text()
    assert "[actions.create-steroid]" in premed
    problems = check(site(tmp_path, "premed-missing.toml", premed.replace("[actions.create-steroid]",
                                                                          "[actions.create-steroids]")))
    assert problems and all(p.file.endswith("premed-missing.toml") for p in problems)
    assert "missing key actions.create-steroid" in problems[0].reason


def test_a_site_knowledge_error_is_reported_with_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    (tmp_path / "regimens.toml").write_text("default_regimen = \"consolidation\"\n")
    code, output = run_check(capsys, "--knowledge-dir", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'regimens.toml'}: default_regimen: not site-tunable" in output


def test_a_broken_card_stops_start_up_with_file_and_reason(tmp_path: Path) -> None:
    folder = site(tmp_path, "seizure.toml", SEIZURE.replace("recorded {{ at }}", "recorded {{ at_time }}"))
    with pytest.raises(KnowledgeError) as err:
        create_app(Settings(auth="off", cards_dir=folder, database_url=f"sqlite:///{tmp_path}/f.db"))
    assert err.value.file == str(folder / "seizure.toml")
    assert "unknown placeholder 'at_time'" in str(err.value)


def test_serve_refuses_to_start_on_a_broken_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = site(tmp_path, "seizure.toml", SEIZURE.replace("{{ at }}:", "{{ at }:", 1))
    assert serve_exit_code(tmp_path, monkeypatch, cards_dir=str(folder)) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'seizure.toml'}:" in err and "summary: template error" in err


def test_a_process_started_after_a_passed_check_skips_the_same_check_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``blina-cds serve`` checks before uvicorn starts its workers; they inherit the mark, not a blank cheque."""
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR)
    renderer = CardRenderer.load(DEFAULT_CARDS_DIR, RULE_IDS, knowledge_hash=kb.fingerprint)
    monkeypatch.delenv(cards_check.PASSED_ENV, raising=False)
    monkeypatch.setattr(cards_check, "_PASSED", set())
    cards_check.check_at_start_up(renderer, kb)
    mark = os.environ[cards_check.PASSED_ENV]

    checked: list[bool] = []
    real = cards_check.findings_for_check

    def counting(*args: Any, **kwargs: Any) -> Any:
        checked.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(cards_check, "findings_for_check", counting)
    monkeypatch.setattr(cards_check, "_PASSED", set())  # a new process: only the environment carries over
    cards_check.check_at_start_up(renderer, kb)
    assert checked == []
    monkeypatch.setenv(cards_check.PASSED_ENV, "0" * 64)  # a mark for other files
    cards_check.check_at_start_up(renderer, kb)
    assert checked == [True]
    assert os.environ[cards_check.PASSED_ENV] == mark


# ---------------------------------------------------------------- preview


def example_request(tmp_path: Path, name: str, call: str) -> Path:
    path = tmp_path / f"{name}-{call}.json"
    path.write_text(json.dumps(examples.request_for(name, call, now=dt.datetime.now(dt.UTC))))
    return path


def test_preview_prints_the_cards_as_an_ehr_shows_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = example_request(tmp_path, "premed-missing", "c2d1-sign")
    assert cli.main(["preview", str(path)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("[CRITICAL] ") or first.startswith("[WARNING] ")
    assert "  Source: BLINCYTO (blinatumomab) prescribing information" in out
    assert "  Suggestion: " in out and "    - create: " in out
    assert "  Override reasons: " in out
    assert "  Card file: premed-missing.toml (shipped)" in out


def test_preview_json_is_the_exact_response(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = examples.load_manifest("crs")
    call = next(c for c in manifest["calls"] if c["id"] == "obs-grade3-view")
    path = example_request(tmp_path, "crs", "obs-grade3-view")
    assert cli.main(["preview", str(path), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == call["expect_rule_ids"]
    assert all(c["extension"][PROVENANCE_KEY]["cardOrigin"] == "shipped" for c in body["cards"])
    assert set(body) == {"cards"}


def test_preview_uses_a_site_card_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = site(tmp_path, "crs-interrupt.toml", (DEFAULT_CARDS_DIR / "crs-interrupt.toml").read_text()
                  .replace("Interrupt blinatumomab", "Site wording: interrupt blinatumomab"))
    path = example_request(tmp_path, "crs", "obs-grade3-view")
    assert cli.main(["preview", str(path), "--cards-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[CRITICAL] Site wording: interrupt blinatumomab")
    assert "Card file: crs-interrupt.toml (site)" in out


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot read the request"),
    ('{"hook": "patient-view", "hookInstance": "x", "context": {}}', "the service would answer 400"),
    ('{"hook": "encounter-start", "hookInstance": "x", "context": {"patientId": "p"}}', "no service for hook"),
])
def test_preview_refuses_a_bad_request_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                              message: str) -> None:
    path = tmp_path / "request.json"
    path.write_text(content)
    assert cli.main(["preview", str(path)]) == 2
    assert message in capsys.readouterr().err
