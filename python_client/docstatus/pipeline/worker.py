"""The pipeline worker: claim a job, read the document, OCR, LLM, store the result, done.

    worker = Worker(pool_or_client, store, concurrency=4)      # default engines
    worker.run()                                               # until SIGTERM/SIGINT

Each of ``concurrency`` threads runs one job at a time, on a database connection it keeps:

1. ``claim_extraction_job`` (a lease of ``lease``), then the document's bytes from its blob;
2. ``mark_ocr_running`` -> the OCR stage -> ``mark_llm_running`` -> the LLM stage;
3. the text and the fields are written as blobs beside the document; ``record_result`` names
   them and ``mark_processing_done`` ends the job, in one transaction.

Every mark carries the worker id, so the database refuses (DS004) a worker whose lease ran out;
such a job is dropped without another write. A stage that raises fails the document with
"ExceptionType: message" (bounded): at once (``mark_processing_failed``), or, for a failure
worth retrying (``errors.is_retryable``), as a failed attempt that the database queues again
after a backoff (``mark_attempt_failed``). Either way the worker goes on with the next job.

Beside them: a heartbeat thread extends the leases of running jobs; a listener wakes idle
threads when a job is created (NOTIFY), with a slow poll as the safety net; a maintenance
thread reaps expired jobs (and checks for stuck documents), one worker at a time across the
fleet (an advisory lock), so a job of a worker killed with SIGKILL fails 'lease expired' and is
retried elsewhere.

Stopping (SIGTERM/SIGINT, or ``stop()``): no more claims; running jobs may finish within
``grace_period``; after it (or at a second signal) each job still running is released
(``release_job``): its attempt fails as released and the document is queued again at once.
Then ``run`` returns, and ``docstatus worker`` exits 0.

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
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.errors import DocStatusError, InvalidTransition, LeaseLost
from docstatus.models import Document, ExtractionJob
from docstatus.pipeline.blobs import BlobIO
from docstatus.pipeline.db import PipelineDatabase, pool_of
from docstatus.pipeline.errors import is_retryable
from docstatus.pipeline.heartbeat import Heartbeat
from docstatus.pipeline.lease import HeldJob
from docstatus.pipeline.llm import llm_from_env
from docstatus.pipeline.ocr import DocumentOcr
from docstatus.pipeline.results import write_result
from docstatus.pipeline.signals import stop_on_signals
from docstatus.pipeline.stages import LlmExtractor, OcrEngine, engine_name
from docstatus.pipeline.wakeup import JobListener, Wakeup

log = logging.getLogger("docstatus.worker")

T = TypeVar("T")

MAX_ERROR_CHARS = 1000
_CLAIM_ERROR_DELAYS = (0.5, 1, 2, 5, 10)
_MIN_IDLE_WAIT = 0.05


@dataclass
class WorkerStats:
    """Counts and time spent, summed over the worker's threads (for logs and benchmarks)."""

    claimed: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    abandoned: int = 0
    reaped: int = 0
    db_seconds: float = 0.0  # docstatus calls of the processing threads (claim ... done)
    blob_seconds: float = 0.0  # reading the document, writing the result
    stage_seconds: float = 0.0  # OCR and LLM stages

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Abandoned(Exception):
    """This worker no longer holds the job: leave it without another write."""


