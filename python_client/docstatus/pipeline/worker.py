"""The pipeline worker: claim a job, read the document, OCR, LLM, store the result, done.

    worker = Worker(pool_or_client, store, concurrency=4)      # default engines
    worker.run()                                               # until SIGTERM/SIGINT

Each of ``concurrency`` threads runs one job at a time, on a database connection it keeps:
``claim_jobs`` (a lease of ``lease``, the document moved to 'ocr running' in the same
transaction), then ``docstatus.pipeline.job.JobRun``: OCR, ``mark_llm_running``, LLM,
``finish_job`` (or ``mark_attempt_failed`` / ``mark_processing_failed``). A failed job does not
stop the worker: it goes on with the next one. Idle, a thread sleeps until ``next_job_due``.

Beside them: a heartbeat thread extends the leases of running jobs; a listener wakes idle
threads when a job is created (NOTIFY), with a slow poll as the safety net; a maintenance
thread calls ``run_maintenance`` (the reaper, ``check_stuck`` and the history's upkeep, one
session at a time across the fleet), so a job of a worker killed with SIGKILL fails 'lease expired' and is
retried elsewhere.

Stopping (SIGTERM/SIGINT, or ``stop()``): no more claims; running jobs may finish within
``grace_period``; after it (or at a second signal) each job still running is released
(``release_job``): its attempt fails as released and the document is queued again at once.
Then ``run`` returns, and ``docstatus worker`` exits 0.

Outages (``docstatus.pipeline.health.Dependencies``): a claim or maintenance that cannot reach
PostgreSQL logs one WARNING per outage and is tried again with backoff; a download or write that
cannot reach the blob store fails its attempt (retryable), and then no slot claims until a probe
of the store answers. With ``until_idle`` (``--once``) either ends the run, and
``dependencies.failures`` says so. The pool waits at most ``POOL_TIMEOUT`` for a connection and
the stop at most ``STOP_BUDGET`` after the grace period, so a stop never hangs on a database
that is down.

Every status change is logged on ``docstatus.worker`` with its fields (``extra={"fields": ...}``),
which ``docstatus worker`` prints as JSON lines.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING

import psycopg
import psycopg_pool
from azure.storage.blob import BlobServiceClient
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.connection_errors import postgres_unreachable_message
from docstatus.errors import DocStatusError, LeaseLost
from docstatus.models import ClaimedJob
from docstatus.pipeline.blobs import BlobIO
from docstatus.pipeline.health import BLOB_STORE, POSTGRES, Dependencies, watch_until_up
from docstatus.pipeline.heartbeat import Heartbeat
from docstatus.pipeline.job import JobRun, error_message, log_status
from docstatus.pipeline.lease import HeldJob
from docstatus.pipeline.llm import llm_from_env
from docstatus.pipeline.ocr import DocumentOcr
from docstatus.pipeline.signals import stop_on_signals
from docstatus.pipeline.stages import LlmExtractor, OcrEngine, engine_name
from docstatus.pipeline.stats import StatsRecorder, WorkerStats
from docstatus.pipeline.wakeup import JobListener, Wakeup

if TYPE_CHECKING:
    from docstatus.dms.blob_store import BlobTimeouts
    from docstatus.dms.store import DocumentStore

log = logging.getLogger("docstatus.worker")

_CLAIM_ERROR_DELAYS = (0.5, 1, 2, 5, 10)
_MIN_IDLE_WAIT = 0.05
# A pool's wait for a free or new connection, and libpq's for a new one: bounded, so a stop
# while PostgreSQL is down is not held for the pool's default 30 s.
POOL_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5
# After the grace period, the releases and the threads' ends get this long in all; what is left
# then (PostgreSQL down) is the reaper's when the leases run out.
STOP_BUDGET = 3.0


class Worker:
    """Runs the OCR -> LLM pipeline on claimed jobs; see the module docstring.

    ``client``: a ``docstatus.Client`` over a ``psycopg_pool.ConnectionPool``, the pool itself,
    or a conninfo string (the worker then opens a pool of ``concurrency + 3`` connections and
    closes it at the end). A pool of yours needs ``max_size >= concurrency + 2``: each thread
    keeps one connection, the heartbeat and the maintenance borrow theirs. The NOTIFY listener
    opens its own connection with the pool's conninfo. ``store``: the DMS ``DocumentStore``, a
    ``BlobServiceClient``, or an Azure Storage connection string (None:
    ``AZURE_STORAGE_CONNECTION_STRING`` or Azurite).
    ``ocr`` defaults to ``DocumentOcr()``, ``llm`` to ``llm_from_env()`` (the chat-completions
    client when ``DOCSTATUS_LLM_URL`` is set, else the offline rule-based extractor).
    """

    def __init__(
        self,
        client: Client | ConnectionPool | str,
        store: DocumentStore | BlobServiceClient | str | None = None,
        *,
        ocr: OcrEngine | None = None,
        llm: LlmExtractor | None = None,
        concurrency: int = 1,
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        heartbeat_interval: float | None = None,
        poll_interval: float = 30.0,
        reap_interval: float | None = None,
        check_stuck_interval: float | None = 60.0,
        grace_period: float = 20.0,
        listen: bool = True,
        blob_timeouts: BlobTimeouts | None = None,
        blob_probe: Callable[[], str | None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        lease_seconds = lease.total_seconds()
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval or lease_seconds / 3
        self.poll_interval = poll_interval
        # Often enough that a dead worker's job waits at most about half a lease more.
        self.reap_interval = reap_interval or min(max(lease_seconds / 2, 1.0), 30.0)
        self.check_stuck_interval = check_stuck_interval
        self.grace_period = grace_period
        self.ocr = ocr if ocr is not None else DocumentOcr()
        self.llm = llm if llm is not None else llm_from_env()
        self.ocr_name = engine_name(self.ocr)
        self.llm_name = engine_name(self.llm)

        self._owns_pool = isinstance(client, str)
        if isinstance(client, str):
            size = concurrency + 3  # the processing threads, the heartbeat, maintenance, releases
            pool = ConnectionPool(client, min_size=size, max_size=size, timeout=POOL_TIMEOUT,
                                  kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                                  open=True, name="docstatus-worker")
            try:
                pool.wait(timeout=15)
            except psycopg_pool.PoolTimeout:
                pool.close()
                raise
        else:
            pool = _pool_of(client)
            if pool.max_size < concurrency + 2:
                raise ValueError(f"a pool of {pool.max_size} connections is too small for concurrency "
                                 f"{concurrency}: it needs at least {concurrency + 2}")
        self.pool = pool
        self.client = Client(pool)
        self.blobs = BlobIO.of(store, blob_timeouts)
        self.dependencies = Dependencies(self.worker_id)
        self._blob_probe = blob_probe

        self.stats = WorkerStats()
        self._recorder = StatsRecorder(self.stats)
        self._held: dict[int, HeldJob] = {}
        self._held_lock = threading.Lock()
        self._wakeup = Wakeup()
        self._heartbeat = Heartbeat(self.client, self.worker_id, lease, self.heartbeat_interval)
        self._listener = JobListener(self._conninfo(), self._wakeup) if listen else None
        self._stopping = threading.Event()  # no more claims
        self._stop_now = threading.Event()  # release running jobs without waiting for the grace period
        self._stop_reason: str | None = None
        self._signals: list[str] = []
        self._signals_seen = 0
        self._next_stuck_check = 0.0
        self._idle_exit = False
        self._threads: list[threading.Thread] = []
        self._slots_left = 0
        self._slots_lock = threading.Lock()
        self._all_slots_done = threading.Event()
        self._started = False
        self._closed = False

    # --- running -----------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False, install_signal_handlers: bool = True) -> WorkerStats:
        """Runs until stopped (a signal, ``stop()``), or with ``until_idle`` until no job is
        claimable; releases what is still running and returns the stats."""
        with stop_on_signals(self._on_signal) if install_signal_handlers else nullcontext():
            self.start(until_idle=until_idle)
            # Short waits: the main thread comes back often to act on signals.
            while not (self._stopping.is_set() or self._all_slots_done.is_set()):
                self._stopping.wait(0.1)
                self._act_on_signals()
            self._shutdown()
        return self.stats

    def start(self, *, until_idle: bool = False) -> None:
        """Starts the threads and returns; ``stop()`` ends them."""
        if self._started:
            raise RuntimeError("a Worker runs once")
        self._started = True
        self._idle_exit = until_idle
        self._slots_left = self.concurrency
        log.info("worker %s started", self.worker_id, extra={"fields": {
            "event": "worker started", "worker_id": self.worker_id, "concurrency": self.concurrency,
            "ocr": self.ocr_name, "llm": self.llm_name, "lease_seconds": self.lease.total_seconds(),
            "until_idle": until_idle}})
        self._heartbeat.start()
        if self._listener is not None:
            self._listener.start()
            self._listener.listening.wait(5)  # so a job created right after start() wakes us
        self._maintain_once()  # a new worker first recovers what dead ones left behind
        self._spawn(self._maintenance_loop, "docstatus-maintenance")
        for index in range(self.concurrency):
            self._spawn(self._slot, f"docstatus-slot-{index}")

    def request_stop(self, reason: str = "stop requested") -> None:
        """Asks for a graceful stop; a second call stops at once (releasing running jobs)."""
        if self._stopping.is_set():
            self._stop_now.set()
        else:
            self._stop_reason = reason
            self._stopping.set()
        self._wakeup.notify()

    def _on_signal(self, name: str) -> None:
        # In a signal handler: no locks (the interrupted code may hold them), only an append.
        self._signals.append(name)

    def _act_on_signals(self) -> None:
        while self._signals_seen < len(self._signals):
            name = self._signals[self._signals_seen]
            self._signals_seen += 1
            log.info("%s received: %s", name, "stopping now" if self._stopping.is_set() else "stopping gracefully",
                     extra={"fields": {"event": "signal", "signal": name, "worker_id": self.worker_id}})
            self.request_stop(name)

    def stop(self, grace_period: float | None = None) -> WorkerStats:
        """Stops the worker started with ``start()``: see the module docstring."""
        if grace_period is not None:
            self.grace_period = grace_period
        if not self._stopping.is_set():
            self.request_stop("stop() called")
        self._shutdown()
        return self.stats

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the worker's threads, a stage still running after a release included;
        True when all have ended (they never write once their job was released)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._started:
            self.stop()
        else:
            self._close()

    # --- threads -----------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        # Daemons: a stage that never returns must not keep the process alive past shutdown.
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _slot(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    # One connection for the thread's life: borrowing one per call costs more than
                    # the call. A broken one goes back to the pool, which replaces it.
                    with self.pool.connection(timeout=10) as conn:
                        client = Client(conn)
                        while not self._stopping.is_set() and not conn.broken:
                            if self.dependencies.is_down(BLOB_STORE):
                                if self._idle_exit:
                                    return  # --once: the store went away; the exit status says so
                                self.dependencies.wait_up(BLOB_STORE, 1.0)  # claiming now would burn attempts
                                continue
                            seen = self._wakeup.generation
                            claimed_at = time.monotonic()
                            claims = client.claim_jobs(self.worker_id, self.lease, limit=1, start_ocr=True)
                            failures = 0
                            self.dependencies.up(POSTGRES)
                            if not claims:
                                if self._idle_exit:
                                    return
                                self._wakeup.wait(seen, self._idle_wait(client))
                                continue
                            self._recorder.add_time("db_seconds", time.monotonic() - claimed_at)
                            self._process(claims[0], claimed_at, client)
                except Exception as exc:  # the database above all; a bug must not end the thread
                    delay = _CLAIM_ERROR_DELAYS[min(failures, len(_CLAIM_ERROR_DELAYS) - 1)]
                    failures += 1
                    if isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout)):
                        # One WARNING per outage, not one per attempt of each slot.
                        self.dependencies.down(POSTGRES, postgres_unreachable_message(self._conninfo(), exc))
                        if self._idle_exit:
                            return  # --once: the exit status says a dependency failed
                    else:
                        expected = isinstance(exc, (psycopg.Error, DocStatusError))
                        log.log(logging.WARNING if expected else logging.ERROR,
                                "claim failed (%s: %s); trying again in %ss", type(exc).__name__, exc, delay,
                                exc_info=not expected, extra={"fields": {"event": "claim failed",
                                                                         "worker_id": self.worker_id,
                                                                         "error": str(exc)}})
                    self._stopping.wait(delay)
        finally:
            with self._slots_lock:
                self._slots_left -= 1
                if self._slots_left == 0:
                    self._all_slots_done.set()

    def _conninfo(self) -> str:
        """The pool's conninfo (a pool may hold a function that gives it), for messages and the listener."""
        conninfo = self.pool.conninfo
        return conninfo if isinstance(conninfo, str) else conninfo()

    def _idle_wait(self, client: Client) -> float:
        """Until the next retry falls due, at most the poll interval."""
        try:
            due = client.next_job_due()
        except (psycopg.Error, DocStatusError):
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(max(due.total_seconds(), _MIN_IDLE_WAIT), self.poll_interval)

    def _maintenance_loop(self) -> None:
        while not self._stopping.wait(self.reap_interval):
            self._maintain_once()

    def _maintain_once(self) -> None:
        now = time.monotonic()
        check_stuck = self.check_stuck_interval is not None and now >= self._next_stuck_check
        try:
            actions = self.client.run_maintenance(check_stuck)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # PostgreSQL is down: one WARNING per outage, shared with the slots.
            self.dependencies.down(POSTGRES, postgres_unreachable_message(self._conninfo(), exc))
            return
        except (psycopg.Error, DocStatusError) as exc:
            log.warning("maintenance failed: %s", exc, extra={"fields": {"event": "maintenance failed",
                                                                         "error": str(exc)}})
            return
        if any(action.action == "skipped" for action in actions):
            return  # another worker is at it
        if check_stuck and self.check_stuck_interval is not None:
            self._next_stuck_check = now + self.check_stuck_interval
        reaped = [action for action in actions if action.action == "reaped"]
        stuck = sum(action.action == "stuck" for action in actions)
        for job in reaped:
            self._recorder.count("reaped")
            log.info("job %s of document %s reaped: %s", job.job_id, job.document_id, job.error_message,
                     extra={"fields": {"event": "status", "status": "failed", "reaped_by": self.worker_id,
                                       "document_id": job.document_id, "job_id": job.job_id, "attempt": job.attempt,
                                       "worker_id": job.worker_id, "error": job.error_message}})
        if stuck:
            log.warning("%s document(s) newly stuck (see docstatus.stuck_documents)", stuck,
                        extra={"fields": {"event": "stuck documents", "count": stuck}})
        upkeep_failures = ("stuck check failed", "history upkeep failed")
        for failed in (action for action in actions if action.action in upkeep_failures):
            log.warning("%s: %s", failed.action, failed.error_message,
                        extra={"fields": {"event": "maintenance failed", "error": failed.error_message}})
        if reaped:
            self._wakeup.notify()  # their retries may be due soon: look again

    # --- one job -----------------------------------------------------------------------------

    def _process(self, claimed: ClaimedJob, claimed_at: float, client: Client) -> None:
        held = HeldJob(claimed.job, self.lease.total_seconds(), claimed_at)
        with self._held_lock:
            self._held[held.job.id] = held
        self._heartbeat.add(held)
        self._recorder.count("claimed")
        log_status(held, self.worker_id, "claimed")
        try:
            JobRun(held, claimed.document, client, worker_id=self.worker_id, blobs=self.blobs, ocr=self.ocr,
                   llm=self.llm, ocr_name=self.ocr_name, llm_name=self.llm_name, stats=self._recorder,
                   on_blob_store_down=self._blob_store_down).run()
        finally:
            self._heartbeat.remove(held)
            with self._held_lock:
                self._held.pop(held.job.id, None)

    def _blob_store_down(self, reason: str) -> None:
        """A download or write could not reach the store: no slot claims until a probe answers."""
        if self.dependencies.down(BLOB_STORE, reason) and not self._idle_exit:
            self._spawn(self._watch_blob_store, "docstatus-blob-probe")

    def _watch_blob_store(self) -> None:
        # Once the store answers, the idle slots look for jobs again at once.
        watch_until_up(self.dependencies, BLOB_STORE, self._blob_probe or self.blobs.probe, self._stopping,
                       on_up=self._wakeup.notify)

    # --- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._stopping.set()
        self._wakeup.notify()
        reason = self._stop_reason or ("no job left" if self._all_slots_done.is_set() else "stopping")
        if self._held:
            log.info("stopping (%s): letting %s running job(s) finish within %ss", reason, len(self._held),
                     self.grace_period, extra={"fields": {"event": "worker stopping", "worker_id": self.worker_id,
                                                          "running": len(self._held), "reason": reason}})
        deadline = time.monotonic() + self.grace_period
        slots = [thread for thread in self._threads if thread.name.startswith("docstatus-slot")]
        while (any(thread.is_alive() for thread in slots) and time.monotonic() < deadline
               and not self._stop_now.is_set()):
            for thread in slots:
                thread.join(0.05)
            self._act_on_signals()
        with self._held_lock:
            still_running = list(self._held.values())
        why = "stopped at once (second signal)" if self._stop_now.is_set() else \
            f"shutting down; the stage did not finish within the grace period of {self.grace_period:g}s"
        # Releases run beside us, within STOP_BUDGET: with PostgreSQL down each would wait for the
        # pool; what is not released in time is the reaper's once its lease runs out.
        stop_by = time.monotonic() + STOP_BUDGET
        if still_running:
            def release_all() -> None:
                for held in still_running:
                    self._release(held, why)

            releasing = threading.Thread(target=release_all, name="docstatus-release", daemon=True)
            releasing.start()
            releasing.join(max(0.0, stop_by - time.monotonic()))
            if releasing.is_alive():
                log.warning("%s job(s) not released in time; the reaper retries them when their leases run out",
                            len(still_running), extra={"fields": {"event": "release failed",
                                                                  "worker_id": self.worker_id}})
        self._close(stop_by)
        log.info("worker %s stopped", self.worker_id, extra={"fields": {
            "event": "worker stopped", "worker_id": self.worker_id, "reason": reason, **self.stats.as_dict()}})

    def _release(self, held: HeldJob, reason: str) -> None:
        with held.lock:
            if held.abandoned is not None:
                return
            held.abandoned = f"released: {reason}"
            if held.lost:
                return  # the reaper's already
            try:
                self.client.release_job(held.job.id, self.worker_id, reason)
            except LeaseLost:
                return
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the reaper ends the job
                log.warning("job %s could not be released (%s); the reaper will retry it when its lease runs out",
                            held.job.id, exc, extra={"fields": held.log_fields(self.worker_id, event="release failed",
                                                                                error=str(exc))})
                return
        self._recorder.count("released")
        log_status(held, self.worker_id, "released", level=logging.WARNING, reason=reason)

    def _close(self, stop_by: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self.dependencies.wake()
        stop_by = stop_by if stop_by is not None else time.monotonic() + STOP_BUDGET

        def left() -> float:
            return max(0.05, stop_by - time.monotonic())

        if self._started:
            self._heartbeat.stop(left())
            if self._listener is not None:
                self._listener.stop(left())
        for thread in self._threads:
            if thread.name == "docstatus-maintenance":
                thread.join(timeout=left())
        self.blobs.close()
        if self._owns_pool:
            self.pool.close(timeout=left())


def _pool_of(client: Client | ConnectionPool) -> ConnectionPool:
    """The pool behind a Client over a pool (or the pool itself)."""
    pool = client if isinstance(client, ConnectionPool) else getattr(client, "pool", None)
    if isinstance(pool, ConnectionPool):
        return pool
    raise TypeError("the worker runs several threads: give it a docstatus.Client over a "
                    "psycopg_pool.ConnectionPool, a ConnectionPool, or a conninfo string")


__all__ = ["Worker", "WorkerStats", "error_message"]
