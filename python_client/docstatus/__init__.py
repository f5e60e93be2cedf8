"""docstatus: a thin Python client for the docstatus PostgreSQL schema."""

__version__ = "0.1.0"

from docstatus.async_client import AsyncClient
from docstatus.client import Client
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
    ClaimedJob,
    Cursor,
    Document,
    DocumentOverview,
    DocumentResult,
    DocumentState,
    DocumentStateInfo,
    EventDelivery,
    EventKind,
    ExtractionJob,
    FailurePattern,
    JobOverview,
    JobStatus,
    MaintenanceAction,
    ProcessingStatus,
    StatusCount,
    StatusEvent,
    StuckAlert,
    StuckDocument,
    TextExtractionStatus,
)
from docstatus.subscriber import Subscriber

__all__ = [
    "AsyncClient",
    "ClaimedJob",
    "Client",
    "Cursor",
    "DocStatusError",
    "Document",
    "DocumentJobMismatch",
    "DocumentOverview",
    "DocumentResult",
    "DocumentState",
    "DocumentStateInfo",
    "EventDelivery",
    "EventKind",
    "ExtractionJob",
    "FailurePattern",
    "InvalidArgument",
    "InvalidTransition",
    "JobOverview",
    "JobStatus",
    "LeaseLost",
    "MaintenanceAction",
    "NotFound",
    "PermissionDenied",
    "ProcessingStatus",
    "StatusCount",
    "StatusEvent",
    "StuckAlert",
    "StuckDocument",
    "Subscriber",
    "TextExtractionStatus",
]
