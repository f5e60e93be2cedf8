"""Typed, immutable results of the docstatus SQL API.

The enum values are exactly the strings the database stores; a test compares them with the
CHECK constraints and ``docstatus.status_transitions``, so the two cannot drift. Being
``StrEnum`` members they compare equal to those strings (``ProcessingStatus.DONE == 'done'``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

# A row as psycopg returns it: from_row reads its columns by position.
Row = tuple[Any, ...]


class TextExtractionStatus(enum.StrEnum):
    """``documents.text_extraction_status``: may the document be processed, and how did it end."""

    NOT_READY = "not ready"
    READY = "ready"
    IN_PROGRESS = "in progress"
    COMPLETED = "completed"
    FAILED = "failed"


class ProcessingStatus(enum.StrEnum):
    """``documents.processing_status``: which pipeline stage runs now."""

    PENDING_EXTRACTION = "pending extraction"
    OCR_RUNNING = "ocr running"
    LLM_RUNNING = "llm running"
    DONE = "done"
    FAILED = "failed"


class JobStatus(enum.StrEnum):
    """``extraction_jobs.status``. A held job stays pending, with a worker and a lease."""

    PENDING_EXTRACTION = "pending extraction"
    DONE = "done"
    FAILED = "failed"


class DocumentState(enum.StrEnum):
    """A row of ``docstatus.document_states``: the name of one of the six pairs of statuses, in
    display order (a test holds the two equal)."""

    UPLOADED = "uploaded"
    QUEUED = "queued"
    OCR_RUNNING = "ocr running"
    LLM_RUNNING = "llm running"
    COMPLETED = "completed"
    FAILED = "failed"


class EventKind(enum.StrEnum):
    """``status_events.kind``: which status moved."""

    TEXT_EXTRACTION = "text_extraction"
    PROCESSING = "processing"
    JOB = "job"


# The status enum of each event kind, for typing an event's from/to strings.
STATUS_ENUM_OF_KIND: dict[EventKind, type[TextExtractionStatus] | type[ProcessingStatus] | type[JobStatus]] = {
    EventKind.TEXT_EXTRACTION: TextExtractionStatus,
    EventKind.PROCESSING: ProcessingStatus,
    EventKind.JOB: JobStatus,
}

Status = TextExtractionStatus | ProcessingStatus | JobStatus


class Cursor(NamedTuple):
    """A position in the event log: ``events_after`` returns the events after it.

    Persist ``str(cursor)`` and read it back with ``Cursor.parse``.
    """

    tx_id: int
    event_id: int

    def __str__(self) -> str:
        return f"{self.tx_id}:{self.event_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        tx_id, _, event_id = text.partition(":")
        return cls(int(tx_id), int(event_id))

    @classmethod
    def beginning(cls) -> Cursor:
        """Before every event: a subscriber started here replays the whole history."""
        return cls(0, 0)


@dataclass(frozen=True, slots=True)
class Document:
    """A row of ``docstatus.documents``."""

    id: int
    blob_container: str
    blob_name: str
    filename: str
    mime_type: str | None
    size_bytes: int | None
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    status_reason: str | None
    created_at: datetime
    updated_at: datetime
    status_entered_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Document:
        """From the columns in field order (the query files select them in that order)."""
        return cls(
            row[0], row[1], row[2], row[3], row[4], row[5],
            TextExtractionStatus(row[6]), ProcessingStatus(row[7]),
            row[8], row[9], row[10], row[11],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExtractionJob:
    """A row of ``docstatus.extraction_jobs``: one extraction run of a document."""

    id: int
    document_id: int
    status: JobStatus
    attempt: int
    idempotency_key: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    not_before: datetime
    released: bool

    @classmethod
    def from_row(cls, row: Row) -> ExtractionJob:
        return cls(row[0], row[1], JobStatus(row[2]), *row[3:13])


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A row of ``docstatus.status_events``: one status change (creation has no from_status)."""

    id: int
    tx_id: int
    document_id: int
    job_id: int | None
    kind: EventKind
    from_status: Status | None
    to_status: Status
    detail: str | None
    occurred_at: datetime

    @property
    def cursor(self) -> Cursor:
        """The position right after this event: persist it once the event is handled."""
        return Cursor(self.tx_id, self.id)

    @classmethod
    def from_row(cls, row: Row) -> StatusEvent:
        kind = EventKind(row[4])
        status = STATUS_ENUM_OF_KIND[kind]
        from_status = None if row[5] is None else status(row[5])
        return cls(row[0], row[1], row[2], row[3], kind, from_status, status(row[6]), row[7], row[8])


