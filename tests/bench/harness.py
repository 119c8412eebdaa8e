"""``make bench``: the service against a bare-framework floor, side by side in one run, and its targets.

    .venv/bin/python -m tests.bench.harness                      # everything (about 7 minutes)
    .venv/bin/python -m tests.bench.harness --only order-sign-full,small-chart --rounds 1 --duration 3 \\
        --memory-requests 0 --workers-rounds 0                   # a quick look at two workloads

Starts, on free 127.0.0.1 ports: the service (``blina-cds serve``, one worker, auth off, SQLite in a temp dir),
the floor (``tests/bench/floor.py``: bare FastAPI on the same uvicorn options, parses the body, answers
``{"cards": []}``), and a FHIR stand-in that answers every request after 50 ms (``tests/bench/fhir_standin.py``).
Each workload (``tests/bench/workloads.py``) is first sent once to each app and its answer checked (the service
must give the workload's cards, the floor ``{"cards": []}``); then wrk (keep-alive, ``--latency``)
loads floor and service in alternate rounds (floor first in odd rounds, service first in even ones), so drift on
a shared machine hits both, and the table reports the median of the rounds. Besides:

* memory: first, the service, fresh, gets 1,000 and then 9,000 more mixed requests (``MIX``: every workload but
  the 5,000-Observation history); the peak RSS (VmHWM) and RSS (VmRSS) of its server process are read from /proc;
* workers: the order-sign workload against a second service started with ``BLINA_CDS_WORKERS=2``, alternating
  with the one-worker service, for the scaling factor that decides the default.

The tables go to stdout and to ``tests/bench/RESULTS.md`` (with the machine, the commit and the settings); the
exit status is 1 when a target is missed or a request failed (after the file is written), 2 when the run could
not be made. Only 127.0.0.1 is contacted. Knobs: the options below, each also an environment variable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.server import serve_options
from service.settings import Settings
from tests.bench import workloads
from tests.bench.fhir_standin import FhirStandIn
from tests.bench.wrk import Request, WrkError, WrkResult, run_wrk, wrk_executable
from tests.fhir_server import free_port, stop_process
from tests.live import LiveService, live_service, wait_healthy

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).with_name("RESULTS.md")
START_TIMEOUT_S = 300.0
"""Start-up loads and checks every card file: 13 s on a loaded 2-core machine, and far more when it is busier."""

# Targets (issue "Speed"): ratios against the floor in the same run, one worker.
ORDER_SIGN_MIN_THROUGHPUT = 0.60
ORDER_SIGN_MAX_P99 = 2.0
SMALL_CHART_MAX_EXTRA_MS = 1.0
HISTORY_MAX_P50 = 1.5
HISTORY_LINEARITY = 0.30
MEMORY_MAX_MB = 150.0
MEMORY_FLAT = 0.10
WORKERS_MIN_SCALING = 1.7


def no_prefetch_max_p50(delay_ms: float) -> float:
    """Workload 4's target: the fetches run concurrently, so about one FHIR round trip, whatever the keys."""
    return 1.5 * delay_ms + 10


# --- workloads ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A workload as the harness loads it: the request, the connections, and what the answer must be."""

    key: str
    title: str
    request: Request
    connections: int
    threads: int
    duration_factor: float = 1.0
    resources: int = 0
    """Resources in the prefetch (the per-resource cost of the history workloads is divided by it)."""
    expected: tuple[str, ...] | None = None
    """The rule ids of the cards the service must answer with (checked before timing); None: not a hook call."""

    @property
    def size(self) -> str:
        return f"{len(self.request.body) / 1024:,.0f} KB" if self.request.body else "no body"


def hook_case(key: str, title: str, workload: workloads.Workload, *, connections: int, threads: int,
              duration_factor: float = 1.0) -> Case:
    return Case(key, title, Request("POST", workload.path, workload.body), connections=connections,
                threads=threads, duration_factor=duration_factor, resources=workload.resources,
                expected=workload.expected)


