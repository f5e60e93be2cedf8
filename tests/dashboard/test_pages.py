"""Every page over HTTP against the real server: content from the database, escaping, the
security headers, pagination and bad input."""

from __future__ import annotations

import html
import re

import pytest

from docstatus.dashboard.security import CONTENT_SECURITY_POLICY
from docstatus.dashboard.settings import DashboardSettings

from .conftest import MALICIOUS
from .helpers import completed, failed, failed_validation, queued, running, uploaded


def test_every_page_answers_with_the_security_headers(start_dashboard, client):
    document_id = failed(client)
    served = start_dashboard()
    for path in ("/", "/documents", f"/documents/{document_id}", "/states", "/?partial=1",
                 "/documents?state=failed", "/static/dashboard.js"):
        status, headers, body = served.get(path)
        assert status == 200, (path, status, body[:300])
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    _, _, page = served.get("/")
    assert "<script>" not in page.replace('<script src="/static/dashboard.js" defer></script>', "")
    _, _, partial = served.get("/?partial=1")
    assert "<html" not in partial and "Documents by state" in partial


def test_overview_shows_status_counts_stuck_and_failures(start_dashboard, client, conn):
    for make in (uploaded, queued, running, completed, completed):
        make(client)
    failed(client, "LLM returned invalid JSON at byte 123")
    failed(client, "LLM returned invalid JSON at byte 77")
    conn.execute("UPDATE docstatus.stage_slas SET max_duration = '1 microsecond'")
    served = start_dashboard()
    _, _, page = served.get("/")
    for count in client.status_counts():
        row = re.search(rf'<tr data-kind="{count.kind}" data-status="{re.escape(count.status)}">.*?'
                        r'<td class="count">(\d+)</td>', page, re.S)
        assert row and int(row.group(1)) == count.count, (count, row)
    state = dict(re.findall(r'<td data-state="([^"]+)"><a [^>]*>(\d+)</a>', page))
    assert state == {"uploaded": "1", "queued": "1", "ocr running": "1", "llm running": "0", "completed": "2",
                     "failed": "2"}
    assert "Stuck (3)" in page  # uploaded, queued and ocr running are all past a 1 µs SLA
    pattern = client.failure_summary()[0].error_pattern
    assert html.escape(pattern) in page and "<td>2</td>" in page


def test_document_list_pages_by_keyset_and_filters(start_dashboard, client):
    ids = [uploaded(client, f"invoice-{i}.pdf") for i in range(7)] + [failed(client, filename="other.pdf")]
    served = start_dashboard(page_size=3)
    seen, path = [], "/documents"
    while path:
        status, _, page = served.get(html.unescape(path))
        assert status == 200
        seen += [int(i) for i in re.findall(r'<tr data-document="(\d+)">', page)]
        link = re.search(r'<a id="next-page" href="([^"]+)">', page)
        path = link.group(1) if link else None
    assert seen == sorted(ids, reverse=True)

    _, _, page = served.get("/documents?state=failed")
    assert re.findall(r'<tr data-document="(\d+)">', page) == [str(ids[-1])]
    _, _, page = served.get("/documents?filename_contains=INVOICE-3")
    assert re.findall(r'<tr data-document="(\d+)">', page) == [str(ids[3])]
    _, _, page = served.get("/documents?filename_contains=%25")  # a character, not a wildcard
    assert "No documents match." in page
    _, _, page = served.get("/documents?processing_status=failed&mime_type=application%2Fpdf")
    assert re.findall(r'<tr data-document="(\d+)">', page) == [str(ids[-1])]
    _, _, page = served.get("/documents?created_from=2000-01-01&created_to=2001-01-01")
    assert "No documents match." in page


def test_the_largest_page_size_lists_and_a_larger_one_is_refused_at_start(start_dashboard, client):
    # A page reads page_size + 1 rows and docstatus.list_documents gives at most 1000.
    ids = [uploaded(client, f"invoice-{i}.pdf") for i in range(2)]
    served = start_dashboard(page_size=999)
    status, _, page = served.get("/documents")
    assert status == 200, page[:300]
    assert re.findall(r'<tr data-document="(\d+)">', page) == [str(i) for i in sorted(ids, reverse=True)]
    with pytest.raises(ValueError, match="page_size must be between 1 and 999"):
        DashboardSettings(page_size=1000)


