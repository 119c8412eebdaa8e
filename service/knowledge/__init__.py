"""Clinical knowledge as data: load and validate ``service/knowledge/*.toml`` once at start-up.

Every number, window, code set and regimen map the rules use lives in a TOML file here, each entry
with its source, review date and confidence. A site points ``BLINA_CDS_KNOWLEDGE_DIR`` at its own
copy. A bad file stops start-up with the file and key named::

    KnowledgeError: codes.toml: concepts.alt.codings.0.system: Field required
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import KnowledgeError
from service.knowledge.codes import Codes

M = TypeVar("M", bound=BaseModel)


def _load_file(directory: Path, name: str, model: type[M]) -> M:
    path = directory / f"{name}.toml"
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError("file missing", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"not valid TOML ({exc})", file=path.name) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        raise KnowledgeError(first["msg"], file=path.name, key=key) from None


@dataclass(frozen=True)
class Knowledge:
    """Everything the rules know, validated. Built once per process by :func:`load_knowledge`."""

    codes: Codes


def load_knowledge(directory: Path) -> Knowledge:
    return Knowledge(
        codes=_load_file(directory, "codes", Codes),
    )
