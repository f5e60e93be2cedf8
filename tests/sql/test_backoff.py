"""Retries that wait (not_before, exponential backoff), release on shutdown, retryable failures,
recorded results: the database side of the pipeline worker (migration 0004_worker_backoff)."""

from datetime import timedelta

import pytest

from .states import FAILED, OCR, QUEUED, claim_document, document_state, make_document, sqlstate_of


def settings(conn, **values):
    for column, value in values.items():
        # Column names come from this file only.
        conn.execute(f"UPDATE docstatus.settings SET {column} = %s", (value,))


def active_job(conn, doc_id):
    return conn.execute(
        "SELECT id, attempt, not_before, worker_id FROM docstatus.extraction_jobs"
        " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,)).fetchone()


def wait_of_latest_retry(conn, doc_id):
    """How long the latest attempt waits after its predecessor ended (same transaction: exact)."""
    return conn.execute(
        "SELECT j.not_before - p.completed_at FROM docstatus.extraction_jobs j"
        "  JOIN docstatus.extraction_jobs p ON p.document_id = j.document_id AND p.attempt = j.attempt - 1"
        " WHERE j.document_id = %s ORDER BY j.attempt DESC LIMIT 1", (doc_id,)).fetchone()[0]


def expire_and_reap(conn, doc_id):
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction' AND worker_id IS NOT NULL", (doc_id,))
    return conn.execute("SELECT id FROM docstatus.reap_expired_jobs()").fetchall()


def make_due(conn, doc_id):
    """Skips the backoff wait of the document's active job."""
    conn.execute("UPDATE docstatus.extraction_jobs SET not_before = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,))


def claim(conn, worker_id):
    return conn.execute("SELECT id, document_id, attempt FROM docstatus.claim_extraction_job(%s)",
                        (worker_id,)).fetchone()


# --- settings --------------------------------------------------------------------------------

def test_retry_settings_have_defaults_and_checks(conn):
    assert conn.execute("SELECT retry_base_delay, retry_max_delay FROM docstatus.settings").fetchone() == (
        timedelta(seconds=10), timedelta(minutes=10))
    for column, value in [("retry_base_delay", "-1 second"), ("retry_max_delay", "1 second")]:
        assert sqlstate_of(lambda column=column, value=value: settings(conn, **{column: value})) == "23514", column
    settings(conn, retry_base_delay="0", retry_max_delay="0")  # no backoff at all is allowed


# --- backoff ----------------------------------------------------------------------------------

def test_reaped_retries_wait_doubling_up_to_the_cap(conn):
    settings(conn, max_attempts=5, retry_base_delay="1 minute", retry_max_delay="3 minutes")
    doc_id = make_document(conn, QUEUED)
    waits = []
    for attempt in (1, 2, 3, 4):
        job = claim(conn, f"w{attempt}")
        assert job is not None and job[2] == attempt
        conn.execute("SELECT docstatus.mark_ocr_running(%s, %s)", (doc_id, f"w{attempt}"))
        assert len(expire_and_reap(conn, doc_id)) == 1
        assert document_state(conn, doc_id) == QUEUED
        waits.append(wait_of_latest_retry(conn, doc_id))
        assert claim(conn, "eager") is None, "a retry must not be claimed before its not_before"
        make_due(conn, doc_id)
    assert waits == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=3), timedelta(minutes=3)]
    claim(conn, "w5")
    expire_and_reap(conn, doc_id)
    assert document_state(conn, doc_id) == FAILED  # five attempts counted: no sixth


def test_no_base_delay_retries_at_once(conn):
    settings(conn, retry_base_delay="0")
    doc_id = make_document(conn, QUEUED)
    claim(conn, "w1")
    expire_and_reap(conn, doc_id)
    assert claim(conn, "w2")[1:] == (doc_id, 2)


def test_claim_waits_for_not_before_and_takes_the_longest_waiting_first(conn):
    later = make_document(conn, QUEUED)
    sooner = make_document(conn, QUEUED)
    conn.execute("UPDATE docstatus.extraction_jobs SET not_before = now() + interval '1 hour' WHERE document_id = %s",
                 (later,))
    assert claim(conn, "w")[1] == sooner
    assert claim(conn, "w") is None
    conn.execute("UPDATE docstatus.extraction_jobs SET not_before = now() - interval '1 hour' WHERE document_id = %s",
                 (later,))
    assert claim(conn, "w")[1] == later


