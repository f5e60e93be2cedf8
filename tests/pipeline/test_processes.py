"""``docstatus worker`` as real processes: SIGKILL mid-OCR and recovery by another worker, SIGTERM
(graceful, twice, grace period run out), two workers sharing 100 documents, ``--once``."""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from docstatus.dev.ports import free_port

from .conftest import DATA
from .processes import WorkerProcess
from .waiting import jobs_of, wait_terminal

GATED = ["--ocr", "tests.pipeline.engines:gated_ocr"]
# Only the crash test needs a lease that runs out soon; the others must never lose theirs.
LEASE = ["--lease", "10"]
SHORT_LEASE = ["--lease", "2"]


def start_worker(db_dsn, azurite, *args, env=None) -> WorkerProcess:
    worker = WorkerProcess(db_dsn, azurite.connection_string, *args, env=env)
    worker.wait_for_event("worker started", timeout=30)
    return worker


def held_jobs(conn) -> int:
    return conn.execute("SELECT count(*) FROM docstatus.extraction_jobs"
                        " WHERE status = 'pending extraction' AND worker_id IS NOT NULL").fetchone()[0]


def test_a_worker_killed_during_ocr_is_recovered_by_another(db_dsn, conn, azurite, upload, tmp_path):
    document, _ = upload(b"Recover me\n", "recover.txt")
    first = start_worker(db_dsn, azurite, *GATED, *SHORT_LEASE, "--worker-id", "first",
                         env={"DOCSTATUS_TEST_GATE": str(tmp_path)})
    try:
        first.wait_for_event("status", status="ocr running", document_id=document.id)
    finally:
        first.kill()  # SIGKILL: no release, no goodbye; the gate never opens
    assert first.wait() == -signal.SIGKILL

    second = start_worker(db_dsn, azurite, *SHORT_LEASE, "--worker-id", "second")
    try:
        assert wait_terminal(db_dsn, conn, [document.id], timeout=30) == {document.id: ("completed", "done")}
    finally:
        second.signal(signal.SIGTERM)
        assert second.wait() == 0

    jobs = jobs_of(conn, document.id)
    assert [(row[0], row[1], row[2]) for row in jobs] == [(1, "failed", "first"), (2, "done", "second")]
    assert jobs[0][3].startswith("lease expired: worker first held the job until ")
    assert [line["job_id"] for line in second.events("status") if line.get("reaped_by") == "second"] == [
        conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s AND attempt = 1",
                     (document.id,)).fetchone()[0]]


def test_sigterm_lets_the_running_stage_finish_and_exits_0(db_dsn, conn, azurite, upload, tmp_path):
    document, _ = upload(b"Finish me\n", "finish.txt")
    worker = start_worker(db_dsn, azurite, *GATED, *LEASE, "--grace-period", "30",
                          env={"DOCSTATUS_TEST_GATE": str(tmp_path)})
    worker.wait_for_event("status", status="ocr running", document_id=document.id)
    worker.signal(signal.SIGTERM)
    worker.wait_for_event("worker stopping")
    (tmp_path / "open").touch()  # the stage ends within the grace period
    assert worker.wait() == 0

    assert [(row[0], row[1]) for row in jobs_of(conn, document.id)] == [(1, "done")]
    assert held_jobs(conn) == 0
    stopped = worker.events("worker stopped")[0]
    assert (stopped["done"], stopped["released"], stopped["reason"]) == (1, 0, "SIGTERM")


def test_a_second_signal_releases_the_running_job_at_once(db_dsn, conn, azurite, upload, tmp_path):
    document, _ = upload(b"Release me\n", "release.txt")
    worker = start_worker(db_dsn, azurite, *GATED, *LEASE, "--grace-period", "600", "--worker-id", "impatient",
                          env={"DOCSTATUS_TEST_GATE": str(tmp_path)})
    worker.wait_for_event("status", status="ocr running", document_id=document.id)
    worker.signal(signal.SIGTERM)
    worker.wait_for_event("worker stopping")
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=15) == 0  # not 600 s

    jobs = jobs_of(conn, document.id)
    assert [(row[0], row[1], row[5]) for row in jobs] == [(1, "failed", True), (2, "pending extraction", False)]
    assert jobs[0][3] == "released by worker impatient: stopped at once (second signal)"
    assert held_jobs(conn) == 0