def build_cases(fhir_base: str) -> list[Case]:
    """The five workloads of the issue (the history one at 500 and at 5,000 Observations)."""
    return [
        hook_case("order-sign-full", "order-sign, complete prefetch", workloads.order_sign_full(),
                  connections=16, threads=2),
        hook_case("small-chart", "small chart (fixed cost per call)", workloads.small_chart(),
                  connections=1, threads=1),
        hook_case("history-500", "patient-view, 500-Observation history in prefetch",
                  workloads.patient_view_history(500), connections=1, threads=1),
        hook_case("history-5000", "patient-view, 5,000-Observation history in prefetch",
                  workloads.patient_view_history(5000), connections=1, threads=1, duration_factor=2.0),
        hook_case("no-prefetch", "order-sign, no prefetch, FHIR stand-in", workloads.order_sign_no_prefetch(fhir_base),
                  connections=2, threads=1),
        Case("discovery", "discovery (GET /cds-services)", Request("GET", workloads.DISCOVERY_PATH),
             connections=16, threads=2),
    ]


class BenchError(RuntimeError):
    """The run cannot be made (an app does not answer as the workload expects): no figure would mean anything."""


def rule_ids(answer: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(card["source"]["topic"]["code"] for card in answer.get("cards", [])))


def check_answers(case: Case, service: str, floor: str) -> None:
    """One call to each app: the service answers 200 with the workload's cards, the floor ``{"cards": []}`` (for
    discovery: both the service's document). A benchmark of wrong or error answers would measure nothing."""
    request = case.request
    with httpx.Client(timeout=120) as client:
        ours = client.request(request.method, service + request.path, content=request.body,
                              headers={"Content-Type": "application/json"})
        theirs = client.request(request.method, floor + request.path, content=request.body,
                                headers={"Content-Type": "application/json"})
    if ours.status_code != 200:
        raise BenchError(f"{case.key}: the service answered {ours.status_code}: {ours.text[:500]}")
    if case.expected is not None and rule_ids(ours.json()) != case.expected:
        raise BenchError(f"{case.key}: the service gave cards {rule_ids(ours.json())}, not {case.expected}")
    expected = ours.json() if request.method == "GET" else {"cards": []}
    if theirs.status_code != 200 or theirs.json() != expected:
        raise BenchError(f"{case.key}: the floor answered {theirs.status_code}: {theirs.text[:300]}")


# --- the apps ----------------------------------------------------------------------------------------------------

def service_env() -> dict[str, str]:
    """``BLINA_CDS_*`` settings from the caller's environment, passed to the service and the floor alike."""
    fixed = {"BLINA_CDS_AUTH", "BLINA_CDS_PORT", "BLINA_CDS_DATABASE_URL", "BLINA_CDS_WORKERS"}
    return {k: v for k, v in os.environ.items() if k.startswith("BLINA_CDS_") and k not in fixed}


@contextlib.contextmanager
def floor_app(tmp: Path) -> Iterator[LiveService]:
    """``tests/bench/floor.py`` started on a free port with the service's ``BLINA_CDS_*`` settings (not waited for:
    it starts while the service does; ``wait_started``); stopped after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINA_CDS_")}
    env.update({"BLINA_CDS_AUTH": "off", "BLINA_CDS_LOG_LEVEL": "WARNING", **service_env()})
    log_path = tmp / "floor.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.bench.floor", "--port", str(port)], cwd=REPO,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield LiveService(f"http://127.0.0.1:{port}", process, log_path)
    finally:
        stop_process(process)


def wait_started(app: LiveService) -> None:
    wait_healthy(app.process, app.base, timeout_s=START_TIMEOUT_S, log_tail=app.log_tail)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of one process, in MiB: its peak resident memory so far, and now."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmHWM"], fields["VmRSS"]


# --- measuring ---------------------------------------------------------------------------------------------------

@dataclass
class Side:
    """One app's rounds of one workload."""

    rounds: list[WrkResult] = field(default_factory=list)

    def median(self, figure: Callable[[WrkResult], float]) -> float:
        return statistics.median(figure(r) for r in self.rounds)

    @property
    def rps(self) -> float:
        return self.median(lambda r: r.rps)

    @property
    def p50(self) -> float:
        return self.median(lambda r: r.p50_ms)

    @property
    def p99(self) -> float:
        return self.median(lambda r: r.p99_ms)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)


