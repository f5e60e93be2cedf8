"""0011: the hot path in fewer statements keeps every rule: caps on every write path, the agreement
check where a document stays on one side, one update per claimed job, the hint of a two-column
change in each notify mode."""

import psycopg
import pytest

from .states import OCR, QUEUED, UPLOADED, make_document, register
from .test_events import listen, received
from .test_jobs_and_agreement import active_job


def updates_of(conn, table):
    """Row updates of table by this transaction so far (pg_stat_xact_user_tables)."""
    return conn.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
                        (table,)).fetchone()[0]


def test_raw_inserts_are_capped_too(connect, conn):
    # Inserts no longer pass a cap trigger of their own: the BEFORE INSERT triggers cut the text,
    # and the history written by the AFTER INSERT triggers holds the cut text.
    doc_id = make_document(conn, UPLOADED)
    with connect() as other:
        other.execute("UPDATE docstatus.documents SET text_extraction_status = 'ready' WHERE id = %s", (doc_id,))
        other.execute("INSERT INTO docstatus.extraction_jobs (document_id, attempt, error_message)"
                      " VALUES (%s, 1, repeat('e', 100000))", (doc_id,))
        other.execute("INSERT INTO docstatus.documents (blob_container, blob_name, filename, status_reason)"
                      " VALUES ('docs', 'raw-capped', 'f.pdf', repeat('r', 100000))")
        other.commit()
    error, detail = conn.execute(
        "SELECT j.error_message, e.detail FROM docstatus.extraction_jobs j"
        "  JOIN docstatus.status_events e ON e.job_id = j.id WHERE j.document_id = %s", (doc_id,)).fetchone()
    reason, reason_detail = conn.execute(
        "SELECT d.status_reason, e.detail FROM docstatus.documents d"
        "  JOIN docstatus.status_events e ON e.document_id = d.id AND e.kind = 'processing'"
        " WHERE d.blob_name = 'raw-capped'").fetchone()
    for text, letter in ((error, "e"), (detail, "e"), (reason, "r"), (reason_detail, "r")):
        assert text.startswith(letter * 100) and text.endswith(" bytes]") and len(text.encode()) <= 4096


def test_a_document_that_stays_active_is_still_checked_through_its_job(connect, conn):
    # ready -> in progress fires no document-side check: the job side must catch a job ended
    # in the same transaction.
    doc_id = make_document(conn, QUEUED)
    job_id = active_job(conn, doc_id)
    with connect() as other:
        other.execute("UPDATE docstatus.extraction_jobs SET status = 'done' WHERE id = %s", (job_id,))
        other.execute("UPDATE docstatus.documents SET text_extraction_status = 'in progress',"
                      " processing_status = 'ocr running' WHERE id = %s", (doc_id,))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"
    assert active_job(conn, doc_id) == job_id


def test_a_job_set_to_its_own_status_writes_no_history(conn):
    doc_id = make_document(conn, OCR)
    before = conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s",
                          (doc_id,)).fetchone()[0]
    conn.execute("UPDATE docstatus.extraction_jobs SET status = status WHERE document_id = %s", (doc_id,))
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s",
                        (doc_id,)).fetchone()[0] == before


def test_claim_jobs_starting_ocr_updates_each_job_once(connect, conn):
    documents = [make_document(conn, QUEUED) for _ in range(3)]
    with connect() as worker:
        before = updates_of(worker, "docstatus.extraction_jobs")
        claimed = worker.execute("SELECT job_id, document_id, worker_id, text_extraction_status, processing_status"
                                 "  FROM docstatus.claim_jobs('w1', interval '5 minutes', 3, true)").fetchall()
        assert updates_of(worker, "docstatus.extraction_jobs") - before == 3
        worker.commit()
    assert sorted(row[1] for row in claimed) == sorted(documents)
    assert {row[2:] for row in claimed} == {("w1", "in progress", "ocr running")}
    assert conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE document_id = ANY (%s)"
                        "   AND worker_id = 'w1' AND lease_expires_at > now()", (documents,)).fetchone()[0] == 3


@pytest.mark.parametrize("mode", ["per_transaction", "throttled"])
def test_the_one_hint_of_a_two_column_change_is_its_text_event(connect, conn, mode):
    conn.execute("UPDATE docstatus.settings SET notify_mode = %s, notify_interval = '1 minute'", (mode,))
    conn.execute("UPDATE docstatus.notify_throttle SET last_sent_at = '-infinity'")
    doc_id = make_document(conn, QUEUED)
    conn.execute("UPDATE docstatus.notify_throttle SET last_sent_at = '-infinity'")
    listener = listen(connect, "docstatus_events")
    conn.execute("SELECT docstatus.mark_ocr_running(%s)", (doc_id,))
    notes = received(listener, timeout=1.0)
    events = conn.execute("SELECT id, kind FROM docstatus.status_events WHERE document_id = %s"
                          " ORDER BY id DESC LIMIT 2", (doc_id,)).fetchall()
    assert [kind for _, kind in reversed(events)] == ["text_extraction", "processing"]
    assert [(payload["event_id"], payload["kind"]) for _, payload in notes] == [min(events)]


def test_each_mode_hints_both_events_of_a_two_column_change_in_order(connect, conn):
    doc_id = make_document(conn, QUEUED)
    listener = listen(connect, "docstatus_events")
    conn.execute("SELECT docstatus.mark_ocr_running(%s)", (doc_id,))
    notes = received(listener, count=2, timeout=2.0)
    assert [(payload["kind"], payload["from"], payload["to"]) for _, payload in notes] == [
        ("text_extraction", "ready", "in progress"), ("processing", "pending extraction", "ocr running")]
    assert notes[0][1]["event_id"] < notes[1][1]["event_id"]


def test_validate_reads_the_size_limit_and_the_allowlist_of_now(conn):
    # validate_document reads the size limit and the allowlist as they are now, every time.
    big = conn.execute("SELECT id FROM docstatus.register_document('docs', 'big', 'f.pdf', NULL, 2000)").fetchone()[0]
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1000")
    assert conn.execute("SELECT text_extraction_status FROM docstatus.validate_document(%s, true, 'application/pdf')",
                        (big,)).fetchone()[0] == "failed"
    odd = register(conn)
    assert conn.execute("SELECT text_extraction_status FROM docstatus.validate_document(%s, true, 'text/x-odd')",
                        (odd,)).fetchone()[0] == "failed"
    conn.execute("INSERT INTO docstatus.allowed_mime_types (mime_type) VALUES ('text/x-odd')")
    again = register(conn)
    assert conn.execute("SELECT text_extraction_status FROM docstatus.validate_document(%s, true, 'text/x-odd')",
                        (again,)).fetchone()[0] == "ready"
