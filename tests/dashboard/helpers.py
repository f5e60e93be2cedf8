"""Documents in the states the dashboard shows, made through the SQL API."""

from __future__ import annotations

import itertools

from docstatus import Client

_numbers = itertools.count(1)


def uploaded(client: Client, filename: str = "scan.pdf") -> int:
    return client.register_document("docs", f"blob-{next(_numbers)}", filename, "application/pdf", 100).id


def queued(client: Client, filename: str = "scan.pdf") -> int:
    document_id = uploaded(client, filename)
    client.validate_document(document_id, True, "application/pdf")
    return document_id


def running(client: Client, filename: str = "scan.pdf") -> int:
    """In 'ocr running' (no worker holds it: the oldest queued job may be another document's)."""
    document_id = queued(client, filename)
    client.mark_ocr_running(document_id)
    return document_id


def failed(client: Client, error: str = "OCR engine crashed: timeout after 30 s", filename: str = "scan.pdf") -> int:
    document_id = running(client, filename)
    client.mark_processing_failed(document_id, error)
    return document_id


def failed_validation(client: Client, filename: str = "bad.exe") -> int:
    document_id = uploaded(client, filename)
    client.validate_document(document_id, True, "application/x-msdownload")
    return document_id


def completed(client: Client, filename: str = "scan.pdf") -> int:
    document_id = running(client, filename)
    client.mark_llm_running(document_id)
    client.finish_job(document_id, "docs/text", "docs/fields.json")
    return document_id
