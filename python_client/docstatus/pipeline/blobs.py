"""Blob access for the worker: read a document's bytes, write its results beside it.

The worker takes the DMS's ``DocumentStore`` (and uses its blob service), a
``BlobServiceClient``, or a connection string (Azurite's development account when empty).
"""

from __future__ import annotations

import json
import time
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from docstatus.connection_errors import blob_cause, blob_unreachable_at, service_endpoint
from docstatus.dms.blob_store import BlobDeadlineExceeded, BlobTimeouts, service_client
from docstatus.dms.config import StoreConfig
from docstatus.models import Document
from docstatus.pipeline.errors import BlobMissing, BlobStoreUnreachable


class BlobIO:
    """Reads and writes whole blobs through one ``BlobServiceClient`` (thread-safe)."""

    def __init__(self, service: BlobServiceClient, owns_service: bool = False,
                 timeouts: BlobTimeouts | None = None) -> None:
        self.service = service
        self._owns_service = owns_service
        self.timeouts = timeouts or BlobTimeouts.from_env()

    @classmethod
    def of(cls, store: Any, timeouts: BlobTimeouts | None = None) -> BlobIO:
        """From a DocumentStore, a BlobServiceClient, a connection string, or None (environment).
        ``timeouts`` bound each request and each download (default: ``BlobTimeouts.from_env()``);
        a client you pass keeps its own connect and read timeouts."""
        if isinstance(store, BlobIO):
            return store
        if isinstance(store, BlobServiceClient):
            return cls(store, timeouts=timeouts)
        if store is None or isinstance(store, str):
            connection_string = store or StoreConfig.from_env().connection_string
            timeouts = timeouts or BlobTimeouts.from_env()
            return cls(service_client(connection_string, timeouts), owns_service=True, timeouts=timeouts)
        # docstatus.dms.DocumentStore: its blob service (public once the DMS exposes it).
        service = getattr(store, "blob_service", None)
        if isinstance(service, BlobServiceClient):
            return cls(service, timeouts=timeouts)
        raise TypeError(f"no blob service in {type(store).__name__}: pass a DocumentStore, a "
                        "BlobServiceClient or a connection string")

    def close(self) -> None:
        if self._owns_service:
            self.service.close()

    @property
    def endpoint(self) -> str:
        return service_endpoint(self.service.url)

    def probe(self) -> str | None:
        """None when the store answers one request within the connect timeout; else one line."""
        # Not dms.blob_store.probe, which needs a connection string and takes 401/403 for a wrong key:
        # this works on any client and only ends an outage, which only a store that does not answer starts.
        try:
            self.service.get_service_properties(timeout=max(1, int(self.timeouts.connect)),
                                                connection_timeout=self.timeouts.connect,
                                                read_timeout=self.timeouts.connect, retry_total=0)
        except HttpResponseError:
            return None  # it answered
        except AzureError as exc:
            return blob_unreachable_at(self.endpoint, exc)
        return None

    def download(self, document: Document) -> bytes:
        """The whole content of the document's blob (the stages work on bytes in memory).

        Within ``timeouts.deadline(size)``, else ``BlobDeadlineExceeded``. A blob or container
        that is not there raises ``BlobMissing`` (the document's own failure: terminal); a store
        that cannot be reached raises ``BlobStoreUnreachable`` (retryable)."""
        where = f"{document.blob_container}/{document.blob_name}"
        deadline = self.timeouts.deadline(document.size_bytes)
        started = time.monotonic()
        blob = self.service.get_blob_client(document.blob_container, document.blob_name)
        try:
            downloader = blob.download_blob(max_concurrency=1)
            parts = []
            for chunk in downloader.chunks():
                parts.append(chunk)
                if time.monotonic() - started > deadline:
                    raise BlobDeadlineExceeded(f"downloading {where} took longer than its deadline of "
                                               f"{deadline:g}s")
            return b"".join(parts)
        except ResourceNotFoundError as exc:
            raise BlobMissing(f"{blob_cause(exc)}: {where} (at {self.endpoint})") from exc
        except HttpResponseError:
            raise  # the store answered: its own reason (is_retryable decides on 5xx)
        except AzureError as exc:
            raise BlobStoreUnreachable(blob_unreachable_at(self.endpoint, exc)) from exc

    def read_text(self, container: str, name: str) -> str:
        return self.service.get_blob_client(container, name).download_blob(encoding="utf-8").readall()

    def write_text(self, container: str, name: str, text: str, content_type: str) -> None:
        try:
            self.service.get_blob_client(container, name).upload_blob(
                text.encode("utf-8"), overwrite=True, content_settings=ContentSettings(content_type=content_type))
        except HttpResponseError:
            raise
        except AzureError as exc:
            raise BlobStoreUnreachable(blob_unreachable_at(self.endpoint, exc)) from exc

    def write_json(self, container: str, name: str, value: Any) -> None:
        self.write_text(container, name, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True),
                        "application/json")


__all__ = ["BlobIO"]
