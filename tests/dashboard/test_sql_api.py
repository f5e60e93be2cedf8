"""The SQL functions behind the dashboard: list_documents, documents_per_minute,
retry_failed_documents, and the docstatus_operator role."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from docstatus.errors import InvalidArgument, InvalidTransition

from .helpers import completed, failed, failed_validation, queued, uploaded


def test_list_documents_keyset_pages_cover_everything_once(client):
    ids = [uploaded(client, f"f{i}.pdf") for i in range(11)]
    seen, after = [], None
    while page := client.list_documents(after_id=after, limit=4):
        assert len(page) <= 4
        seen += [row.document_id for row in page]
        after = page[-1].document_id
    assert seen == sorted(ids, reverse=True)


def test_list_documents_filters(client, conn):
    a = queued(client, "Invoice_2024.PDF")
    b = failed(client, filename="invoice%.pdf")
    c = completed(client, "report.txt")
    conn.execute("UPDATE docstatus.documents SET mime_type = 'text/plain' WHERE id = %s", (c,))
    assert [r.document_id for r in client.list_documents(state="queued")] == [a]
    assert [r.document_id for r in client.list_documents(processing_status="done")] == [c]
    assert [r.document_id for r in client.list_documents(mime_type="text/plain")] == [c]
    assert [r.document_id for r in client.list_documents(filename_contains="invoice")] == [b, a]
    assert [r.document_id for r in client.list_documents(filename_contains="%")] == [b]
    assert [r.document_id for r in client.list_documents(filename_contains="_")] == [a]
    row = client.list_documents(state="failed")[0]
    assert (row.document_id, row.state, row.text_extraction_status) == (b, "failed", "failed")
    created = client.get_document(a).created_at
    assert client.list_documents(created_from=created + timedelta(days=1)) == []
    assert len(client.list_documents(created_to=created + timedelta(days=1), updated_from=created)) == 3


@pytest.mark.parametrize("arguments, message", [
    ({"state": "nonsense"}, "unknown document state"),
    ({"processing_status": "ready"}, "unknown processing status"),
    ({"limit": 0}, "between 1 and 1000"),
    ({"limit": 1001}, "between 1 and 1000"),
])
def test_list_documents_refuses_bad_arguments(client, arguments, message):
    with pytest.raises(InvalidArgument, match=message) as raised:
        client.list_documents(**arguments)
    assert raised.value.sqlstate == "DS003"


def test_documents_per_minute_counts_entered_and_ended(client):
    completed(client)
    failed_validation(client)
    uploaded(client)
    minutes = client.documents_per_minute()
    assert 60 <= len(minutes) <= 62
    assert minutes == sorted(minutes, key=lambda m: m.minute)
    assert (sum(m.entered for m in minutes), sum(m.ended for m in minutes)) == (3, 2)
    assert len(client.documents_per_minute(timedelta(minutes=5))) in (5, 6, 7)
    for bad in (timedelta(0), timedelta(days=2)):
        with pytest.raises(InvalidArgument):
            client.documents_per_minute(bad)


def test_retry_failed_documents_retries_one_pattern(client):
    a = failed(client, "LLM returned invalid JSON at byte 123")
    b = failed(client, "LLM returned invalid JSON at byte 9")
    other = failed(client, "disk full")
    moved_on = failed(client, "LLM returned invalid JSON at byte 5")
    client.retry_document(moved_on)  # its latest job is pending now: not failed any more
    rejected = failed_validation(client)
    pattern = client.normalise_error("LLM returned invalid JSON at byte 1")
    jobs = client.retry_failed_documents(pattern)
    assert [(job.document_id, job.attempt) for job in jobs] == [(a, 2), (b, 2)]
    assert [client.document_overview(i).state for i in (a, b, other, rejected)] == [
        "queued", "queued", "failed", "failed"]
    assert client.retry_failed_documents(pattern) == []
    with pytest.raises(InvalidArgument):
        client.retry_failed_documents("")


def test_retry_failed_documents_only_by_latest_failure(client):
    document_id = failed(client, "disk full")
    client.retry_document(document_id)
    client.mark_processing_failed(document_id, "LLM returned invalid JSON at byte 3")
    assert client.retry_failed_documents(client.normalise_error("disk full")) == []
    assert len(client.retry_failed_documents(client.normalise_error("LLM returned invalid JSON at byte 4"))) == 1


def test_operator_role_may_retry_and_reap_but_not_work(conn, client, db_dsn):
    document_id = failed(client)
    conn.execute("CREATE ROLE dash_operator_login LOGIN IN ROLE docstatus_operator")
    conn.execute("CREATE ROLE dash_reader_login LOGIN IN ROLE docstatus_reader")
    try:
        with psycopg.connect(db_dsn, user="dash_operator_login", autocommit=True) as operator:
            operator.execute("SELECT * FROM docstatus.list_documents()")
            operator.execute("SELECT * FROM docstatus.reap_expired_jobs()")
            operator.execute("SELECT * FROM docstatus.retry_document(%s)", (document_id,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                operator.execute("SELECT docstatus.claim_extraction_job('w')")
        with psycopg.connect(db_dsn, user="dash_reader_login", autocommit=True) as reader:
            reader.execute("SELECT * FROM docstatus.documents_per_minute()")
            reader.execute("SELECT * FROM docstatus.list_documents(p_state => 'failed')")
            for call in ("SELECT docstatus.retry_failed_documents('x')", "SELECT docstatus.reap_expired_jobs()"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute(call)
    finally:
        conn.execute("DROP OWNED BY dash_operator_login, dash_reader_login")
        conn.execute("DROP ROLE dash_operator_login")
        conn.execute("DROP ROLE dash_reader_login")


def test_retry_of_a_document_that_moved_meanwhile_is_refused(client):
    document_id = completed(client)
    with pytest.raises(InvalidTransition):
        client.retry_document(document_id)