def test_bad_filters_are_refused_with_the_reason(start_dashboard):
    served = start_dashboard()
    status, _, page = served.get("/documents?state=nonsense")
    assert status == 400 and "DS003" in page and "unknown document state nonsense" in page
    status, _, page = served.get("/documents?processing_status=%3Cb%3Ebold%3C%2Fb%3E")
    assert status == 400 and "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    status, _, page = served.get("/documents?created_from=yesterday")
    assert status == 400 and "created_from" in page
    status, _, page = served.get("/documents?after=abc")
    assert status == 400
    assert served.get("/documents/999999")[0] == 404
    assert served.get("/documents/abc")[0] == 404
    assert served.get("/events?after=not-a-cursor")[0] == 400


def test_document_page_shows_statuses_jobs_and_timeline(start_dashboard, client):
    document_id = failed(client, "OCR engine crashed: <timeout> & more")
    client.retry_document(document_id)
    served = start_dashboard()
    _, _, page = served.get(f"/documents/{document_id}")
    assert '<td id="state">queued</td>' in page
    assert len(re.findall(r'<tr data-job="\d+">', page)) == 2
    assert "OCR engine crashed: &lt;timeout&gt; &amp; more" in page
    assert "<svg" in page and "processing stages over time" in page
    assert "docs / blob-" in page  # blob location


def test_malicious_filename_is_escaped_everywhere(start_dashboard, client):
    document_id = failed(client, error=MALICIOUS, filename=MALICIOUS)
    served = start_dashboard()
    escaped = html.escape(MALICIOUS, quote=False)
    for path in ("/", "/documents", f"/documents/{document_id}"):
        _, _, page = served.get(path)
        assert "<script>alert(1)</script>" not in page, path
        assert escaped in page or html.escape(MALICIOUS) in page, path


def test_state_machine_page_draws_status_transitions_with_counts(start_dashboard, client):
    completed(client)
    failed_validation(client)
    served = start_dashboard()
    _, _, page = served.get("/states")
    counts = dict(re.findall(r'<g class="state" data-state="([^"]+)">.*?<text class="count"[^>]*>(\d+)</text>',
                             page, re.S))
    assert counts == {"uploaded": "0", "queued": "0", "ocr running": "0", "llm running": "0", "completed": "1",
                      "failed": "1"}
    edges = set(re.findall(r"<title>([^<]+) → ([^<]+)</title>", page))
    assert ("failed", "queued") in edges and ("failed", "uploaded") in edges
    assert ("uploaded", "queued") in edges and ("llm running", "completed") in edges
    assert ("queued", "completed") not in edges and ("completed", "queued") not in edges
    assert len(edges) == 11  # the four steps forward, five into failed, two out of it


def test_document_page_shows_the_extracted_fields_from_the_blob_store(start_dashboard, client, azurite):
    import json

    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        container = service.get_container_client("docs")
        if not container.exists():
            container.create_container()
        container.upload_blob("fields-1.json", json.dumps({"fields": {"invoice_number": "<b>42</b>",
                                                                      "total": "13.50"}}), overwrite=True)
    document_id = running(client)
    client.mark_llm_running(document_id)
    client.finish_job(document_id, "text-1.txt", "fields-1.json")
    missing = completed(client)  # its fields blob was never written
    served = start_dashboard(blob_connection_string=azurite.connection_string)
    _, _, page = served.get(f"/documents/{document_id}")
    assert "<td>invoice_number</td><td>&lt;b&gt;42&lt;/b&gt;</td>" in page and "<td>13.50</td>" in page
    _, _, page = served.get(f"/documents/{missing}")
    assert "The fields could not be read: ResourceNotFoundError" in page


def test_without_a_named_blob_store_the_fields_are_not_guessed(start_dashboard, client, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    document_id = completed(client)
    served = start_dashboard()
    _, _, page = served.get(f"/documents/{document_id}")
    assert "start the dashboard with --blob-connection-string" in page and "could not be read" not in page
