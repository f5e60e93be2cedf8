"""The result of an extraction: text and fields as blobs beside the document, named in the database.

    <document blob>.results/job-<job id>/text.txt      the extracted text (UTF-8)
    <document blob>.results/job-<job id>/fields.json   {"fields": {...}, "extractor": ..., ...}

One pair per job, so a retry never overwrites the result of another attempt; the database
(``docstatus.document_results``) says which job's pair is the document's result: its latest
job that ended done. Document blob names of the DMS have a single ``/``, so these names (three)
can never be a document's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from azure.storage.blob import BlobServiceClient
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.models import Document, ExtractionJob
from docstatus.pipeline.blobs import BlobIO

if TYPE_CHECKING:
    from docstatus.dms.store import DocumentStore


@dataclass(frozen=True, slots=True)
class ExtractionResult:
    """What ``get_result`` returns: the text, the fields and where they are stored."""

    document_id: int
    job_id: int
    attempt: int
    text: str
    fields: dict[str, Any]
    extractor: str | None
    blob_container: str
    text_blob: str
    fields_blob: str
    created_at: datetime


def result_blob_names(document: Document, job: ExtractionJob) -> tuple[str, str]:
    folder = f"{document.blob_name}.results/job-{job.id}"
    return f"{folder}/text.txt", f"{folder}/fields.json"


def write_result(blobs: BlobIO, document: Document, job: ExtractionJob, text: str, fields: dict[str, Any],
                 extractor: str, ocr: str) -> tuple[str, str]:
    """Writes the two blobs of a job's result; returns their names (not yet recorded)."""
    text_blob, fields_blob = result_blob_names(document, job)
    blobs.write_text(document.blob_container, text_blob, text, "text/plain; charset=utf-8")
    blobs.write_json(document.blob_container, fields_blob, {
        "document_id": document.id, "job_id": job.id, "attempt": job.attempt,
        "filename": document.filename, "mime_type": document.mime_type,
        "ocr": ocr, "extractor": extractor, "fields": fields,
        "extracted_at": datetime.now(UTC).isoformat(),
    })
    return text_blob, fields_blob


def get_result(client: Client | ConnectionPool | psycopg.Connection,
               store: DocumentStore | BlobServiceClient | str | None, document_id: int) -> ExtractionResult | None:
    """The document's extraction result (``current_result``: its latest done job's), or None
    when it has none.

    ``client`` is a docstatus.Client, or the pool or connection to make one of; ``store`` a
    DocumentStore, a BlobServiceClient or a connection string.
    """
    if not isinstance(client, Client):
        client = Client(client)
    result = client.current_result(document_id)
    if result is None:
        return None
    attempt = next(job.attempt for job in client.list_jobs(document_id) if job.id == result.job_id)
    blobs = BlobIO.of(store)
    try:
        text = blobs.read_text(result.blob_container, result.text_blob)
        stored = json.loads(blobs.read_text(result.blob_container, result.fields_blob))
    finally:
        blobs.close()
    return ExtractionResult(result.document_id, result.job_id, attempt, text, stored.get("fields", {}),
                            stored.get("extractor"), result.blob_container, result.text_blob, result.fields_blob,
                            result.created_at)


__all__ = ["ExtractionResult", "get_result", "result_blob_names", "write_result"]
