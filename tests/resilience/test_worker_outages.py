"""A running worker whose PostgreSQL or blob store goes away, and comes back (issue 9).

Each test starts PRIVATE services (never the session's) and checks that nothing was lost: every
document ends exactly once, no document is left held, no attempt is burned by an outage.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from docstatus import Client
from docstatus.dms import DocumentStore
from docstatus.dms.blob_store import BlobTimeouts
from docstatus.pipeline import Worker
from docstatus.pipeline.blobs import BlobIO
from docstatus.pipeline.errors import BlobMissing, BlobStoreUnreachable, is_retryable

from ..pipeline.processes import WorkerProcess
from .conftest import FAST

QUICK = BlobTimeouts(connect=2, read=3, per_mb=1)


def _upload(dsn: str, connection_string: str, count: int, container: str = "outages") -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn, DocumentStore(conn, connection_string, container) as store:
        return [store.upload_and_validate(f"document {n} of the outage test\n".encode(), f"doc{n}.txt").document.id
                for n in range(count)]


def _wait_all(dsn: str, ids: list[int], status: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with Client.connect(dsn) as client:
        while True:
            now = {i: str(client.require_document(i).text_extraction_status) for i in ids}
            if set(now.values()) == {status}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not all {status} after {timeout}s: {now}")
            time.sleep(0.2)


def _ended_exactly_once(dsn: str, ids: list[int]) -> None:
    """Each document completed once: one job done, one event into 'completed', nothing held."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for document_id in ids:
            done = conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE document_id = %s AND "
                                "status = 'done'", (document_id,)).fetchone()[0]
            completed = conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s AND "
                                     "to_status = 'completed'", (document_id,)).fetchone()[0]
            assert (done, completed) == (1, 1), (document_id, done, completed)
        held = conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE worker_id IS NOT NULL AND "
                            "status = 'pending extraction'").fetchone()[0]
        assert held == 0


def test_a_download_from_a_store_that_is_down_is_retryable_and_a_missing_blob_terminal(private_azurite, db_dsn):
    [document_id] = _upload(db_dsn, private_azurite.connection_string, 1)
    with Client.connect(db_dsn) as client:
        document = client.require_document(document_id)
    blobs = BlobIO.of(private_azurite.connection_string, QUICK)
    try:
        assert blobs.download(document).startswith(b"document 0")
        with pytest.raises(BlobMissing, match=r"^blob not found: outages/not-there.txt") as gone:
            blobs.download(dataclasses.replace(document, blob_name="not-there.txt"))
        assert not is_retryable(gone.value) and "<?xml" not in str(gone.value)
        with pytest.raises(BlobMissing, match=r"^container not found: no-such-container/") as gone:
            blobs.download(dataclasses.replace(document, blob_container="no-such-container"))
        assert not is_retryable(gone.value) and "<?xml" not in str(gone.value)
        private_azurite.stop()
        started = time.monotonic()
        with pytest.raises(BlobStoreUnreachable, match="cannot reach the blob store at http://127.0.0.1:") as down:
            blobs.download(document)
        print(f"\ndownload from a stopped store failed after {time.monotonic() - started:.2f}s")
        assert is_retryable(down.value)
        assert time.monotonic() - started < FAST
    finally:
        blobs.close()


def test_the_worker_claims_nothing_while_the_store_is_down_and_carries_on(private_azurite, db_dsn, conn):
    ids = _upload(db_dsn, private_azurite.connection_string, 3)
    private_azurite.stop()
    worker = WorkerProcess(db_dsn, private_azurite.connection_string, "--lease", "5", "--poll-interval", "1",
                           env={"DOCSTATUS_BLOB_CONNECT_TIMEOUT": "1"})
    try:
        down = worker.wait_for_event("dependency down", dependency="blob store")
        assert "cannot reach the blob store at http://127.0.0.1:" in down["error"]
        time.sleep(3)  # several probes later
        assert len(worker.events("dependency down")) == 1, worker.log_tail()  # one WARNING per outage
        assert worker.events("status") == []  # nothing claimed meanwhile
        assert conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE worker_id IS NOT NULL "
                            "AND status = 'pending extraction'").fetchone()[0] == 0
        private_azurite.start()
        worker.wait_for_event("dependency back", timeout=60, dependency="blob store")
        _wait_all(db_dsn, ids, "completed")
        worker.signal(signal.SIGTERM)
        assert worker.wait(FAST) == 0
    finally:
        worker.kill()
    _ended_exactly_once(db_dsn, ids)
    attempts = conn.execute("SELECT max(attempt) FROM docstatus.extraction_jobs WHERE document_id = ANY(%s)",
                            (ids,)).fetchone()[0]
    assert attempts == 1  # the outage burned no attempt


def test_the_store_going_down_mid_run_fails_one_attempt_then_waits(private_azurite, db_dsn, conn):
    """The first download that finds the store down fails its attempt (retryable, backoff); then the
    worker claims nothing until a probe answers, and every document ends done."""
    ids = _upload(db_dsn, private_azurite.connection_string, 4)
    conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0.2 seconds', retry_max_delay = '1 second'")
    with ConnectionPool(db_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}) as pool:
        worker = Worker(pool, private_azurite.connection_string, concurrency=1, lease=timedelta(seconds=5),
                        poll_interval=1, grace_period=1, blob_timeouts=QUICK)
        private_azurite.stop()
        worker.start()
        try:
            deadline = time.monotonic() + FAST
            while not worker.dependencies.is_down("blob store"):
                assert time.monotonic() < deadline, "the worker never noticed the store was down"
                time.sleep(0.1)
            time.sleep(2)
            failed = conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE document_id = ANY(%s) "
                                  "AND status = 'failed'", (ids,)).fetchone()[0]
            assert failed == 1  # only the attempt that found out
            private_azurite.start()
            _wait_all(db_dsn, ids, "completed")
        finally:
            worker.stop(grace_period=0)
    _ended_exactly_once(db_dsn, ids)
    reasons = [row[0] for row in conn.execute(
        "SELECT error_message FROM docstatus.extraction_jobs WHERE status = 'failed'").fetchall()]
    assert len(reasons) == 1 and reasons[0].startswith("BlobStoreUnreachable: cannot reach the blob store at ")