@dataclass
class Compared:
    case: Case
    ours: Side = field(default_factory=Side)
    floor: Side = field(default_factory=Side)


@dataclass(frozen=True)
class Verdict:
    what: str
    figure: str
    met: bool


def alternate(pairs: list[tuple[str, Side, Callable[[], WrkResult]]], rounds: int,
              log: Callable[[str], None]) -> None:
    """``rounds`` rounds of each (name, side, run), their order reversed every other round."""
    for r in range(rounds):
        for name, side, run in (pairs if r % 2 == 0 else pairs[::-1]):
            result = run()
            side.rounds.append(result)
            log(f"  round {r + 1} {name:>9}: {result.rps:9.1f} req/s  p50 {result.p50_ms:8.2f} ms  "
                f"p99 {result.p99_ms:8.2f} ms" + (f"  ERRORS {result.errors}" if result.errors else ""))


def load(base: str, case: Case, *, duration_s: float, workdir: Path) -> Callable[[], WrkResult]:
    return lambda: run_wrk(base, [case.request], connections=case.connections, threads=case.threads,
                           duration_s=duration_s * case.duration_factor, workdir=workdir, name=case.key)


def compare(case: Case, service: str, floor: str, *, rounds: int, duration_s: float, workdir: Path,
            log: Callable[[str], None]) -> Compared:
    compared = Compared(case)
    log(f"{case.key}: {case.connections} connection{'s' if case.connections > 1 else ''}")
    alternate([("floor", compared.floor, load(floor, case, duration_s=duration_s, workdir=workdir)),
               ("ours", compared.ours, load(service, case, duration_s=duration_s, workdir=workdir))], rounds, log)
    return compared


@dataclass(frozen=True)
class MemoryFigures:
    counts: list[int]
    """Requests answered so far at each sample (cumulative)."""
    peak_mb: list[float]
    rss_mb: list[float]
    errors: int
    helpers_mb: list[float] = field(default_factory=list)
    """The largest peak RSS among the server's helper processes at each sample (not a target: they are apart)."""


MIX = ("order-sign-full", "small-chart", "discovery", "order-sign-full", "no-prefetch", "small-chart",
       "order-sign-full", "discovery", "small-chart", "history-500")
"""The mixed load of the memory measurement, in turn: every workload but the 5,000-Observation history, the
cheap ones more often (as an EHR calls order-sign and opens small charts far more often than long histories)."""


def describe_mix() -> str:
    return ", ".join(f"{MIX.count(k)} {k}" for k in dict.fromkeys(MIX)) + f" in every {len(MIX)}"


def helpers_peak_mb(pid: int) -> float:
    """The largest VmHWM among the processes the server started (the worker for large calls, the forkserver)."""
    from tests.bench.memory import tree

    peaks = [0.0]
    for child in tree(pid)[1:]:
        with contextlib.suppress(OSError, KeyError):
            peaks.append(memory_mb(child)[0])
    return max(peaks)


def measure_memory(service: LiveService, mix: list[Case], targets: list[int], *, workdir: Path,
                   log: Callable[[str], None]) -> MemoryFigures:
    """The server process's VmHWM/VmRSS after ``targets`` (cumulative) mixed requests, 4 connections, one thread."""
    counts, peaks, rss, helpers = [], [], [], []
    done = errors = 0
    for target in targets:
        result = run_wrk(service.base, [w.request for w in mix], connections=4, threads=1, duration_s=1800,
                         workdir=workdir, name="mixed", stop_after=target - done)
        done += result.requests
        errors += result.errors
        peak, now = memory_mb(service.process.pid)
        counts.append(done)
        peaks.append(peak)
        rss.append(now)
        helpers.append(helpers_peak_mb(service.process.pid))
        log(f"  after {done:,} mixed requests: peak RSS {peak:.1f} MiB, RSS {now:.1f} MiB "
            f"({result.rps:.0f} req/s{f', ERRORS {result.errors}' if result.errors else ''})")
    return MemoryFigures(counts, peaks, rss, errors, helpers)


