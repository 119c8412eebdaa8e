"""CPU-heavy work off the event loop: a small process pool with a deadline.

    pool = CpuPool(settings)                     # per server process; `await pool.start()` or on first use
    result = await pool.submit(function, *args)  # its CdsServiceError re-raised here; past the deadline a 503
    pool.close()

Why processes: parsing a 20 MiB body (orjson) holds the interpreter lock for its whole duration, and building
the timeline of 12,500 resources is pure Python. In a thread both still stall the event loop (measured: a
``/healthz`` took 0.8–1.5 s while a maximal hook call ran in a thread, 1.8–5 s on the event loop itself); with
a worker process it answered within 0.2 s. Hook calls up to ``BLINA_CDS_CPU_INLINE_MAX_BYTES`` stay on the
event loop: they take milliseconds, and a round trip to a worker would only add to it.

Workers load the same knowledge and card files as the server (the ``Settings`` are handed to each worker),
so an app built with other ``knowledge_dir``/``cards_dir`` evaluates with those in its workers too. Work that
passes ``BLINA_CDS_CPU_DEADLINE_S`` is interrupted in its worker (an interval timer), which lives on; a worker
that does not come back at all is killed and replaced. (A thread cannot be interrupted: in ``thread`` mode the
caller gets its 503 and the thread runs on.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from service import logs
from service.catalog import CdsService, build_catalog
from service.errors import CdsServiceError, EvaluationTimeout
from service.knowledge import Knowledge, load_knowledge
from service.render import CardRenderer
from service.rules import RULE_IDS
from service.settings import DEFAULT_CARDS_DIR, DEFAULT_KNOWLEDGE_DIR, Settings

log = logging.getLogger("blina_cds.offload")
T = TypeVar("T")


@dataclass(frozen=True)
class Evaluator:
    """What evaluating a hook call needs besides its data: knowledge, services, card templates."""

    kb: Knowledge
    catalog: dict[str, CdsService]
    renderer: CardRenderer


_WORKER: Evaluator | None = None
"""This worker's evaluator (set by ``_init_worker`` in each worker process, or once for a thread pool)."""


def evaluator() -> Evaluator:
    """The evaluator of the worker this runs in."""
    if _WORKER is None:
        raise RuntimeError("not in a CpuPool worker")
    return _WORKER


def _init_worker(settings: Settings, own_process: bool) -> None:
    global _WORKER
    if own_process:
        logs.configure_logging(settings.log_level)
    _WORKER = load_evaluator(settings)
    if own_process:
        gc.freeze()  # the knowledge, cards and modules live as long as the worker: no collection walks them again


def load_evaluator(settings: Settings) -> Evaluator:
    """Knowledge (a site's values merged over the shipped files), services and card templates (a site's card
    folder over the shipped one): loaded the same way by the server process and by every worker."""
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=settings.knowledge_dir)
    renderer = CardRenderer.load(settings.cards_dir, RULE_IDS, shipped_dir=DEFAULT_CARDS_DIR,
                                 knowledge_hash=kb.fingerprint)
    return Evaluator(kb=kb, catalog=dict(build_catalog(kb)), renderer=renderer)