def test_postgres_restarted_under_a_running_worker(private_cluster, azurite):
    dsn = private_cluster.docstatus_dsn
    ids = _upload(dsn, azurite.connection_string, 6, container="restart")
    worker = WorkerProcess(dsn, azurite.connection_string, "--concurrency", "2", "--lease", "10",
                           "--poll-interval", "1")
    try:
        worker.wait_for_event("worker started")
        private_cluster.stop("immediate")
        down = worker.wait_for_event("dependency down", timeout=30, dependency="PostgreSQL")
        assert down["error"].startswith("cannot connect to PostgreSQL at ") and "password" not in down["error"]
        time.sleep(3)
        private_cluster.start()
        worker.wait_for_event("dependency back", timeout=60, dependency="PostgreSQL")
        _wait_all(dsn, ids, "completed", timeout=90)
        assert len(worker.events("dependency down")) == 1, worker.log_tail()  # one WARNING per outage
        assert not any("error connecting" in line for line in worker.raw), worker.log_tail()
        # About the outage: one line from the slots and maintenance (PostgreSQL unavailable), one
        # from the NOTIFY listener's own connection; not one per attempt. (A job that was running
        # when the server went away may log its own line: that is about the job, once.)
        outage = [line for line in worker.lines if line["level"] in ("warning", "error")
                  and line.get("event") in ("dependency down", "listener lost", "claim failed", "maintenance failed")]
        assert sorted(line["event"] for line in outage) == ["dependency down", "listener lost"], outage
        worker.signal(signal.SIGTERM)
        assert worker.wait(FAST) == 0
    finally:
        worker.kill()
    _ended_exactly_once(dsn, ids)


def test_sigterm_while_postgres_is_down_exits_within_the_grace_period_plus_seconds(private_cluster, azurite,
                                                                                   tmp_path: Path):
    dsn = private_cluster.docstatus_dsn
    [document_id] = _upload(dsn, azurite.connection_string, 1, container="sigterm")
    grace = 2.0
    worker = WorkerProcess(dsn, azurite.connection_string, "--ocr", "tests.pipeline.engines:gated_ocr",
                           "--lease", "4", "--grace-period", str(grace),
                           env={"DOCSTATUS_TEST_GATE": str(tmp_path)})
    try:
        worker.wait_for_event("status", status="ocr running", document_id=document_id)
        private_cluster.stop("immediate")
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(60)
        seconds = time.monotonic() - started
        print(f"\nSIGTERM with PostgreSQL down: exit {code} after {seconds:.2f}s (grace {grace}s)")
        assert code == 0
        assert seconds < grace + 8
    finally:
        worker.kill()
    # Nothing lost: once PostgreSQL is back and the lease has run out, the reaper queues it again.
    private_cluster.start()
    time.sleep(4.5)
    with Client.connect(dsn) as client:
        client.reap_expired_jobs()
        assert str(client.require_document(document_id).text_extraction_status) == "ready"


def test_once_stops_at_the_first_sign_of_a_store_that_is_down(private_azurite, db_dsn, conn):
    """``run(until_idle=True)`` (``--once``) ends when the store goes away mid-run and says a
    dependency failed (the command exits 1); one attempt failed (retryable), the others untouched."""
    ids = _upload(db_dsn, private_azurite.connection_string, 3)
    with ConnectionPool(db_dsn, min_size=4, max_size=4, kwargs={"autocommit": True}) as pool:
        worker = Worker(pool, private_azurite.connection_string, concurrency=1, lease=timedelta(seconds=5),
                        grace_period=1, blob_timeouts=QUICK, listen=False)
        private_azurite.stop()
        started = time.monotonic()
        worker.run(until_idle=True, install_signal_handlers=False)
        print(f"\n--once with the store gone mid-run: returned after {time.monotonic() - started:.2f}s")
    assert worker.dependencies.failures == 1
    assert time.monotonic() - started < FAST
    rows = conn.execute("SELECT status, attempt, worker_id FROM docstatus.extraction_jobs WHERE document_id = ANY(%s) "
                        "ORDER BY id", (ids,)).fetchall()
    assert sorted(row[0] for row in rows) == ["failed"] + ["pending extraction"] * 3
    assert all(worker_id is None for status, _, worker_id in rows if status == "pending extraction")


def test_a_failure_answered_by_the_store_is_recorded_without_its_xml():
    from azure.core.exceptions import ResourceNotFoundError

    from docstatus.pipeline.job import error_message

    answer = ResourceNotFoundError("The specified container does not exist.\nRequestId:1\nTime:now\n"
                                   "ErrorCode:ContainerNotFound\nContent: <?xml version=\"1.0\"?><Error/>")
    message = error_message(answer)
    assert message.startswith("ResourceNotFoundError: ") and "<?xml" not in message and "\n" not in message