def test_the_exponent_is_capped_so_many_failures_never_overflow(conn):
    settings(conn, max_attempts=45, retry_base_delay="1 second", retry_max_delay="100000 years")
    doc_id = make_document(conn, QUEUED)
    for _ in range(40):
        make_due(conn, doc_id)
        claim_document(conn, doc_id, "w")
        expire_and_reap(conn, doc_id)
    assert wait_of_latest_retry(conn, doc_id) == timedelta(seconds=2 ** 30)


# --- release_job ----------------------------------------------------------------------------

def test_release_fails_the_attempt_and_queues_the_next_at_once(conn):
    settings(conn, retry_max_delay="2 hours", retry_base_delay="1 hour")  # a release never waits
    doc_id = make_document(conn, OCR, worker_id="w1")
    job_id = active_job(conn, doc_id)[0]
    released = conn.execute("SELECT id, status, released, error_message, completed_at IS NOT NULL"
                            " FROM docstatus.release_job(%s, 'w1')", (job_id,)).fetchone()
    assert released == (job_id, "failed", True, "released by worker w1: shutting down", True)
    assert document_state(conn, doc_id) == QUEUED
    assert claim(conn, "w2")[1:] == (doc_id, 2)
    path = [row[0] for row in conn.execute(
        "SELECT to_status FROM docstatus.status_events WHERE document_id = %s AND kind = 'text_extraction'"
        " ORDER BY id", (doc_id,))]
    assert path == ["not ready", "ready", "in progress", "failed", "ready"]


def test_release_of_a_claimed_job_not_started_yet(conn):
    doc_id = make_document(conn, QUEUED)
    job_id = claim(conn, "w1")[0]
    conn.execute("SELECT docstatus.release_job(%s, 'w1', 'draining')", (job_id,))
    assert conn.execute("SELECT error_message FROM docstatus.extraction_jobs WHERE id = %s",
                        (job_id,)).fetchone()[0] == "released by worker w1: draining"
    assert document_state(conn, doc_id) == QUEUED
    assert active_job(conn, doc_id)[1:2] == (2,)


def test_releases_do_not_count_against_max_attempts(conn):
    settings(conn, max_attempts=2, retry_base_delay="0")
    doc_id = make_document(conn, QUEUED)
    for _ in range(3):  # three releases: more than max_attempts
        job_id = claim(conn, "w")[0]
        conn.execute("SELECT docstatus.release_job(%s, 'w')", (job_id,))
    claim(conn, "w")
    expire_and_reap(conn, doc_id)  # counted failure 1 of 2: retried
    assert document_state(conn, doc_id) == QUEUED
    claim(conn, "w")
    expire_and_reap(conn, doc_id)  # counted failure 2 of 2: done trying
    assert document_state(conn, doc_id) == FAILED
    assert conn.execute("SELECT count(*), count(*) FILTER (WHERE released) FROM docstatus.extraction_jobs"
                        " WHERE document_id = %s", (doc_id,)).fetchone() == (5, 3)


def test_release_refuses_what_the_worker_does_not_hold(conn):
    doc_id = make_document(conn, OCR, worker_id="w1")
    job_id = active_job(conn, doc_id)[0]
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(%s, 'w2')", (job_id,))) == "DS004"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(%s, NULL)", (job_id,))) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(NULL, 'w1')")) == "DS003"
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(-1, 'w1')")) == "DS002"
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
                 (job_id,))
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(%s, 'w1')", (job_id,))) == "DS004"
    conn.execute("SELECT docstatus.reap_expired_jobs()")
    # An attempt that has ended cannot be released either.
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.release_job(%s, 'w1')", (job_id,))) == "DS004"
    assert document_state(conn, doc_id) == QUEUED


def test_released_flag_only_on_a_failed_job(conn):
    doc_id = make_document(conn, QUEUED)
    assert sqlstate_of(lambda: conn.execute(
        "UPDATE docstatus.extraction_jobs SET released = true WHERE document_id = %s", (doc_id,))) == "23514"


# --- mark_attempt_failed ----------------------------------------------------------------------

