"""Client: typed results of every call, and each call's transaction on every kind of connection."""

import dataclasses
from datetime import timedelta

import pytest
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from docstatus import (
    Client,
    Cursor,
    Document,
    EventDelivery,
    ExtractionJob,
    InvalidTransition,
    JobStatus,
    ProcessingStatus,
    StatusEvent,
    TextExtractionStatus,
)

from .helpers import claim_any, new_blob, run_lifecycle, wait_until


def visible_elsewhere(conn, blob):
    return conn.execute("SELECT count(*) FROM docstatus.documents WHERE blob_name = %s", (blob,)).fetchone()[0] == 1


def test_full_lifecycle_returns_typed_immutable_results(conn):
    client = Client(conn)
    document = client.register_document("docs", new_blob(), "scan.pdf", "application/pdf", 42)
    assert isinstance(document, Document)
    assert (document.text_extraction_status, document.processing_status) == (
        TextExtractionStatus.NOT_READY, ProcessingStatus.PENDING_EXTRACTION)
    with pytest.raises(dataclasses.FrozenInstanceError):
        document.filename = "other"  # type: ignore[misc]  # frozen, on purpose

    document = client.validate_document(document.id, True, "application/pdf")
    assert document.text_extraction_status is TextExtractionStatus.READY
    job = client.create_extraction_job(document.id, idempotency_key="k1")
    assert isinstance(job, ExtractionJob) and job.status is JobStatus.PENDING_EXTRACTION
    assert job.idempotency_key == "k1" and job.attempt == 1

    claimed = client.claim_extraction_job("w1", lease=timedelta(minutes=1))
    assert claimed.id == job.id and claimed.worker_id == "w1"
    assert client.claim_extraction_job("w2") is None
    assert client.heartbeat_job(job.id, "w1", timedelta(minutes=2)) is True
    assert client.heartbeat_job(job.id, "w2") is False

    assert client.mark_ocr_running(document.id, "w1").processing_status is ProcessingStatus.OCR_RUNNING
    assert client.mark_llm_running(document.id, "w1").processing_status is ProcessingStatus.LLM_RUNNING
    failed = client.mark_processing_failed(document.id, "model unavailable", "w1")
    assert failed.processing_status is ProcessingStatus.FAILED and failed.status_reason == "model unavailable"

    retry = client.retry_document(document.id, idempotency_key="retry-1")
    assert retry.attempt == 2 and client.retry_document(document.id, idempotency_key="retry-1") == retry
    claim_any(client, "w1")
    client.mark_ocr_running(document.id, "w1")
    client.mark_llm_running(document.id, "w1")
    done = client.mark_processing_done(document.id, "w1")
    assert (done.text_extraction_status, done.processing_status) == ("completed", "done")

    jobs = client.list_jobs(document.id)
    assert [(j.attempt, j.status) for j in jobs] == [(1, JobStatus.FAILED), (2, JobStatus.DONE)]
    assert jobs[0].error_message == "model unavailable" and jobs[1].completed_at is not None
    assert client.get_document(document.id) == done
    assert client.get_document(987654) is None

    history = client.history(document.id)
    assert all(isinstance(event, StatusEvent) for event in history)
    assert history[-1].to_status is JobStatus.DONE and history[-1].kind == "job"
    assert history == client.events_after(limit=1000)
    assert client.events_after(*history[4].cursor, limit=3) == history[5:8]
    assert client.events_after(*history[-1].cursor) == []


def test_results_match_the_table_rows_column_for_column(conn):
    client = Client(conn)
    document_id = run_lifecycle(client, "w1", fail_once=True)

    def rows(query, model):
        with conn.cursor(row_factory=dict_row) as cursor:
            return [model(**row) for row in cursor.execute(query, (document_id,))]

    assert [client.get_document(document_id)] == rows("SELECT * FROM docstatus.documents WHERE id = %s", Document)
    assert client.list_jobs(document_id) == rows(
        "SELECT * FROM docstatus.extraction_jobs WHERE document_id = %s ORDER BY attempt", ExtractionJob)
    raw_events = rows("SELECT id, tx_id::text::bigint AS tx_id, document_id, job_id, kind, from_status, to_status,"
                      " detail, occurred_at FROM docstatus.status_events WHERE document_id = %s ORDER BY id",
                      StatusEvent)
    assert client.history(document_id) == raw_events
    # Enum members equal their strings, so the plain rows above compare equal: check the types too.
    assert all(type(event.kind).__name__ == "EventKind" for event in client.history(document_id))


def test_reap_expired_jobs(conn):
    client = Client(conn)
    document = client.register_document("docs", new_blob(), "f.pdf")
    client.validate_document(document.id, True, "application/pdf")
    job = client.claim_extraction_job("w1", lease=timedelta(milliseconds=1))
    reaped = wait_until(client.reap_expired_jobs)
    assert [(j.id, j.status) for j in reaped] == [(job.id, JobStatus.FAILED)]
    assert "lease expired" in reaped[0].error_message
    assert client.get_document(document.id).text_extraction_status is TextExtractionStatus.READY


