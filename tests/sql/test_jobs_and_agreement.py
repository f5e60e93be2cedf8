"""Job timestamps and the document/job agreement checked at commit."""

import psycopg
import pytest

from .states import (
    COMPLETED,
    FAILED,
    LLM,
    OCR,
    QUEUED,
    UPLOADED,
    document_state,
    make_document,
    sqlstate_of,
)


def active_job(conn, doc_id):
    return conn.execute(
        "SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s AND status = 'pending extraction'",
        (doc_id,),
    ).fetchone()[0]


@pytest.mark.parametrize("terminal", ["done", "failed"])
def test_completed_at_is_stamped_by_the_database(conn, terminal):
    doc_id = make_document(conn, QUEUED)
    job_id = active_job(conn, doc_id)
    with conn.transaction(force_rollback=True):
        # A raw UPDATE that forgets completed_at still gets it.
        row = conn.execute(
            "UPDATE docstatus.extraction_jobs SET status = %s, error_message = 'e' WHERE id = %s"
            " RETURNING completed_at, completed_at = now()",
            (terminal, job_id),
        ).fetchone()
        assert row[0] is not None and row[1] is True


def test_completed_at_check(conn):
    doc_id = make_document(conn, QUEUED)
    job_id = active_job(conn, doc_id)
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("UPDATE docstatus.extraction_jobs SET completed_at = now() WHERE id = %s", (job_id,))
    assert err.value.diag.constraint_name == "extraction_jobs_completed_at"
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("UPDATE docstatus.extraction_jobs SET status = 'failed' WHERE id = %s", (job_id,))
    assert err.value.diag.constraint_name == "extraction_jobs_failed_has_error"


def test_done_and_failed_jobs_are_final(conn):
    doc_id = make_document(conn, COMPLETED)
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (doc_id,)).fetchone()[0]
    for target in ("pending extraction", "failed"):
        assert sqlstate_of(lambda: conn.execute(
            "UPDATE docstatus.extraction_jobs SET status = %s, error_message = 'x', completed_at = NULL"
            " WHERE id = %s", (target, job_id))) == "DS001"


@pytest.mark.parametrize("pair", [QUEUED, OCR, LLM], ids=lambda p: "/".join(p))
def test_active_document_needs_its_job_at_commit(connect, conn, pair):
    doc_id = make_document(conn, pair)
    job_id = active_job(conn, doc_id)
    with connect() as other:
        other.execute("UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = 'x' WHERE id = %s",
                      (job_id,))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"
    assert active_job(conn, doc_id) == job_id


@pytest.mark.parametrize("pair", [UPLOADED, COMPLETED, FAILED], ids=lambda p: "/".join(p))
def test_resting_document_has_no_active_job(connect, conn, pair):
    doc_id = make_document(conn, pair)
    next_attempt = conn.execute("SELECT count(*) + 1 FROM docstatus.extraction_jobs WHERE document_id = %s",
                                (doc_id,)).fetchone()[0]
    with connect() as other:
        other.execute("INSERT INTO docstatus.extraction_jobs (document_id, attempt) VALUES (%s, %s)",
                      (doc_id, next_attempt))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"


def test_raw_update_to_ready_needs_a_job_in_the_same_transaction(connect, conn):
    doc_id = make_document(conn, UPLOADED)
    with connect() as other:
        other.execute("UPDATE docstatus.documents SET text_extraction_status = 'ready' WHERE id = %s", (doc_id,))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"
    with connect() as other:
        other.execute("UPDATE docstatus.documents SET text_extraction_status = 'ready' WHERE id = %s", (doc_id,))
        other.execute("SELECT docstatus.create_extraction_job(%s)", (doc_id,))
        other.commit()
    assert conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE document_id = %s",
                        (doc_id,)).fetchone()[0] == 1


def test_at_most_one_active_job(conn):
    doc_id = make_document(conn, QUEUED)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO docstatus.extraction_jobs (document_id, attempt) VALUES (%s, 2)", (doc_id,))


def test_entering_ocr_by_hand_gives_the_job_a_lease(conn):
    doc_id = make_document(conn, QUEUED)
    with conn.transaction():
        conn.execute("UPDATE docstatus.documents SET text_extraction_status = 'in progress',"
                     " processing_status = 'ocr running' WHERE id = %s", (doc_id,))
    worker, lease_ok = conn.execute(
        "SELECT worker_id,"
        "       lease_expires_at > now() + (SELECT default_lease FROM docstatus.settings) - interval '1 minute'"
        " FROM docstatus.extraction_jobs WHERE document_id = %s", (doc_id,)).fetchone()
    assert worker == conn.execute("SELECT session_user").fetchone()[0]
    assert lease_ok is True


def test_history_is_append_only(conn):
    make_document(conn, QUEUED)
    for statement in ("UPDATE docstatus.status_events SET detail = 'x'", "DELETE FROM docstatus.status_events",
                      "TRUNCATE docstatus.status_events"):
        assert sqlstate_of(lambda: conn.execute(statement)) == "DS006", statement


def test_documents_and_jobs_are_kept(conn):
    doc_id = make_document(conn, COMPLETED)
    for statement in ("DELETE FROM docstatus.documents", "TRUNCATE docstatus.documents CASCADE",
                      "DELETE FROM docstatus.extraction_jobs", "TRUNCATE docstatus.extraction_jobs"):
        assert sqlstate_of(lambda: conn.execute(statement)) == "DS006", statement
    assert document_state(conn, doc_id) == COMPLETED


def test_settings_keep_one_row(conn):
    assert sqlstate_of(lambda: conn.execute("DELETE FROM docstatus.settings")) == "DS003"
    assert sqlstate_of(lambda: conn.execute("UPDATE docstatus.settings SET max_attempts = 0")) == "23514"
    assert sqlstate_of(lambda: conn.execute("UPDATE docstatus.settings SET default_lease = '-1 s'")) == "23514"
    assert sqlstate_of(lambda: conn.execute("INSERT INTO docstatus.settings (singleton) VALUES (false)")) == "23514"
    conn.execute("UPDATE docstatus.settings SET max_attempts = 5")
    assert conn.execute("SELECT max_attempts FROM docstatus.settings").fetchone()[0] == 5


def test_an_in_progress_job_keeps_its_holder(connect, conn):
    doc_id = make_document(conn, OCR)
    with connect() as other:
        other.execute("UPDATE docstatus.extraction_jobs SET worker_id = NULL, lease_expires_at = NULL"
                      " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"
    with connect() as other:  # the same by failing the held job and inserting an unheld one
        other.execute("UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = 'x'"
                      " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,))
        other.execute("INSERT INTO docstatus.extraction_jobs (document_id, attempt) VALUES (%s, 2)", (doc_id,))
        with pytest.raises(psycopg.Error) as err:
            other.commit()
        assert err.value.sqlstate == "DS005"
    assert document_state(conn, doc_id) == OCR


def test_a_job_never_changes_document_or_attempt(conn):
    queued = make_document(conn, QUEUED)
    failed = make_document(conn, FAILED)
    job_id = active_job(conn, queued)
    for statement, params in [
            ("UPDATE docstatus.extraction_jobs SET document_id = %s WHERE id = %s", (failed, job_id)),
            ("UPDATE docstatus.extraction_jobs SET attempt = 7 WHERE id = %s", (job_id,))]:
        assert sqlstate_of(lambda: conn.execute(statement, params)) == "DS003"
    assert active_job(conn, queued) == job_id
