"""docstatus: a thin Python client for the docstatus PostgreSQL schema."""

__version__ = "0.1.0"

from docstatus.client import AsyncClient, Client
from docstatus.errors import (
    DocStatusError,
    DocumentJobMismatch,
    InvalidArgument,
    InvalidTransition,
    LeaseLost,
    NotFound,
    PermissionDenied,
)
from docstatus.models import (
    Cursor,
    Document,
    DocumentResult,
    EventDelivery,
    EventKind,
    ExtractionJob,
    JobStatus,
    ProcessingStatus,
    StatusEvent,
    StuckDocument,
    TextExtractionStatus,
)
from docstatus.subscriber import Subscriber

__all__ = [
    "AsyncClient",
    "Client",
    "Cursor",
    "DocStatusError",
    "Document",
    "DocumentJobMismatch",
    "DocumentResult",
    "EventDelivery",
    "EventKind",
    "ExtractionJob",
    "InvalidArgument",
    "InvalidTransition",
    "JobStatus",
    "LeaseLost",
    "NotFound",
    "PermissionDenied",
    "ProcessingStatus",
    "StatusEvent",
    "StuckDocument",
    "Subscriber",
    "TextExtractionStatus",
]
