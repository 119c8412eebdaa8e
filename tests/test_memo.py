"""Memos of chart verdicts stay bounded whatever a request sends."""

from __future__ import annotations

from service.fhir import extract
from service.knowledge import Knowledge
from service.memo import MEMO_MAX_KEY_CHARS, Memo


def test_a_memo_keeps_short_keys_and_is_emptied_when_full() -> None:
    memo: Memo[str, int] = Memo(max_entries=2)
    calls: list[str] = []

    def judge(key: str) -> int:
        calls.append(key)
        return len(key)

    assert memo.get("a", 1, lambda: judge("a")) == 1
    assert memo.get("a", 1, lambda: judge("a")) == 1
    assert calls == ["a"]  # remembered
    memo.get("b", 1, lambda: judge("b"))
    memo.get("c", 1, lambda: judge("c"))
    assert len(memo) == 1  # full at 2: emptied, then "c" kept


def test_long_free_text_is_judged_but_never_kept(kb: Knowledge) -> None:
    before = len(extract._TEXT_VERDICTS)
    long_text = "blinatumomab " + "x" * MEMO_MAX_KEY_CHARS
    concept = {"text": long_text}
    assert extract.concept_matches(concept, kb.codes, "blinatumomab")
    assert len(extract._TEXT_VERDICTS) == before
    memo: Memo[str, bool] = Memo(max_entries=10)
    assert memo.get(long_text, len(long_text), lambda: True) is True
    assert len(memo) == 0
