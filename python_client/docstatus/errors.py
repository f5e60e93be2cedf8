"""The one place that turns a PostgreSQL error into a docstatus exception.

The database raises its own SQLSTATEs (``DS001``...) with a JSON ``DETAIL``; this module maps
``exc.sqlstate`` to a class and parses the detail into attributes. The psycopg error stays
reachable as ``__cause__``. Errors a caller cannot act on through docstatus, connection
problems above all (``psycopg.OperationalError``), are not mapped and stay psycopg's.

Around your own SQL, ``with translated(): conn.execute(...)`` gives the same exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from docstatus.models import Cursor


class DocStatusError(Exception):
    """Base of every error the docstatus database raises on purpose.

    ``sqlstate``, ``detail`` (the parsed JSON DETAIL, or ``{}``) and ``hint`` come from the
    PostgreSQL error, which is also ``__cause__``.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None, detail: dict[str, Any] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail or {}
        self.hint = hint


class DetailField:
    """An attribute read from the error's DETAIL, the JSON object the SQL functions attach."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, error: DocStatusError | None, owner: type | None = None) -> Any:
        if error is None:
            return self
        return error.detail.get(self.key)


class InvalidTransition(DocStatusError):
    """DS001: a status change the transition graph does not allow."""

    document_id = DetailField("document_id")
    job_id = DetailField("job_id")
    kind = DetailField("kind")
    column = DetailField("column")  # text_extraction_status, processing_status or status (a job's)
    from_status = DetailField("from")
    to_status = DetailField("to")

class NotFound(DocStatusError):
    """DS002: no document or job with that id."""

    document_id = DetailField("document_id")
    job_id = DetailField("job_id")

class InvalidArgument(DocStatusError):
    """DS003 (empty names, negative size, missing values), or 23514: a value its CHECK refuses,
    such as an unknown status string; ``constraint`` names that CHECK."""

    constraint: str | None = None


class LeaseLost(DocStatusError):
    """DS004: the worker does not hold the document's active job, or its lease ran out."""

    document_id = DetailField("document_id")
    worker_id = DetailField("worker_id")
    job_id = DetailField("job_id")
    holder = DetailField("holder")

class DocumentJobMismatch(DocStatusError):
    """DS005: at commit, a document and its active job disagree (raw writes did half a move)."""

    document_id = DetailField("document_id")
    text_extraction_status = DetailField("text_extraction_status")
    has_active_job = DetailField("has_active_job")

class CursorTooOld(DocStatusError):
    """DS007: the cursor is older than the retained history (``settings.history_retention``):
    events after it were dropped. ``oldest_cursor`` is where the kept history starts; resume
    from it once whatever needed the missing events has been rebuilt."""

    @property
    def cursor(self) -> Cursor | None:
        """The cursor that was asked for, a ``Cursor``."""
        return _cursor_of(self.detail, "after_tx", "after_id")

    @property
    def oldest_cursor(self) -> Cursor | None:
        """The oldest cursor ``events_after`` accepts, a ``Cursor``."""
        return _cursor_of(self.detail, "oldest_tx", "oldest_id")


def _cursor_of(detail: dict[str, Any], tx_key: str, id_key: str) -> Cursor | None:
    # The transaction id is JSON text: an xid8 may not fit a JSON number in every language.
    try:
        return Cursor(int(detail[tx_key]), int(detail[id_key]))
    except (KeyError, TypeError, ValueError):
        return None


class PermissionDenied(DocStatusError):
    """42501: the role may not call this function (e.g. a reader registering a document)."""


# SQLSTATE -> exception class. Any other DSxxx code becomes the base class.
_CLASS_OF_SQLSTATE: dict[str, type[DocStatusError]] = {
    "DS001": InvalidTransition,
    "DS002": NotFound,
    "DS003": InvalidArgument,
    "DS004": LeaseLost,
    "DS005": DocumentJobMismatch,
    "DS007": CursorTooOld,
    "42501": PermissionDenied,
    "23514": InvalidArgument,
}


def _parse_detail(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def translate(exc: psycopg.Error) -> DocStatusError | None:
    """The docstatus exception for a psycopg error, or None when it is not one of ours."""
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return None
    cls = _CLASS_OF_SQLSTATE.get(sqlstate)
    if cls is None:
        if not sqlstate.startswith("DS"):
            return None
        cls = DocStatusError
    diag = exc.diag
    error = cls(diag.message_primary or str(exc), sqlstate=sqlstate,
                detail=_parse_detail(diag.message_detail), hint=diag.message_hint)
    if isinstance(error, InvalidArgument) and sqlstate == "23514":
        error.constraint = diag.constraint_name
    return error


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise a psycopg error of ours as its docstatus exception, from the original."""
    try:
        yield
    except psycopg.Error as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc
