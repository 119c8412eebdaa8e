"""Bounded memos of pure verdicts on chart values (which drug a concept names, what a rate unit means).

A chart writes the same few drug names and units on hundreds of records, so the verdicts are remembered per
process. What a request sends must not grow memory: a memo holds at most ``max_entries`` keys (it is emptied when
full), and never keeps a key whose text is longer than ``MEMO_MAX_KEY_CHARS`` (long free text is not repeated
anyway; it is judged every time).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MEMO_MAX_KEY_CHARS = 512
"""Longest text (all of a key's strings together) a memo keeps; a longer one is judged each time."""


class Memo(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, key_chars: int, compute: Callable[[], V]) -> V:
        """The remembered verdict for ``key``, or ``compute()`` (kept when ``key_chars`` is within the limit)."""
        try:
            return self._entries[key]
        except KeyError:
            pass
        value = compute()
        if key_chars <= MEMO_MAX_KEY_CHARS:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = value
        return value