def test_sigterm_releases_a_stage_that_outlives_the_grace_period(db_dsn, conn, azurite, upload, tmp_path):
    document, _ = upload(b"Too slow\n", "slow.txt")
    worker = start_worker(db_dsn, azurite, *GATED, *LEASE, "--grace-period", "0.5", "--worker-id", "slow",
                          env={"DOCSTATUS_TEST_GATE": str(tmp_path)})
    worker.wait_for_event("status", status="ocr running", document_id=document.id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0

    jobs = jobs_of(conn, document.id)
    assert [(row[0], row[1], row[2], row[5]) for row in jobs] == [(1, "failed", "slow", True),
                                                                  (2, "pending extraction", None, False)]
    assert jobs[0][3] == ("released by worker slow: shutting down; the stage did not finish within the grace "
                          "period of 0.5s")
    assert held_jobs(conn) == 0
    assert [line["status"] for line in worker.events("status")] == ["claimed", "ocr running", "released"]


def test_two_workers_process_100_documents_each_exactly_once(db_dsn, conn, azurite, store, tmp_path):
    ocr_log = tmp_path / "ocr.log"
    env = {"DOCSTATUS_TEST_OCR_LOG": str(ocr_log)}
    args = ["--ocr", "tests.pipeline.engines:logged_ocr", "--concurrency", "2", *LEASE]
    workers = [start_worker(db_dsn, azurite, *args, "--worker-id", name, env=env) for name in ("left", "right")]
    try:
        contents = [f"DOC-{n:03d}\nbody of document {n}\n".encode() for n in range(100)]
        with ThreadPoolExecutor(4) as pool:
            uploads = list(pool.map(lambda n: store.upload_and_validate(contents[n], f"doc-{n:03d}.txt"), range(100)))
        document_ids = [document.id for document, _ in uploads]
        assert len(set(document_ids)) == 100
        statuses = wait_terminal(db_dsn, conn, document_ids, timeout=60)
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [worker.wait() for worker in workers]
    assert codes == [0, 0]
    assert set(statuses.values()) == {("completed", "done")}

    jobs = conn.execute("SELECT document_id, attempt, status, worker_id FROM docstatus.extraction_jobs"
                        " WHERE document_id = ANY(%s)", (document_ids,)).fetchall()
    assert len(jobs) == 100 and {(attempt, status) for _, attempt, status, _ in jobs} == {(1, "done")}
    ocr_calls = Counter(line.split(" ", 1)[1] for line in ocr_log.read_text().splitlines())
    assert ocr_calls == Counter({f"DOC-{n:03d}": 1 for n in range(100)})  # each through OCR exactly once
    by_worker = Counter(worker_id for _, _, _, worker_id in jobs)
    assert set(by_worker) == {"left", "right"}, by_worker  # both took part
    assert conn.execute("SELECT count(*) FROM docstatus.document_results WHERE document_id = ANY(%s)",
                        (document_ids,)).fetchone()[0] == 100


def test_once_processes_what_is_queued_and_exits_0_with_json_lines(db_dsn, conn, azurite, upload):
    documents = [upload(DATA / name)[0] for name in ("invoice.txt", "invoice.pdf")]
    worker = WorkerProcess(db_dsn, azurite.connection_string, "--once", *LEASE)
    assert worker.wait() == 0
    assert {document.id: status for document, status in zip(documents, ["completed", "completed"], strict=True)} == {
        document_id: text for document_id, (text, _) in wait_terminal(db_dsn, conn, [d.id for d in documents]).items()}

    assert all(raw.startswith("{") for raw in worker.raw), worker.log_tail()  # every line is JSON
    for document in documents:
        changes = [line for line in worker.events("status") if line["document_id"] == document.id]
        assert [line["status"] for line in changes] == ["claimed", "ocr running", "llm running", "done"]
        assert {line["attempt"] for line in changes} == {1} and all(line["worker_id"] for line in changes)
    assert worker.events("worker stopped")[0]["reason"] == "no job left"


def test_the_worker_serves_metrics_on_its_metrics_port(db_dsn, azurite, upload):
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    upload(b"Count me\n", "count.txt")
    port = free_port()
    worker = start_worker(db_dsn, azurite, *LEASE, "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no metrics on port {port}; log:\n{worker.log_tail()}") from None
                time.sleep(0.05)  # polling a port that is about to open, bounded by the deadline
        families = {family.name for family in text_string_to_metric_families(text)}
        assert {"docstatus_documents", "docstatus_jobs", "docstatus_stuck_documents"} <= families
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