class Refused(CdsServiceError):
    """A ``CdsServiceError`` raised in a worker, carried back as its status and OperationOutcome.

    (The error classes take keyword-only arguments, which pickling cannot restore.)
    """

    def __init__(self, *, status_code: int, message: str, outcome: dict[str, Any]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.outcome = outcome

    @classmethod
    def of(cls, exc: CdsServiceError) -> Refused:
        return cls(status_code=exc.status_code, message=exc.message, outcome=exc.operation_outcome())

    def operation_outcome(self) -> dict[str, Any]:
        return self.outcome

    def __reduce__(self) -> tuple[Any, ...]:
        return _refused, (self.status_code, self.message, self.outcome)


def _refused(status_code: int, message: str, outcome: dict[str, Any]) -> Refused:
    return Refused(status_code=status_code, message=message, outcome=outcome)


def _ready() -> bool:
    return True


class _DeadlinePassed(BaseException):
    """Raised into the work by SIGALRM; a BaseException, so no ``except Exception`` in the work swallows it."""


def _deadline_passed(signum: int, frame: Any) -> None:
    raise _DeadlinePassed


def carry_errors(deadline_s: float | None, function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a worker; a ``CdsServiceError`` comes back as a picklable ``Refused``.

    With ``deadline_s`` (worker processes: the work runs in their main thread), an interval timer interrupts the
    work when it passes, and the worker lives on for the next call; and the garbage collector pauses while the
    work runs. Parsing a large body makes millions of objects, none of them in a cycle (a JSON tree): each
    collection the allocations set off would walk all of them again for nothing (measured: the parse of a
    7 MB body took twice as long with collections running). What the work leaves behind is freed when it
    returns; any cycle it made, by the next collection after it.
    """
    paused = deadline_s is not None and gc.isenabled()
    if deadline_s is not None:
        previous = signal.signal(signal.SIGALRM, _deadline_passed)
        signal.setitimer(signal.ITIMER_REAL, deadline_s)
    if paused:
        gc.disable()
    try:
        return function(*args)
    except _DeadlinePassed:
        raise Refused.of(EvaluationTimeout(deadline_s=deadline_s or 0.0)) from None
    except Refused:
        raise
    except CdsServiceError as exc:
        raise Refused.of(exc) from None
    finally:
        if paused:
            gc.enable()
        if deadline_s is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class CpuPool:
    """Worker processes (or threads) for hook calls too large for the event loop."""

    BACKSTOP = 3
    """How many deadlines a call waits here in all (queued behind others, or for a worker that never answers)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.kind = settings.cpu_pool
        self.workers = settings.cpu_workers
        self.deadline_s = settings.cpu_deadline_s
        self.inline_max_bytes = settings.cpu_inline_max_bytes
        self._pool: concurrent.futures.Executor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def start(self) -> None:
        """Start the workers, off the event loop: the first start waits while the fork server imports the service."""
        if self._pool is None:
            await asyncio.to_thread(self._start)

    def _start(self) -> None:
        with self._lock:
            if self._pool is None:
                pool = self._new_executor()
                pool.submit(_ready).result()  # a worker is up and has loaded knowledge and cards
                self._pool = pool

    def _new_executor(self) -> concurrent.futures.Executor:
        if self.kind == "thread":
            return concurrent.futures.ThreadPoolExecutor(
                self.workers, thread_name_prefix="blina-cpu", initializer=_init_worker,
                initargs=(self._settings, False))
        # forkserver: workers are forked from a clean helper process, never from this one (which runs threads
        # and an event loop); the service modules are imported there once.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["service.pipeline", "service.routes"])
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(self._settings, True))

    async def submit(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker; its ``CdsServiceError`` is re-raised here, a 503 past the deadline.

        The deadline counts from when a worker starts the work (a timer in the worker interrupts it). Waiting
        here is bounded too, by ``BACKSTOP`` deadlines: time queued behind other large calls, or a worker that
        does not come back (stuck, or killed by the system), after which the workers are replaced.
        """
        await self.start()
        pool = self._pool
        if pool is None:  # stopped meanwhile (closing, or replaced after another call's backstop)
            raise EvaluationTimeout(deadline_s=self.deadline_s)
        in_worker = self.deadline_s if self.kind == "process" else None
        future = asyncio.get_running_loop().run_in_executor(pool, carry_errors, in_worker, function, *args)
        try:
            async with asyncio.timeout(self.deadline_s * self.BACKSTOP):
                return await future
        except TimeoutError:
            log.error("cpu work did not come back; workers replaced", extra={"ms": round(self.deadline_s * 1000)})
            self._kill(pool)
            raise EvaluationTimeout(deadline_s=self.deadline_s) from None
        except BrokenProcessPool:
            log.error("a cpu worker died; workers replaced")
            self._kill(pool)
            raise EvaluationTimeout(deadline_s=self.deadline_s) from None

    def _kill(self, pool: concurrent.futures.Executor) -> None:
        """Stop every worker of ``pool`` now (a process pool cannot cancel running work any other way)."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            for process in list((pool._processes or {}).values()):
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
                pool.shutdown(wait=True, cancel_futures=True)
            else:
                pool.shutdown(wait=False, cancel_futures=True)
