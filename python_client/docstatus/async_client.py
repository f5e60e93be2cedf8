"""``AsyncClient``: the async mirror of ``docstatus.Client``.

The same methods, arguments, results and transaction rules, over ``psycopg.AsyncConnection`` or
``psycopg_pool.AsyncConnectionPool``, awaited; see ``docstatus.client`` for what each does. A test
keeps the two signature for signature alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import tuple_row

from docstatus.client import (
    _IDLE,
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_JOBS_LIMIT,
    DEFAULT_LEASE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RATE_PERIOD,
    DEFAULT_VALIDATION_LIMIT,
    _all,
    _first,
    _one,
    _scalar,
    _stage_snapshot,
    calls,
    load_query,
)
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
    RetryCandidate,
    Row,
    StageEntry,
    StatusCount,
    StatusEvent,
    StatusTransition,
    StuckAlert,
    StuckDocument,
)

__all__ = ["AsyncClient"]


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

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool | None:
        """The pool this client borrows connections from, or None over a single connection."""
        return self._pool

    async def close(self) -> None:
        if self._owns_connection and self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _rows(self, query_name: str, params: dict[str, Any] | None = None) -> list[Row]:
        query = load_query(query_name)
        with translated():
            if self._pool is not None:
                async with self._pool.connection() as pooled:
                    return await _fetch(pooled, query, params)
            conn = self._conn
            assert conn is not None  # without a pool, an AsyncClient has its connection
            if conn.autocommit or conn.info.transaction_status != _IDLE:
                return await _fetch(conn, query, params)
            async with conn.transaction():
                return await _fetch(conn, query, params)

    @calls("register_document")
    async def register_document(self, blob_container: str, blob_name: str, filename: str,
                          mime_type: str | None = None, size_bytes: int | None = None) -> Document:
        return _one(Document, await self._rows("register_document", {
            "blob_container": blob_container, "blob_name": blob_name, "filename": filename,
            "mime_type": mime_type, "size_bytes": size_bytes}))

    @calls("register_documents")
    async def register_documents(self, blob_containers: Sequence[str], blob_names: Sequence[str],
                                 filenames: Sequence[str], mime_types: Sequence[str | None] | None = None,
                                 size_bytes: Sequence[int | None] | None = None) -> list[Document]:
        """register_document for many blobs in one call (one transaction): element i of each
        sequence is one blob; a row per blob, in their order; a blob already registered returns
        its existing row. InvalidArgument (nothing registered) for sequences of unequal length."""
        return _all(Document, await self._rows("register_documents", {
            "blob_containers": list(blob_containers), "blob_names": list(blob_names),
            "filenames": list(filenames), "mime_types": None if mime_types is None else list(mime_types),
            "size_bytes": None if size_bytes is None else list(size_bytes)}))

    @calls("validate_document")
    async def validate_document(self, document_id: int, blob_retrievable: bool, mime_type: str | None,
                          reason: str | None = None, blob_size: int | None = None) -> Document:
        return _one(Document, await self._rows("validate_document", {
            "document_id": document_id, "blob_retrievable": blob_retrievable, "mime_type": mime_type,
            "reason": reason, "blob_size": blob_size}))

    @calls("require_document")
    async def require_document(self, document_id: int) -> Document:
        return _one(Document, await self._rows("require_document", {"document_id": document_id}))

    @calls("create_extraction_job")
    async def create_extraction_job(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        return _one(ExtractionJob, await self._rows("create_extraction_job", {
            "document_id": document_id, "idempotency_key": idempotency_key}))

    @calls("claim_extraction_job")
    async def claim_extraction_job(self, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> ExtractionJob | None:
        return _first(ExtractionJob, await self._rows("claim_extraction_job", {"worker_id": worker_id, "lease": lease}))

    @calls("claim_jobs")
    async def claim_jobs(self, worker_id: str, lease: timedelta = DEFAULT_LEASE, limit: int = 1,
                   start_ocr: bool = False) -> list[ClaimedJob]:
        return _all(ClaimedJob, await self._rows("claim_jobs", {
            "worker_id": worker_id, "lease": lease, "limit": limit, "start_ocr": start_ocr}))

    @calls("next_job_due")
    async def next_job_due(self) -> timedelta | None:
        return _scalar(await self._rows("next_job_due"))

    @calls("heartbeat_job")
    async def heartbeat_job(self, job_id: int, worker_id: str, lease: timedelta = DEFAULT_LEASE) -> bool:
        return _scalar(await self._rows("heartbeat_job", {"job_id": job_id, "worker_id": worker_id, "lease": lease}))

    @calls("mark_ocr_running")
    async def mark_ocr_running(self, document_id: int, worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("mark_ocr_running", {
            "document_id": document_id, "worker_id": worker_id}))

    @calls("mark_llm_running")
    async def mark_llm_running(self, document_id: int, worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("mark_llm_running", {
            "document_id": document_id, "worker_id": worker_id}))

    @calls("mark_processing_done")
    async def mark_processing_done(self, document_id: int, worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("mark_processing_done", {
            "document_id": document_id, "worker_id": worker_id}))

    @calls("mark_processing_failed")
    async def mark_processing_failed(self, document_id: int, error_message: str,
                                     worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("mark_processing_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id}))

    @calls("retry_document")
    async def retry_document(self, document_id: int, idempotency_key: str | None = None) -> ExtractionJob:
        return _one(ExtractionJob, await self._rows("retry_document", {
            "document_id": document_id, "idempotency_key": idempotency_key}))

    @calls("retry_failed_documents")
    async def retry_failed_documents(self, error_pattern: str) -> list[ExtractionJob]:
        return _all(ExtractionJob, await self._rows("retry_failed_documents", {"error_pattern": error_pattern}))

    @calls("list_documents")
    async def list_documents(self, state: str | None = None, processing_status: str | None = None,
                             mime_type: str | None = None, filename_contains: str | None = None,
                             created_from: datetime | None = None, created_to: datetime | None = None,
                             updated_from: datetime | None = None, updated_to: datetime | None = None,
                             after_id: int | None = None, limit: int = DEFAULT_PAGE_SIZE) -> list[DocumentListEntry]:
        return _all(DocumentListEntry, await self._rows("list_documents", {
            "state": state, "processing_status": processing_status, "mime_type": mime_type,
            "filename_contains": filename_contains, "created_from": created_from, "created_to": created_to,
            "updated_from": updated_from, "updated_to": updated_to, "after_id": after_id, "limit": limit}))

    @calls("documents_per_minute")
    async def documents_per_minute(self, period: timedelta = DEFAULT_RATE_PERIOD) -> list[DocumentsMinute]:
        return _all(DocumentsMinute, await self._rows("documents_per_minute", {"period": period}))

    @calls("reap_expired_jobs")
    async def reap_expired_jobs(self) -> list[ExtractionJob]:
        return _all(ExtractionJob, await self._rows("reap_expired_jobs"))

    @calls("events_after")
    async def events_after(self, after_tx: int = 0, after_id: int = 0,
                           limit: int = DEFAULT_EVENTS_LIMIT) -> list[StatusEvent]:
        return _all(StatusEvent, await self._rows("events_after", {"after_tx": after_tx, "after_id": after_id,
                                                             "limit": limit}))

    @calls("event_delivery_delay")
    async def event_delivery(self) -> EventDelivery:
        return _one(EventDelivery, await self._rows("event_delivery"))

    @calls("mark_attempt_failed")
    async def mark_attempt_failed(self, document_id: int, error_message: str, worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("mark_attempt_failed", {
            "document_id": document_id, "error_message": error_message, "worker_id": worker_id}))

    @calls("release_job")
    async def release_job(self, job_id: int, worker_id: str, reason: str = "shutting down") -> ExtractionJob:
        return _one(ExtractionJob, await self._rows("release_job", {"job_id": job_id, "worker_id": worker_id,
                                                              "reason": reason}))

    @calls("record_result")
    async def record_result(self, document_id: int, text_blob: str, fields_blob: str,
                      worker_id: str | None = None) -> DocumentResult:
        return _one(DocumentResult, await self._rows("record_result", {
            "document_id": document_id, "text_blob": text_blob, "fields_blob": fields_blob, "worker_id": worker_id}))

    @calls("finish_job")
    async def finish_job(self, document_id: int, text_blob: str, fields_blob: str,
                         worker_id: str | None = None) -> Document:
        return _one(Document, await self._rows("finish_job", {
            "document_id": document_id, "text_blob": text_blob, "fields_blob": fields_blob, "worker_id": worker_id}))

    @calls("current_result")
    async def current_result(self, document_id: int) -> DocumentResult | None:
        return _first(DocumentResult, await self._rows("current_result", {"document_id": document_id}))

    @calls("run_maintenance")
    async def run_maintenance(self, check_stuck: bool = True) -> list[MaintenanceAction]:
        return _all(MaintenanceAction, await self._rows("run_maintenance", {"check_stuck": check_stuck}))

    @calls("check_stuck")
    async def check_stuck(self) -> list[StuckDocument]:
        return _all(StuckDocument, await self._rows("check_stuck"))

    @calls("fold_status_counters")
    async def fold_status_counters(self) -> int:
        return _scalar(await self._rows("fold_status_counters"))

    @calls("status_counters_folded_below")
    async def status_counters_folded_below(self) -> int:
        return _scalar(await self._rows("status_counters_folded_below"))

    @calls("maintain_history")
    async def maintain_history(self) -> HistoryMaintenance:
        return _one(HistoryMaintenance, await self._rows("maintain_history"))

    @calls("normalise_error")
    async def normalise_error(self, message: str | None) -> str | None:
        return _scalar(await self._rows("normalise_error", {"message": message}))

    async def status_counts(self) -> list[StatusCount]:
        return _all(StatusCount, await self._rows("status_counts"))

    async def document_overview(self, document_id: int) -> DocumentOverview | None:
        return _first(DocumentOverview, await self._rows("document_overview", {"document_id": document_id}))

    async def stuck_documents(self) -> list[StuckDocument]:
        return _all(StuckDocument, await self._rows("stuck_documents"))

    async def stuck_alerts(self) -> list[StuckAlert]:
        return _all(StuckAlert, await self._rows("stuck_alerts"))

    async def stuck_counts_by_state(self) -> dict[str, int]:
        return {state: count for state, count in await self._rows("stuck_counts_by_state")}

    async def failure_summary(self, limit: int | None = None) -> list[FailurePattern]:
        return _all(FailurePattern, await self._rows("failure_summary", {"limit": limit}))

    async def recent_jobs(self, status: str | None = None, since: datetime | None = None,
                    limit: int = DEFAULT_JOBS_LIMIT) -> list[JobOverview]:
        return _all(JobOverview, await self._rows("recent_jobs", {"status": status, "since": since, "limit": limit}))

    async def documents_awaiting_validation(self, limit: int = DEFAULT_VALIDATION_LIMIT, *,
                                            container: str | None = None,
                                            older_than: timedelta = timedelta(0)) -> list[Document]:
        return _all(Document, await self._rows("documents_awaiting_validation", {
            "limit": limit, "container": container, "older_than": older_than}))

    async def document_states(self) -> list[DocumentStateInfo]:
        return _all(DocumentStateInfo, await self._rows("document_states"))

    async def status_transitions(self) -> list[StatusTransition]:
        return _all(StatusTransition, await self._rows("status_transitions"))

    async def document_state_moves(self) -> list[DocumentStateMove]:
        return _all(DocumentStateMove, await self._rows("document_state_moves"))

    async def retry_candidates(self, document_ids: list[int]) -> list[RetryCandidate]:
        return _all(RetryCandidate, await self._rows("retry_candidates", {"document_ids": document_ids}))

    async def failed_retry_candidates(self, error_like: str | None = None) -> list[RetryCandidate]:
        return _all(RetryCandidate, await self._rows("failed_retry_candidates", {"error_like": error_like}))

    async def stage_snapshot(self, stages: list[str]) -> tuple[Cursor, list[StageEntry]]:
        rows = await self._rows("stage_snapshot", {"stages": stages})
        return _stage_snapshot(rows)

    async def may_execute(self, functions: list[str]) -> dict[str, bool]:
        return dict(await self._rows("may_execute", {"functions": functions}))

    async def in_recovery(self) -> bool:
        return _scalar(await self._rows("in_recovery"))

    async def get_document(self, document_id: int) -> Document | None:
        return _first(Document, await self._rows("get_document", {"document_id": document_id}))

    async def list_jobs(self, document_id: int) -> list[ExtractionJob]:
        return _all(ExtractionJob, await self._rows("list_jobs", {"document_id": document_id}))

    async def history(self, document_id: int) -> list[StatusEvent]:
        return _all(StatusEvent, await self._rows("history", {"document_id": document_id}))


async def _fetch(conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any] | None) -> list[Row]:
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()
