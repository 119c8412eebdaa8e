"""Shared fixtures of the integration suite: the dataset (loaded once into sekmet, removed after), the
mini-EHR's signing key, and a spy on what the pipeline hands to the timeline builder.

The spy is how these tests see the data the service obtained (prefetched or fetched) while the
clinical rules are still being written: it records, per prefetch key, the ``Type/id`` of every
resource that reached step 2 of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from service import pipeline
from tests.fhir_server import FhirServer
from tests.integration.dataset import Dataset, TimelineInputs, build_dataset
from tests.jwt_tools import make_es384_keypair


@pytest.fixture(scope="package")
def dataset(fhir_server: FhirServer) -> Iterator[Dataset]:
    """Loaded once for this package, removed afterwards: sekmet would show its AdverseEvent to every patient."""
    data = build_dataset()
    bundle = data.transaction()
    fhir_server.load(bundle)
    yield data
    fhir_server.unload(bundle)


@pytest.fixture(scope="session")
def ehr_key() -> tuple[Any, dict[str, Any]]:
    """The mini-EHR's ES384 key pair: (private key, public JWK with kid)."""
    return make_es384_keypair(kid="mini-ehr-1")


@pytest.fixture
def timeline_inputs(monkeypatch: pytest.MonkeyPatch) -> TimelineInputs:
    """One entry per hook call that reached step 2: prefetch key → {``Type/id``} the service had."""
    calls: TimelineInputs = []
    original = pipeline.build_timeline

    def spy(**kwargs: Any) -> Any:
        data: Mapping[str, Sequence[Mapping[str, Any]]] = kwargs["data"]
        calls.append({key: {f"{r['resourceType']}/{r['id']}" for r in rs} for key, rs in data.items()})
        return original(**kwargs)

    monkeypatch.setattr(pipeline, "build_timeline", spy)
    return calls

