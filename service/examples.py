"""The example patients in ``fhir_examples/``: list them, read them, shift their dates, load them into a FHIR server.

Why shift: each example call is authored at a fixed past ``reference_instant``; a rule that looks at "the last 30
days" would see a stale weight a month later. Every date, dateTime and instant in a request or bundle is moved by
``now − reference_instant`` so that the reference instant becomes ``now`` whenever the example is used:

* dateTime / instant values move by the exact delta (whole seconds) and keep their own timezone offset;
* date-only values (``birthDate``, ``2026-03-10``) move by the number of calendar days between the two instants'
  UTC dates, and stay date-only.

``blina-cds examples list`` and ``blina-cds examples load --fhir-server URL`` (``service.cli``) call into this module.
The folder is ``<repo>/fhir_examples`` unless ``BLINA_CDS_EXAMPLES_DIR`` points elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "fhir_examples"

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
)


class ExampleError(RuntimeError):
    """An example is missing or malformed, or a FHIR server refused it."""


def examples_dir() -> Path:
    env = os.environ.get("BLINA_CDS_EXAMPLES_DIR")
    return Path(env) if env else DEFAULT_EXAMPLES_DIR


def names() -> list[str]:
    """Every example (a folder holding ``manifest.json``), sorted."""
    root = examples_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


_all_names = names


def load_manifest(name: str) -> dict[str, Any]:
    path = examples_dir() / name / "manifest.json"
    if not path.is_file():
        raise ExampleError(f"no example named '{name}' in {examples_dir()}")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def _call(name: str, call_id: str) -> dict[str, Any]:
    for call in load_manifest(name)["calls"]:
        if call["id"] == call_id:
            found: dict[str, Any] = call
            return found
    raise ExampleError(f"example '{name}' has no call '{call_id}'")


def _read(name: str, file: str) -> Any:
    return json.loads((examples_dir() / name / file).read_text(encoding="utf-8"))


def parse_instant(value: str) -> dt.datetime:
    """An aware datetime from an ISO instant (``Z`` or an offset is required)."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ExampleError(f"reference instant '{value}' has no timezone")
    return parsed


# ---------------------------------------------------------------- date shifting


def shift_value(value: str, *, delta: dt.timedelta, days: int) -> str:
    """``value`` moved by ``delta`` (dateTime/instant) or ``days`` (date); any other string is returned as is."""
    m = _DATE.match(value)
    if m:
        try:
            return (dt.date.fromisoformat(value) + dt.timedelta(days=days)).isoformat()
        except ValueError:
            return value
    m = _DATETIME.match(value)
    if not m:
        return value
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    moved = parsed + delta
    fraction, zone = m.group(7), m.group(8)
    text = moved.strftime("%Y-%m-%dT%H:%M:%S")  # FHIR: a time always carries seconds
    if fraction:
        text += f".{moved.microsecond:06d}"[: len(fraction)]
    if zone == "Z":
        return text + "Z"
    offset = moved.strftime("%z")  # the original offset: adding a timedelta keeps tzinfo
    return f"{text}{offset[:3]}:{offset[3:]}"


def shift_dates(doc: Any, *, delta: dt.timedelta, days: int) -> Any:
    """A copy of a JSON document with every FHIR date/dateTime/instant string shifted."""
    if isinstance(doc, dict):
        return {k: shift_dates(v, delta=delta, days=days) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shift_dates(v, delta=delta, days=days) for v in doc]
    if isinstance(doc, str):
        return shift_value(doc, delta=delta, days=days)
    return doc


def _deltas(reference: dt.datetime, now: dt.datetime) -> tuple[dt.timedelta, int]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    delta = now - reference
    delta = dt.timedelta(seconds=int(delta.total_seconds() // 1))  # whole seconds: no fractional noise
    days = (now.astimezone(dt.UTC).date() - reference.astimezone(dt.UTC).date()).days
    return delta, days


def _shifted(name: str, call_id: str, key: str, now: dt.datetime) -> Any:
    call = _call(name, call_id)
    delta, days = _deltas(parse_instant(call["reference_instant"]), now)
    if not delta and not days:  # at the reference instant (``cards check``, start-up): nothing moves
        return _read(name, call[key])
    return shift_dates(_read(name, call[key]), delta=delta, days=days)


def request_for(name: str, call_id: str, *, now: dt.datetime) -> dict[str, Any]:
    """The call's hook request with dates shifted to ``now`` and a fresh ``hookInstance``."""
    request: dict[str, Any] = _shifted(name, call_id, "request", now)
    request["hookInstance"] = str(uuid.uuid4())
    return request


def bundle_for(name: str, call_id: str, *, now: dt.datetime) -> dict[str, Any]:
    """The call's transaction Bundle with dates shifted to ``now``."""
    bundle: dict[str, Any] = _shifted(name, call_id, "bundle", now)
    return bundle


# ---------------------------------------------------------------- loading into a FHIR server


def load_into(fhir_server_url: str, *, names: Iterable[str] | None = None, now: dt.datetime | None = None,
              timeout_s: float = 60.0) -> dict[str, int]:
    """POST every call's shifted transaction Bundle to ``fhir_server_url``; resources loaded per example.

    Ids are fixed (PUT), so loading twice updates rather than duplicates.
    """
    now = now or dt.datetime.now(dt.UTC)
    wanted = list(names) if names is not None else _all_names()
    base = fhir_server_url.rstrip("/")
    loaded: dict[str, int] = {}
    with httpx.Client(timeout=timeout_s) as http:
        for name in wanted:
            count = 0
            for call in load_manifest(name)["calls"]:
                bundle = bundle_for(name, call["id"], now=now)
                try:
                    response = http.post(base + "/", json=bundle,
                                         headers={"Content-Type": "application/fhir+json",
                                                  "Accept": "application/fhir+json"})
                except httpx.HTTPError as exc:
                    raise ExampleError(f"{name}/{call['id']}: cannot reach FHIR server {base}: {exc}") from exc
                if response.status_code >= 300:
                    raise ExampleError(
                        f"{name}/{call['id']}: FHIR server answered {response.status_code}: {response.text[:500]}"
                    )
                count += len(bundle.get("entry") or ())
            loaded[name] = count
    return loaded
