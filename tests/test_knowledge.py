"""Knowledge files: they load, carry provenance, and a bad one stops start-up naming file and key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from service.errors import KnowledgeError
from service.knowledge import Knowledge, load_knowledge
from service.knowledge.base import Provenance
from service.settings import DEFAULT_KNOWLEDGE_DIR

FILES = sorted(p.name for p in DEFAULT_KNOWLEDGE_DIR.glob("*.toml"))


def provenance_entries(value: Any, path: str = "") -> Iterator[tuple[str, Provenance]]:
    if isinstance(value, Provenance):
        yield path, value
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from provenance_entries(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from provenance_entries(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from provenance_entries(v, f"{path}[{i}]")


def test_shipped_knowledge_loads_and_every_entry_has_provenance(kb: Knowledge) -> None:
    entries = [e for section in vars(kb).values() for e in provenance_entries(section)]
    assert len(entries) > 30
    for where, entry in entries:
        assert entry.source.strip(), where
    confidences = {e.confidence for _, e in entries}
    assert "unconfirmed" in confidences  # facts the sources did not confirm are marked, not hidden
    assert "verified" in confidences


def copy_knowledge(tmp_path: Path) -> Path:
    target = tmp_path / "knowledge"
    shutil.copytree(DEFAULT_KNOWLEDGE_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


@pytest.mark.parametrize("name", FILES)
def test_unknown_key_stops_start_up_naming_file_and_key(tmp_path: Path, name: str) -> None:
    directory = copy_knowledge(tmp_path)
    path = directory / name
    path.write_text("typo_key = 1\n" + path.read_text())
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(directory)
    assert err.value.file == name
    assert "typo_key" in str(err.value)


@pytest.mark.parametrize("name", FILES)
def test_broken_toml_or_missing_file_stops_start_up(tmp_path: Path, name: str) -> None:
    directory = copy_knowledge(tmp_path)
    (directory / name).write_text("this is = = not toml")
    with pytest.raises(KnowledgeError, match=name):
        load_knowledge(directory)
    (directory / name).unlink()
    with pytest.raises(KnowledgeError, match="file missing"):
        load_knowledge(directory)


def test_a_site_copy_is_used_when_configured(tmp_path: Path) -> None:
    from service.main import create_app
    from service.settings import Settings

    directory = copy_knowledge(tmp_path)
    codes = directory / "codes.toml"
    codes.write_text(codes.read_text().replace('"1742-6"', '"9999-9"', 1))
    app = create_app(Settings(auth="off", knowledge_dir=directory, database_url=f"sqlite:///{tmp_path}/f.db"))
    assert app is not None
    loaded = load_knowledge(directory)
    assert ("http://loinc.org", "9999-9") in loaded.codes.wanted("alt")


def serve_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> int:
    """``blina-cds serve`` with ``BLINA_CDS_<KEY>`` set from ``env`` (auth off, a scratch database)."""
    from service import cli
    from service.settings import get_settings

    monkeypatch.setattr("service.logs.configure_logging", lambda level: None)  # keep pytest's log capture
    monkeypatch.setenv("BLINA_CDS_AUTH", "off")
    monkeypatch.setenv("BLINA_CDS_DATABASE_URL", f"sqlite:///{tmp_path}/f.db")
    for key, value in env.items():
        monkeypatch.setenv(f"BLINA_CDS_{key.upper()}", value)
    get_settings.cache_clear()
    try:
        return cli.main(["serve", "--port", "1"])
    finally:
        get_settings.cache_clear()


def test_serve_refuses_to_start_on_bad_knowledge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    directory = copy_knowledge(tmp_path)
    (directory / "labs.toml").write_text("typo_key = 1\n" + (directory / "labs.toml").read_text())
    assert serve_exit_code(tmp_path, monkeypatch, knowledge_dir=str(directory)) == 2
    assert "labs.toml" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "old", "new", "match", "key"), [
    ("premedication.toml", "suggest_dose_mg = 16", "suggest_dose_mg = 12", "suggests 12.0 mg dexamethasone",
     "requirements"),
    ("dosing.toml", "daily = ['daily']", "daily = ['dai(ly']", "bad pattern", "dose_text.daily"),
    ("dosing.toml", "unended_bag_hours = 24", "unended_bag_hours = 30", "not in \\[bags\\]",
     "running_infusion.unended_bag_hours"),
])
def test_inconsistent_medication_knowledge_stops_start_up(
    tmp_path: Path, name: str, old: str, new: str, match: str, key: str,
) -> None:
    """A suggested premedication below the requirement it fixes, or a dose-text pattern that does not compile."""
    directory = copy_knowledge(tmp_path)
    path = directory / name
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(KnowledgeError, match=match) as err:
        load_knowledge(directory)
    assert err.value.file == name
    assert key in f"{err.value.key} {err.value}"  # the key, or the model-level message naming it
