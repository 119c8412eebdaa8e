"""Clinical knowledge as data: load and validate ``service/knowledge/*.toml`` once at start-up.

Every number, window, code set and regimen map the rules use lives in a TOML file here, each entry
with its source, review date and confidence. A bad file stops start-up with the file and key named::

    KnowledgeError: codes.toml: concepts.alt.codings.0.system: Field required

A site overlays only what it changes: ``BLINA_CDS_KNOWLEDGE_DIR`` holds just the files, and in them just the
values, it overrides, merged over the shipped files (``load_knowledge(SHIPPED, overlay=site_dir)``). Only values
``site_tunable.toml`` marks as site policy may differ from the shipped ones; the merged result is validated as
a whole, as the shipped files are. ``Knowledge.fingerprint`` is a hash of the effective (merged) knowledge, which
every card carries so an audit can tell which numbers a clinician's card was built on.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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

SHIPPED_DIR = Path(__file__).resolve().parent
FILES: tuple[str, ...] = ("codes", "labs", "toxicity", "regimens", "premedication", "dosing", "policy")
"""The knowledge files, without ``.toml``."""
SITE_TUNABLE_FILE = "site_tunable.toml"
_PROVENANCE_KEYS = frozenset({"source", "reviewed_on", "confidence"})


@dataclass(frozen=True)
class _Raw:
    """One knowledge file's parsed TOML, after any site overlay, and where its values came from."""

    name: str
    data: dict[str, Any]
    shipped_file: str
    site_file: str | None = None
    site_paths: tuple[str, ...] = ()
    """Dotted paths whose value the site changed."""

    def file_for(self, key: str | None) -> str:
        """The file to name for an error at ``key``: the site's when the site set that value."""
        if self.site_file and key and any(key == p or key.startswith(p + ".") or p.startswith(key + ".")
                                          for p in self.site_paths):
            return self.site_file
        return self.shipped_file


def _parse_toml(path: Path, *, label: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError("file missing", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"not valid TOML ({exc})", file=label) from None


def _validate(raw: _Raw, model: type[M]) -> M:
    try:
        return model.model_validate(raw.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        raise KnowledgeError(first["msg"], file=raw.file_for(key), key=key) from None


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every non-table value; lists are values. Keys may hold dots (URLs)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, (*path, str(k)))
    else:
        yield path, value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping) else v
    return merged


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _tunable(parts: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        pat = pattern.split(".")
        if len(parts) >= len(pat) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pat, strict=False)):
            return True
        # provenance of a table holding a tunable value
        if (parts[-1] in _PROVENANCE_KEYS and len(parts) - 1 < len(pat)
                and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts[:-1], pat, strict=False))):
            return True
    return False


def site_tunable(directory: Path = SHIPPED_DIR) -> dict[str, tuple[str, ...]]:
    """``site_tunable.toml``: file name (without ``.toml``) → the dotted paths a site may override."""
    raw = _parse_toml(directory / SITE_TUNABLE_FILE, label=SITE_TUNABLE_FILE)
    out: dict[str, tuple[str, ...]] = {}
    for name in FILES:
        paths = raw.get(name, [])
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise KnowledgeError("must be a list of dotted paths", file=SITE_TUNABLE_FILE, key=name)
        out[name] = tuple(paths)
    if unknown := sorted(set(raw) - set(FILES)):
        raise KnowledgeError(f"unknown knowledge files {unknown}", file=SITE_TUNABLE_FILE, key=unknown[0])
    return out


def _read_all(directory: Path, overlay: Path | None) -> dict[str, _Raw]:
    """Every knowledge file, with the site's overlay merged in (only its site-tunable values may differ)."""
    if overlay is not None and overlay.resolve() == directory.resolve():
        overlay = None
    tunable = site_tunable(directory)  # read (and so checked) whether or not there is an overlay
    if overlay is not None:
        if not overlay.is_dir():
            raise KnowledgeError("not a directory", file=str(overlay))
        copied = overlay / SITE_TUNABLE_FILE
        if copied.is_file() and copied.read_bytes() != (directory / SITE_TUNABLE_FILE).read_bytes():
            raise KnowledgeError("a site cannot change which values are site policy; remove this file",
                                 file=str(copied))
        known = {f"{n}.toml" for n in FILES} | {SITE_TUNABLE_FILE}
        if extra := sorted(p.name for p in overlay.glob("*.toml") if p.name not in known):
            raise KnowledgeError(f"not knowledge files: {', '.join(extra)} (a site may overlay "
                                 f"{', '.join(sorted(known))})", file=str(overlay))
    raws: dict[str, _Raw] = {}
    for name in FILES:
        path = directory / f"{name}.toml"
        data = _parse_toml(path, label=path.name)
        site_path = overlay / f"{name}.toml" if overlay is not None else None
        if site_path is None or not site_path.exists():
            raws[name] = _Raw(name, data, shipped_file=path.name)
            continue
        site_label = str(site_path)
        site = _parse_toml(site_path, label=site_label)
        changed = []
        for leaf, value in _leaves(site):
            present, shipped_value = _lookup(data, leaf)
            if present and shipped_value == value:
                continue  # a copied value, unchanged
            if not _tunable(leaf, tunable[name]):
                raise KnowledgeError(
                    f"not site-tunable (site policy is listed in service/knowledge/{SITE_TUNABLE_FILE}); "
                    "label facts change only in the shipped knowledge, with a pharmacist's review",
                    file=site_label, key=".".join(leaf))
            changed.append(".".join(leaf))
        raws[name] = _Raw(name, _merge(data, site), shipped_file=path.name, site_file=site_label,
                          site_paths=tuple(changed))
    return raws


def _fingerprint(raws: Mapping[str, _Raw]) -> str:
    """sha256 over the effective knowledge: every file's merged values, canonical JSON, keys sorted."""

    def default(value: Any) -> str:
        if isinstance(value, dt.date | dt.time | dt.datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    doc = {name: raw.data for name, raw in sorted(raws.items())}
    encoded = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=default)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8")).hexdigest()


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
    fingerprint: str = ""
    """``sha256:<hex>`` of the effective knowledge (shipped values with the site's overlay merged in)."""
    site_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Site file → the dotted paths whose value it changed (empty without an overlay)."""


def load_knowledge(directory: Path = SHIPPED_DIR, *, overlay: Path | None = None) -> Knowledge:
    """The knowledge in ``directory`` (a complete set of files), with ``overlay``'s site values merged in."""
    raws = _read_all(directory, overlay)
    codes = _validate(raws["codes"], Codes)
    kb = Knowledge(
        codes=codes,
        labs=_validate(raws["labs"], Labs).checked(codes),
        toxicity=_validate(raws["toxicity"], Toxicity).checked(codes),
        **_medication_knowledge(raws, codes),
        fingerprint=_fingerprint(raws),
        site_overrides={r.site_file: r.site_paths for r in raws.values() if r.site_file and r.site_paths},
    )
    return kb


def _medication_knowledge(raws: Mapping[str, _Raw], codes: Codes) -> dict[str, Any]:
    """The medication side (regimens, premedication, dosing, policy), cross-checked against each other."""
    regimens = _validate(raws["regimens"], Regimens)
    premed = _validate(raws["premedication"], Premedication)
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
        "dosing": _validate(raws["dosing"], Dosing),
        "policy": _validate(raws["policy"], Policy),
    }
