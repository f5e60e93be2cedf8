"""The DMS side of docstatus: documents in Azure Blob Storage, promoted only when they pass.

    from docstatus.dms import DocumentStore

    with DocumentStore.from_env() as store:          # DOCSTATUS_DSN, AZURE_STORAGE_CONNECTION_STRING
        document, job = store.upload_and_validate("invoice.pdf")

The rules (allowed MIME types, empty and oversized documents) live in PostgreSQL, in
``docstatus.validate_document``; this package only stores bytes and reports what it sees.

Names are imported on first use, so ``docstatus migrate`` and friends neither pay for nor
depend on azure-storage-blob and libmagic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "AZURITE_CONNECTION_STRING": "docstatus.dms.config",
    "DEFAULT_CONTAINER": "docstatus.dms.config",
    "StoreConfig": "docstatus.dms.config",
    "detect_mime_type": "docstatus.dms.detect",
    "blob_name": "docstatus.dms.naming",
    "DocumentStore": "docstatus.dms.store",
    "SourceChangedError": "docstatus.dms.store",
    "Upload": "docstatus.dms.store",
}

__all__ = [
    "AZURITE_CONNECTION_STRING",
    "DEFAULT_CONTAINER",
    "DocumentStore",
    "SourceChangedError",
    "StoreConfig",
    "Upload",
    "blob_name",
    "detect_mime_type",
]

if TYPE_CHECKING:
    from docstatus.dms.config import AZURITE_CONNECTION_STRING, DEFAULT_CONTAINER, StoreConfig
    from docstatus.dms.detect import detect_mime_type
    from docstatus.dms.naming import blob_name
    from docstatus.dms.store import DocumentStore, SourceChangedError, Upload


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
