"""What each page shows, read through ``Client`` (one method per view or function).

Plain functions of a Client: they run in a worker thread of the server (psycopg is
synchronous here) and return dicts for the templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from docstatus.client import Client
from docstatus.dashboard import charts
from docstatus.models import DocumentStateInfo, EventKind, StatusCount

STUCK_SHOWN = 50
FAILURE_PATTERNS_SHOWN = 20


def state_counts(states: Sequence[DocumentStateInfo], counts: Sequence[StatusCount]) -> dict[str, int]:
    """Documents per state from the per-column counters (status_counts, no scan of documents).

    A state's count is that of a status only it has: its text_extraction_status when no other
    state shares it, else its processing_status; document_states decides which, not this code.
    A state with neither status of its own would get no entry (each of today's six has one)."""
    by_kind = {(str(c.kind), c.status): c.count for c in counts}
    result: dict[str, int] = {}
    for state in states:
        shared_text = sum(s.text_extraction_status == state.text_extraction_status for s in states) > 1
        shared_stage = sum(s.processing_status == state.processing_status for s in states) > 1
        if not shared_text:
            text_key = (EventKind.TEXT_EXTRACTION.value, str(state.text_extraction_status))
            result[str(state.state)] = by_kind.get(text_key, 0)
        elif not shared_stage:
            result[str(state.state)] = by_kind.get((EventKind.PROCESSING.value, str(state.processing_status)), 0)
    return result


def overview(client: Client) -> dict:
    states = client.document_states()
    counts = client.status_counts()
    stuck = client.stuck_documents()
    return {
        "states": states,
        "state_counts": state_counts(states, counts),
        "counts": counts,
        "rate_chart": charts.per_minute_chart(client.documents_per_minute()),
        "stuck": stuck[:STUCK_SHOWN],
        "stuck_total": len(stuck),
        "failures": client.failure_summary(limit=FAILURE_PATTERNS_SHOWN),
    }


@dataclass(frozen=True)
class ListFilters:
    """The document list's filters, parsed from the query string (None: not filtered)."""

    state: str | None = None
    processing_status: str | None = None
    mime_type: str | None = None
    filename_contains: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> ListFilters:
        """Raises ValueError naming the parameter when one is not what it should be."""
        def text(name: str) -> str | None:
            return (params.get(name) or "").strip() or None

        def time(name: str) -> datetime | None:
            return _time(name, params.get(name))

        return cls(state=text("state"), processing_status=text("processing_status"), mime_type=text("mime_type"),
                   filename_contains=text("filename_contains"),
                   created_from=time("created_from"), created_to=time("created_to"),
                   updated_from=time("updated_from"), updated_to=time("updated_to"))

    def query(self) -> dict[str, str]:
        """Back to query parameters, for the next-page link."""
        return {name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in self.__dict__.items() if value is not None}


def _time(name: str, value: str | None) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{name}: not a date or time ({value!r}); use 2026-12-04 or 2026-12-04T10:30") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def documents(client: Client, filters: ListFilters, after_id: int | None, page_size: int) -> dict:
    rows = client.list_documents(**filters.__dict__, after_id=after_id, limit=page_size + 1)
    return {
        "documents": rows[:page_size],
        "next_after": rows[page_size - 1].document_id if len(rows) > page_size else None,
        "states": client.document_states(),
    }


def document(client: Client, document_id: int, fields_reader=None) -> dict | None:
    overview = client.document_overview(document_id)
    if overview is None:
        return None
    now = datetime.now(UTC)
    history = client.history(document_id)
    timeline = charts.stages(history)
    # A stage where processing ends: the processing status of a final document state.
    final = {str(state.processing_status) for state in client.document_states() if state.final}
    result = client.current_result(document_id)
    fields, fields_error = None, None
    if result is not None and fields_reader is not None:
        try:
            fields = fields_reader(result.blob_container, result.fields_blob)
        except Exception as exc:  # noqa: BLE001 - the store is down or the blob is gone: say so, show the rest
            fields_error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return {
        "doc": overview,
        "jobs": client.list_jobs(document_id),
        "history": history,
        "timeline_chart": charts.timeline_chart(timeline, now, final),
        "result": result,
        "fields": fields,
        "fields_error": fields_error,
        "now": now,
    }


def state_machine(client: Client) -> dict:
    states = client.document_states()
    transitions = client.status_transitions()
    counts = state_counts(states, client.status_counts())
    # The same moves the docs' diagram draws (docstatus.diagram), asked of the database.
    edges = [(str(move.from_state), str(move.to_state)) for move in client.document_state_moves()]
    return {
        "diagram": charts.state_diagram([(str(s.state), s.final) for s in states], edges, counts),
        "transitions": transitions,
    }
