"""The reference deployment, started for real on 127.0.0.1: nginx in front of two replicas, PostgreSQL, sekmet-fhir.

    with Cluster.start(workdir, database_url="postgresql://") as cluster:
        cluster.base                      # nginx: the one URL the EHR calls (BLINA_CDS_PUBLIC_BASE_URL)
        cluster.replicas["a"].base        # a replica, directly (for replay checks)
        cluster.kill("b"); cluster.restart("b")
        cluster.replicas["a"].rss_mb(), cluster.replicas["a"].open_fds()

* nginx runs ``deploy/nginx/blina-cds.conf`` itself, its placeholders filled with free ports, inside a small
  main configuration whose pid file, logs and temporary folders live in ``workdir`` (Debian's nginx, installed
  by ``make nginx``; ``$BLINA_CDS_NGINX`` may point at another binary). Its access log records, per request, the
  replica(s) tried: a retry shows as two upstream addresses.
* each replica is ``blina-cds serve`` (one uvicorn process and its CPU worker pool) in its own process group,
  JWT on with a test issuer, every replica on the same ``BLINA_CDS_DATABASE_URL``. :meth:`Cluster.kill` sends
  SIGKILL to the whole group, as a container or node dying would; :meth:`Cluster.restart` starts it again on the
  same port.
* sekmet-fhir (tests/fhir_server.py) serves the charts of the calls sent without prefetch.

PostgreSQL is the caller's: ``make chaos`` runs under ``pg_virtualenv``; the short tests pass a fresh schema.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fhir_server import FhirServer, free_port, running_sekmet
from tests.jwt_tools import issuer_entry, issuers_file, make_es384_keypair
from tests.live import SERVE, serve_environment, wait_healthy

REPO = Path(__file__).resolve().parents[2]
NGINX_SITE = REPO / "deploy" / "nginx" / "blina-cds.conf"
NGINX_ENV = "BLINA_CDS_NGINX"
ISSUER = "https://chaos-ehr.test"
START_TIMEOUT_S = 60.0

_NGINX_MAIN = """\
{user}daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$msec $status $request_method $uri $upstream_addr $upstream_status $request_time';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/blina-cds.conf;
}}
"""


def nginx_executable() -> str | None:
    """nginx from ``$BLINA_CDS_NGINX``, PATH or /usr/sbin (Debian puts it there, outside a user's PATH)."""
    candidate = os.environ.get(NGINX_ENV) or shutil.which("nginx") or "/usr/sbin/nginx"
    return candidate if Path(candidate).is_file() and os.access(candidate, os.X_OK) else None


def render_site(*, listen: str, replicas: list[str]) -> str:
    """``deploy/nginx/blina-cds.conf`` with its placeholders filled (the form the README's sed line gives)."""
    text = NGINX_SITE.read_text(encoding="utf-8")
    a, b = replicas
    filled = text.replace("@@LISTEN@@", listen).replace("@@REPLICA_A@@", a).replace("@@REPLICA_B@@", b)
    assert "@@" not in filled, "a placeholder of deploy/nginx/blina-cds.conf was left unfilled"
    return filled


def _status_line(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise LookupError(field_name)


@dataclass
class Replica:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the server process (not its CPU worker pool), from /proc."""
        assert self.process is not None
        return _status_line(self.process.pid, "VmRSS") / 1024

    def open_fds(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def start(self, *, nice: int = 0) -> None:
        """Start ``blina-cds serve``; ``nice`` lowers its CPU priority (``nice -n``) for its whole life."""
        self.starts += 1
        command = list(SERVE)
        if nice:
            command = ["nice", "-n", str(nice), *command]  # nice execs the server: the pid stays the server's
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        wait_healthy(self.process, self.base, timeout_s=timeout_s, log_tail=self.log_tail)

    def kill(self) -> None:
        """SIGKILL to the replica's whole process group (server and CPU workers), then reap it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class Cluster:
    workdir: Path
    base: str
    replicas: dict[str, Replica]
    fhir: FhirServer
    private_key: Any
    kid: str
    nginx: subprocess.Popen[bytes]
    database_url: str
    events: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic(), what happened): kills and restarts, for the report."""

    @classmethod
    @contextlib.contextmanager
    def start(cls, workdir: Path, *, database_url: str, recheck_cards: bool = True,
              settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
        """``recheck_cards=False`` (the short tests): the replicas skip the start-up card check this process passed
        (``tests.live.serve_environment``); ``make chaos`` and ``make soak`` keep it: a restart costs what it costs.
        ``settings``: more ``BLINA_CDS_*`` settings for both replicas."""
        nginx_bin = nginx_executable()
        if nginx_bin is None:
            raise RuntimeError(f"nginx is not installed (run `make nginx`, or set {NGINX_ENV})")
        workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            fhir = stack.enter_context(running_sekmet(workdir / "sekmet"))
            private_key, jwk = make_es384_keypair(kid="chaos-ehr-1")
            trusted = issuers_file(workdir, [issuer_entry(ISSUER, keys=[jwk], fhir_servers=[fhir.base])])
            nginx_port = free_port()
            base = f"http://127.0.0.1:{nginx_port}"
            common = {k: v for k, v in os.environ.items() if not k.startswith("BLINA_CDS_")}
            common.update({
                "BLINA_CDS_AUTH": "jwt", "BLINA_CDS_TRUSTED_ISSUERS_FILE": str(trusted),
                "BLINA_CDS_PUBLIC_BASE_URL": base, "BLINA_CDS_DATABASE_URL": database_url,
                "BLINA_CDS_LOG_LEVEL": "WARNING",
            })
            common.update(settings or {})
            common = serve_environment(common, recheck_cards=recheck_cards)
            replicas = {}
            for name in ("a", "b"):
                port = free_port()
                replicas[name] = Replica(name, port, {**common, "BLINA_CDS_PORT": str(port)},
                                         workdir / f"replica-{name}.log")
            for replica in replicas.values():
                stack.callback(replica.stop)
                replica.start()
            for replica in replicas.values():
                replica.wait_ready()
            nginx = stack.enter_context(running_nginx(nginx_bin, workdir / "nginx", nginx_port,
                                                       [r.address for r in replicas.values()]))
            yield cls(workdir=workdir, base=base, replicas=replicas, fhir=fhir, private_key=private_key,
                      kid=jwk["kid"], nginx=nginx, database_url=database_url)

    def kill(self, name: str) -> None:
        self.replicas[name].kill()
        self.events.append((time.monotonic(), f"replica {name} killed (SIGKILL)"))

    def restart(self, name: str) -> None:
        """Start the replica again and wait until it answers /healthz (nginx finds it on its own).

        In a deployment the replacement starts on its own node; here it shares two cores with the survivor, sekmet
        and the load, and its start-up (loading and checking every knowledge and card file, twice: about 10 s of
        CPU) would take them from the survivor. So it starts at a lower CPU priority (``nice -n 10``), raised back
        once it answers /healthz (as root; otherwise it stays lower and still serves its share).
        """
        replica = self.replicas[name]
        replica.start(nice=10)
        replica.wait_ready()
        assert replica.process is not None
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PGRP, replica.process.pid, 0)
        self.events.append((time.monotonic(), f"replica {name} restarted and healthy"))

    def access_log(self) -> list[list[str]]:
        """nginx's access log, split: msec, status, method, uri, upstream addresses, upstream statuses, time."""
        path = self.workdir / "nginx" / "access.log"
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            # "$upstream_addr" of a retried request is "a:1, b:2": put the parts back together
            head, _, rest = line.partition(" ")
            parts = [head, *rest.replace(", ", ",").split(" ")]
            rows.append(parts)
        return rows


@contextlib.contextmanager
def running_nginx(binary: str, folder: Path, port: int, replicas: list[str], *,
                  ready_path: str | None = "/healthz") -> Iterator[subprocess.Popen[bytes]]:
    """nginx serving the filled site file on 127.0.0.1:``port``; ready when ``ready_path`` answers 200 through it
    (``None``: when the port accepts connections, sending no request an upstream would see)."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    (folder / "blina-cds.conf").write_text(render_site(listen=f"127.0.0.1:{port}", replicas=replicas),
                                           encoding="utf-8")
    # As root, nginx's workers would switch to nobody and could not write the temp folders in a private dir.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(_NGINX_MAIN.format(user=user, dir=folder), encoding="utf-8")
    check = subprocess.run([binary, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration:\n{check.stderr}")
    with (folder / "stderr.log").open("wb") as err:
        process = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                                   stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}: "
                                   f"{(folder / 'error.log').read_text(errors='replace')[-2000:]}")
            if ready_path is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            else:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not answer /healthz")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
