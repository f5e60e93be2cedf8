"""Throughput of the whole pipeline with trivial stages, and where a document's time goes.

For 1, 2 and 4 worker processes (``docstatus worker``, one job at a time each): documents are
uploaded to Azurite and registered, the workers start and listen, then one transaction
validates them all (each gets its job, the workers wake on NOTIFY), and the clock runs until
every document is done. Each document goes the whole way: claim, download the blob,
mark_ocr_running, OCR (plain text: trivial), mark_llm_running, fields (trivial), two result
blobs written, record_result, mark_processing_done; JSON log lines on stderr as in production.

Reported per run: documents/s (from the first job's creation to the last job's completion, as
the database recorded them) and, per document, the time each worker spent in docstatus calls
(claim, get_document, the marks, record_result), in blob I/O (Azurite) and in the stages; the
rest is the worker's own Python (logging included). Target: docstatus under 5 ms per document
at 1 worker.

    python bench/pipeline_throughput.py [--dsn DSN] [--documents 300] [--workers 1,2,4]

The DSN names a server where the bench creates and drops its own database (default: the local
server, or DOCSTATUS_BENCH_DSN). Azurite is started on a free port (docstatus.dev.azurite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool
from scratch import dsn_argument, scratch_database

from docstatus.dev.azurite import Azurite

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "docstatus_bench_pipeline"


# --- the trivial stages (imported by the worker processes) -------------------------------------

def trivial_ocr(data: bytes, mime_type: str) -> str:
    return data.decode("utf-8")


def trivial_fields(text: str) -> dict:
    return {"title": text.split("\n", 1)[0], "characters": len(text)}


# --- setup -------------------------------------------------------------------------------------

def upload(dsn: str, azurite: Azurite, container: str, count: int) -> list[int]:
    """Stores and registers ``count`` small text documents, not validated yet (no job)."""
    from docstatus.dms import DocumentStore

    with ConnectionPool(dsn, min_size=4, max_size=4, kwargs={"autocommit": True}) as pool, \
            DocumentStore(pool, azurite.connection_string, container) as store, ThreadPoolExecutor(4) as threads:
        contents = [f"DOCUMENT {container} {n}\nDate: 2024-03-15\nTotal: {n}.00 EUR\n".encode() for n in range(count)]
        documents = list(threads.map(lambda n: store.upload(contents[n], f"doc-{n}.txt"), range(count)))
    return [document.id for document in documents]


# --- one run -----------------------------------------------------------------------------------

class WorkerProcess:
    def __init__(self, dsn: str, azurite: Azurite, name: str, log_path: Path) -> None:
        self.log_path = log_path
        # bench/ too: the stages' module imports its sibling scratch.py, as when run as a script.
        python_path = [str(REPO_ROOT), str(REPO_ROOT / "bench"), os.environ.get("PYTHONPATH")]
        env = {**os.environ, "DOCSTATUS_DSN": dsn, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
               "PYTHONPATH": os.pathsep.join(filter(None, python_path))}
        with open(log_path, "wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from docstatus.cli import main; sys.exit(main())", "worker",
                 "--worker-id", name, "--ocr", "bench.pipeline_throughput:trivial_ocr",
                 "--llm", "bench.pipeline_throughput:trivial_fields", "--poll-interval", "5"],
                env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO_ROOT)

    def lines(self) -> list[dict]:
        parsed = []
        for raw in self.log_path.read_text().splitlines():
            try:
                parsed.append(json.loads(raw))
            except ValueError:
                pass
        return parsed

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.get("event") == "worker started" for line in self.lines()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        return next(line for line in self.lines() if line.get("event") == "worker stopped")


def run(dsn: str, azurite: Azurite, workers: int, documents: int, work: Path) -> dict:
    container = f"bench-{workers}w"
    document_ids = upload(dsn, azurite, container, documents)
    processes = [WorkerProcess(dsn, azurite, f"w{n}", work / f"{container}-w{n}.log") for n in range(workers)]
    try:
        for process in processes:
            process.wait_started()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT count(docstatus.validate_document(id, true, 'text/plain'))"
                         " FROM docstatus.documents WHERE id = ANY(%s)", (document_ids,))
            deadline = time.monotonic() + 600
            finished_sql = ("SELECT count(*) FROM docstatus.documents WHERE id = ANY(%s)"
                            " AND processing_status IN ('done', 'failed')")
            while conn.execute(finished_sql, (document_ids,)).fetchone()[0] < documents:
                if time.monotonic() > deadline:
                    raise SystemExit("documents did not finish within 10 minutes")
                time.sleep(0.05)
            seconds, failed = conn.execute(
                "SELECT extract(epoch FROM max(completed_at) - min(created_at)),"
                "       count(*) FILTER (WHERE status <> 'done')"
                "  FROM docstatus.extraction_jobs WHERE document_id = ANY(%s)", (document_ids,)).fetchone()
    finally:
        stats = [process.stop() for process in processes]
    done = sum(stat["done"] for stat in stats)
    per_document = {key: 1000 * sum(stat[key] for stat in stats) / done
                    for key in ("db_seconds", "blob_seconds", "stage_seconds")}
    busy_ms = 1000 * float(seconds) * workers / documents  # worker time available per document
    return {"workers": workers, "documents": documents, "failed": failed, "seconds": float(seconds),
            "per_second": documents / float(seconds), "db_ms": per_document["db_seconds"],
            "blob_ms": per_document["blob_seconds"], "stage_ms": per_document["stage_seconds"],
            "wall_ms_per_worker": busy_ms, "split": [stat["done"] for stat in stats]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="docstatus-bench-pipeline-"))
    try:
        with scratch_database(args.dsn, BENCH_DB) as dsn, Azurite(work / "azurite") as azurite:
            print(f"{args.documents} documents through the whole pipeline (trivial stages, results stored), "
                  f"{os.cpu_count()} CPUs:")
            print("  workers  docs/s   per document: docstatus   blob I/O   stages   worker's own   (split)")
            for workers in (int(n) for n in args.workers.split(",")):
                result = run(dsn, azurite, workers, args.documents, work)
                own = result["wall_ms_per_worker"] - result["db_ms"] - result["blob_ms"] - result["stage_ms"]
                print(f"  {workers:>7}  {result['per_second']:6.1f}   {result['db_ms']:10.2f} ms "
                      f"{result['blob_ms']:7.2f} ms {result['stage_ms']:6.2f} ms  {own:9.2f} ms    "
                      f"{result['split']}{'  FAILED: ' + str(result['failed']) if result['failed'] else ''}")
                if workers == 1:
                    share = result["db_ms"] / result["wall_ms_per_worker"]
                    print(f"           docstatus share of the document's time at 1 worker: {share:.0%}; "
                          f"target < 5 ms: {'met' if result['db_ms'] < 5 else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
