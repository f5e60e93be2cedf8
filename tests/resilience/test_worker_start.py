"""``docstatus worker`` when PostgreSQL or the blob store is down at start (issue 9).

``--once``: one line on stderr naming what is down and where (no password, no key), exit
status 1, within seconds, and nothing claimed. The figures (seconds to exit) are printed with
``-s`` for the README; the assertion is a generous bound.
"""

from __future__ import annotations

import psycopg
import pytest

from docstatus import Client
from docstatus.dev.azurite import ACCOUNT_KEY

from .conftest import FAST, blob_connection_string

PASSWORD = "s3cret-pw"


def _pending_untouched(dsn: str, document_ids: list[int]) -> None:
    """No attempt burned: each document is still 'ready' with its first job pending, unheld."""
    with Client.connect(dsn) as client:
        for document_id in document_ids:
            jobs = client.list_jobs(document_id)
            described = [(job.attempt, str(job.status), job.worker_id) for job in jobs]
            assert described == [(1, "pending extraction", None)], jobs
            assert str(client.require_document(document_id).text_extraction_status) == "ready"


def _queued_documents(dsn: str, count: int = 2) -> list[int]:
    with Client.connect(dsn) as client:
        ids = []
        for index in range(count):
            document = client.register_document("documents", f"q{index}.txt", f"q{index}.txt", "text/plain", 10)
            client.validate_document(document.id, True, "text/plain")
            ids.append(document.id)
    return ids


@pytest.mark.parametrize("where", ["closed port", "blackholed port"])
def test_once_with_postgres_unreachable_is_one_line_and_exit_1(run_docstatus, azurite, closed_port, blackhole,
                                                               where):
    port = closed_port if where == "closed port" else blackhole.port
    dsn = f"postgresql://bob:{PASSWORD}@127.0.0.1:{port}/docs"
    ran = run_docstatus("worker", "--once", env={"DOCSTATUS_DSN": dsn,
                                                 "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    print(f"\nworker --once, PostgreSQL {where}: exit {ran.code} after {ran.seconds:.2f}s")
    assert ran.code == 1, ran.stderr
    assert ran.stderr_lines == [ran.stderr_lines[0]], ran.stderr
    line = ran.stderr_lines[0]
    assert line.startswith(f"Error: cannot connect to PostgreSQL at postgresql://bob@127.0.0.1:{port}/docs: "), line
    assert ("connection refused" if where == "closed port" else "timeout") in line
    assert PASSWORD not in ran.stderr
    assert ran.seconds < FAST


@pytest.mark.parametrize("where", ["closed port", "blackholed port"])
def test_once_with_the_blob_store_unreachable_claims_nothing(run_docstatus, db_dsn, closed_port, blackhole, where):
    port = closed_port if where == "closed port" else blackhole.port
    documents = _queued_documents(db_dsn)
    ran = run_docstatus("worker", "--once", env={"DOCSTATUS_DSN": db_dsn,
                                                 "AZURE_STORAGE_CONNECTION_STRING": blob_connection_string(port)})
    print(f"\nworker --once, blob store {where}: exit {ran.code} after {ran.seconds:.2f}s")
    assert ran.code == 1, ran.stderr
    assert len(ran.stderr_lines) == 1, ran.stderr
    assert ran.stderr_lines[0] == (f"Error: cannot reach the blob store at http://127.0.0.1:{port}/devstoreaccount1: "
                                   + ("connection refused" if where == "closed port" else "timed out"))
    assert ACCOUNT_KEY not in ran.stderr
    assert ran.seconds < FAST
    _pending_untouched(db_dsn, documents)


def test_once_with_both_up_processes_what_is_claimable_and_exits_0(run_docstatus, db_dsn, azurite):
    from docstatus.dms import DocumentStore

    with psycopg.connect(db_dsn, autocommit=True) as conn, \
            DocumentStore(conn, azurite.connection_string, "resilience-once") as store:
        ids = [store.upload_and_validate(f"document {n}".encode(), f"d{n}.txt").document.id for n in range(3)]
    ran = run_docstatus("worker", "--once", "--concurrency", "2",
                        env={"DOCSTATUS_DSN": db_dsn, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert ran.code == 0, ran.stderr
    with Client.connect(db_dsn) as client:
        assert {str(client.require_document(i).text_extraction_status) for i in ids} == {"completed"}


def test_blob_timeouts_are_flags_and_environment_documented_in_help(run_docstatus):
    ran = run_docstatus("worker", "--help")
    for text in ("--blob-connect-timeout", "--blob-read-timeout", "--blob-seconds-per-mb",
                 "DOCSTATUS_BLOB_CONNECT_TIMEOUT", "DOCSTATUS_BLOB_READ_TIMEOUT", "DOCSTATUS_BLOB_SECONDS_PER_MB"):
        assert text in " ".join(ran.stdout.split()), text
    bad = run_docstatus("worker", "--once", env={"DOCSTATUS_BLOB_READ_TIMEOUT": "soon"})
    assert bad.code == 2 and "DOCSTATUS_BLOB_READ_TIMEOUT='soon' is not a number of seconds" in bad.stderr


def test_a_long_running_worker_waits_for_postgres_with_one_warning_and_stops_on_sigterm(azurite, closed_port):
    import signal
    import time

    from ..pipeline.processes import WorkerProcess

    dsn = f"postgresql://bob:{PASSWORD}@127.0.0.1:{closed_port}/docs"
    worker = WorkerProcess(dsn, azurite.connection_string)
    try:
        down = worker.wait_for_event("dependency down", dependency="PostgreSQL")
        assert down["level"] == "warning" and PASSWORD not in down["error"]
        assert down["error"] == f"cannot connect to PostgreSQL at postgresql://bob@127.0.0.1:{closed_port}/docs: " \
                                "connection refused"
        time.sleep(4)  # three probes later: still the one line
        assert len(worker.events("dependency down")) == 1, worker.log_tail()
        assert len(worker.raw) == 1, worker.log_tail()
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(FAST) == 0
        print(f"\nSIGTERM to a worker waiting for PostgreSQL: exit after {time.monotonic() - started:.2f}s")
    finally:
        worker.kill()
