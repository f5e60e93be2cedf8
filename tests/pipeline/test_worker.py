"""The worker in this process, on a real PostgreSQL and a real Azurite: documents end to end,
failing stages, retries with backoff, a lost lease, stop with release, NOTIFY wake-ups."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta

import pytest
from psycopg_pool import ConnectionPool

from docstatus import Client
from docstatus.pipeline import (
    ChatCompletionsExtractor,
    LlmTimeout,
    LlmUnavailable,
    PlainText,
    error_message,
    get_result,
)

from .chat_server import ChatServer
from .conftest import DATA
from .waiting import jobs_of, wait_terminal, wait_until

INVOICE_FIELDS = {
    "title": "INVOICE 2024-0042",
    "dates": ["2024-03-15"],
    "amounts": [{"value": "1234.56", "currency": "EUR", "text": "1,234.56 EUR"}],
    "emails": ["billing@example.com"],
}
SAMPLES = [
    "invoice.pdf", "invoice.txt",
    *[pytest.param(name, marks=pytest.mark.skipif(shutil.which("tesseract") is None, reason="no Tesseract"))
      for name in ("invoice.png", "invoice.jpg", "invoice.tiff")],
]


def text_path(conn, document_id):
    return [row[0] for row in conn.execute(
        "SELECT to_status FROM docstatus.status_events WHERE document_id = %s AND kind = 'processing' ORDER BY id",
        (document_id,))]


class Gate:
    """An OCR stage that blocks until the test opens the gate: a long-running OCR, in this process."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, data: bytes, mime_type: str) -> str:
        self.entered.set()
        if not self.opened.wait(60):
            raise TimeoutError("the test never opened the gate")
        return PlainText()(data, mime_type)


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_sample_type_end_to_end(sample, make_worker, upload, db_dsn, conn, db_pool, store):
    document, _ = upload(DATA / sample)
    make_worker()
    assert wait_terminal(db_dsn, conn, [document.id]) == {document.id: ("completed", "done")}

    [(attempt, status, _, error, completed, released)] = jobs_of(conn, document.id)
    assert (attempt, status, error, completed, released) == (1, "done", None, True, False)
    assert text_path(conn, document.id) == ["pending extraction", "ocr running", "llm running", "done"]
    result = get_result(db_pool, store, document.id)
    assert [line for line in result.text.splitlines() if line.strip()][:2] == ["INVOICE 2024-0042", "Date: 2024-03-15"]
    fields = dict(result.fields)
    if sample != "invoice.txt":  # its total line says more, and its e-mail line differs
        assert fields == INVOICE_FIELDS
    assert result.extractor == "rule-based (offline, no LLM)"
    assert result.text_blob.startswith(document.blob_name + ".results/job-")
    assert conn.execute("SELECT text_blob, fields_blob FROM docstatus.document_results WHERE document_id = %s",
                        (document.id,)).fetchone() == (result.text_blob, result.fields_blob)


def test_a_spoofed_executable_never_reaches_the_worker(make_worker, upload, db_dsn, conn):
    spoofed, job = upload(DATA / "spoofed_pe.pdf")
    assert job is None and spoofed.text_extraction_status == "failed"
    text, _ = upload(DATA / "invoice.txt")
    worker = make_worker()
    wait_terminal(db_dsn, conn, [text.id])
    assert jobs_of(conn, spoofed.id) == []
    assert worker.stop().claimed == 1  # stopped first: the counters are final


def test_a_stage_that_raises_fails_its_document_and_the_worker_goes_on(make_worker, upload, db_dsn, conn):
    def ocr(data: bytes, mime_type: str) -> str:
        if b"poison" in data:
            raise ValueError("cannot read this one: " + "x" * 5000)
        return data.decode()

    poison, _ = upload(b"poison\n", "poison.txt")
    fine, _ = upload(b"Fine text\n", "fine.txt")
    worker = make_worker(ocr=ocr)
    assert wait_terminal(db_dsn, conn, [poison.id, fine.id]) == {
        poison.id: ("failed", "failed"), fine.id: ("completed", "done")}

    [(attempt, status, _, error, completed, _)] = jobs_of(conn, poison.id)
    assert (attempt, status, completed) == (1, "failed", True)  # not retried: the document's own fault
    assert error.startswith("ValueError: cannot read this one: xxx") and len(error) == 1000 and error.endswith("...")
    reason = conn.execute("SELECT status_reason FROM docstatus.documents WHERE id = %s", (poison.id,)).fetchone()[0]
    assert reason == error
    assert text_path(conn, poison.id)[-2:] == ["ocr running", "failed"]
    stats = worker.stop()  # the counters are final once its threads are done
    assert (stats.failed, stats.done) == (1, 1)