# --- verdicts ----------------------------------------------------------------------------------------------------

def ratio(ours: float, floor: float) -> float:
    return ours / floor if floor else float("inf")


def verdicts(results: dict[str, Compared], *, fhir_delay_ms: float) -> list[Verdict]:
    """Each target of the issue that the measured workloads allow to judge."""
    found: list[Verdict] = []
    if (c := results.get("order-sign-full")) is not None:
        throughput = ratio(c.ours.rps, c.floor.rps)
        p99 = ratio(c.ours.p99, c.floor.p99)
        found.append(Verdict("order-sign: throughput ≥ 60 % of the floor's", f"{throughput:.0%}",
                             throughput >= ORDER_SIGN_MIN_THROUGHPUT))
        found.append(Verdict("order-sign: p99 ≤ 2× the floor's", f"{p99:.2f}×", p99 <= ORDER_SIGN_MAX_P99))
    if (c := results.get("small-chart")) is not None:
        extra = c.ours.p50 - c.floor.p50
        found.append(Verdict("small chart: p50 ≤ floor + 1 ms", f"floor + {extra:.2f} ms",
                             extra <= SMALL_CHART_MAX_EXTRA_MS))
    for key in ("history-500", "history-5000"):
        if (c := results.get(key)) is not None:
            p50 = ratio(c.ours.p50, c.floor.p50)
            found.append(Verdict(f"{key}: p50 ≤ 1.5× the floor's", f"{p50:.2f}×", p50 <= HISTORY_MAX_P50))
    small, large = results.get("history-500"), results.get("history-5000")
    if small is not None and large is not None:
        per_small = (small.ours.p50 - small.floor.p50) / small.case.resources
        per_large = (large.ours.p50 - large.floor.p50) / large.case.resources
        growth = ratio(per_large, per_small)
        found.append(Verdict("history: own cost per resource at 5,000 within 30 % of that at 500",
                             f"{per_small * 1000:.1f} → {per_large * 1000:.1f} µs/resource ({growth:.2f}×)",
                             per_small > 0 and abs(growth - 1) <= HISTORY_LINEARITY))
    if (c := results.get("no-prefetch")) is not None:
        limit = no_prefetch_max_p50(fhir_delay_ms)
        found.append(Verdict(f"no prefetch: p50 ≤ 1.5 × {fhir_delay_ms:g} ms + 10 ms = {limit:g} ms",
                             f"{c.ours.p50:.1f} ms", c.ours.p50 <= limit))
    for c in results.values():
        if c.ours.errors or c.floor.errors:
            found.append(Verdict(f"{c.case.key}: every request answered 2xx",
                                 f"{c.ours.errors} failed (service), {c.floor.errors} (floor)", False))
    return found


def memory_verdicts(memory: MemoryFigures) -> list[Verdict]:
    last = memory.peak_mb[-1]
    found = [Verdict(f"memory: peak RSS ≤ {MEMORY_MAX_MB:g} MB after {memory.counts[-1]:,} requests",
                     f"{last:.0f} MiB", last <= MEMORY_MAX_MB)]
    if len(memory.peak_mb) > 1:
        growth = ratio(last, memory.peak_mb[0])
        found.append(Verdict(f"memory: flat (±10 %) from {memory.counts[0]:,} to {memory.counts[-1]:,} requests",
                             f"{growth - 1:+.1%}", abs(growth - 1) <= MEMORY_FLAT))
    if memory.errors:
        found.append(Verdict("memory: every mixed request answered 2xx", f"{memory.errors} failed", False))
    return found


def workers_verdicts(one: Side, two: Side) -> list[Verdict]:
    scaling = ratio(two.rps, one.rps)
    found = [Verdict("2 workers: order-sign throughput ≥ 1.7× one worker's", f"{scaling:.2f}×",
                     scaling >= WORKERS_MIN_SCALING)]
    if one.errors or two.errors:
        found.append(Verdict("workers: every request answered 2xx", f"{one.errors + two.errors} failed", False))
    return found