def test_event_delivery_and_operations(conn):
    client = Client(conn)
    delivery = client.event_delivery()
    assert isinstance(delivery, EventDelivery) and delivery.pending_events == 0
    assert client.check_stuck() == []
    client.register_document("docs", new_blob(), "f.pdf")
    assert client.fold_status_counters() == 2
    assert client.status_counters_folded_below() > 0
    assert client.normalise_error("job 12 failed at 'x'") == "job <n> failed at <value>"


def test_autocommit_connection_each_call_commits(connect, conn):
    client = Client(connect(autocommit=True))
    blob = new_blob()
    client.register_document("docs", blob, "f.pdf")
    assert visible_elsewhere(conn, blob)


def test_idle_connection_each_call_is_its_own_transaction(connect, conn):
    own = connect()  # not autocommit
    client = Client(own)
    blob = new_blob()
    client.register_document("docs", blob, "f.pdf")
    assert own.info.transaction_status == pq.TransactionStatus.IDLE
    assert visible_elsewhere(conn, blob)
    client.get_document(1)  # a read, too, leaves no transaction open to hold back subscribers
    assert own.info.transaction_status == pq.TransactionStatus.IDLE

    with pytest.raises(InvalidTransition):
        client.mark_llm_running(1)
    assert own.info.transaction_status == pq.TransactionStatus.IDLE  # rolled back, usable
    assert client.get_document(1) is not None


def test_call_joins_the_callers_transaction(connect, conn):
    own = connect()
    client = Client(own)
    committed, rolled_back = new_blob(), new_blob()
    with own.transaction():
        client.register_document("docs", committed, "f.pdf")
        assert not visible_elsewhere(conn, committed)
    assert visible_elsewhere(conn, committed)

    with pytest.raises(RuntimeError), own.transaction():
        client.register_document("docs", rolled_back, "f.pdf")
        raise RuntimeError("the caller changes its mind")
    assert not visible_elsewhere(conn, rolled_back)

    # A transaction the connection opened implicitly is the caller's as well.
    own.execute("SELECT 1")
    blob = new_blob()
    client.register_document("docs", blob, "f.pdf")
    assert own.info.transaction_status == pq.TransactionStatus.INTRANS
    assert not visible_elsewhere(conn, blob)
    own.commit()
    assert visible_elsewhere(conn, blob)


def test_connection_with_another_row_factory(connect):
    client = Client(connect(autocommit=True, row_factory=dict_row))
    assert isinstance(client.register_document("docs", new_blob(), "f.pdf"), Document)


def test_connect_owns_its_connection_and_closes_it(db_dsn, connect):
    with Client.connect(db_dsn) as client:
        conn = client._conn
        assert conn.autocommit
        client.register_document("docs", new_blob(), "f.pdf")
    assert conn.closed

    given = connect(autocommit=True)
    with Client(given):
        pass
    assert not given.closed


def test_pool_calls_commit_and_return_the_connection(db_dsn, conn):
    with ConnectionPool(db_dsn, min_size=1, max_size=1, open=True) as pool:
        client = Client(pool)
        blob = new_blob()
        client.register_document("docs", blob, "f.pdf")
        assert visible_elsewhere(conn, blob)
        with pytest.raises(InvalidTransition):
            client.mark_llm_running(1)
        assert pool.get_stats()["pool_available"] == 1
        assert client.get_document(1) is not None


def test_rejects_other_objects():
    with pytest.raises(TypeError):
        Client("host=localhost")  # type: ignore[arg-type]  # the wrong type, on purpose


def test_cursor_round_trip():
    cursor = Cursor(123, 45)
    assert Cursor.parse(str(cursor)) == cursor and str(cursor) == "123:45"
    assert Cursor.beginning() < cursor


def test_worker_functions(conn):
    client = Client(conn)
    conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0'")
    first = client.register_document("docs", new_blob(), "a.pdf")
    client.validate_document(first.id, True, "application/pdf")
    job = claim_any(client, "w1")
    client.mark_ocr_running(job.document_id, "w1")
    result = client.record_result(job.document_id, "a.txt", "a.json", "w1")
    assert (result.job_id, result.text_blob, result.fields_blob) == (job.id, "a.txt", "a.json")
    released = client.release_job(job.id, "w1")
    assert released.released and released.status is JobStatus.FAILED
    assert "shutting down" in released.error_message

    job = claim_any(client, "w1")
    client.mark_ocr_running(job.document_id, "w1")
    retried = client.mark_attempt_failed(job.document_id, "OCR service down", "w1")
    assert retried.text_extraction_status is TextExtractionStatus.READY
    assert [j.attempt for j in client.list_jobs(job.document_id)] == [1, 2, 3]
