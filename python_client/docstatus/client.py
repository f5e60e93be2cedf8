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

``AsyncClient`` is the same over ``psycopg.AsyncConnection`` or
``psycopg_pool.AsyncConnectionPool``: the same methods, arguments and results, awaited. A test
keeps the two signature for signature alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from importlib import resources
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.rows import tuple_row

from docstatus.errors import translate
from docstatus.models import (
    Document, DocumentResult, EventDelivery, ExtractionJob, StatusEvent, StuckDocument,
)

__all__ = ["AsyncClient", "Client", "load_query"]

# The SQL defaults of p_lease; the enum drift test checks that these equal the database's.
DEFAULT_LEASE = timedelta(minutes=5)
DEFAULT_EVENTS_LIMIT = 1000

_IDLE = pq.TransactionStatus.IDLE

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def load_query(name: str) -> str:
    """The text of ``docstatus/queries/<name>.sql``."""
    return (resources.files("docstatus") / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def calls(sql_function: str) -> Callable[[F], F]:
    """Marks a method as the client side of ``docstatus.<sql_function>`` (checked by a test)."""

    def mark(method: F) -> F:
        method.sql_function = sql_function  # type: ignore[attr-defined]
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

    def _rows(self, query_name: str, params: dict[str, Any] | None = None) -> list[tuple]:
        query = load_query(query_name)
        try:
            if self._pool is not None:
                with self._pool.connection() as conn:
                    return _fetch(conn, query, params)
            conn = self._conn
            if conn.autocommit or conn.info.transaction_status != _IDLE:  # type: ignore[union-attr]
                return _fetch(conn, query, params)  # type: ignore[arg-type]
            with conn.transaction():  # type: ignore[union-attr]
                return _fetch(conn, query, params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from exc

    def _document(self, query_name: str, params: dict[str, Any]) -> Document:
        return Document.from_row(self._rows(query_name, params)[0])

    def _job(self, query_name: str, params: dict[str, Any]) -> ExtractionJob:
        return ExtractionJob.from_row(self._rows(query_name, params)[0])

    # --- the SQL API, one method per function ---------------------------------------------

    @calls("register_document")
    def register_document(self, blob_container: str, blob_name: str, filename: str,
                          mime_type: str | None = None, size_bytes: int | None = None) -> Document:
        """Registers an uploaded blob as a 'not ready' document; the same blob again returns its row."""
        return self._document("register_document", {
            "blob_container": blob_container, "blob_name": blob_name, "filename": filename,
            "mime_type": mime_type, "size_bytes": size_bytes})

    @calls("validate_document")
    def validate_document(self, document_id: int, blob_retrievable: bool, mime_type: str | None,
                          reason: str | None = None) -> Document:
        """The seed's promotion rule, decided in the database: 'ready' with a job, or a reason.
        ``reason``: why the blob is not retrievable, recorded in ``status_reason``."""
        return self._document("validate_document", {
            "document_id": document_id, "blob_retrievable": blob_retrievable, "mime_type": mime_type,
            "reason": reason})

    @calls("create_extraction_job")
    def create_extraction_job(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        """The job the key names, else the active job of a 'ready' document (created if missing)."""
        return self._job("create_extraction_job", {"document_id": document_id, "idempotency_key": idempotency_key})

    @calls("claim_extraction_job")
    def claim_extraction_job(self, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> ExtractionJob | None:
        """The oldest unheld job, now held by ``worker_id`` for ``lease``; None when none is free."""
        rows = self._rows("claim_extraction_job", {"worker_id": worker_id, "lease": lease})
        return ExtractionJob.from_row(rows[0]) if rows else None

    @calls("heartbeat_job")
    def heartbeat_job(self, job_id: int, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> bool:
        """Extends the lease; False when the worker does not hold it or it already ran out."""
        return self._rows("heartbeat_job", {"job_id": job_id, "worker_id": worker_id, "lease": lease})[0][0]

    @calls("mark_ocr_running")
    def mark_ocr_running(self, document_id: int, worker_id: str | None = None) -> Document:
        """Queued -> ('in progress', 'ocr running'). With ``worker_id``, only while it holds the lease."""
        return self._document("mark_ocr_running", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_llm_running")
    def mark_llm_running(self, document_id: int, worker_id: str | None = None) -> Document:
        """'ocr running' -> 'llm running'."""
        return self._document("mark_llm_running", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_processing_done")
    def mark_processing_done(self, document_id: int, worker_id: str | None = None) -> Document:
        """'llm running' -> ('completed', 'done'); the active job ends 'done'."""
        return self._document("mark_processing_done", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_processing_failed")
    def mark_processing_failed(self, document_id: int, error_message: str, worker_id: str | None = None) -> Document:
        """Any state -> ('failed', 'failed'); the active job fails with ``error_message``."""
        return self._document("mark_processing_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id})

    @calls("retry_document")
    def retry_document(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        """A document that failed during processing goes back to 'ready' with the next attempt."""
        return self._job("retry_document", {"document_id": document_id, "idempotency_key": idempotency_key})

    @calls("reap_expired_jobs")
    def reap_expired_jobs(self) -> list[ExtractionJob]:
        """Ends every job whose lease ran out and returns them (retrying below max_attempts)."""
        return [ExtractionJob.from_row(row) for row in self._rows("reap_expired_jobs")]

    @calls("events_after")
    def events_after(self, after_tx: int = 0, after_id: int = 0, limit: int = DEFAULT_EVENTS_LIMIT) -> list[StatusEvent]:
        """Committed events after the cursor ``(after_tx, after_id)``, in cursor order.

        ``client.events_after(*cursor)`` takes a ``Cursor``; the next cursor is the last event's
        ``.cursor``. To follow the log as it grows, use ``docstatus.Subscriber``.
        """
        rows = self._rows("events_after", {"after_tx": after_tx, "after_id": after_id, "limit": limit})
        return [StatusEvent.from_row(row) for row in rows]

    @calls("event_delivery_delay")
    def event_delivery(self) -> EventDelivery:
        """The ``docstatus.event_delivery`` view: events not yet deliverable and what holds them."""
        return EventDelivery.from_row(self._rows("event_delivery")[0])

    # --- the pipeline worker's functions ----------------------------------------------------

    @calls("mark_attempt_failed")
    def mark_attempt_failed(self, document_id: int, error_message: str, worker_id: str | None = None) -> Document:
        """A failure worth retrying: failed, then 'ready' again after a backoff while attempts remain."""
        return self._document("mark_attempt_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id})

    @calls("release_job")
    def release_job(self, job_id: int, worker_id: str, reason: str = "shutting down") -> ExtractionJob:
        """Gives a held job back unfinished; the next attempt is queued at once, uncounted."""
        return self._job("release_job", {"job_id": job_id, "worker_id": worker_id, "reason": reason})

    @calls("record_result")
    def record_result(self, document_id: int, text_blob: str, fields_blob: str,
                      worker_id: str | None = None) -> DocumentResult:
        """Records the blobs holding the active job's extracted text and fields."""
        rows = self._rows("record_result", {"document_id": document_id, "text_blob": text_blob,
                                            "fields_blob": fields_blob, "worker_id": worker_id})
        return DocumentResult.from_row(rows[0])

    # --- operations (the functions behind the stuck and count views) ------------------------

    @calls("check_stuck")
    def check_stuck(self) -> list[StuckDocument]:
        """Documents newly stuck past their SLA, each alerted once on docstatus_alerts."""
        return [StuckDocument.from_row(row) for row in self._rows("check_stuck")]

    @calls("fold_status_counters")
    def fold_status_counters(self) -> int:
        """Folds finished transactions' events into the status counters; how many it folded."""
        return self._rows("fold_status_counters")[0][0]

    @calls("status_counters_folded_below")
    def status_counters_folded_below(self) -> int:
        """The transaction id below which every event is already in the status counters."""
        return self._rows("status_counters_folded_below")[0][0]

    @calls("normalise_error")
    def normalise_error(self, message: str | None) -> str | None:
        """An error message with its variable parts replaced, as failure_summary groups it."""
        return self._rows("normalise_error", {"message": message})[0][0]

    # --- read helpers -----------------------------------------------------------------------

    def get_document(self, document_id: int) -> Document | None:
        """The document, or None when there is no such id."""
        rows = self._rows("get_document", {"document_id": document_id})
        return Document.from_row(rows[0]) if rows else None

    def list_jobs(self, document_id: int) -> list[ExtractionJob]:
        """Every extraction job of a document, by attempt."""
        return [ExtractionJob.from_row(row) for row in self._rows("list_jobs", {"document_id": document_id})]

    def history(self, document_id: int) -> list[StatusEvent]:
        """Every status change of a document and of its jobs, in the order they happened."""
        return [StatusEvent.from_row(row) for row in self._rows("history", {"document_id": document_id})]


def _fetch(conn: psycopg.Connection, query: str, params: dict[str, Any] | None) -> list[tuple]:
    # A cursor of our own: the caller's connection may have another row factory.
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall()


class AsyncClient:
    """The async mirror of ``Client``, over ``psycopg.AsyncConnection`` or
    ``psycopg_pool.AsyncConnectionPool``, with the same transaction rules."""

    def __init__(self, conn_or_pool: psycopg.AsyncConnection | psycopg_pool.AsyncConnectionPool) -> None:
        if isinstance(conn_or_pool, psycopg_pool.AsyncConnectionPool):
            self._pool: psycopg_pool.AsyncConnectionPool | None = conn_or_pool
            self._conn: psycopg.AsyncConnection | None = None
        elif isinstance(conn_or_pool, psycopg.AsyncConnection):
            self._pool = None
            self._conn = conn_or_pool
        else:
            raise TypeError(
                "AsyncClient needs a psycopg.AsyncConnection or a psycopg_pool.AsyncConnectionPool, "
                f"not {type(conn_or_pool).__name__}"
            )
        self._owns_connection = False

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncClient:
        """A client over a new autocommit connection (``kwargs`` go to ``AsyncConnection.connect``)."""
        kwargs.setdefault("autocommit", True)
        client = cls(await psycopg.AsyncConnection.connect(conninfo, **kwargs))
        client._owns_connection = True
        return client

    async def close(self) -> None:
        if self._owns_connection and self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _rows(self, query_name: str, params: dict[str, Any] | None = None) -> list[tuple]:
        query = load_query(query_name)
        try:
            if self._pool is not None:
                async with self._pool.connection() as conn:
                    return await _fetch_async(conn, query, params)
            conn = self._conn
            if conn.autocommit or conn.info.transaction_status != _IDLE:  # type: ignore[union-attr]
                return await _fetch_async(conn, query, params)  # type: ignore[arg-type]
            async with conn.transaction():  # type: ignore[union-attr]
                return await _fetch_async(conn, query, params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from exc

    async def _document(self, query_name: str, params: dict[str, Any]) -> Document:
        return Document.from_row((await self._rows(query_name, params))[0])

    async def _job(self, query_name: str, params: dict[str, Any]) -> ExtractionJob:
        return ExtractionJob.from_row((await self._rows(query_name, params))[0])

    # The methods below mirror Client's one for one; see their docstrings there.

    @calls("register_document")
    async def register_document(self, blob_container: str, blob_name: str, filename: str,
                                mime_type: str | None = None, size_bytes: int | None = None) -> Document:
        return await self._document("register_document", {
            "blob_container": blob_container, "blob_name": blob_name, "filename": filename,
            "mime_type": mime_type, "size_bytes": size_bytes})

    @calls("validate_document")
    async def validate_document(self, document_id: int, blob_retrievable: bool, mime_type: str | None,
                                reason: str | None = None) -> Document:
        return await self._document("validate_document", {
            "document_id": document_id, "blob_retrievable": blob_retrievable, "mime_type": mime_type,
            "reason": reason})

    @calls("create_extraction_job")
    async def create_extraction_job(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        return await self._job("create_extraction_job", {"document_id": document_id, "idempotency_key": idempotency_key})

    @calls("claim_extraction_job")
    async def claim_extraction_job(self, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> ExtractionJob | None:
        rows = await self._rows("claim_extraction_job", {"worker_id": worker_id, "lease": lease})
        return ExtractionJob.from_row(rows[0]) if rows else None

    @calls("heartbeat_job")
    async def heartbeat_job(self, job_id: int, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> bool:
        return (await self._rows("heartbeat_job", {"job_id": job_id, "worker_id": worker_id, "lease": lease}))[0][0]

    @calls("mark_ocr_running")
    async def mark_ocr_running(self, document_id: int, worker_id: str | None = None) -> Document:
        return await self._document("mark_ocr_running", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_llm_running")
    async def mark_llm_running(self, document_id: int, worker_id: str | None = None) -> Document:
        return await self._document("mark_llm_running", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_processing_done")
    async def mark_processing_done(self, document_id: int, worker_id: str | None = None) -> Document:
        return await self._document("mark_processing_done", {"document_id": document_id, "worker_id": worker_id})

    @calls("mark_processing_failed")
    async def mark_processing_failed(self, document_id: int, error_message: str,
                                     worker_id: str | None = None) -> Document:
        return await self._document("mark_processing_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id})

    @calls("retry_document")
    async def retry_document(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        return await self._job("retry_document", {"document_id": document_id, "idempotency_key": idempotency_key})

    @calls("reap_expired_jobs")
    async def reap_expired_jobs(self) -> list[ExtractionJob]:
        return [ExtractionJob.from_row(row) for row in await self._rows("reap_expired_jobs")]

    @calls("events_after")
    async def events_after(self, after_tx: int = 0, after_id: int = 0,
                           limit: int = DEFAULT_EVENTS_LIMIT) -> list[StatusEvent]:
        rows = await self._rows("events_after", {"after_tx": after_tx, "after_id": after_id, "limit": limit})
        return [StatusEvent.from_row(row) for row in rows]

    @calls("event_delivery_delay")
    async def event_delivery(self) -> EventDelivery:
        return EventDelivery.from_row((await self._rows("event_delivery"))[0])

    @calls("mark_attempt_failed")
    async def mark_attempt_failed(self, document_id: int, error_message: str,
                                  worker_id: str | None = None) -> Document:
        return await self._document("mark_attempt_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id})

    @calls("release_job")
    async def release_job(self, job_id: int, worker_id: str, reason: str = "shutting down") -> ExtractionJob:
        return await self._job("release_job", {"job_id": job_id, "worker_id": worker_id, "reason": reason})

    @calls("record_result")
    async def record_result(self, document_id: int, text_blob: str, fields_blob: str,
                            worker_id: str | None = None) -> DocumentResult:
        rows = await self._rows("record_result", {"document_id": document_id, "text_blob": text_blob,
                                                  "fields_blob": fields_blob, "worker_id": worker_id})
        return DocumentResult.from_row(rows[0])

    @calls("check_stuck")
    async def check_stuck(self) -> list[StuckDocument]:
        return [StuckDocument.from_row(row) for row in await self._rows("check_stuck")]

    @calls("fold_status_counters")
    async def fold_status_counters(self) -> int:
        return (await self._rows("fold_status_counters"))[0][0]

    @calls("status_counters_folded_below")
    async def status_counters_folded_below(self) -> int:
        return (await self._rows("status_counters_folded_below"))[0][0]

    @calls("normalise_error")
    async def normalise_error(self, message: str | None) -> str | None:
        return (await self._rows("normalise_error", {"message": message}))[0][0]

    async def get_document(self, document_id: int) -> Document | None:
        rows = await self._rows("get_document", {"document_id": document_id})
        return Document.from_row(rows[0]) if rows else None

    async def list_jobs(self, document_id: int) -> list[ExtractionJob]:
        return [ExtractionJob.from_row(row) for row in await self._rows("list_jobs", {"document_id": document_id})]

    async def history(self, document_id: int) -> list[StatusEvent]:
        return [StatusEvent.from_row(row) for row in await self._rows("history", {"document_id": document_id})]


async def _fetch_async(conn: psycopg.AsyncConnection, query: str, params: dict[str, Any] | None) -> list[tuple]:
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(query, params)  # type: ignore[arg-type]
        return await cursor.fetchall()