@dataclass(frozen=True, slots=True)
class HistoryMaintenance:
    """What one ``docstatus.maintain_history()`` run did."""

    partitions_created: int
    partitions_dropped: int
    oldest_cursor_tx: int  # with oldest_cursor_id: the oldest cursor events_after accepts
    oldest_cursor_id: int
    managed_by: str | None  # 'pg_partman' or 'built-in'; None when another run was busy

    @property
    def oldest_cursor(self) -> Cursor:
        return Cursor(self.oldest_cursor_tx, self.oldest_cursor_id)

    @classmethod
    def from_row(cls, row: Row) -> HistoryMaintenance:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """The row of ``docstatus.event_delivery``: how far ``events_after`` is held back."""

    pending_events: int
    oldest_writer_pid: int | None
    oldest_writer_state: str | None
    held_for: timedelta | None

    @classmethod
    def from_row(cls, row: Row) -> EventDelivery:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class StuckDocument:
    """A row of ``docstatus.stuck_documents``: a document in one state longer than its SLA."""

    document_id: int
    state: str
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    status_entered_at: datetime
    sla: timedelta
    in_state_for: timedelta
    job_id: int | None
    attempt: int | None
    worker_id: str | None
    lease_expires_at: datetime | None
    status_reason: str | None

    @classmethod
    def from_row(cls, row: Row) -> StuckDocument:
        return cls(row[0], row[1], TextExtractionStatus(row[2]), ProcessingStatus(row[3]), *row[4:12])


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """A row of ``docstatus.document_results``: where one extraction run stored its output."""

    job_id: int
    document_id: int
    blob_container: str
    text_blob: str
    fields_blob: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> DocumentResult:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class DocumentStateInfo:
    """A row of ``docstatus.document_states``: a state, the two statuses that spell it, whether
    it is final, and where it comes when states are listed."""

    state: DocumentState
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    final: bool
    display_order: int

    @classmethod
    def from_row(cls, row: Row) -> DocumentStateInfo:
        return cls(DocumentState(row[0]), TextExtractionStatus(row[1]), ProcessingStatus(row[2]), row[3], row[4])


@dataclass(frozen=True, slots=True)
class StatusTransition:
    """A row of ``docstatus.status_transitions``: one allowed move of one status column."""

    kind: EventKind
    from_status: str
    to_status: str

    @classmethod
    def from_row(cls, row: Row) -> StatusTransition:
        return cls(EventKind(row[0]), row[1], row[2])


