"""Waiting on the database without sleeping: re-check a condition on every docstatus event."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import psycopg

TERMINAL = ("completed", "failed")


def wait_until(dsn: str, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Returns once ``condition()`` holds; it is checked at each NOTIFY on docstatus_events or
    docstatus_alerts, and at least every half second (a retry falls due without an event)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN docstatus_events")
        listener.execute("LISTEN docstatus_alerts")
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            for _ in listener.notifies(timeout=min(0.5, remaining), stop_after=1):
                pass


def statuses(conn: psycopg.Connection, document_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT id, text_extraction_status, processing_status FROM docstatus.documents"
                        " WHERE id = ANY(%s)", (list(document_ids),)).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def wait_terminal(dsn: str, conn: psycopg.Connection, document_ids: Sequence[int], timeout: float = 30.0) -> dict:
    """Waits until every document is completed or failed; returns their statuses."""
    def all_terminal() -> bool:
        found = statuses(conn, document_ids)
        return len(found) == len(document_ids) and all(text in TERMINAL for text, _ in found.values())

    wait_until(dsn, all_terminal, timeout, f"documents {list(document_ids)} to end")
    return statuses(conn, document_ids)


def jobs_of(conn: psycopg.Connection, document_id: int) -> list[tuple]:
    """(attempt, status, worker_id, error_message, completed_at is set, released) per job."""
    return conn.execute(
        "SELECT attempt, status, worker_id, error_message, completed_at IS NOT NULL, released"
        "  FROM docstatus.extraction_jobs WHERE document_id = %s ORDER BY attempt", (document_id,)).fetchall()
