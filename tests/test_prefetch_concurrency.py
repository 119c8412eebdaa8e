"""The FHIR fallback fetches run concurrently: every key at once, then every Medication read at once.

A stand-in FHIR server on 127.0.0.1 holds each request until a whole round of them is in flight together (the
searches of every missing key, then the reads of the Medications they name). Fetches made one after another never
fill a round: each request is released after ``HOLD_S`` instead, and the round's width shows it. Nothing here is
timed; the hold only keeps a serial implementation from waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from service.catalog import prefetch_templates
from service.knowledge import Knowledge
from tests.bench import workloads
from tests.bench.fhir_standin import FhirStandIn
from tests.conftest import AppFactory

HOLD_S = 2.0
"""How long a request waits for the rest of its round before it is answered anyway."""


class RoundStandIn(FhirStandIn):
    """Answers each round of ``rounds[i]`` requests only once all of them are in flight; records each round's width
    (the most requests in flight at once). ``ignore_include`` drops ``_include`` (a server that does not support it),
    so the Medications the records name must be read one by one."""

    def __init__(self, resources: Iterable[Mapping[str, Any]], *, rounds: list[int],
                 ignore_include: bool = False) -> None:
        super().__init__(resources, delay_s=0)
        self.rounds = rounds
        self.widths: list[int] = []
        self.ignore_include = ignore_include
        self._in_flight = 0
        self._open: asyncio.Event | None = None

    async def respond(self, method: str, target: str) -> tuple[int, bytes]:
        if self._open is None:  # a new round
            self._open = asyncio.Event()
            self.widths.append(0)
        this_round = self._open
        self._in_flight += 1
        self.widths[-1] = max(self.widths[-1], self._in_flight)
        if self._in_flight >= self.rounds[min(len(self.widths), len(self.rounds)) - 1]:
            this_round.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOLD_S):
                await this_round.wait()
        this_round.set()  # a round that never filled: the others are answered as they come
        try:
            return await super().respond(method, self._without_include(target))
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._open is this_round:
                self._open = None

    def _without_include(self, target: str) -> str:
        path, _, query = target.partition("?")
        if not self.ignore_include or not query:
            return target
        return f"{path}?{urlencode([(k, v) for k, v in parse_qsl(query) if k != '_include'])}"


def rule_ids(answer: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(card["source"]["topic"]["code"] for card in answer["cards"]))


def by_reference(resources: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], set[str]]:
    """The chart with every drug named by ``Medication/<id>`` (as many EHRs record it) instead of by code, the
    Medications beside it; and the references named."""
    out: list[Mapping[str, Any]] = []
    medications: dict[str, Mapping[str, Any]] = {}
    for resource in resources:
        concept = resource.get("medicationCodeableConcept")
        if not isinstance(concept, Mapping):
            out.append(resource)
            continue
        code = concept["coding"][0]["code"]
        medications.setdefault(f"Medication/med-{code}",
                               {"resourceType": "Medication", "id": f"med-{code}", "code": concept})
        named = {k: v for k, v in resource.items() if k != "medicationCodeableConcept"}
        out.append({**named, "medicationReference": {"reference": f"Medication/med-{code}"}})
    return out + list(medications.values()), set(medications)


@pytest.fixture
def keys(kb: Knowledge) -> int:
    """How many prefetch keys order-sign advertises: the searches and reads of the first round."""
    return len(prefetch_templates(kb))


async def test_every_missing_key_is_fetched_at_once(make_app: AppFactory, keys: int) -> None:
    with RoundStandIn(workloads.fhir_data().resources, rounds=[keys]) as fhir:
        workload = workloads.order_sign_no_prefetch(fhir.base)
        _, client = await make_app(fhir_timeout_s=60)
        response = await client.post(workload.path, content=workload.body,
                                      headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert rule_ids(response.json()) == workload.expected == ("treatment-free-interval",)
        assert fhir.widths == [keys]  # one round: all the keys' searches and reads in flight together
        assert fhir.requests == keys


async def test_medication_reads_start_together_after_the_searches(make_app: AppFactory, keys: int) -> None:
    chart, medications = by_reference(workloads.fhir_data().resources)
    assert len(medications) == 2  # blinatumomab and dexamethasone
    with RoundStandIn(chart, rounds=[keys, len(medications)], ignore_include=True) as fhir:
        workload = workloads.order_sign_no_prefetch(fhir.base)
        _, client = await make_app(fhir_timeout_s=60)
        response = await client.post(workload.path, content=workload.body,
                                      headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert rule_ids(response.json()) == workload.expected
        assert fhir.widths == [keys, len(medications)]  # two rounds, each all at once
        read = {p.split("/fhir/", 1)[1] for p in fhir.paths if "/fhir/Medication/" in p}
        assert read == medications


async def test_fetches_never_exceed_the_connection_setting(make_app: AppFactory, keys: int) -> None:
    """``BLINA_CDS_FHIR_MAX_CONNECTIONS`` bounds the requests in flight; the others wait their turn, within the
    deadline, and the call still gets every key."""
    with RoundStandIn(workloads.fhir_data().resources, rounds=[3]) as fhir:
        workload = workloads.order_sign_no_prefetch(fhir.base)
        _, client = await make_app(fhir_timeout_s=60, fhir_max_connections=3, fhir_max_idle_connections=3)
        response = await client.post(workload.path, content=workload.body,
                                      headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert rule_ids(response.json()) == workload.expected
        assert max(fhir.widths) == 3 < keys
        assert fhir.requests == keys