def workers_decision(one: Side, two: Side, cores: int) -> str:
    scaling = ratio(two.rps, one.rps)
    if scaling >= WORKERS_MIN_SCALING:
        return (f"2 workers gave {scaling:.2f}× the one-worker throughput on {cores} cores: one worker per core "
                f"pays on a machine of its own (set BLINA_CDS_WORKERS to its core count). The default stays 1 "
                f"(README, Settings): in a container the core count Python sees is the node's, not the pod's "
                f"CPU limit, and Kubernetes scales by pods.")
    return (f"2 workers gave only {scaling:.2f}× the one-worker throughput on {cores} cores (target ≥ "
            f"{WORKERS_MIN_SCALING}×): the figure supports keeping BLINA_CDS_WORKERS=1 as the default and scaling "
            f"out with replicas.")


# --- the report --------------------------------------------------------------------------------------------------

def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def workload_table(c: Compared) -> str:
    w = c.case
    resources = f", {w.resources} resources" if w.resources else ""
    lines = [f"### {w.title}",
             "",
             f"`{w.request.method} {w.request.path}`, {w.size}{resources}; {w.connections} connection"
             f"{'s' if w.connections > 1 else ''}, median of {len(c.ours.rounds)} rounds each.",
             "",
             "| | ours | floor | ours / floor |",
             "|---|---:|---:|---:|",
             f"| throughput (req/s) | {fmt(c.ours.rps)} | {fmt(c.floor.rps)} | {ratio(c.ours.rps, c.floor.rps):.2f} |",
             f"| p50 (ms) | {fmt(c.ours.p50, 2)} | {fmt(c.floor.p50, 2)} | {ratio(c.ours.p50, c.floor.p50):.2f} |",
             f"| p99 (ms) | {fmt(c.ours.p99, 2)} | {fmt(c.floor.p99, 2)} | {ratio(c.ours.p99, c.floor.p99):.2f} |"]
    if c.ours.errors or c.floor.errors:
        lines.append(f"| failed requests | {c.ours.errors} | {c.floor.errors} | |")
    return "\n".join(lines)


def verdict_table(found: list[Verdict]) -> str:
    lines = ["| target | measured | |", "|---|---:|---|"]
    lines += [f"| {v.what} | {v.figure} | {'met' if v.met else '**missed**'} |" for v in found]
    return "\n".join(lines)


def rounds_table(results: dict[str, Compared], workers: tuple[Side, Side] | None) -> str:
    lines = ["| workload | app | req/s per round | p50 ms per round | p99 ms per round |", "|---|---|---|---|---|"]

    def row(key: str, app: str, side: Side) -> str:
        return (f"| {key} | {app} | {' / '.join(fmt(r.rps) for r in side.rounds)} | "
                f"{' / '.join(fmt(r.p50_ms, 2) for r in side.rounds)} | "
                f"{' / '.join(fmt(r.p99_ms, 2) for r in side.rounds)} |")

    for key, c in results.items():
        lines += [row(key, "floor", c.floor), row(key, "ours", c.ours)]
    if workers is not None:
        lines += [row("order-sign-full", "ours, 1 worker", workers[0]),
                  row("order-sign-full", "ours, 2 workers", workers[1])]
    return "\n".join(lines)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def settings_text(args: argparse.Namespace, cases: list[Case]) -> str:
    options = {k: v for k, v in serve_options(Settings(auth="off")).items() if k != "log_config"}
    wrk_version = subprocess.run([wrk_executable(), "-v"], capture_output=True, text=True, check=False).stdout
    connections = ", ".join(f"{w.key} {w.connections} ({w.threads} wrk thread{'s' if w.threads > 1 else ''})"
                            for w in cases)
    extra = service_env()
    return "\n".join([
        f"- rounds: {args.rounds} per app and workload, {args.duration:g} s each (history-5000: ×2), floor and "
        "service alternating; medians reported",
        f"- connections: {connections}; keep-alive; wrk `--latency`, `--timeout 60s`",
        "- one uvicorn worker each (the workers row excepted); uvicorn options of both apps: "
        + ", ".join(f"`{k}={v}`" for k, v in options.items()) + " (`service.server.serve_options`)",
        "- service: `blina-cds serve`, `BLINA_CDS_AUTH=off`, SQLite in a temp dir"
        + (", " + ", ".join(f"`{k}={v}`" for k, v in sorted(extra.items())) if extra else "")
        + "; other settings at their defaults",
        f"- FHIR stand-in: every answer after {args.fhir_delay_ms:g} ms",
        f"- memory: {' then '.join(f'{n:,}' for n in args.memory_requests) or 'skipped'} mixed requests "
        "(4 connections, 1 wrk thread), VmHWM/VmRSS of the server process from /proc",
        f"- workers: {args.workers_rounds} rounds of order-sign-full per service",
        f"- Python {platform.python_version()}, {wrk_version.splitlines()[0] if wrk_version else 'wrk'}",
    ])


