"""Blob access for the worker: read a document's bytes, write its results beside it.

The worker takes the DMS's ``DocumentStore`` (and uses its blob service), a
``BlobServiceClient``, or a connection string (Azurite's development account when empty).
"""

from __future__ import annotations

import json
from typing import Any

from azure.storage.blob import BlobServiceClient, ContentSettings

from docstatus.dms.config import StoreConfig
from docstatus.models import Document


class BlobIO:
    """Reads and writes whole blobs through one ``BlobServiceClient`` (thread-safe)."""

    def __init__(self, service: BlobServiceClient, owns_service: bool = False) -> None:
        self.service = service
        self._owns_service = owns_service

    @classmethod
    def of(cls, store: Any) -> BlobIO:
        """From a DocumentStore, a BlobServiceClient, a connection string, or None (environment)."""
        if isinstance(store, BlobIO):
            return store
        if isinstance(store, BlobServiceClient):
            return cls(store)
        if store is None or isinstance(store, str):
            connection_string = store or StoreConfig.from_env().connection_string
            return cls(BlobServiceClient.from_connection_string(connection_string), owns_service=True)
        # docstatus.dms.DocumentStore: its blob service (public once the DMS exposes it).
        service = getattr(store, "blob_service", None)
        if isinstance(service, BlobServiceClient):
            return cls(service)
        raise TypeError(f"no blob service in {type(store).__name__}: pass a DocumentStore, a "
                        "BlobServiceClient or a connection string")

    def close(self) -> None:
        if self._owns_service:
            self.service.close()

    def download(self, document: Document) -> bytes:
        """The whole content of the document's blob (the stages work on bytes in memory)."""
        blob = self.service.get_blob_client(document.blob_container, document.blob_name)
        return blob.download_blob(max_concurrency=1).readall()

    def read_text(self, container: str, name: str) -> str:
        return self.service.get_blob_client(container, name).download_blob(encoding="utf-8").readall()

    def write_text(self, container: str, name: str, text: str, content_type: str) -> None:
        self.service.get_blob_client(container, name).upload_blob(
            text.encode("utf-8"), overwrite=True, content_settings=ContentSettings(content_type=content_type))

    def write_json(self, container: str, name: str, value: Any) -> None:
        self.write_text(container, name, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True),
                        "application/json")


__all__ = ["BlobIO"]
