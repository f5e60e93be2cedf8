"""The SQL API's outcomes, idempotency and error codes."""

import psycopg
import pytest

from .states import COMPLETED, FAILED, LLM, OCR, QUEUED, UPLOADED, document_state, make_document, register, sqlstate_of


def fetch_document(conn, doc_id):
    return conn.execute(
        "SELECT text_extraction_status, processing_status, status_reason, mime_type"
        " FROM docstatus.documents WHERE id = %s", (doc_id,)).fetchone()


def jobs_of(conn, doc_id):
    return conn.execute(
        "SELECT attempt, status, idempotency_key FROM docstatus.extraction_jobs WHERE document_id = %s"
        " ORDER BY attempt", (doc_id,)).fetchall()


# register_document

def test_register_returns_a_not_ready_document_and_is_idempotent(conn):
    first = conn.execute("SELECT id, text_extraction_status, processing_status, size_bytes"
                         " FROM docstatus.register_document('c', 'b', 'a.pdf', 'application/pdf', 10)").fetchone()
    assert first[1:] == ("not ready", "pending extraction", 10)
    again = conn.execute("SELECT id FROM docstatus.register_document('c', 'b', 'other.pdf')").fetchone()
    assert again[0] == first[0]
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 1


@pytest.mark.parametrize("args", [
    ("", "b", "f", None, None), ("c", "", "f", None, None), ("c", "b", "", None, None),
    (None, "b", "f", None, None), ("c", "b", "f", None, -1)])
def test_register_rejects_bad_arguments(conn, args):
    assert sqlstate_of(lambda: conn.execute(
        "SELECT docstatus.register_document(%s, %s, %s, %s, %s)", args)) == "DS003"
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 0


# validate_document

def test_validate_promotes_with_one_job(conn):
    doc_id = register(conn)
    row = conn.execute("SELECT text_extraction_status FROM docstatus.validate_document(%s, true, 'Application/PDF')",
                       (doc_id,)).fetchone()
    assert row[0] == "ready"
    assert fetch_document(conn, doc_id) == ("ready", "pending extraction", None, "application/pdf")
    assert jobs_of(conn, doc_id) == [(1, "pending extraction", None)]
    # Again: a queued document is returned unchanged, no second job.
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
    assert jobs_of(conn, doc_id) == [(1, "pending extraction", None)]


def test_validate_unretrievable_stays_not_ready_and_can_pass_later(conn):
    doc_id = register(conn)
    conn.execute("SELECT docstatus.validate_document(%s, false, NULL)", (doc_id,))
    assert fetch_document(conn, doc_id)[:3] == ("not ready", "pending extraction", "blob not retrievable")
    assert jobs_of(conn, doc_id) == []
    conn.execute("SELECT docstatus.validate_document(%s, true, 'image/png')", (doc_id,))
    assert fetch_document(conn, doc_id) == ("ready", "pending extraction", None, "image/png")


def test_validate_disallowed_mime_fails_and_can_be_validated_again(conn):
    doc_id = register(conn)
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/x-msdownload')", (doc_id,))
    state = fetch_document(conn, doc_id)
    assert state[:2] == ("failed", "failed")
    assert "application/x-msdownload" in state[2]
    # Rejected again: reason kept, no round trip.
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/zip')", (doc_id,))
    assert fetch_document(conn, doc_id)[:3] == ("failed", "failed", "MIME type application/zip is not allowed")
    # The operator allows the type; validating again goes back through 'not ready' to 'ready'.
    conn.execute("SELECT docstatus.validate_document(%s, true, 'text/plain')", (doc_id,))
    assert document_state(conn, doc_id) == QUEUED
    path = conn.execute("SELECT from_status, to_status FROM docstatus.status_events"
                        " WHERE document_id = %s AND kind = 'text_extraction' ORDER BY id", (doc_id,)).fetchall()
    assert path == [(None, "not ready"), ("not ready", "failed"), ("failed", "not ready"), ("not ready", "ready")]


def test_allowlist_is_data(conn):
    doc_id = register(conn)
    conn.execute("INSERT INTO docstatus.allowed_mime_types (mime_type) VALUES ('image/webp')")
    conn.execute("SELECT docstatus.validate_document(%s, true, 'image/webp')", (doc_id,))
    assert document_state(conn, doc_id) == QUEUED


@pytest.mark.parametrize("pair", [QUEUED, OCR, LLM, COMPLETED], ids=lambda p: "/".join(p))
def test_validate_leaves_other_documents_unchanged(conn, pair):
    doc_id = make_document(conn, pair)
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/zip')", (doc_id,))
    assert document_state(conn, doc_id) == pair