def report(args: argparse.Namespace, cases: list[Case], results: dict[str, Compared],
           memory: MemoryFigures | None, workers: tuple[Side, Side] | None, took_s: float) -> tuple[str, bool]:
    cores = os.cpu_count() or 0
    found = verdicts(results, fhir_delay_ms=args.fhir_delay_ms)
    if memory is not None:
        found += memory_verdicts(memory)
    if workers is not None:
        found += workers_verdicts(*workers)
    missed = [v for v in found if not v.met]
    parts = [
        "# make bench: the service against the bare-framework floor",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · commit {git_commit()} · {cores} cores ({cpu_model()}) · "
        f"load average at the end {os.getloadavg()[0]:.1f} · the whole run took {took_s / 60:.1f} min",
        "",
        "Ours is `blina-cds serve`; the floor is a bare FastAPI app on the same uvicorn options that parses the same "
        "body and answers `{\"cards\": []}` (`tests/bench/floor.py`). Both run at once on this machine and are "
        "loaded in alternate rounds; a ratio is ours / floor. How to read it and the knobs: README, "
        "\"Benchmark\".",
        "",
        "## Targets",
        "",
        verdict_table(found),
        "",
        f"{len(found) - len(missed)} of {len(found)} targets met.",
        "",
        "## Workloads",
    ]
    for c in results.values():
        parts += ["", workload_table(c)]
    if memory is not None:
        parts += ["", "## Memory of one service worker", "",
                  f"Mixed requests: {describe_mix()}, 4 connections. The server process is the one uvicorn worker; "
                  "calls larger than `BLINA_CDS_CPU_INLINE_MAX_BYTES` are evaluated in its helper process, whose "
                  "peak is shown apart (no target).", "",
                  "| mixed requests answered | peak RSS (VmHWM) | RSS now (VmRSS) | largest helper's peak RSS |",
                  "|---:|---:|---:|---:|"]
        parts += [f"| {n:,} | {p:.1f} MiB | {r:.1f} MiB | {h:.1f} MiB |"
                  for n, p, r, h in zip(memory.counts, memory.peak_mb, memory.rss_mb, memory.helpers_mb, strict=True)]
    if workers is not None:
        one, two = workers
        parts += ["", "## Workers", "", "order-sign, complete prefetch, 16 connections:", "",
                  "| | 1 worker | 2 workers | 2 / 1 |", "|---|---:|---:|---:|",
                  f"| throughput (req/s) | {fmt(one.rps)} | {fmt(two.rps)} | {ratio(two.rps, one.rps):.2f} |",
                  f"| p50 (ms) | {fmt(one.p50, 2)} | {fmt(two.p50, 2)} | {ratio(two.p50, one.p50):.2f} |",
                  f"| p99 (ms) | {fmt(one.p99, 2)} | {fmt(two.p99, 2)} | {ratio(two.p99, one.p99):.2f} |",
                  "", workers_decision(one, two, cores)]
    parts += ["", "## Settings", "", settings_text(args, cases),
              "", "## Every round", "", rounds_table(results, workers), ""]
    return "\n".join(parts), not missed


