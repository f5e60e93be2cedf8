"""The worker's database: the ``docstatus.Client``, plus the few queries only the worker needs.

Each is a named query in ``docstatus/pipeline/sql/*.sql`` run with parameters, on a connection
of the worker's pool or one it holds; errors come back as ``docstatus.errors`` exceptions.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.errors import translated
from docstatus.models import Document, ExtractionJob

_JOB_COLUMNS = len(dataclasses.fields(ExtractionJob))


@functools.cache
def load_query(name: str) -> str:
    return (resources.files("docstatus.pipeline") / "sql" / f"{name}.sql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class ResultRow:
    """A row of ``docstatus.document_results`` with its job's attempt."""

    document_id: int
    job_id: int
    attempt: int
    blob_container: str
    text_blob: str
    fields_blob: str
    created_at: datetime


def pool_of(client: Any) -> ConnectionPool:
    """The pool behind a Client over a pool (or the pool itself)."""
    if isinstance(client, ConnectionPool):
        return client
    pool = getattr(client, "pool", None)
    if isinstance(pool, ConnectionPool):
        return pool
    raise TypeError("the worker runs several threads: give it a docstatus.Client over a "
                    "psycopg_pool.ConnectionPool, a ConnectionPool, or a conninfo string")


class PipelineDatabase:
    """Thread-safe: each call borrows a connection of the pool, or runs on ``conn`` when given
    (a processing thread keeps one connection: a borrow per call costs more than the call)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.client = Client(pool)

    def _rows(self, query_name: str, params: dict[str, Any] | None = None,
              conn: psycopg.Connection | None = None) -> list[tuple]:
        query = load_query(query_name)
        with translated():
            if conn is not None:
                if conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    return _fetch(conn, query, params)
                # A kept connection of a non-autocommit pool: commit each call, or every later call
                # would join one open transaction (holding locks and events_after back).
                with conn.transaction():
                    return _fetch(conn, query, params)
            with self.pool.connection() as borrowed:
                return _fetch(borrowed, query, params)

    def claim(self, worker_id: str, lease: timedelta,
              conn: psycopg.Connection | None = None) -> tuple[ExtractionJob, Document] | None:
        """``claim_extraction_job`` and the claimed job's document (one round trip instead of two),
        or None when no job is free."""
        rows = self._rows("claim_extraction_job", {"worker_id": worker_id, "lease": lease}, conn)
        if not rows:
            return None
        return ExtractionJob.from_row(rows[0][:_JOB_COLUMNS]), Document.from_row(rows[0][_JOB_COLUMNS:])

    def finish_job(self, document_id: int, text_blob: str, fields_blob: str, worker_id: str,
                   conn: psycopg.Connection | None = None) -> None:
        """``record_result`` and ``mark_processing_done`` together: the result is recorded exactly
        when the job ends done."""
        self._rows("finish_job", {"document_id": document_id, "text_blob": text_blob, "fields_blob": fields_blob,
                                  "worker_id": worker_id}, conn)

    def get_result_row(self, document_id: int) -> ResultRow | None:
        rows = self._rows("get_result", {"document_id": document_id})
        return ResultRow(*rows[0]) if rows else None

    def seconds_until_due(self, conn: psycopg.Connection | None = None) -> float | None:
        return self._rows("seconds_until_due", None, conn)[0][0]

    def maintain(self, check_stuck: bool) -> tuple[list[ExtractionJob], int] | None:
        """Reaps expired jobs (and checks for stuck documents) unless another worker is doing it
        right now; returns (reaped jobs, newly stuck documents), or None when it was skipped."""
        stuck_error: psycopg.Error | None = None
        stuck = 0
        with self.pool.connection() as conn, conn.transaction():
            if not self._rows("try_maintenance_lock", conn=conn)[0][0]:
                return None
            reaped = Client(conn).reap_expired_jobs()  # joins this transaction
            if check_stuck:
                try:
                    with conn.transaction():  # a savepoint: a failing check keeps the reaping
                        stuck = len(Client(conn).check_stuck())
                except psycopg.Error as exc:
                    stuck_error = exc
        if stuck_error is not None:
            raise stuck_error
        return reaped, stuck


def _fetch(conn: psycopg.Connection, query: str, params: dict[str, Any] | None) -> list[tuple]:
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall()


__all__ = ["PipelineDatabase", "ResultRow", "load_query", "pool_of"]
