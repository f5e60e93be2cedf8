"""The worker's SQL API of 0005: claim_jobs, finish_job, current_result, next_job_due,
run_maintenance, and validate_document judging the observed blob size."""

import psycopg
import pytest

from .states import (
    COMPLETED,
    LLM,
    OCR,
    QUEUED,
    UPLOADED,
    claim_document,
    document_state,
    make_document,
    register,
    sqlstate_of,
)


def claim_jobs(conn, worker="w1", limit=1, start_ocr=False, lease="5 minutes"):
    return conn.execute(
        "SELECT job_id, document_id, job_status, worker_id, text_extraction_status, processing_status, filename"
        "  FROM docstatus.claim_jobs(p_worker_id => %s, p_lease => %s::interval, p_limit => %s,"
        "                            p_start_ocr => %s)", (worker, lease, limit, start_ocr)).fetchall()


def test_claim_jobs_takes_up_to_the_limit_of_the_oldest_with_their_documents(conn):
    documents = [make_document(conn, QUEUED) for _ in range(3)]
    claimed = claim_jobs(conn, limit=2)
    assert sorted(row[1] for row in claimed) == documents[:2]  # the two oldest, in no particular order
    assert all(row[2:6] == ("pending extraction", "w1", "ready", "pending extraction") for row in claimed)
    assert claimed[0][6] == "doc.pdf"
    assert sorted(row[1] for row in claim_jobs(conn, worker="w2", limit=5)) == documents[2:]
    assert claim_jobs(conn, worker="w3", limit=5) == []


def test_claim_jobs_with_start_ocr_moves_the_document_in_the_same_call(conn):
    document = make_document(conn, QUEUED)
    [row] = claim_jobs(conn, start_ocr=True)
    assert row[4:6] == OCR == document_state(conn, document)
    # The lease is held: the worker goes on with the next mark.
    conn.execute("SELECT docstatus.mark_llm_running(%s, 'w1')", (document,))
    assert document_state(conn, document) == LLM


def test_claim_jobs_skips_a_document_another_session_has_locked(conn, connect):
    locked, free = make_document(conn, QUEUED), make_document(conn, QUEUED)
    other = connect(autocommit=False)
    other.execute("SELECT 1 FROM docstatus.documents WHERE id = %s FOR UPDATE", (locked,))
    assert [row[1] for row in claim_jobs(conn, limit=2, start_ocr=True)] == [free]
    other.rollback()
    assert [row[1] for row in claim_jobs(conn, limit=2)] == [locked]


@pytest.mark.parametrize("worker, lease, limit", [("", "1 minute", 1), (None, "1 minute", 1),
                                                  ("w", "0 seconds", 1), ("w", None, 1),
                                                  ("w", "1 minute", 0), ("w", "1 minute", None)])
def test_claim_jobs_refuses_bad_arguments(conn, worker, lease, limit):
    make_document(conn, QUEUED)
    assert sqlstate_of(lambda: claim_jobs(conn, worker=worker, lease=lease, limit=limit)) == "DS003"


def test_next_job_due_follows_the_claims_readiness(conn):
    assert conn.execute("SELECT docstatus.next_job_due()").fetchone()[0] is None  # nothing waits
    document = make_document(conn, QUEUED)
    due = conn.execute("SELECT docstatus.next_job_due() <= interval '0'").fetchone()[0]
    assert due is True
    conn.execute("UPDATE docstatus.extraction_jobs SET not_before = now() + interval '1 hour'"
                 " WHERE document_id = %s", (document,))
    assert conn.execute("SELECT docstatus.next_job_due() > interval '59 minutes'").fetchone()[0] is True
    assert claim_jobs(conn) == []  # the two agree: not yet
    claim_document(conn, document, "w1")
    assert conn.execute("SELECT docstatus.next_job_due()").fetchone()[0] is None  # held: not waiting


def finish(conn, document, worker="w1", text="t.txt", fields="f.json"):
    return conn.execute("SELECT id, text_extraction_status FROM docstatus.finish_job(%s, %s, %s, %s)",
                        (document, text, fields, worker)).fetchone()


def test_finish_job_records_the_result_and_ends_done_in_one_call(conn):
    document = make_document(conn, LLM)
    assert finish(conn, document) == (document, "completed")
    assert document_state(conn, document) == COMPLETED
    result = conn.execute("SELECT document_id, text_blob, fields_blob FROM docstatus.current_result(%s)",
                          (document,)).fetchall()
    assert result == [(document, "t.txt", "f.json")]