def test_validate_leaves_a_processing_failure_alone(conn):
    doc_id = make_document(conn, FAILED)  # it had a job: a processing failure
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
    assert document_state(conn, doc_id) == FAILED


def test_validate_bad_arguments(conn):
    doc_id = register(conn)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.validate_document(%s, NULL, 'text/plain')",
                                            (doc_id,))) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.validate_document(%s, true, NULL)",
                                            (doc_id,))) == "DS003"
    assert sqlstate_of(
        lambda: conn.execute("SELECT docstatus.validate_document(999999, true, 'text/plain')")) == "DS002"
    assert document_state(conn, doc_id) == UPLOADED


# create_extraction_job

def test_create_job_is_idempotent(conn):
    doc_id = make_document(conn, QUEUED)
    first = conn.execute("SELECT id FROM docstatus.create_extraction_job(%s)", (doc_id,)).fetchone()[0]
    keyed = conn.execute("SELECT id, idempotency_key FROM docstatus.create_extraction_job(%s, 'k1')",
                         (doc_id,)).fetchone()
    assert keyed == (first, "k1")  # the active job takes the key
    assert conn.execute("SELECT id FROM docstatus.create_extraction_job(%s, 'k1')", (doc_id,)).fetchone()[0] == first
    # A key naming an ended job returns it, whatever the document's state now.
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'boom')", (doc_id,))
    again = conn.execute("SELECT id, status FROM docstatus.create_extraction_job(%s, 'k1')", (doc_id,)).fetchone()
    assert again == (first, "failed")
    assert len(jobs_of(conn, doc_id)) == 1


@pytest.mark.parametrize("pair", [UPLOADED, OCR, COMPLETED, FAILED], ids=lambda p: "/".join(p))
def test_create_job_needs_a_ready_document(conn, pair):
    doc_id = make_document(conn, pair)
    before = jobs_of(conn, doc_id)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.create_extraction_job(%s, 'new')", (doc_id,))) == "DS001"
    assert jobs_of(conn, doc_id) == before


def test_create_job_errors(conn):
    doc_id = make_document(conn, QUEUED)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.create_extraction_job(424242)")) == "DS002"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.create_extraction_job(%s, '')", (doc_id,))) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.create_extraction_job(NULL)")) == "DS003"


# claim and heartbeat

def test_claim_oldest_first_and_only_ready_documents(conn):
    first = make_document(conn, QUEUED)
    second = make_document(conn, QUEUED)
    make_document(conn, UPLOADED)
    got = [conn.execute("SELECT document_id FROM docstatus.claim_extraction_job('w')").fetchone() for _ in range(3)]
    assert got == [(first,), (second,), None]


def test_claim_and_heartbeat_arguments(conn):
    for statement in ("SELECT * FROM docstatus.claim_extraction_job('')",
                      "SELECT * FROM docstatus.claim_extraction_job(NULL)",
                      "SELECT * FROM docstatus.claim_extraction_job('w', '0 s')",
                      "SELECT docstatus.heartbeat_job(1, 'w', '-1 s')",
                      "SELECT docstatus.heartbeat_job(NULL, 'w')"):
        assert sqlstate_of(lambda: conn.execute(statement)) == "DS003", statement
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.heartbeat_job(31337, 'w')")) == "DS002"


def test_heartbeat_extends_only_the_holders_live_lease(conn):
    make_document(conn, QUEUED)
    job_id = conn.execute("SELECT id FROM docstatus.claim_extraction_job('w1', '1 minute')").fetchone()[0]
    assert conn.execute("SELECT docstatus.heartbeat_job(%s, 'w1', '10 minutes')", (job_id,)).fetchone()[0] is True
    assert conn.execute("SELECT lease_expires_at > now() + interval '9 minutes' FROM docstatus.extraction_jobs"
                        " WHERE id = %s", (job_id,)).fetchone()[0]
    assert conn.execute("SELECT docstatus.heartbeat_job(%s, 'w2')", (job_id,)).fetchone()[0] is False
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
                 (job_id,))
    assert conn.execute("SELECT docstatus.heartbeat_job(%s, 'w1')", (job_id,)).fetchone()[0] is False


# marks and leases