def test_a_retryable_failure_is_retried_with_backoff_up_to_max_attempts(conn):
    settings(conn, max_attempts=3, retry_base_delay="30 seconds")
    doc_id = make_document(conn, QUEUED)
    outcomes = []
    for attempt in (1, 2, 3):
        make_due(conn, doc_id)
        assert claim(conn, "w")[2] == attempt
        conn.execute("SELECT docstatus.mark_ocr_running(%s, 'w')", (doc_id,))
        state = conn.execute("SELECT text_extraction_status, processing_status, status_reason"
                             " FROM docstatus.mark_attempt_failed(%s, %s, 'w')",
                             (doc_id, f"TimeoutError: try {attempt}")).fetchone()
        outcomes.append(state)
        if attempt < 3:
            assert wait_of_latest_retry(conn, doc_id) == timedelta(seconds=30 * 2 ** (attempt - 1))
    assert outcomes == [("ready", "pending extraction", None)] * 2 + [("failed", "failed", "TimeoutError: try 3")]
    errors = conn.execute("SELECT status, error_message, completed_at IS NOT NULL FROM docstatus.extraction_jobs"
                          " WHERE document_id = %s ORDER BY attempt", (doc_id,)).fetchall()
    assert errors == [("failed", f"TimeoutError: try {n}", True) for n in (1, 2, 3)]


def test_mark_attempt_failed_has_the_lease_rules_of_the_marks(conn):
    doc_id = make_document(conn, OCR, worker_id="w1")
    assert sqlstate_of(
        lambda: conn.execute("SELECT docstatus.mark_attempt_failed(%s, 'x', 'w2')", (doc_id,))) == "DS004"
    assert sqlstate_of(
        lambda: conn.execute("SELECT docstatus.mark_attempt_failed(%s, ' ', 'w1')", (doc_id,))) == "DS003"
    assert document_state(conn, doc_id) == OCR
    failed = make_document(conn, FAILED)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_attempt_failed(%s, 'x')", (failed,))) == "DS001"


# --- record_result ----------------------------------------------------------------------------

def test_record_result_for_the_held_job_and_again_replaces_it(conn):
    doc_id = make_document(conn, OCR, worker_id="w1")
    job_id = active_job(conn, doc_id)[0]
    row = conn.execute("SELECT job_id, document_id, blob_container, text_blob, fields_blob"
                       " FROM docstatus.record_result(%s, 'a.txt', 'a.json', 'w1')", (doc_id,)).fetchone()
    assert row == (job_id, doc_id, "docs", "a.txt", "a.json")
    conn.execute("SELECT docstatus.record_result(%s, 'b.txt', 'b.json', 'w1')", (doc_id,))
    assert conn.execute("SELECT text_blob, fields_blob FROM docstatus.document_results WHERE document_id = %s",
                        (doc_id,)).fetchall() == [("b.txt", "b.json")]


def test_record_result_needs_the_lease(conn):
    doc_id = make_document(conn, OCR, worker_id="w1")
    statement = "SELECT docstatus.record_result(%s, %s, %s, %s)"
    assert sqlstate_of(lambda: conn.execute(statement, (doc_id, "t", "f", "w2"))) == "DS004"
    assert sqlstate_of(lambda: conn.execute(statement, (doc_id, "", "f", "w1"))) == "DS003"
    assert sqlstate_of(lambda: conn.execute(statement, (-1, "t", "f", "w1"))) == "DS002"
    queued = make_document(conn, QUEUED)  # nobody holds its job
    assert sqlstate_of(lambda: conn.execute(statement, (queued, "t", "f", None))) == "DS004"
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,))
    assert sqlstate_of(lambda: conn.execute(statement, (doc_id, "t", "f", "w1"))) == "DS004"


# --- roles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role, allowed", [("docstatus_worker", True), ("docstatus_dms", False),
                                           ("docstatus_reader", False)])
def test_only_the_worker_releases_fails_attempts_and_records_results(conn, role, allowed):
    doc_id = make_document(conn, OCR, worker_id="w1")
    job_id = active_job(conn, doc_id)[0]
    for statement, params in [("SELECT docstatus.record_result(%s, 't', 'f', 'w1')", (doc_id,)),
                              ("SELECT docstatus.mark_attempt_failed(%s, 'x', 'w1')", (doc_id,)),
                              ("SELECT docstatus.release_job(%s, 'w1')", (job_id,))]:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            state = sqlstate_of(lambda statement=statement, params=params: conn.execute(statement, params))
        assert (state != "42501") == allowed, (role, statement, state)
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE docstatus_reader")
        conn.execute("SELECT count(*) FROM docstatus.document_results")
        assert sqlstate_of(lambda: conn.execute("DELETE FROM docstatus.document_results")) == "42501"