def test_error_message_is_type_and_message_on_one_bounded_line():
    assert error_message(KeyError("k")) == "KeyError: 'k'"
    assert error_message(RuntimeError()) == "RuntimeError"
    assert error_message(ValueError("a\n  b\tc")) == "ValueError: a b c"
    assert len(error_message(ValueError("y" * 10_000), limit=50)) == 50


def test_a_retryable_failure_is_retried_with_backoff_up_to_the_limit_then_stays_failed(make_worker, upload, db_dsn,
                                                                                       conn):
    def llm(text: str) -> dict:
        raise LlmTimeout("LLM service did not answer within 0.1s")

    document, _ = upload(b"Some text\n", "retry.txt")
    worker = make_worker(llm=llm)
    assert wait_terminal(db_dsn, conn, [document.id]) == {document.id: ("failed", "failed")}
    jobs = jobs_of(conn, document.id)
    assert [(attempt, status, error, completed) for attempt, status, _, error, completed, _ in jobs] == [
        (n, "failed", "LlmTimeout: LLM service did not answer within 0.1s", True) for n in (1, 2, 3)]
    waits = [row[0] for row in conn.execute(
        "SELECT j.not_before - p.completed_at FROM docstatus.extraction_jobs j"
        "  JOIN docstatus.extraction_jobs p ON p.document_id = j.document_id AND p.attempt = j.attempt - 1"
        " WHERE j.document_id = %s ORDER BY j.attempt", (document.id,))]
    assert waits == [timedelta(seconds=0.2), timedelta(seconds=0.4)]  # retry_base_delay 0.2 s, doubling
    stats = worker.stop()
    assert (stats.retried, stats.failed) == (2, 1)


def test_a_retry_that_succeeds(make_worker, upload, db_dsn, conn, db_pool, store):
    calls = []

    def llm(text: str) -> dict:
        calls.append(text)
        if len(calls) == 1:
            raise LlmUnavailable("LLM service answered HTTP 503: overloaded")
        return {"title": text.strip()}

    document, _ = upload(b"Second time lucky\n", "lucky.txt")
    make_worker(llm=llm)
    assert wait_terminal(db_dsn, conn, [document.id]) == {document.id: ("completed", "done")}
    assert [(row[0], row[1]) for row in jobs_of(conn, document.id)] == [(1, "failed"), (2, "done")]
    result = get_result(db_pool, store, document.id)
    assert (result.attempt, result.fields) == (2, {"title": "Second time lucky"})


def test_a_worker_that_lost_its_lease_drops_the_job_without_writing(make_worker, upload, db_dsn, conn):
    gate = Gate()
    document, _ = upload(b"Slow text\n", "slow.txt")
    worker = make_worker(ocr=gate)
    assert gate.entered.wait(15)
    # The lease runs out behind the worker's back (a long GC pause, a network partition) and the
    # reaper ends the attempt.
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction'", (document.id,))
    conn.execute("SELECT docstatus.reap_expired_jobs()")
    gate.opened.set()  # the stage finishes: the worker must not write for attempt 1
    assert wait_terminal(db_dsn, conn, [document.id]) == {document.id: ("completed", "done")}

    jobs = jobs_of(conn, document.id)
    assert [(row[0], row[1]) for row in jobs] == [(1, "failed"), (2, "done")]
    assert jobs[0][3].startswith(f"lease expired: worker {worker.worker_id} held the job until ")
    # Attempt 1 stopped at ocr running: no llm running, no result of its own.
    assert text_path(conn, document.id) == ["pending extraction", "ocr running", "failed", "pending extraction",
                                            "ocr running", "llm running", "done"]
    assert conn.execute("SELECT count(*) FROM docstatus.document_results WHERE document_id = %s",
                        (document.id,)).fetchone()[0] == 1
    assert worker.stop().abandoned == 1


