"""Benchmark: how long ``/healthz`` waits while a maximal (20 MiB) hook call is evaluated, by where it runs.

    .venv/bin/python -m tests.bench.starvation            # event loop, worker thread, worker process
    .venv/bin/python -m tests.bench.starvation process    # one of them

Starts ``blina-cds serve`` on a free 127.0.0.1 port for each mode (``BLINA_CDS_CPU_POOL`` and
``BLINA_CDS_CPU_INLINE_MAX_BYTES`` select it), posts a patient-view call whose ``labs`` prefetch holds about
12,500 realistic Observations, and polls ``/healthz`` every 50 ms meanwhile. Prints the call's time and the
longest ``/healthz`` answer. The README's table under "Limits" comes from this.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.conftest import PATIENT_VIEW
from tests.live import live_service, post_while_polling
from tests.test_limits_live import maximal_request

MODES = {
    "inline": {"BLINA_CDS_CPU_INLINE_MAX_BYTES": str(64 * 1024 * 1024)},
    "thread": {"BLINA_CDS_CPU_POOL": "thread"},
    "process": {},
}
RUNS = 3


def measure(mode: str, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, live_service(Path(tmp), **MODES[mode]) as service:
        for run in range(RUNS):
            polled = post_while_polling(service.base, f"/cds-services/{PATIENT_VIEW}", body, poll=["/healthz"])
            health = polled.latencies["/healthz"]
            print(f"{mode:8} run {run + 1}: HTTP {polled.response.status_code} in {polled.took_s:5.2f} s; "
                  f"longest /healthz {max(health) * 1000:6.0f} ms over {len(health)} polls", flush=True)


def main(modes: list[str]) -> int:
    body = maximal_request()
    print(f"hook call body: {len(body)} bytes")
    for mode in modes or list(MODES):
        measure(mode, body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
