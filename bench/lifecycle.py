"""Cost of the SQL core: the docstatus API against bare statements, in one run, same server.

Two workloads, each as the API path and as a bare baseline (the same row changes with plain
INSERT/UPDATE on copies of the tables, no triggers, no history, no NOTIFY):

- lifecycle: register, validate, claim, ocr, llm, done; each its own transaction.
- claim+done: a queue of ready documents is drained: claim, then the minimal way to end the
  job through the API (ocr, llm, done); the baseline claims with FOR UPDATE SKIP LOCKED on a
  plain table and makes the same row changes.

Each is measured at 1 and 4 clients, with settings.notify_events on and off, and reported as a
ratio to its baseline (higher is better; 1.0 = no overhead), with WAL bytes per lifecycle.

    python bench/lifecycle.py [--dsn DSN] [--slice 1] [--rounds 6]

The DSN names a server where the bench may create and drop its own database (default: the
local server, or DOCSTATUS_BENCH_DSN). Run on an otherwise idle server: ratios, not absolute
figures, are what carry over between machines.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time

import psycopg
from scratch import dsn_argument, scratch_database

BENCH_DB = "docstatus_bench_lifecycle"

BARE_SCHEMA = """
CREATE SCHEMA bare;
CREATE TABLE bare.documents (LIKE docstatus.documents INCLUDING ALL);
CREATE TABLE bare.extraction_jobs (LIKE docstatus.extraction_jobs INCLUDING ALL);
"""

_blob_names = itertools.count()


class ApiPath:
    """The pipeline through the docstatus functions."""

    @staticmethod
    def fill(conn, count):
        conn.execute(
            "SELECT count(docstatus.validate_document(d.id, true, 'application/pdf'))"
            " FROM generate_series(1, %s) AS n,"
            " LATERAL docstatus.register_document('queue', %s || n, 'f.pdf') AS d", (count, f"q{next(_blob_names)}-"))

    @staticmethod
    def enqueue(conn):
        doc_id = conn.execute(
            "SELECT id FROM docstatus.register_document('bench', %s, 'f.pdf')", (f"b{next(_blob_names)}",)
        ).fetchone()[0]
        conn.execute("SELECT 1 FROM docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))

    @staticmethod
    def process_one(conn, worker):
        row = conn.execute("SELECT document_id FROM docstatus.claim_extraction_job(%s)", (worker,)).fetchone()
        if row is None:
            return False
        conn.execute("SELECT 1 FROM docstatus.mark_ocr_running(%s, %s)", (row[0], worker))
        conn.execute("SELECT 1 FROM docstatus.mark_llm_running(%s, %s)", (row[0], worker))
        conn.execute("SELECT 1 FROM docstatus.mark_processing_done(%s, %s)", (row[0], worker))
        return True


class BarePath:
    """The same row changes with plain statements on trigger-less copies of the tables."""

    @staticmethod
    def fill(conn, count):
        with conn.transaction():
            conn.execute(
                "INSERT INTO bare.documents (blob_container, blob_name, filename, text_extraction_status, mime_type)"
                " SELECT 'queue', %s || n, 'f.pdf', 'ready', 'application/pdf' FROM generate_series(1, %s) AS n",
                (f"q{next(_blob_names)}-", count))
            conn.execute(
                "INSERT INTO bare.extraction_jobs (document_id, attempt) SELECT d.id, 1 FROM bare.documents d"
                " WHERE d.text_extraction_status = 'ready'"
                " AND NOT EXISTS (SELECT FROM bare.extraction_jobs j WHERE j.document_id = d.id)")

    @staticmethod
    def enqueue(conn):
        doc_id = conn.execute(
            "INSERT INTO bare.documents (blob_container, blob_name, filename) VALUES ('bench', %s, 'f.pdf')"
            " RETURNING id", (f"b{next(_blob_names)}",)
        ).fetchone()[0]
        with conn.transaction():
            conn.execute("UPDATE bare.documents SET text_extraction_status = 'ready', mime_type = 'application/pdf',"
                         " updated_at = now() WHERE id = %s", (doc_id,))
            conn.execute("INSERT INTO bare.extraction_jobs (document_id, attempt) VALUES (%s, 1)", (doc_id,))

    @staticmethod
    def process_one(conn, worker):
        row = conn.execute(
            "UPDATE bare.extraction_jobs SET worker_id = %s, lease_expires_at = now() + interval '5 minutes',"
            " started_at = now() WHERE id = (SELECT id FROM bare.extraction_jobs"
            "  WHERE status = 'pending extraction' AND worker_id IS NULL AND not_before <= now()"
            "  ORDER BY not_before, id LIMIT 1"
            "  FOR UPDATE SKIP LOCKED) RETURNING document_id", (worker,)).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE bare.documents SET text_extraction_status = 'in progress',"
                     " processing_status = 'ocr running', updated_at = now() WHERE id = %s", (row[0],))
        conn.execute("UPDATE bare.documents SET processing_status = 'llm running', updated_at = now()"
                     " WHERE id = %s", (row[0],))
        with conn.transaction():
            conn.execute("UPDATE bare.documents SET text_extraction_status = 'completed', processing_status = 'done',"
                         " updated_at = now() WHERE id = %s", (row[0],))
            conn.execute("UPDATE bare.extraction_jobs SET status = 'done', completed_at = now()"
                         " WHERE document_id = %s AND status = 'pending extraction'", (row[0],))
        return True


def run_clients(dsn, clients, seconds, body):
    """Runs body(conn, worker_name) in a loop on each client until time is up; returns ops/s."""
    counts = [0] * clients
    deadline = [0.0]
    ready = threading.Barrier(clients + 1)

    def client(index):
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(10):  # warm the plans (psycopg prepares after 5 runs)
                body(conn, f"w{index}")
            ready.wait()
            while time.perf_counter() < deadline[0]:
                if not body(conn, f"w{index}"):
                    break
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + 3600
    ready.wait()
    started = time.perf_counter()
    deadline[0] = started + seconds
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def lifecycle(path):
    def body(conn, worker):
        path.enqueue(conn)
        return path.process_one(conn, worker)
    return body


def fill_queue(dsn, path, count):
    with psycopg.connect(dsn, autocommit=True) as conn:
        path.fill(conn, count)
        conn.execute("VACUUM ANALYZE")


def wal_bytes(conn):
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def measure_wal(dsn, path, lifecycles=500):
    with psycopg.connect(dsn, autocommit=True) as conn:
        body = lifecycle(path)
        for _ in range(50):  # plans warm and pages touched, so no full-page images are counted
            body(conn, "wal")
        conn.execute("CHECKPOINT")
        for _ in range(50):
            body(conn, "wal")
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        for _ in range(lifecycles):
            body(conn, "wal")
        used = conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (str(start),)).fetchone()[0]
    return float(used) / lifecycles


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--slice", type=float, default=1.0, help="seconds per measured slice")
    parser.add_argument("--rounds", type=int, default=6, help="alternating bare/api slices per figure")
    args = parser.parse_args()

    with scratch_database(args.dsn, BENCH_DB) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BARE_SCHEMA)
            server = conn.execute("SHOW server_version").fetchone()[0]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        print(f"PostgreSQL {server}, synchronous_commit={sync}; each figure: {args.rounds} alternating"
              f" slices of {args.slice:g} s per path\n")
        print(f"{'workload':<12}{'notify':<8}{'clients':>8}{'api/s':>10}{'bare/s':>10}{'ratio':>8}")
        for notify in (True, False):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE docstatus.settings SET notify_events = %s", (notify,))
            for workload in ("lifecycle", "claim+done"):
                for clients in (1, 4):
                    # Short alternating slices, so a load change on the machine hits both paths alike.
                    rates = {BarePath: [], ApiPath: []}
                    for _ in range(args.rounds):
                        for path in (BarePath, ApiPath):
                            if workload == "lifecycle":
                                rates[path].append(run_clients(dsn, clients, args.slice, lifecycle(path)))
                            else:
                                fill_queue(dsn, path, int(1500 * args.slice))  # more than a slice drains
                                rates[path].append(run_clients(dsn, clients, args.slice, path.process_one))
                    api, bare = statistics.mean(rates[ApiPath]), statistics.mean(rates[BarePath])
                    print(f"{workload:<12}{'on' if notify else 'off':<8}{clients:>8}"
                          f"{api:>10.0f}{bare:>10.0f}{api / bare:>8.2f}", flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE docstatus.settings SET notify_events = true")
        api_wal, bare_wal = measure_wal(dsn, ApiPath), measure_wal(dsn, BarePath)
        print(f"\nWAL per lifecycle: api {api_wal:,.0f} bytes, bare {bare_wal:,.0f} bytes"
              f" ({api_wal / bare_wal:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
