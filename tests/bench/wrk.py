"""Driving wrk (Debian's, ``make wrk``) for ``make bench``, and reading its ``--latency`` report.

    result = run_wrk(base, [Request("POST", "/cds-services/x", body)], connections=16, threads=2, duration_s=5,
                     workdir=tmp)
    result.rps, result.p50_ms, result.p99_ms, result.errors

Bodies are written to files in ``workdir`` and sent by ``requests.lua`` (keep-alive: wrk reuses each connection).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("requests.lua")
_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no report."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0

    @property
    def errors(self) -> int:
        """Answers that were not 2xx/3xx, plus socket errors and requests past wrk's ``--timeout``."""
        return self.non_2xx + self.connect_errors + self.read_errors + self.write_errors + self.timeouts


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of a ``wrk --latency`` report (latencies in ms)."""
    percentiles = {p: _ms(v, u) for p, v, u in re.findall(rf"^\s+(50|75|90|99)%\s+{_TIME}\s*$", output, re.M)}
    total = re.search(rf"^\s*(\d+) requests in {_TIME}", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if total is None or rps is None or len(percentiles) != 4:
        raise WrkError(f"no wrk --latency report in:\n{output[-2000:]}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    connect, read, write, timeout = (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0)
    return WrkResult(
        requests=int(total.group(1)), duration_s=_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)), p50_ms=percentiles["50"], p75_ms=percentiles["75"], p90_ms=percentiles["90"],
        p99_ms=percentiles["99"], non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        connect_errors=connect, read_errors=read, write_errors=write, timeouts=timeout,
    )


def wrk_executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed (make wrk installs Debian's)")
    return found


def write_request_list(requests: list[Request], workdir: Path, name: str) -> Path:
    """The list ``requests.lua`` reads: one line per request, each body in its own file beside it."""
    lines = []
    for i, request in enumerate(requests):
        body = "-"
        if request.body is not None:
            path = workdir / f"{name}-{i}.json"
            path.write_bytes(request.body)
            body = str(path)
        if " " in request.path or " " in body:
            raise ValueError(f"a space in {request.path!r} or {body!r}")
        lines.append(f"{request.method} {request.path} {body}\n")
    listing = workdir / f"{name}.requests"
    listing.write_text("".join(lines))
    return listing


def wrk_command(base: str, listing: Path, *, connections: int, threads: int, duration_s: float, timeout_s: float,
                stop_after: int | None = None, done_file: Path | None = None) -> list[str]:
    command = [wrk_executable(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
               f"--timeout={max(1, round(timeout_s))}s", "-s", str(LUA), base, "--", str(listing)]
    if stop_after:
        command += [str(stop_after), str(done_file)]
    return command


def run_wrk(base: str, requests: list[Request], *, connections: int, threads: int, duration_s: float,
            workdir: Path, name: str = "load", timeout_s: float = 60.0, stop_after: int | None = None) -> WrkResult:
    """One wrk run against ``base``; with ``stop_after``, each thread stops after that many responses (or when
    ``duration_s`` runs out, whichever comes first)."""
    listing = write_request_list(requests, workdir, name)
    done_file = workdir / f"{name}.done"
    done_file.unlink(missing_ok=True)
    command = wrk_command(base, listing, connections=connections, threads=threads, duration_s=duration_s,
                          timeout_s=timeout_s, stop_after=stop_after, done_file=done_file)
    deadline = time.monotonic() + duration_s + timeout_s + 60
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        try:
            while wrk.poll() is None:
                if stop_after and done_file.exists() and len(done_file.read_text().splitlines()) >= threads:
                    wrk.send_signal(signal.SIGINT)  # every thread has stopped: wrk prints its report and exits
                    break
                if time.monotonic() > deadline:
                    raise WrkError(f"wrk did not finish within {duration_s + timeout_s + 60:.0f} s")
                time.sleep(0.1)
            stdout, stderr = wrk.communicate(timeout=timeout_s + 60)
        finally:
            if wrk.poll() is None:
                wrk.kill()
    if wrk.returncode != 0:
        raise WrkError(f"wrk exited with {wrk.returncode}: {stderr[-2000:]}{stdout[-2000:]}")
    return parse_wrk(stdout)
