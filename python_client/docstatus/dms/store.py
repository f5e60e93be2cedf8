"""DocumentStore: documents in Azure Blob Storage, registered and validated through docstatus.

Upload: the content is hashed first (SHA-256), because the blob name derives from the hash.
A path or seekable stream is simply read twice; bytes are already in memory; anything else is
spooled to a temporary file while it is hashed (in memory up to 1 MiB, on disk beyond).
The second read uploads, either in one request (small documents) or as staged blocks of
``chunk_size`` with at most ``max_concurrency`` in flight, hashing again as it goes: if the
bytes changed between the two reads, the block list is never committed and the blob never
appears. Memory stays at about ``(max_concurrency + 1) * chunk_size`` whatever the file size.

Validation: the blob must exist and yield its first bytes; the MIME type comes from those bytes
(libmagic). ``docstatus.validate_document`` then decides in the database, given the blob's size
as read (a size other than the registered one: not retrievable), the allowlist, empty, too large.
A blob store that cannot be reached leaves the document 'not ready' with its reason;
``revalidate_pending`` tries those again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, NamedTuple

import psycopg
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.dms.blob_store import BlobTimeouts, service_client
from docstatus.dms.config import DEFAULT_CONTAINER, StoreConfig
from docstatus.dms.detect import HEAD_BYTES, detect_mime_type
from docstatus.dms.naming import blob_name, normalise_filename
from docstatus.models import Document, ExtractionJob, TextExtractionStatus

log = logging.getLogger("docstatus.dms")

Source = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

MiB = 1024 * 1024
_HASH_READ = 1 * MiB
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


class Upload(NamedTuple):
    """What ``upload_and_validate`` returns: the document and its latest job (None if it has none)."""

    document: Document
    job: ExtractionJob | None


class _Blob(NamedTuple):
    """What validation read of a blob: its size, the MIME type of its head, or why it failed."""

    size: int | None
    mime_type: str | None
    problem: str | None


class SourceChangedError(RuntimeError):
    """The source's bytes changed between hashing and uploading; nothing was committed."""


