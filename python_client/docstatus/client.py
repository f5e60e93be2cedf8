"""``Client``: one method per function of the docstatus SQL API, with typed results.

The client is thin: every rule lives in PostgreSQL, and each method runs one named query from
``docstatus/queries/*.sql`` with parameters, nothing else. Errors the database raises on
purpose come back as ``docstatus.errors`` exceptions.

Transactions. Each call is its own transaction, committed when it succeeds, except when the
caller's connection is already inside a transaction: then the call joins it, and committing
(or rolling back) stays the caller's. In detail:

- over a ``psycopg_pool.ConnectionPool``: each call borrows a connection with
  ``pool.connection()``, which commits on success, rolls back on error and gives it back;
- over an autocommit ``psycopg.Connection`` (what ``Client.connect`` opens): each call is one
  statement, committed by the server;
- over a non-autocommit connection with no transaction open: the call runs in
  ``conn.transaction()`` and commits, so the client never leaves a connection idle in a
  transaction (an open transaction would also hold back every event subscriber);
- over a connection inside a transaction (``with conn.transaction():`` or earlier statements
  of a non-autocommit connection): the call joins it, and an error aborts it like any SQL
  error would.

A Client over a single connection serves one thread at a time, like the connection; threads
share a Client over a pool.

``docstatus.async_client.AsyncClient`` is the same over ``psycopg.AsyncConnection`` or
``psycopg_pool.AsyncConnectionPool``: the same methods, arguments and results, awaited. A test
keeps the two signature for signature alike.

Every query of the package is a file of ``docstatus/queries/``, loaded by ``load_query`` and run
by ``Client`` (or ``AsyncClient``): the worker, the DMS and the operations commands call these
methods and hold no SQL of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Protocol, Self, TypeVar, cast

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.rows import tuple_row

from docstatus.errors import translated
from docstatus.models import (
    ClaimedJob,
    Cursor,
    Document,
    DocumentListEntry,
    DocumentOverview,
    DocumentResult,
    DocumentsMinute,
    DocumentStateInfo,
    DocumentStateMove,
    EventDelivery,
    ExtractionJob,
    FailurePattern,
    HistoryMaintenance,
    JobOverview,
    MaintenanceAction,
    ProcessingStatus,
    RetryCandidate,
    Row,
    StageEntry,
    StatusCount,
    StatusEvent,
    StatusTransition,
    StuckAlert,
    StuckDocument,
)

__all__ = ["Client", "load_query"]

# The SQL defaults of p_lease; the enum drift test checks that these equal the database's.
DEFAULT_LEASE = timedelta(minutes=5)
DEFAULT_EVENTS_LIMIT = 1000
# Listing defaults of the read helpers (no SQL function behind them).
DEFAULT_JOBS_LIMIT = 100
DEFAULT_VALIDATION_LIMIT = 1000
# The SQL defaults of list_documents and documents_per_minute.
DEFAULT_PAGE_SIZE = 50
DEFAULT_RATE_PERIOD = timedelta(hours=1)

_IDLE = pq.TransactionStatus.IDLE

F = TypeVar("F", bound=Callable[..., Any])


class _Model(Protocol):
    @classmethod
    def from_row(cls, row: Row) -> Self: ...


M = TypeVar("M", bound=_Model)


@functools.cache
def load_query(name: str) -> str:
    """The text of ``docstatus/queries/<name>.sql``."""
    return (resources.files("docstatus") / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def calls(sql_function: str) -> Callable[[F], F]:
    """Marks a method as the client side of ``docstatus.<sql_function>`` (checked by a test)."""

    def mark(method: F) -> F:
        method.sql_function = sql_function  # type: ignore[attr-defined]  # an attribute of our own on a function
        return method

    return mark


class Client:
    """The docstatus SQL API over a psycopg 3 connection or a ``psycopg_pool.ConnectionPool``.

    ``Client.connect(dsn)`` opens (and ``close()`` or the ``with`` block closes) its own
    autocommit connection; a connection or pool you pass in stays yours to close.
    """

    def __init__(self, conn_or_pool: psycopg.Connection | psycopg_pool.ConnectionPool) -> None:
        if isinstance(conn_or_pool, psycopg_pool.ConnectionPool):
            self._pool: psycopg_pool.ConnectionPool | None = conn_or_pool
            self._conn: psycopg.Connection | None = None
        elif isinstance(conn_or_pool, psycopg.Connection):
            self._pool = None
            self._conn = conn_or_pool
        else:
            raise TypeError(
                f"Client needs a psycopg.Connection or a psycopg_pool.ConnectionPool, not {type(conn_or_pool).__name__}"
            )
        self._owns_connection = False

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Client:
        """A client over a new autocommit connection (``kwargs`` go to ``psycopg.connect``)."""
        kwargs.setdefault("autocommit", True)
        client = cls(psycopg.connect(conninfo, **kwargs))
        client._owns_connection = True
        return client

    @property
    def pool(self) -> psycopg_pool.ConnectionPool | None:
        """The pool this client borrows connections from, or None over a single connection."""
        return self._pool

    def close(self) -> None:
        """Closes the connection ``Client.connect`` opened; a connection or pool passed in stays open."""
        if self._owns_connection and self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- running one query ------------------------------------------------------------------

    def _rows(self, query_name: str, params: dict[str, Any] | None = None) -> list[Row]:
        query = load_query(query_name)
        with translated():
            if self._pool is not None:
                with self._pool.connection() as pooled:
                    return _fetch(pooled, query, params)
            conn = self._conn
            assert conn is not None  # without a pool, a Client has its connection
            if conn.autocommit or conn.info.transaction_status != _IDLE:
                return _fetch(conn, query, params)
            with conn.transaction():
                return _fetch(conn, query, params)

    # --- the SQL API, one method per function ---------------------------------------------

    @calls("register_document")
    def register_document(self, blob_container: str, blob_name: str, filename: str,
                          mime_type: str | None = None, size_bytes: int | None = None) -> Document:
        """Registers an uploaded blob as a 'not ready' document; the same blob again returns its row."""
        return _one(Document, self._rows("register_document", {
            "blob_container": blob_container, "blob_name": blob_name, "filename": filename,
            "mime_type": mime_type, "size_bytes": size_bytes}))

    @calls("register_documents")
    def register_documents(self, blob_containers: Sequence[str], blob_names: Sequence[str],
                                 filenames: Sequence[str], mime_types: Sequence[str | None] | None = None,
                                 size_bytes: Sequence[int | None] | None = None) -> list[Document]:
        """register_document for many blobs in one call (one transaction): element i of each
        sequence is one blob; a row per blob, in their order; a blob already registered returns
        its existing row. InvalidArgument (nothing registered) for sequences of unequal length."""
        return _all(Document, self._rows("register_documents", {
            "blob_containers": list(blob_containers), "blob_names": list(blob_names),
            "filenames": list(filenames), "mime_types": None if mime_types is None else list(mime_types),
            "size_bytes": None if size_bytes is None else list(size_bytes)}))

    @calls("validate_document")
    def validate_document(self, document_id: int, blob_retrievable: bool, mime_type: str | None,
                          reason: str | None = None, blob_size: int | None = None) -> Document:
        """The seed's promotion rule, decided in the database: 'ready' with a job, or a reason.
        ``reason``: why the blob is not retrievable, recorded in ``status_reason``; ``blob_size``:
        the blob's size as read (a size other than the registered one: not retrievable)."""
        return _one(Document, self._rows("validate_document", {
            "document_id": document_id, "blob_retrievable": blob_retrievable, "mime_type": mime_type,
            "reason": reason, "blob_size": blob_size}))

    @calls("require_document")
    def require_document(self, document_id: int) -> Document:
        """The document; ``NotFound`` (DS002) when there is none."""
        return _one(Document, self._rows("require_document", {"document_id": document_id}))

    @calls("create_extraction_job")
    def create_extraction_job(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        """The job the key names, else the active job of a 'ready' document (created if missing)."""
        return _one(ExtractionJob, self._rows("create_extraction_job", {
            "document_id": document_id, "idempotency_key": idempotency_key}))

    @calls("claim_extraction_job")
    def claim_extraction_job(self, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> ExtractionJob | None:
        """The oldest unheld job, now held by ``worker_id`` for ``lease``; None when none is free."""
        return _first(ExtractionJob, self._rows("claim_extraction_job", {"worker_id": worker_id, "lease": lease}))

    @calls("claim_jobs")
    def claim_jobs(self, worker_id: str, lease: timedelta = DEFAULT_LEASE, limit: int = 1,
                   start_ocr: bool = False) -> list[ClaimedJob]:
        """Up to ``limit`` jobs with their documents; with ``start_ocr`` their documents are in
        'ocr running' already (the claim and mark_ocr_running in one transaction)."""
        return _all(ClaimedJob, self._rows("claim_jobs", {
            "worker_id": worker_id, "lease": lease, "limit": limit, "start_ocr": start_ocr}))

    @calls("next_job_due")
    def next_job_due(self) -> timedelta | None:
        """How long until a claim can succeed (zero or less: now); None when no job waits."""
        return cast("timedelta | None", _scalar(self._rows("next_job_due")))

    @calls("heartbeat_job")
    def heartbeat_job(self, job_id: int, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> bool:
        """Extends the lease; False when the worker does not hold it or it already ran out."""
        return cast("bool", _scalar(self._rows("heartbeat_job", {
            "job_id": job_id, "worker_id": worker_id, "lease": lease})))

    @calls("mark_ocr_running")
    def mark_ocr_running(self, document_id: int, worker_id: str | None = None) -> Document:
        """Queued -> ('in progress', 'ocr running'). With ``worker_id``, only while it holds the lease."""
        return _one(Document, self._rows("mark_ocr_running", {"document_id": document_id, "worker_id": worker_id}))

    @calls("mark_llm_running")
    def mark_llm_running(self, document_id: int, worker_id: str | None = None) -> Document:
        """'ocr running' -> 'llm running'."""
        return _one(Document, self._rows("mark_llm_running", {"document_id": document_id, "worker_id": worker_id}))

    @calls("mark_processing_done")
    def mark_processing_done(self, document_id: int, worker_id: str | None = None) -> Document:
        """'llm running' -> ('completed', 'done'); the active job ends 'done'."""
        return _one(Document, self._rows("mark_processing_done", {"document_id": document_id, "worker_id": worker_id}))

    @calls("mark_processing_failed")
    def mark_processing_failed(self, document_id: int, error_message: str, worker_id: str | None = None) -> Document:
        """Any state -> ('failed', 'failed'); the active job fails with ``error_message``."""
        return _one(Document, self._rows("mark_processing_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id}))

    @calls("retry_document")
    def retry_document(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        """A document that failed during processing goes back to 'ready' with the next attempt."""
        return _one(ExtractionJob, self._rows("retry_document", {
            "document_id": document_id, "idempotency_key": idempotency_key}))

    @calls("retry_failed_documents")
    def retry_failed_documents(self, error_pattern: str) -> list[ExtractionJob]:
        """retry_document for every failed document whose latest job failed with ``error_pattern``
        (as ``failure_summary`` spells it); the new jobs, in document order. All or nothing."""
        return _all(ExtractionJob, self._rows("retry_failed_documents", {"error_pattern": error_pattern}))

    @calls("list_documents")
    def list_documents(self, state: str | None = None, processing_status: str | None = None,
                       mime_type: str | None = None, filename_contains: str | None = None,
                       created_from: datetime | None = None, created_to: datetime | None = None,
                       updated_from: datetime | None = None, updated_to: datetime | None = None,
                       after_id: int | None = None, limit: int = DEFAULT_PAGE_SIZE) -> list[DocumentListEntry]:
        """Documents newest first, filtered; the next page starts ``after_id`` = this page's last id."""
        return _all(DocumentListEntry, self._rows("list_documents", {
            "state": state, "processing_status": processing_status, "mime_type": mime_type,
            "filename_contains": filename_contains, "created_from": created_from, "created_to": created_to,
            "updated_from": updated_from, "updated_to": updated_to, "after_id": after_id, "limit": limit}))

    @calls("documents_per_minute")
    def documents_per_minute(self, period: timedelta = DEFAULT_RATE_PERIOD) -> list[DocumentsMinute]:
        """Documents registered and ended per minute over the last ``period``, oldest minute first."""
        return _all(DocumentsMinute, self._rows("documents_per_minute", {"period": period}))

    @calls("reap_expired_jobs")
    def reap_expired_jobs(self) -> list[ExtractionJob]:
        """Ends every job whose lease ran out and returns them (retrying below max_attempts)."""
        return _all(ExtractionJob, self._rows("reap_expired_jobs"))

    @calls("events_after")
    def events_after(self, after_tx: int = 0, after_id: int = 0,
                     limit: int = DEFAULT_EVENTS_LIMIT) -> list[StatusEvent]:
        """Committed events after the cursor ``(after_tx, after_id)``, in cursor order.

        ``client.events_after(*cursor)`` takes a ``Cursor``; the next cursor is the last event's
        ``.cursor``. To follow the log as it grows, use ``docstatus.Subscriber``.
        """
        return _all(StatusEvent, self._rows("events_after", {"after_tx": after_tx, "after_id": after_id,
                                                             "limit": limit}))

    @calls("event_delivery_delay")
    def event_delivery(self) -> EventDelivery:
        """The ``docstatus.event_delivery`` view: events not yet deliverable and what holds them."""
        return _one(EventDelivery, self._rows("event_delivery"))

    # --- the pipeline worker's functions ----------------------------------------------------

    @calls("mark_attempt_failed")
    def mark_attempt_failed(self, document_id: int, error_message: str, worker_id: str | None = None) -> Document:
        """A failure worth retrying: failed, then 'ready' again after a backoff while attempts remain."""
        return _one(Document, self._rows("mark_attempt_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id}))

    @calls("release_job")
    def release_job(self, job_id: int, worker_id: str, reason: str = "shutting down") -> ExtractionJob:
        """Gives a held job back unfinished; the next attempt is queued at once, uncounted."""
        return _one(ExtractionJob, self._rows("release_job", {"job_id": job_id, "worker_id": worker_id,
                                                              "reason": reason}))

    @calls("record_result")
    def record_result(self, document_id: int, text_blob: str, fields_blob: str,
                      worker_id: str | None = None) -> DocumentResult:
        """Records the blobs holding the active job's extracted text and fields."""
        return _one(DocumentResult, self._rows("record_result", {
            "document_id": document_id, "text_blob": text_blob, "fields_blob": fields_blob, "worker_id": worker_id}))

    @calls("finish_job")
    def finish_job(self, document_id: int, text_blob: str, fields_blob: str, worker_id: str | None = None) -> Document:
        """record_result and mark_processing_done in one transaction: done exactly with a result."""
        return _one(Document, self._rows("finish_job", {
            "document_id": document_id, "text_blob": text_blob, "fields_blob": fields_blob, "worker_id": worker_id}))

    @calls("current_result")
    def current_result(self, document_id: int) -> DocumentResult | None:
        """The document's result (its latest done job's), or None when it has none."""
        return _first(DocumentResult, self._rows("current_result", {"document_id": document_id}))

    @calls("run_maintenance")
    def run_maintenance(self, check_stuck: bool = True) -> list[MaintenanceAction]:
        """One maintenance pass (reaper, then check_stuck), unless another session runs one: then
        a single 'skipped' action."""
        return _all(MaintenanceAction, self._rows("run_maintenance", {"check_stuck": check_stuck}))

    # --- operations (the functions behind the stuck and count views) ------------------------

    @calls("check_stuck")
    def check_stuck(self) -> list[StuckDocument]:
        """Documents newly stuck past their SLA, each alerted once on docstatus_alerts."""
        return _all(StuckDocument, self._rows("check_stuck"))

    @calls("fold_status_counters")
    def fold_status_counters(self) -> int:
        """Folds finished transactions' events into the status counters; how many it folded."""
        return cast("int", _scalar(self._rows("fold_status_counters")))

    @calls("status_counters_folded_below")
    def status_counters_folded_below(self) -> int:
        """The transaction id below which every event is already in the status counters."""
        return cast("int", _scalar(self._rows("status_counters_folded_below")))

    @calls("maintain_history")
    def maintain_history(self) -> HistoryMaintenance:
        """Creates the coming status_events partitions and drops those past settings.history_retention."""
        return _one(HistoryMaintenance, self._rows("maintain_history"))

    @calls("normalise_error")
    def normalise_error(self, message: str | None) -> str | None:
        """An error message with its variable parts replaced, as failure_summary groups it."""
        return cast("str | None", _scalar(self._rows("normalise_error", {"message": message})))

    # --- the operations views ---------------------------------------------------------------

    def status_counts(self) -> list[StatusCount]:
        """``docstatus.status_counts``: per kind, document statuses in document_states order."""
        return _all(StatusCount, self._rows("status_counts"))

    def document_overview(self, document_id: int) -> DocumentOverview | None:
        """The document's row of ``docstatus.document_overview``, or None when there is no such id."""
        return _first(DocumentOverview, self._rows("document_overview", {"document_id": document_id}))

    def stuck_documents(self) -> list[StuckDocument]:
        """``docstatus.stuck_documents``, longest stuck first."""
        return _all(StuckDocument, self._rows("stuck_documents"))

    def stuck_alerts(self) -> list[StuckAlert]:
        """When ``check_stuck`` alerted on the stays stuck now (one not alerted yet has no row)."""
        return _all(StuckAlert, self._rows("stuck_alerts"))

    def stuck_counts_by_state(self) -> dict[str, int]:
        """How many documents are stuck in each state of ``stage_slas``, zeros included."""
        return {state: count for state, count in self._rows("stuck_counts_by_state")}

    def failure_summary(self, limit: int | None = None) -> list[FailurePattern]:
        """``docstatus.failure_summary``: failed jobs by error pattern, most failures first."""
        return _all(FailurePattern, self._rows("failure_summary", {"limit": limit}))

    def recent_jobs(self, status: str | None = None, since: datetime | None = None,
                    limit: int = DEFAULT_JOBS_LIMIT) -> list[JobOverview]:
        """The latest jobs, newest first: of one status, created or ended since a time."""
        return _all(JobOverview, self._rows("recent_jobs", {"status": status, "since": since, "limit": limit}))

    def documents_awaiting_validation(self, limit: int = DEFAULT_VALIDATION_LIMIT, *, container: str | None = None,
                                      older_than: timedelta = timedelta(0)) -> list[Document]:
        """'not ready' documents (of one container; unchanged for ``older_than``), oldest first."""
        return _all(Document, self._rows("documents_awaiting_validation", {
            "limit": limit, "container": container, "older_than": older_than}))

    def document_states(self) -> list[DocumentStateInfo]:
        """``docstatus.document_states``, in display order."""
        return _all(DocumentStateInfo, self._rows("document_states"))

    def status_transitions(self) -> list[StatusTransition]:
        """``docstatus.status_transitions``, the allowed moves, by kind, from and to."""
        return _all(StatusTransition, self._rows("status_transitions"))

    def document_state_moves(self) -> list[DocumentStateMove]:
        """Which document state can follow which, as the transition graph and the pair CHECK
        allow; in ``document_states`` display order."""
        return _all(DocumentStateMove, self._rows("document_state_moves"))

    def retry_candidates(self, document_ids: list[int]) -> list[RetryCandidate]:
        """The named documents (the unknown ones left out), with whether they ever had a job."""
        return _all(RetryCandidate, self._rows("retry_candidates", {"document_ids": document_ids}))

    def failed_retry_candidates(self, error_like: str | None = None) -> list[RetryCandidate]:
        """Failed documents whose error matches ``error_like`` (ILIKE, or its normalised form)."""
        return _all(RetryCandidate, self._rows("failed_retry_candidates", {"error_like": error_like}))

    def stage_snapshot(self, stages: list[str]) -> tuple[Cursor, list[StageEntry]]:
        """In one snapshot: the event cursor of "from now on" and the documents in ``stages``."""
        rows = self._rows("stage_snapshot", {"stages": stages})
        return _stage_snapshot(rows)

    # --- read helpers -----------------------------------------------------------------------

    def may_execute(self, functions: list[str]) -> dict[str, bool]:
        """For each function signature ('docstatus.retry_document(bigint, text)'), whether the
        connected role may call it."""
        return dict(self._rows("may_execute", {"functions": functions}))

    def in_recovery(self) -> bool:
        """Whether this server is a hot standby (``pg_is_in_recovery()``): reads only."""
        return cast("bool", _scalar(self._rows("in_recovery")))

    def get_document(self, document_id: int) -> Document | None:
        """The document, or None when there is no such id."""
        return _first(Document, self._rows("get_document", {"document_id": document_id}))

    def list_jobs(self, document_id: int) -> list[ExtractionJob]:
        """Every extraction job of a document, by attempt."""
        return _all(ExtractionJob, self._rows("list_jobs", {"document_id": document_id}))

    def history(self, document_id: int) -> list[StatusEvent]:
        """Every status change of a document and of its jobs, in the order they happened."""
        return _all(StatusEvent, self._rows("history", {"document_id": document_id}))


def _fetch(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None) -> list[Row]:
    # A cursor of our own: the caller's connection may have another row factory.
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


# Rows to results, shared with AsyncClient.


def _one(model: type[M], rows: list[Row]) -> M:
    return model.from_row(rows[0])


def _first(model: type[M], rows: list[Row]) -> M | None:
    return model.from_row(rows[0]) if rows else None


def _all(model: type[M], rows: list[Row]) -> list[M]:
    return [model.from_row(row) for row in rows]


def _scalar(rows: list[Row]) -> Any:
    return rows[0][0]


def _stage_snapshot(rows: list[Row]) -> tuple[Cursor, list[StageEntry]]:
    entries = [StageEntry(document_id, ProcessingStatus(status), entered_at)
               for _, document_id, status, entered_at in rows if document_id is not None]
    return Cursor(rows[0][0], 0), entries