def test_stop_releases_a_running_job_for_an_immediate_retry(make_worker, upload, db_dsn, conn):
    gate = Gate()
    document, _ = upload(b"Never finishes in time\n", "stuck.txt")
    worker = make_worker(ocr=gate)
    assert gate.entered.wait(15)
    stats = worker.stop(grace_period=0.2)
    assert stats.released == 1

    jobs = jobs_of(conn, document.id)
    assert [(row[0], row[1], row[5]) for row in jobs] == [(1, "failed", True), (2, "pending extraction", False)]
    assert jobs[0][3] == (f"released by worker {worker.worker_id}: shutting down; the stage did not finish "
                          "within the grace period of 0.2s")
    assert jobs[1][2] is None  # nothing left held
    assert conn.execute("SELECT not_before <= now() FROM docstatus.extraction_jobs WHERE document_id = %s"
                        " AND attempt = 2", (document.id,)).fetchone()[0]  # retried at once
    gate.opened.set()  # the abandoned stage returns: no write follows
    assert worker.join(timeout=10)
    assert jobs_of(conn, document.id) == jobs
    assert text_path(conn, document.id)[-1] == "pending extraction"


def test_idle_workers_wake_on_notify_not_on_the_poll(make_worker, upload, db_dsn, conn):
    worker = make_worker(poll_interval=120.0)
    wait_until(db_dsn, lambda: worker._listener.listening.is_set(), 10, "the worker to listen")
    document, _ = upload(b"Wake up\n", "wake.txt")
    assert wait_terminal(db_dsn, conn, [document.id], timeout=10) == {document.id: ("completed", "done")}
    assert worker._listener.notifications >= 1


def test_chat_completions_llm_end_to_end(make_worker, upload, db_dsn, conn, db_pool, store):
    with ChatServer() as server:
        server.reply_with_fields({"title": "Invoice 2024-0042", "amounts": [{"value": "1234.56", "currency": "EUR"}]})
        document, _ = upload(DATA / "invoice.pdf")
        make_worker(llm=ChatCompletionsExtractor(server.url, "test-model", timeout=5))
        assert wait_terminal(db_dsn, conn, [document.id]) == {document.id: ("completed", "done")}
    result = get_result(db_pool, store, document.id)
    assert result.fields == {"title": "Invoice 2024-0042", "amounts": [{"value": "1234.56", "currency": "EUR"}]}
    assert result.extractor == "chat-completions:test-model"
    [(_, request)] = server.requests
    assert request["messages"][1]["content"].startswith("INVOICE 2024-0042")


def test_maintenance_runs_in_one_worker_at_a_time(db_pool, connect, conn):
    client = Client(db_pool)
    other_worker = connect()
    other_worker.execute("SELECT pg_try_advisory_xact_lock(hashtextextended('docstatus.worker.maintenance', 0))")
    assert [action.action for action in client.run_maintenance(check_stuck=True)] == ["skipped"]  # the other's at it
    other_worker.rollback()
    assert client.run_maintenance(check_stuck=True) == []


def test_get_result_of_a_document_without_one(upload, db_pool, store):
    document, _ = upload(b"Not processed\n", "pending.txt")
    assert get_result(db_pool, store, document.id) is None


def test_a_kept_connection_of_a_non_autocommit_pool_commits_each_call(db_dsn, conn):
    """A processing thread keeps one connection; each call must still be its own transaction."""
    from psycopg import pq

    conn.execute("SELECT docstatus.validate_document(d.id, true, 'text/plain')"
                 " FROM docstatus.register_document('c', 'kept', 'kept.txt') AS d")
    with ConnectionPool(db_dsn, min_size=1, max_size=2, open=True) as pool:  # autocommit off
        with pool.connection() as kept:
            claimed = Client(kept).claim_jobs("kept-worker", timedelta(seconds=30), start_ocr=True)
            assert len(claimed) == 1
            assert kept.info.transaction_status == pq.TransactionStatus.IDLE
            held = conn.execute("SELECT worker_id FROM docstatus.extraction_jobs").fetchone()[0]
            assert held == "kept-worker"  # committed: another connection sees the claim
