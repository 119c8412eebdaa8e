"""Hypothesis profiles for the property tests; ``HYPOTHESIS_PROFILE`` picks one (``ci`` by default).

``ci`` is what ``make test`` runs: few enough examples that the whole property suite stays well under a minute on a
loaded two-core machine, derandomized so that a clean clone in CI explores exactly the same examples every run (a
failure there reproduces anywhere), and no example database (CI starts from a clean clone anyway). ``long``
explores many more examples with fresh randomness each run and keeps its database in ``.hypothesis/``, so a
failure it found is replayed first on the next run. Neither has a deadline: timing is not a property.

The profile is applied per test (``@PROFILE``), not loaded globally: the schemathesis tests set their own.
"""

from __future__ import annotations

import functools
import os

from hypothesis import HealthCheck, settings

from service.knowledge import Knowledge, load_knowledge
from service.settings import DEFAULT_KNOWLEDGE_DIR

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=1500, deadline=None, print_blob=True, suppress_health_check=_QUIET)

PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings(settings.get_profile(PROFILE_NAME))
"""Decorate each property test with this (``@PROFILE``); a test may lower ``max_examples`` with ``scaled``."""


def scaled(fraction: float) -> settings:
    """The profile with ``max_examples`` scaled (an expensive property runs fewer, never fewer than 10)."""
    return settings(PROFILE, max_examples=max(10, int(PROFILE.max_examples * fraction)))


@functools.cache
def knowledge() -> Knowledge:
    """The shipped knowledge, loaded once (not the ``kb`` fixture: hypothesis prints every argument of a failing
    example, and the knowledge's repr is tens of kilobytes)."""
    return load_knowledge(DEFAULT_KNOWLEDGE_DIR)