def test_finish_job_by_another_worker_changes_nothing(conn):
    document = make_document(conn, LLM, worker_id="w1")
    assert sqlstate_of(lambda: finish(conn, document, worker="w2")) == "DS004"
    assert document_state(conn, document) == LLM
    assert conn.execute("SELECT count(*) FROM docstatus.document_results").fetchone()[0] == 0


def test_finish_job_in_the_wrong_state_records_no_result(conn):
    document = make_document(conn, OCR)
    assert sqlstate_of(lambda: finish(conn, document)) == "DS001"
    assert conn.execute("SELECT count(*) FROM docstatus.document_results").fetchone()[0] == 0


def test_current_result_is_that_of_the_latest_done_job(conn):
    document = make_document(conn, LLM)
    # A leftover of an interrupted run: recorded, but its job failed.
    conn.execute("SELECT docstatus.record_result(%s, 'old.txt', 'old.json', 'w1')", (document,))
    assert conn.execute("SELECT * FROM docstatus.current_result(%s)", (document,)).fetchall() == []
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'boom', 'w1')", (document,))
    conn.execute("SELECT docstatus.retry_document(%s)", (document,))
    claim_document(conn, document, "w1")
    conn.execute("SELECT docstatus.mark_ocr_running(%s, 'w1')", (document,))
    conn.execute("SELECT docstatus.mark_llm_running(%s, 'w1')", (document,))
    finish(conn, document, text="new.txt")
    assert conn.execute("SELECT text_blob FROM docstatus.current_result(%s)", (document,)).fetchall() == [("new.txt",)]
    assert conn.execute("SELECT * FROM docstatus.current_result(-1)").fetchall() == []


def test_run_maintenance_reaps_and_reports(conn):
    document = make_document(conn, OCR)
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction'", (document,))
    actions = conn.execute("SELECT action, document_id, worker_id FROM docstatus.run_maintenance()").fetchall()
    assert actions == [("reaped", document, "w1")]
    assert conn.execute("SELECT * FROM docstatus.run_maintenance(false)").fetchall() == []


def test_run_maintenance_skips_while_another_session_runs_it(conn, connect):
    other = connect(autocommit=False)
    other.execute("SELECT docstatus.run_maintenance()")  # holds the lock until it ends
    assert conn.execute("SELECT action FROM docstatus.run_maintenance()").fetchall() == [("skipped",)]
    other.rollback()
    assert conn.execute("SELECT action FROM docstatus.run_maintenance()").fetchall() == []


def validate(conn, document, size, retrievable=True):
    return conn.execute(
        "SELECT text_extraction_status, status_reason FROM docstatus.validate_document("
        " p_document_id => %s, p_blob_retrievable => %s, p_mime_type => 'application/pdf', p_blob_size => %s)",
        (document, retrievable, size)).fetchone()


def test_a_blob_of_another_size_is_not_retrievable(conn):
    document = conn.execute("SELECT id FROM docstatus.register_document('docs', 'sized', 's.pdf',"
                            " 'application/pdf', 100)").fetchone()[0]
    assert validate(conn, document, 99) == (
        "not ready", "blob not retrievable: blob has 99 bytes, the document was registered with 100")
    assert validate(conn, document, 100)[0] == "ready"


def test_the_observed_size_is_optional_and_never_negative(conn):
    unsized = register(conn)  # no registered size: nothing to compare
    assert validate(conn, unsized, 5)[0] == "ready"
    document = register(conn)
    assert sqlstate_of(lambda: validate(conn, document, -1)) == "DS003"
    assert conn.execute("SELECT text_extraction_status FROM docstatus.validate_document(%s, true, 'application/pdf')",
                        (document,)).fetchone()[0] == "ready"  # the four-argument call still works


def test_require_document_raises_ds002_for_an_unknown_id(conn):
    document = make_document(conn, UPLOADED)
    assert conn.execute("SELECT id FROM docstatus.require_document(%s)", (document,)).fetchone()[0] == document
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM docstatus.require_document(-5)")
    assert raised.value.sqlstate == "DS002"


def test_the_worker_role_may_run_the_worker_api(conn):
    granted = conn.execute(
        "SELECT has_function_privilege('docstatus_worker', f, 'EXECUTE'),"
        "       has_function_privilege('public', f, 'EXECUTE')"
        "  FROM unnest(ARRAY['docstatus.claim_jobs(text, interval, integer, boolean)',"
        "                    'docstatus.finish_job(bigint, text, text, text)',"
        "                    'docstatus.run_maintenance(boolean)', 'docstatus.next_job_due()',"
        "                    'docstatus.current_result(bigint)']) AS f").fetchall()
    assert granted == [(True, False)] * 5