class DocumentStore:
    """Uploads documents to one blob container and validates them through docstatus.

    ``database`` is what ``docstatus.Client`` runs on: a psycopg connection, or a
    ``psycopg_pool.ConnectionPool`` when several threads share the store (the store is
    thread-safe; a single connection serialises their database calls). It stays the
    caller's to close. ``store.client`` is the ``docstatus.Client`` over it.
    """

    def __init__(
        self,
        database: psycopg.Connection | ConnectionPool,
        connection_string: str | None = None,
        container: str | None = None,
        *,
        chunk_size: int = 4 * MiB,
        max_concurrency: int = 4,
        single_put_max: int = 4 * MiB,
        retry_total: int = 3,
        timeout: float = 20.0,
        timeouts: BlobTimeouts | None = None,
    ) -> None:
        config = StoreConfig.from_env()
        self.container = container or config.container
        if not _CONTAINER_NAME.match(self.container):
            raise ValueError(f"invalid blob container name {self.container!r}: 3-63 lowercase letters, "
                             "digits and single hyphens")
        if chunk_size < 1 or max_concurrency < 1 or single_put_max < 0:
            raise ValueError("chunk_size and max_concurrency must be positive, single_put_max not negative")
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self.single_put_max = single_put_max
        self._database = database
        self._client = Client(database)
        self._owns_database = False
        # Quick retries, not the SDK's 15 s before the first: a caller that finds the store down is
        # better told soon (validate leaves the document 'not ready' for later). ``timeouts`` (the
        # commands' --blob-*-timeout) when given, else ``timeout`` to connect and to read.
        self._service = service_client(connection_string or config.connection_string,
                                       timeouts or BlobTimeouts(connect=timeout, read=timeout),
                                       retry_total=retry_total)
        self._containers_ready: set[str] = set()
        self._containers_lock = threading.Lock()

    @classmethod
    def from_env(cls, *, max_connections: int = 8, **kwargs) -> DocumentStore:
        """A store configured from DOCSTATUS_DSN, AZURE_STORAGE_CONNECTION_STRING and
        DOCSTATUS_CONTAINER, over a connection pool of its own (closed by ``close``)."""
        config = StoreConfig.from_env()
        pool = ConnectionPool(config.dsn, min_size=1, max_size=max_connections,
                              kwargs={"autocommit": True}, open=True)
        try:
            store = cls(pool, config.connection_string, config.container, **kwargs)
        except BaseException:
            pool.close()
            raise
        store._owns_database = True
        return store

    @property
    def client(self) -> Client:
        """The ``docstatus.Client`` this store registers and validates documents with."""
        return self._client

    @property
    def blob_service(self) -> BlobServiceClient:
        """The Azure client this store talks to (the worker downloads and stores results with it)."""
        return self._service

    def close(self) -> None:
        """Closes the blob service client, and the pool ``from_env`` opened."""
        self._service.close()
        if self._owns_database:
            self._database.close()

    def __enter__(self) -> DocumentStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Upload -----------------------------------------------------------------------------------

    def upload(self, source: Source, filename: str | None = None, content_type: str | None = None) -> Document:
        """Stores ``source`` (a path, bytes or a binary stream) and registers it 'not ready'.

        The same bytes under the same filename return the same document (the blob is not sent
        again). ``content_type`` is the caller's claim, kept on the blob; validation detects
        the real type from the bytes.
        """
        filename = normalise_filename(filename or _default_filename(source))
        claimed_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        with _rewindable(source) as (reader, digest, size):
            name = blob_name(digest, filename)
            self._ensure_container(self.container)
            blob = self._service.get_blob_client(self.container, name)
            self._write_blob(blob, reader, digest, size, claimed_type)
        return self._client.register_document(self.container, name, filename, mime_type=claimed_type,
                                              size_bytes=size)

    def _ensure_container(self, container: str) -> None:
        if container in self._containers_ready:
            return
        with self._containers_lock:
            if container not in self._containers_ready:
                try:
                    self._service.create_container(container)
                except ResourceExistsError:
                    pass
                self._containers_ready.add(container)

    def _write_blob(self, blob: BlobClient, reader: IO[bytes], digest: str, size: int, content_type: str) -> None:
        metadata = {"sha256": digest, "size_bytes": str(size), "content_type": content_type}
        content_settings = ContentSettings(content_type=content_type)
        if size <= self.single_put_max:
            data = reader.read(size + 1)
            _check_unchanged(hashlib.sha256(data).hexdigest(), len(data), digest, size)
            try:
                # If-None-Match: *, so a blob that is already there costs no second request.
                blob.upload_blob(data, overwrite=False, metadata=metadata, content_settings=content_settings)
            except ResourceExistsError:
                if not _holds(blob, digest, size):  # not what its name promises: put it right
                    blob.upload_blob(data, overwrite=True, metadata=metadata, content_settings=content_settings)
            return

        if _holds(blob, digest, size):  # worth a request before sending megabytes again
            log.debug("blob %s already holds these bytes", blob.blob_name)
            return
        block_ids = self._stage_blocks(blob, reader, digest, size)
        try:
            blob.commit_block_list([BlobBlock(block_id) for block_id in block_ids],
                                   content_settings=content_settings, metadata=metadata)
        except HttpResponseError as exc:
            # Two uploads of the same bytes race: the first commit discards the other's
            # uncommitted blocks. The blob is there all the same.
            # azure-storage sets error_code on the errors it raises; azure-core's class does not declare it.
            if exc.error_code == "InvalidBlockList" and _holds(blob, digest, size):  # type: ignore[attr-defined]
                log.debug("blob %s: another upload of the same bytes committed first", blob.blob_name)
                return
            raise

    def _stage_blocks(self, blob: BlobClient, reader: IO[bytes], digest: str, size: int) -> list[str]:
        """Stages the reader's bytes as blocks, at most max_concurrency in flight; returns their ids."""
        token = uuid.uuid4().hex[:16]  # per upload, so racing uploads never share a block id
        block_ids: list[str] = []
        hasher = hashlib.sha256()
        staged = 0
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="docstatus-stage") as pool:
            try:
                while chunk := reader.read(self.chunk_size):
                    hasher.update(chunk)
                    staged += len(chunk)
                    block_id = f"{token}-{len(block_ids):06d}"  # every id of a blob has the same length
                    block_ids.append(block_id)
                    if len(in_flight) >= self.max_concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    in_flight.add(pool.submit(blob.stage_block, block_id, chunk, length=len(chunk)))
                    del chunk  # the future holds the only reference until it is sent
                for future in wait(in_flight).done:
                    future.result()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise
        _check_unchanged(hasher.hexdigest(), staged, digest, size)
        return block_ids

    # Validation -------------------------------------------------------------------------------

    def validate(self, document_id: int) -> Document:
        """Checks the document's blob and lets ``docstatus.validate_document`` decide."""
        return self._validate(self._client.require_document(document_id))  # NotFound (DS002)

    def _validate(self, document: Document) -> Document:
        blob = self._inspect(document)
        if blob.problem is not None:
            log.warning("document %s: blob %s/%s not retrievable: %s",
                        document.id, document.blob_container, document.blob_name, blob.problem)
        validated = self._client.validate_document(document.id, blob.problem is None, blob.mime_type,
                                                   reason=blob.problem, blob_size=blob.size)
        if blob.problem is None and validated.text_extraction_status == TextExtractionStatus.NOT_READY:
            log.warning("document %s: blob %s/%s not retrievable: %s", document.id, document.blob_container,
                        document.blob_name, validated.status_reason)
        return validated

    def _inspect(self, document: Document) -> _Blob:
        """What reading the blob's head showed: its size and MIME type, or why it failed."""
        blob = self._service.get_blob_client(document.blob_container, document.blob_name)
        try:
            size, head = _read_head(blob)
        except ResourceNotFoundError:
            return _Blob(None, None, "blob not found")
        except AzureError as exc:
            from docstatus.connection_errors import blob_cause

            return _Blob(None, None, f"blob store error: {blob_cause(exc)}")
        if len(head) != min(HEAD_BYTES, size):
            return _Blob(size, None, f"read {len(head)} of the first {min(HEAD_BYTES, size)} bytes")
        return _Blob(size, detect_mime_type(head), None)

    def revalidate_pending(self, *, older_than: timedelta = timedelta(0), limit: int = 1000) -> list[Document]:
        """Validates again the 'not ready' documents of this store's container; returns them.

        ``older_than`` skips documents changed more recently (e.g. an upload whose validate
        is still on its way); oldest first, at most ``limit``.
        """
        waiting = self._client.documents_awaiting_validation(limit, container=self.container, older_than=older_than)
        return [self.validate(document.id) for document in waiting]

    def upload_and_validate(self, source: Source, filename: str | None = None,
                            content_type: str | None = None) -> Upload:
        """upload, then validate: the common path. Returns the document and its latest job."""
        document = self._validate(self.upload(source, filename, content_type))
        jobs = self._client.list_jobs(document.id)  # by attempt: the last is the latest
        return Upload(document, jobs[-1] if jobs else None)


