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
from service.knowledge.dosing import Dosing
from service.knowledge.labs import Labs
from service.knowledge.policy import Policy
from service.knowledge.premedication import Premedication
from service.knowledge.regimens import Regimens
from service.knowledge.toxicity import Toxicity

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
    labs: Labs
    toxicity: Toxicity
    regimens: Regimens
    premedication: Premedication
    dosing: Dosing
    policy: Policy


def load_knowledge(directory: Path) -> Knowledge:
    codes = _load_file(directory, "codes", Codes)
    kb = Knowledge(
        codes=codes,
        labs=_load_file(directory, "labs", Labs).checked(codes),
        toxicity=_load_file(directory, "toxicity", Toxicity).checked(codes),
        **_medication_knowledge(directory, codes),
    )
    return kb


def _medication_knowledge(directory: Path, codes: Codes) -> dict[str, Any]:
    """The medication side (regimens, premedication, dosing, policy), cross-checked against each other."""
    regimens = _load_file(directory, "regimens", Regimens)
    premed = _load_file(directory, "premedication", Premedication)
    for i, m in enumerate(regimens.reason_map):
        if m.system not in codes.code_systems:
            raise KnowledgeError(f"unknown code system key '{m.system}'", file="regimens.toml", key=f"reason_map.{i}")
    for name in regimens.regimens:
        for group in ("adult", "pediatric"):
            if not any(r.regimen == name and r.age_group == group for r in premed.requirements):
                raise KnowledgeError(f"no {group} requirement for regimen '{name}'", file="premedication.toml",
                                     key="requirements")
    for i, r in enumerate(premed.requirements):
        if r.regimen not in regimens.regimens:
            raise KnowledgeError(f"unknown regimen '{r.regimen}'", file="premedication.toml",
                                 key=f"requirements.{i}.regimen")
        if r.agent not in codes.concepts or not codes.concepts[r.agent].codings:
            raise KnowledgeError(f"agent '{r.agent}' is not a coded concept in codes.toml", file="premedication.toml",
                                 key=f"requirements.{i}.agent")
        if r.suggest_agent is not None and (r.suggest_agent not in codes.concepts
                                            or not codes.concepts[r.suggest_agent].codings):
            raise KnowledgeError(f"agent '{r.suggest_agent}' is not a coded concept in codes.toml",
                                 file="premedication.toml", key=f"requirements.{i}.suggest_agent")
    for name in premed.label_equivalence.regimens:
        if name not in regimens.regimens:
            raise KnowledgeError(f"unknown regimen '{name}'", file="premedication.toml",
                                 key="label_equivalence.regimens")
    if premed.iv_route.system not in codes.code_systems:
        raise KnowledgeError(f"unknown code system key '{premed.iv_route.system}'", file="premedication.toml",
                             key="iv_route.system")
    return {
        "regimens": regimens,
        "premedication": premed,
        "dosing": _load_file(directory, "dosing", Dosing),
        "policy": _load_file(directory, "policy", Policy),
    }
