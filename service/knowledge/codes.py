"""``codes.toml``: code systems and the code sets each concept is recognised by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, model_validator

from service.knowledge.base import Provenance, Strict
from service.memo import Memo


class CodingRef(Strict):
    system: str
    """A key of ``[code_systems]``."""
    code: str
    display: str | None = None


class Concept(Provenance):
    description: str
    codings: tuple[CodingRef, ...] = ()
    text_patterns: tuple[str, ...] = ()
    """Case-insensitive regular expressions matched against ``code.text`` / ``display`` when no coding matches."""
    exclude_text_patterns: tuple[str, ...] = ()
    """Text that disqualifies a match even when a coding or pattern matched (e.g. the IV Solution Stabilizer)."""


class Codes(Strict):
    code_systems: Mapping[str, str]
    system_aliases: Mapping[str, str] = Field(default_factory=dict)
    """Alternative system URIs accepted on input, mapped to a ``[code_systems]`` key."""
    concepts: Mapping[str, Concept]

    @model_validator(mode="after")
    def _systems_known(self) -> Codes:
        for name, concept in self.concepts.items():
            for c in concept.codings:
                if c.system not in self.code_systems:
                    raise ValueError(f"concepts.{name}: unknown code system key '{c.system}'")
        for alias, key in self.system_aliases.items():
            if key not in self.code_systems:
                raise ValueError(f"system_aliases.{alias}: unknown code system key '{key}'")
        return self

    # Look-up tables built once (concept matching runs for every coding of every resource). Plain
    # instance attributes, set past pydantic's frozen __setattr__, so reading them costs a dict look-up.
    key_of_uri: ClassVar[dict[str, str]]
    canonical_of_uri: ClassVar[dict[str, str]]
    wanted_of_concept: ClassVar[dict[str, frozenset[tuple[str, str]]]]
    concepts_of_pair: ClassVar[dict[tuple[str, str], frozenset[str]]]
    """(system URI, code) → the concepts listing that coding."""
    drug_verdicts: ClassVar[Memo[Any, tuple[bool, str | None]]]
    """Which drug a CodeableConcept names (``service.timeline.dose``), remembered for these codes."""

    def model_post_init(self, context: Any, /) -> None:
        keys = {**dict(self.system_aliases), **{uri: key for key, uri in self.code_systems.items()}}
        object.__setattr__(self, "key_of_uri", keys)
        object.__setattr__(self, "canonical_of_uri", {uri: self.code_systems[key] for uri, key in keys.items()})
        object.__setattr__(self, "wanted_of_concept", {
            name: frozenset((self.code_systems[c.system], c.code) for c in concept.codings)
            for name, concept in self.concepts.items()
        })
        names: dict[tuple[str, str], set[str]] = {}
        for name, pairs in self.wanted_of_concept.items():
            for pair in pairs:
                names.setdefault(pair, set()).add(name)
        object.__setattr__(self, "concepts_of_pair", {pair: frozenset(n) for pair, n in names.items()})
        object.__setattr__(self, "drug_verdicts", Memo(4096))

    def system_key(self, uri: str) -> str | None:
        """The ``[code_systems]`` key for a system URI, aliases included."""
        return self.key_of_uri.get(uri)

    def canonical_uri(self, uri: str) -> str:
        """A system URI with legacy aliases replaced by the canonical one (unknown URIs unchanged)."""
        return self.canonical_of_uri.get(uri, uri)

    def wanted(self, concept: str) -> frozenset[tuple[str, str]]:
        """The (system URI, code) pairs of a concept."""
        return self.wanted_of_concept[concept]

    def uri(self, key: str) -> str:
        return self.code_systems[key]

    def token_list(self, *concepts: str) -> str:
        """Comma-separated ``system|code`` tokens for a FHIR search, e.g. ``code=<this>``."""
        return ",".join(f"{self.uri(c.system)}|{c.code}" for name in concepts for c in self.concepts[name].codings)