class _StepFailed(Exception):
    """A step of the job's own work (download, a stage, storing the result) raised."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


class Worker:
    """Runs the OCR -> LLM pipeline on claimed jobs; see the module docstring.

    ``client``: a ``docstatus.Client`` over a ``psycopg_pool.ConnectionPool``, the pool itself,
    or a conninfo string (the worker then opens a pool of ``concurrency + 3`` connections and
    closes it at the end). A pool of yours needs ``max_size >= concurrency + 2``: each thread
    keeps one connection, the heartbeat and the maintenance borrow theirs. The NOTIFY listener
    opens its own connection with the pool's conninfo. ``store``: the DMS ``DocumentStore``, a ``BlobServiceClient``, or an
    Azure Storage connection string (None: ``AZURE_STORAGE_CONNECTION_STRING`` or Azurite).
    ``ocr`` defaults to ``DocumentOcr()``, ``llm`` to ``llm_from_env()`` (the chat-completions
    client when ``DOCSTATUS_LLM_URL`` is set, else the offline rule-based extractor).
    """

    def __init__(
        self,
        client: Any,
        store: Any = None,
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
        if self._owns_pool:
            size = concurrency + 3  # the processing threads, the heartbeat, maintenance, releases
            pool = ConnectionPool(client, min_size=size, max_size=size, kwargs={"autocommit": True},
                                  open=True, name="docstatus-worker")
            try:
                pool.wait(timeout=15)
            except psycopg_pool.PoolTimeout:
                pool.close()
                raise
        else:
            pool = pool_of(client)
            if pool.max_size < concurrency + 2:
                raise ValueError(f"a pool of {pool.max_size} connections is too small for concurrency "
                                 f"{concurrency}: it needs at least {concurrency + 2}")
        self.db = PipelineDatabase(pool)
        self.blobs = BlobIO.of(store)

        self.stats = WorkerStats()
        self._stats_lock = threading.Lock()
        self._held: dict[int, HeldJob] = {}
        self._held_lock = threading.Lock()
        self._wakeup = Wakeup()
        self._heartbeat = Heartbeat(self.db.client, self.worker_id, lease, self.heartbeat_interval)
        self._listener = JobListener(pool.conninfo, self._wakeup) if listen else None
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

    @property
    def running_jobs(self) -> list[ExtractionJob]:
        with self._held_lock:
            return [held.job for held in self._held.values()]

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
                    with self.db.pool.connection(timeout=10) as conn:
                        client = Client(conn)
                        while not self._stopping.is_set() and not conn.broken:
                            seen = self._wakeup.generation
                            claimed_at = time.monotonic()
                            claimed = self.db.claim(self.worker_id, self.lease, conn)
                            failures = 0
                            if claimed is None:
                                if self._idle_exit:
                                    return
                                self._wakeup.wait(seen, self._idle_wait(conn))
                                continue
                            self._add_time("db_seconds", time.monotonic() - claimed_at)
                            self._process(*claimed, claimed_at, client, conn)
                except Exception as exc:  # the database above all; a bug must not end the thread
                    delay = _CLAIM_ERROR_DELAYS[min(failures, len(_CLAIM_ERROR_DELAYS) - 1)]
                    failures += 1
                    expected = isinstance(exc, (psycopg.Error, psycopg_pool.PoolTimeout, DocStatusError))
                    log.log(logging.WARNING if expected else logging.ERROR,
                            "claim failed (%s: %s); trying again in %ss", type(exc).__name__, exc, delay,
                            exc_info=not expected, extra={"fields": {"event": "claim failed",
                                                                     "worker_id": self.worker_id, "error": str(exc)}})
                    self._stopping.wait(delay)
        finally:
            with self._slots_lock:
                self._slots_left -= 1
                if self._slots_left == 0:
                    self._all_slots_done.set()

    def _idle_wait(self, conn: psycopg.Connection) -> float:
        """Until the next retry falls due, at most the poll interval."""
        try:
            due = self.db.seconds_until_due(conn)
        except (psycopg.Error, DocStatusError):
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(max(due, _MIN_IDLE_WAIT), self.poll_interval)

    def _maintenance_loop(self) -> None:
        while not self._stopping.wait(self.reap_interval):
            self._maintain_once()

    def _maintain_once(self) -> None:
        now = time.monotonic()
        check_stuck = self.check_stuck_interval is not None and now >= self._next_stuck_check
        try:
            outcome = self.db.maintain(check_stuck)
        except (psycopg.Error, psycopg_pool.PoolTimeout, DocStatusError) as exc:
            if isinstance(exc, psycopg.errors.UndefinedFunction):
                self.check_stuck_interval = None  # a schema without check_stuck: stop asking
            log.warning("maintenance failed: %s", exc, extra={"fields": {"event": "maintenance failed",
                                                                         "error": str(exc)}})
            return
        if outcome is None:
            return  # another worker is at it
        if check_stuck:
            self._next_stuck_check = now + self.check_stuck_interval
        reaped, stuck = outcome
        for job in reaped:
            self._count("reaped")
            log.info("job %s of document %s reaped: %s", job.id, job.document_id, job.error_message,
                     extra={"fields": {"event": "status", "status": "failed", "reaped_by": self.worker_id,
                                       "document_id": job.document_id, "job_id": job.id, "attempt": job.attempt,
                                       "worker_id": job.worker_id, "error": job.error_message}})
        if stuck:
            log.warning("%s document(s) newly stuck (see docstatus.stuck_documents)", stuck,
                        extra={"fields": {"event": "stuck documents", "count": stuck}})
        if reaped:
            self._wakeup.notify()  # their retries may be due soon: look again

    # --- one job -----------------------------------------------------------------------------

    def _process(self, job: ExtractionJob, document: Document, claimed_at: float, client: Client,
                 conn: psycopg.Connection) -> None:
        held = HeldJob(job, self.lease.total_seconds(), claimed_at)
        with self._held_lock:
            self._held[job.id] = held
        self._heartbeat.add(held)
        self._count("claimed")
        self._log_status(held, "claimed")
        try:
            data = self._step(held, "download", "blob_seconds", self.blobs.download, document)
            self._write(held, "ocr running", client.mark_ocr_running, document.id, worker_id=self.worker_id)
            text = self._step(held, "ocr", "stage_seconds", self.ocr, data, document.mime_type or "")
            self._write(held, "llm running", client.mark_llm_running, document.id, worker_id=self.worker_id)
            fields = self._step(held, "llm", "stage_seconds", self.llm, text)
            if not isinstance(fields, dict):
                raise _StepFailed("llm", TypeError(f"{self.llm_name} returned {type(fields).__name__}, not a dict"))
            self._check_held(held)
            text_blob, fields_blob = self._step(held, "store result", "blob_seconds", write_result, self.blobs,
                                                document, job, text, fields, self.llm_name, self.ocr_name)
            self._write(held, "done", self.db.finish_job, document.id, text_blob, fields_blob, self.worker_id, conn)
            self._count("done")
        except _StepFailed as failure:
            self._fail(held, failure, client)
        except _Abandoned as why:
            self._count("abandoned")
            log.warning("job %s dropped without another write: %s", job.id, why,
                        extra={"fields": self._fields(held, event="abandoned", reason=str(why))})
        except Exception as exc:  # the database or a bug: the lease runs out and the reaper retries
            held.abandoned = f"{type(exc).__name__}: {exc}"
            self._count("abandoned")
            log.exception("job %s left to the reaper after an unexpected error", job.id,
                          extra={"fields": self._fields(held, event="abandoned", reason=held.abandoned)})
        finally:
            self._heartbeat.remove(held)
            with self._held_lock:
                self._held.pop(job.id, None)

    def _step(self, held: HeldJob, step: str, timer: str, function: Callable[..., T], *args: Any) -> T:
        """Runs the job's own work (a stage, a blob read or write); its failure fails the job."""
        self._check_held(held)
        held.stage = step
        started = time.monotonic()
        try:
            return function(*args)
        except Exception as exc:
            raise _StepFailed(step, exc) from exc
        finally:
            self._add_time(timer, time.monotonic() - started)

    def _check_held(self, held: HeldJob) -> None:
        if held.abandoned is not None:
            raise _Abandoned(held.abandoned)
        if held.lost:
            held.abandoned = "lease lost"
            raise _Abandoned(held.abandoned)

    def _write(self, held: HeldJob, status: str | None, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write on the job's behalf, only while this worker still holds it."""
        with held.lock:
            self._check_held(held)
            try:
                result = self._db(call, *args, **kwargs)
            except (LeaseLost, InvalidTransition) as exc:
                # DS004: the lease ran out (the reaper's now); DS001: somebody moved the document.
                held.abandoned = f"{type(exc).__name__}: {exc}"
                raise _Abandoned(held.abandoned) from exc
        if status is not None:
            self._log_status(held, status)
        return result

    def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            self._add_time("db_seconds", time.monotonic() - started)

    def _fail(self, held: HeldJob, failure: _StepFailed, client: Client) -> None:
        message = error_message(failure.error)
        retry = is_retryable(failure.error)
        mark = client.mark_attempt_failed if retry else client.mark_processing_failed
        try:
            document = self._write(held, None, mark, held.job.document_id, message, worker_id=self.worker_id)
        except _Abandoned as why:
            self._count("abandoned")
            log.warning("job %s failed (%s) but is no longer ours: %s", held.job.id, message, why,
                        extra={"fields": self._fields(held, event="abandoned", reason=str(why), error=message)})
            return
        except Exception:
            log.exception("job %s: recording its failure failed; the reaper will end it", held.job.id,
                          extra={"fields": self._fields(held, event="abandoned", error=message)})
            self._count("abandoned")
            return
        requeued = document.text_extraction_status == "ready"
        self._count("retried" if requeued else "failed")
        self._log_status(held, "failed", level=logging.WARNING, step=failure.step, error=message,
                         retry="queued" if requeued else ("exhausted" if retry else "not retryable"))

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
        while any(thread.is_alive() for thread in slots) and time.monotonic() < deadline and not self._stop_now.is_set():
            for thread in slots:
                thread.join(0.05)
            self._act_on_signals()
        with self._held_lock:
            still_running = list(self._held.values())
        why = "stopped at once (second signal)" if self._stop_now.is_set() else \
            f"shutting down; the stage did not finish within the grace period of {self.grace_period:g}s"
        for held in still_running:
            self._release(held, why)
        self._close()
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
                self.db.client.release_job(held.job.id, self.worker_id, reason)
            except LeaseLost:
                return
            except Exception as exc:
                log.warning("job %s could not be released (%s); the reaper will retry it when its lease runs out",
                            held.job.id, exc, extra={"fields": self._fields(held, event="release failed",
                                                                             error=str(exc))})
                return
        self._count("released")
        self._log_status(held, "released", level=logging.WARNING, reason=reason)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._started:
            self._heartbeat.stop()
            if self._listener is not None:
                self._listener.stop()
        for thread in self._threads:
            if thread.name == "docstatus-maintenance":
                thread.join(timeout=10)
        self.blobs.close()
        if self._owns_pool:
            self.db.pool.close()

    # --- bookkeeping -------------------------------------------------------------------------

    def _count(self, counter: str) -> None:
        with self._stats_lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _add_time(self, timer: str, seconds: float) -> None:
        with self._stats_lock:
            setattr(self.stats, timer, getattr(self.stats, timer) + seconds)

    def _fields(self, held: HeldJob, **more: Any) -> dict[str, Any]:
        job = held.job
        return {"document_id": job.document_id, "job_id": job.id, "attempt": job.attempt,
                "worker_id": self.worker_id, "stage": held.stage, **more}

    def _log_status(self, held: HeldJob, status: str, level: int = logging.INFO, **more: Any) -> None:
        log.log(level, "document %s -> %s", held.job.document_id, status,
                extra={"fields": self._fields(held, event="status", status=status, **more)})


def error_message(error: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """'ExceptionType: message' on one line, at most ``limit`` characters."""
    text = " ".join(str(error).split())
    message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


__all__ = ["Worker", "WorkerStats", "error_message"]