def test_marks_with_worker_need_its_live_lease(conn):
    doc_id = make_document(conn, QUEUED)
    conn.execute("SELECT docstatus.claim_extraction_job('w1')")
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT docstatus.mark_ocr_running(%s, 'w2')", (doc_id,))
    assert err.value.sqlstate == "DS004"
    assert document_state(conn, doc_id) == QUEUED  # nothing written
    conn.execute("SELECT docstatus.mark_ocr_running(%s, 'w1')", (doc_id,))
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 s'"
                 " WHERE document_id = %s", (doc_id,))
    for statement in ("SELECT docstatus.mark_llm_running(%s, 'w1')", "SELECT docstatus.mark_llm_running(%s)",
                      "SELECT docstatus.mark_processing_failed(%s, 'x', 'w1')"):
        assert sqlstate_of(lambda: conn.execute(statement, (doc_id,))) == "DS004", statement
    assert document_state(conn, doc_id) == OCR


def test_wrong_transition_is_reported_before_the_lease(conn):
    doc_id = make_document(conn, UPLOADED)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_llm_running(%s, 'nobody')", (doc_id,))) == "DS001"


def test_mark_unknown_document_and_bad_arguments(conn):
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_ocr_running(555)")) == "DS002"
    doc_id = make_document(conn, OCR)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_processing_failed(%s, '')", (doc_id,))) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_processing_failed(%s, NULL)", (doc_id,))) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_llm_running(%s, '')", (doc_id,))) == "DS003"


def test_failure_ends_the_job_with_its_error(conn):
    doc_id = make_document(conn, LLM)
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'LLM timed out', 'w1')", (doc_id,))
    assert fetch_document(conn, doc_id)[:3] == ("failed", "failed", "LLM timed out")
    status, error, completed = conn.execute(
        "SELECT status, error_message, completed_at IS NOT NULL FROM docstatus.extraction_jobs"
        " WHERE document_id = %s", (doc_id,)).fetchone()
    assert (status, error, completed) == ("failed", "LLM timed out", True)


def test_invalid_transition_error_fields(conn):
    doc_id = make_document(conn, COMPLETED)
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT docstatus.mark_ocr_running(%s)", (doc_id,))
    diag = err.value.diag
    assert err.value.sqlstate == "DS001"
    assert f"document {doc_id}" in diag.message_primary
    assert "'completed'" in diag.message_primary and "'in progress'" in diag.message_primary
    import json
    detail = json.loads(diag.message_detail)
    assert detail["document_id"] == doc_id
    assert detail["column"] in ("text_extraction_status", "processing_status")
    assert (detail["from"], detail["to"]) in (("completed", "in progress"), ("done", "ocr running"))


# retry_document

def test_retry_after_processing_failure(conn):
    doc_id = make_document(conn, FAILED)
    conn.execute("UPDATE docstatus.settings SET max_attempts = 1")
    job = conn.execute("SELECT attempt, status, idempotency_key FROM docstatus.retry_document(%s, 'r1')",
                       (doc_id,)).fetchone()
    assert job == (2, "pending extraction", "r1")  # whatever max_attempts says
    assert document_state(conn, doc_id) == QUEUED
    # Repeated retry with the same key: no second attempt, even once it failed again.
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'again')", (doc_id,))
    assert conn.execute("SELECT attempt FROM docstatus.retry_document(%s, 'r1')", (doc_id,)).fetchone()[0] == 2
    assert document_state(conn, doc_id) == FAILED


def test_retry_refuses_validation_failures_with_a_hint(conn):
    doc_id = register(conn)
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/zip')", (doc_id,))
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT docstatus.retry_document(%s)", (doc_id,))
    assert err.value.sqlstate == "DS001"
    assert "validate" in err.value.diag.message_hint


@pytest.mark.parametrize("pair", [UPLOADED, QUEUED, OCR, COMPLETED], ids=lambda p: "/".join(p))
def test_retry_refuses_documents_that_did_not_fail(conn, pair):
    doc_id = make_document(conn, pair)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.retry_document(%s)", (doc_id,))) == "DS001"
    assert document_state(conn, doc_id) == pair


def test_retry_errors(conn):
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.retry_document(8888)")) == "DS002"
    doc_id = make_document(conn, FAILED)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.retry_document(%s, '')", (doc_id,))) == "DS003"


# events_after arguments

def test_events_after_arguments(conn):
    for args in [(None, 0, 10), ("0", None, 10), ("0", 0, 0), ("0", 0, None)]:
        assert sqlstate_of(
            lambda: conn.execute("SELECT * FROM docstatus.events_after(%s::xid8, %s, %s)", args)) == "DS003"