@dataclass(frozen=True, slots=True)
class DocumentStateMove:
    """One of the six document states that can follow another in a single change (each status
    column stays or makes a move of ``status_transitions``)."""

    from_state: DocumentState
    to_state: DocumentState

    @classmethod
    def from_row(cls, row: Row) -> DocumentStateMove:
        return cls(DocumentState(row[0]), DocumentState(row[1]))


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A row of ``docstatus.claim_jobs`` (type ``docstatus.claimed_job``): a job and its document."""

    job_id: int
    document_id: int
    job_status: JobStatus
    attempt: int
    idempotency_key: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    job_created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    not_before: datetime
    released: bool
    blob_container: str
    blob_name: str
    filename: str
    mime_type: str | None
    size_bytes: int | None
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    status_reason: str | None
    document_created_at: datetime
    document_updated_at: datetime
    status_entered_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> ClaimedJob:
        # mypy cannot count the columns a slice spreads, so it sees too many arguments.
        return cls(row[0], row[1], JobStatus(row[2]), *row[3:18], TextExtractionStatus(row[18]),  # type: ignore[call-arg]
                   ProcessingStatus(row[19]), *row[20:24])

    @property
    def job(self) -> ExtractionJob:
        return ExtractionJob(
            self.job_id, self.document_id, self.job_status, self.attempt, self.idempotency_key, self.worker_id,
            self.lease_expires_at, self.job_created_at, self.started_at, self.completed_at, self.error_message,
            self.not_before, self.released)

    @property
    def document(self) -> Document:
        return Document(
            self.document_id, self.blob_container, self.blob_name, self.filename, self.mime_type, self.size_bytes,
            self.text_extraction_status, self.processing_status, self.status_reason, self.document_created_at,
            self.document_updated_at, self.status_entered_at)


@dataclass(frozen=True, slots=True)
class MaintenanceAction:
    """A row of ``docstatus.run_maintenance`` (type ``docstatus.maintenance_action``)."""

    action: str  # 'reaped', 'stuck', 'skipped', 'stuck check failed'
    job_id: int | None
    document_id: int | None
    attempt: int | None
    worker_id: str | None
    error_message: str | None

    @classmethod
    def from_row(cls, row: Row) -> MaintenanceAction:
        return cls(*row)


# --- the operations views -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusCount:
    """A row of ``docstatus.status_counts``: how many documents (or jobs) have one status."""

    kind: EventKind
    status: str
    count: int

    @classmethod
    def from_row(cls, row: Row) -> StatusCount:
        return cls(EventKind(row[0]), row[1], row[2])


@dataclass(frozen=True, slots=True)
class DocumentOverview:
    """A row of ``docstatus.document_overview``: a document, its state, current job, last error."""

    document_id: int
    blob_container: str
    blob_name: str
    filename: str
    mime_type: str | None
    size_bytes: int | None
    state: DocumentState
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    status_entered_at: datetime
    in_status_for: timedelta
    status_reason: str | None
    job_id: int | None
    job_status: JobStatus | None
    attempt: int | None
    worker_id: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> DocumentOverview:
        # mypy cannot count the columns a slice spreads, so it sees too many arguments.
        return cls(*row[0:6], DocumentState(row[6]), TextExtractionStatus(row[7]), ProcessingStatus(row[8]),  # type: ignore[call-arg]
                   *row[9:13], None if row[13] is None else JobStatus(row[13]), *row[14:20])


@dataclass(frozen=True, slots=True)
class StuckAlert:
    """A row of ``docstatus.stuck_alerts``: when check_stuck alerted on one stuck stay."""

    document_id: int
    status_entered_at: datetime
    state: str
    sla: timedelta
    alerted_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> StuckAlert:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class FailurePattern:
    """A row of ``docstatus.failure_summary``: failed jobs whose errors normalise alike."""

    error_pattern: str | None
    failures: int
    documents: int
    first_seen: datetime | None
    last_seen: datetime | None
    example_error: str | None
    example_document_ids: list[int]

    @classmethod
    def from_row(cls, row: Row) -> FailurePattern:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class JobOverview:
    """A job with its document's filename and how long it ran (so far), as ``recent_jobs`` lists it."""

    job_id: int
    document_id: int
    filename: str
    status: JobStatus
    attempt: int
    worker_id: str | None
    lease_expires_at: datetime | None
    released: bool
    created_at: datetime
    not_before: datetime
    started_at: datetime | None
    completed_at: datetime | None
    ran_for: timedelta | None
    error_message: str | None

    @classmethod
    def from_row(cls, row: Row) -> JobOverview:
        return cls(row[0], row[1], row[2], JobStatus(row[3]), *row[4:14])


@dataclass(frozen=True, slots=True)
class RetryCandidate:
    """A document ``docstatus retry`` may act on: its status and whether it ever had a job
    (a failed one that never had a job failed validation: it is validated again instead)."""

    document_id: int
    text_extraction_status: TextExtractionStatus
    had_job: bool
    status_reason: str | None
    blob_container: str

    @classmethod
    def from_row(cls, row: Row) -> RetryCandidate:
        return cls(row[0], TextExtractionStatus(row[1]), *row[2:5])


@dataclass(frozen=True, slots=True)
class StageEntry:
    """A document in a pipeline stage and when it entered it (for stage-duration metrics)."""

    document_id: int
    processing_status: ProcessingStatus
    status_entered_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentListEntry:
    """A row of ``docstatus.list_documents``: a document, its state and both statuses."""

    document_id: int
    filename: str
    mime_type: str | None
    size_bytes: int | None
    state: DocumentState
    text_extraction_status: TextExtractionStatus
    processing_status: ProcessingStatus
    status_reason: str | None
    status_entered_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> DocumentListEntry:
        return cls(row[0], row[1], row[2], row[3], DocumentState(row[4]), TextExtractionStatus(row[5]),
                   ProcessingStatus(row[6]), row[7], row[8], row[9], row[10])


@dataclass(frozen=True, slots=True)
class DocumentsMinute:
    """A row of ``docstatus.documents_per_minute``: documents registered and ended in one minute."""

    minute: datetime
    entered: int
    ended: int

    @classmethod
    def from_row(cls, row: Row) -> DocumentsMinute:
        return cls(*row)
