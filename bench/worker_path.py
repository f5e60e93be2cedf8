"""The worker's database calls per job: the claim with its document and OCR started, then
mark_llm_running and finish_job (three transactions), against the four of earlier releases
(claim_extraction_job joined to the document, mark_ocr_running, mark_llm_running, record_result
with mark_processing_done in one statement), on the same server in alternating slices.

    python bench/worker_path.py [--dsn DSN] [--slice 1] [--rounds 6]

Reports jobs/s of each path at 1 and 4 clients and the ratio new/old (higher is better).
"""

from __future__ import annotations

import argparse
import statistics

import psycopg
from lifecycle import run_clients
from scratch import dsn_argument, scratch_database

BENCH_DB = "docstatus_bench_worker_path"
QUEUE = 40_000


def old_path(conn: psycopg.Connection, worker: str) -> bool:
    row = conn.execute("SELECT d.id FROM docstatus.claim_extraction_job(%s, '5 minutes') AS j"
                       " JOIN docstatus.documents d ON d.id = j.document_id", (worker,)).fetchone()
    if row is None:
        return False
    conn.execute("SELECT 1 FROM docstatus.mark_ocr_running(%s, %s)", (row[0], worker))
    conn.execute("SELECT 1 FROM docstatus.mark_llm_running(%s, %s)", (row[0], worker))
    conn.execute("SELECT 1 FROM docstatus.record_result(%s, 't', 'f', %s) AS r,"
                 " LATERAL docstatus.mark_processing_done(r.document_id, %s)", (row[0], worker, worker))
    return True


def new_path(conn: psycopg.Connection, worker: str) -> bool:
    row = conn.execute("SELECT document_id FROM docstatus.claim_jobs(%s, '5 minutes', 1, true)", (worker,)).fetchone()
    if row is None:
        return False
    conn.execute("SELECT 1 FROM docstatus.mark_llm_running(%s, %s)", (row[0], worker))
    conn.execute("SELECT 1 FROM docstatus.finish_job(%s, 't', 'f', %s)", (row[0], worker))
    return True


def fill(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE docstatus.settings SET notify_events = false")
        conn.execute("SELECT docstatus.validate_document(d.id, true, 'application/pdf')"
                     "  FROM generate_series(1, %s) AS n,"
                     "       LATERAL docstatus.register_document('bench', 'b' || n, 'f.pdf') AS d", (count,))
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--slice", type=float, default=1.0, help="seconds per measured slice")
    parser.add_argument("--rounds", type=int, default=6, help="alternating old/new slices per figure")
    args = parser.parse_args()
    with scratch_database(args.dsn, BENCH_DB) as dsn:
        fill(dsn, QUEUE)
        print(f"{'clients':>8}{'old/s':>10}{'new/s':>10}{'ratio':>8}")
        for clients in (1, 4):
            old, new = [], []
            for _ in range(args.rounds):
                old.append(run_clients(dsn, clients, args.slice, old_path))
                new.append(run_clients(dsn, clients, args.slice, new_path))
            old_rate, new_rate = statistics.median(old), statistics.median(new)
            print(f"{clients:>8}{old_rate:>10.0f}{new_rate:>10.0f}{new_rate / old_rate:>8.2f}")


if __name__ == "__main__":
    main()