# Sources ----------------------------------------------------------------------------------------


def _default_filename(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    name = getattr(source, "name", None)
    if isinstance(name, str) and name and not name.startswith("<"):
        return Path(name).name
    raise ValueError("a filename is needed for bytes or a stream without a name")


def _hash(reader: IO[bytes]) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    while block := reader.read(_HASH_READ):
        hasher.update(block)
        size += len(block)
    return hasher.hexdigest(), size


@contextmanager
def _rewindable(source: Source) -> Iterator[tuple[IO[bytes], str, int]]:
    """Yields (reader positioned at the start, sha256 hex, size) for any kind of source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)  # the same object for bytes; one copy of a bytearray or memoryview
        yield io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data)
        return
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as reader:
            digest, size = _hash(reader)
            reader.seek(0)
            yield reader, digest, size
        return
    if _seekable(source):
        start = source.tell()
        digest, size = _hash(source)
        source.seek(start)
        yield source, digest, size
        return
    # A pipe, a socket, an HTTP response: keep what we read, in memory up to one hash read.
    with tempfile.SpooledTemporaryFile(max_size=_HASH_READ) as spool:
        hasher = hashlib.sha256()
        size = 0
        while block := source.read(_HASH_READ):
            hasher.update(block)
            spool.write(block)
            size += len(block)
        spool.seek(0)
        yield spool, hasher.hexdigest(), size


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def _read_head(blob: BlobClient) -> tuple[int, bytes]:
    """(blob size, its first HEAD_BYTES) in one ranged GET."""
    try:
        downloader = blob.download_blob(offset=0, length=HEAD_BYTES, max_concurrency=1)
        head = downloader.readall()
    except HttpResponseError as exc:
        if exc.status_code != 416:
            raise
        # No range of an empty blob can be satisfied: its properties tell its size.
        return blob.get_blob_properties().size, b""
    # "bytes 0-65535/1234567": the total is after the slash.
    total = (downloader.properties.content_range or "").rpartition("/")[2]
    if not total.isdigit():
        raise HttpResponseError(f"no blob size in Content-Range {downloader.properties.content_range!r}")
    return int(total), head


def _holds(blob: BlobClient, digest: str, size: int) -> bool:
    """Whether the blob exists and its metadata says it holds exactly these bytes."""
    try:
        properties = blob.get_blob_properties()
    except ResourceNotFoundError:
        return False
    return properties.size == size and properties.metadata.get("sha256") == digest


def _check_unchanged(digest: str, size: int, expected_digest: str, expected_size: int) -> None:
    if (digest, size) != (expected_digest, expected_size):
        raise SourceChangedError(
            f"the source changed while it was uploaded ({expected_size} bytes with SHA-256 "
            f"{expected_digest[:12]}... when hashed, {size} bytes with {digest[:12]}... when sent); nothing was stored")


__all__ = ["DEFAULT_CONTAINER", "DocumentStore", "SourceChangedError", "Upload"]