# --- main --------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="make bench", description="the service against the floor, side by side")
    parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION_S", "5")),
                        help="seconds per wrk round (BENCH_DURATION_S, default 5)")
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")),
                        help="rounds per app and workload (BENCH_ROUNDS, default 3)")
    parser.add_argument("--only", default=env("BENCH_ONLY", ""),
                        help="comma-separated workload keys (BENCH_ONLY; default all: order-sign-full, small-chart, "
                             "history-500, history-5000, no-prefetch, discovery)")
    parser.add_argument("--memory-requests", default=env("BENCH_MEMORY_REQUESTS", "1000,10000"),
                        help="cumulative mixed-request counts at which memory is read (BENCH_MEMORY_REQUESTS, "
                             "default 1000,10000; 0 skips)")
    parser.add_argument("--workers-rounds", type=int, default=int(env("BENCH_WORKERS_ROUNDS", "3")),
                        help="rounds of the 1- vs 2-worker comparison (BENCH_WORKERS_ROUNDS, default 3; 0 skips)")
    parser.add_argument("--fhir-delay-ms", type=float, default=float(env("BENCH_FHIR_DELAY_MS", "50")),
                        help="the FHIR stand-in's delay per request (BENCH_FHIR_DELAY_MS, default 50)")
    parser.add_argument("--output", type=Path, default=Path(env("BENCH_RESULTS", str(RESULTS))),
                        help="where the Markdown report goes (BENCH_RESULTS, default tests/bench/RESULTS.md)")
    args = parser.parse_args(argv)
    args.memory_requests = [int(n) for n in str(args.memory_requests).split(",") if int(n) > 0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {line}", flush=True)

    try:
        wrk_executable()
    except WrkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        measured = measure(args, log)
    except (BenchError, WrkError, AssertionError) as exc:  # AssertionError: an app did not start (tests.live)
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    text, all_met = report(args, *measured, time.monotonic() - started)
    args.output.write_text(text)
    print()
    print(text)
    print(f"written to {args.output}")
    return 0 if all_met else 1


Measured = tuple[list[Case], dict[str, Compared], MemoryFigures | None, tuple[Side, Side] | None]


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> Measured:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        fhir = stack.enter_context(FhirStandIn(workloads.fhir_data().resources, delay_s=args.fhir_delay_ms / 1000))
        all_cases = build_cases(fhir.base)
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = set(wanted) - {w.key for w in all_cases}
        if unknown:
            raise BenchError(f"unknown workload(s) {', '.join(sorted(unknown))}")
        chosen = [w for w in all_cases if not wanted or w.key in wanted]
        log("starting the service, the floor and the FHIR stand-in (start-up checks every card file)")
        floor_process = stack.enter_context(floor_app(tmp))
        service = stack.enter_context(live_service(tmp, start_timeout_s=START_TIMEOUT_S, **service_env(),
                                                   BLINA_CDS_WORKERS="1"))
        wait_started(floor_process)
        floor = floor_process.base
        for case in all_cases:
            check_answers(case, service.base, floor)
        memory = None
        if args.memory_requests:
            by_key = {c.key: c for c in all_cases}
            mix = [by_key[key] for key in MIX]
            log(f"memory: {' then '.join(f'{n:,}' for n in args.memory_requests)} mixed requests on the fresh "
                f"service ({describe_mix()})")
            memory = measure_memory(service, mix, args.memory_requests, workdir=tmp, log=log)
        results = {w.key: compare(w, service.base, floor, rounds=args.rounds, duration_s=args.duration,
                                  workdir=tmp, log=log) for w in chosen}
        workers = None
        if args.workers_rounds > 0:
            log("workers: starting a second service with BLINA_CDS_WORKERS=2")
            two = stack.enter_context(live_service(tmp, start_timeout_s=START_TIMEOUT_S, **service_env(),
                                               BLINA_CDS_WORKERS="2"))
            order_sign = next(w for w in all_cases if w.key == "order-sign-full")
            check_answers(order_sign, two.base, floor)
            workers = (Side(), Side())
            log("order-sign-full: 1 worker and 2 workers")
            alternate([("1 worker", workers[0], load(service.base, order_sign, duration_s=args.duration, workdir=tmp)),
                       ("2 workers", workers[1], load(two.base, order_sign, duration_s=args.duration, workdir=tmp))],
                      args.workers_rounds, log)
    return chosen, results, memory, workers


if __name__ == "__main__":
    sys.exit(main())
