"""The reaper's cost per expired job: reap_expired_jobs as 0008 makes it (the pass in one
subtransaction, redone job by job when one job fails) against the reaper of 0007 (one plain
loop), on the same server in alternating rounds, and the cost of 0008's job-by-job pass when one
job of the batch cannot be ended.

    python bench/reaper.py [--dsn DSN] [--jobs 2000] [--rounds 6]

Reports microseconds per reaped job of each and the ratio 0008/0007 (lower is better).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import psycopg
from scratch import dsn_argument, scratch_database

BENCH_DB = "docstatus_bench_reaper"
ROLLBACK = Path(__file__).resolve().parent.parent / "database" / "migrations" / "0008_hardening.rollback.sql"


def install_reaper_before(conn: psycopg.Connection) -> None:
    """0007's reap_expired_jobs, as 0008's rollback restores it, under the name bench_reap_before."""
    body = re.search(r"CREATE OR REPLACE FUNCTION docstatus\.reap_expired_jobs\(\).*?\n\$\$;\n",
                     ROLLBACK.read_text(), re.S).group(0)
    conn.execute(body.replace("docstatus.reap_expired_jobs()", "docstatus.bench_reap_before()"))


def expire_batch(conn: psycopg.Connection, jobs: int) -> None:
    conn.execute("SELECT count(*) FROM docstatus.claim_jobs('bench', '1 minute', %s, true)", (jobs,))
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE status = 'pending extraction' AND worker_id IS NOT NULL")


def timed_reap(conn: psycopg.Connection, function: str, jobs: int) -> float:
    expire_batch(conn, jobs)
    started = time.perf_counter()
    reaped = conn.execute(
        {"before": "SELECT count(*) FROM docstatus.bench_reap_before()",
         "after": "SELECT count(*) FROM docstatus.reap_expired_jobs()"}[function]).fetchone()[0]
    elapsed = time.perf_counter() - started
    return elapsed / max(reaped, 1) * 1e6


def refuse_one_job(conn: psycopg.Connection) -> None:
    """A trigger that fails the reaping of the lowest expired job, so 0008 redoes the pass job by job."""
    conn.execute("""
        CREATE FUNCTION public.bench_refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'failed' AND OLD.id = (SELECT min(id) FROM docstatus.extraction_jobs
                                                  WHERE status = 'pending extraction' AND worker_id IS NOT NULL) THEN
                RAISE EXCEPTION 'refused by the bench';
            END IF;
            RETURN NEW;
        END $$""")
    conn.execute("CREATE TRIGGER bench_refuse_one BEFORE UPDATE OF status ON docstatus.extraction_jobs"
                 " FOR EACH ROW EXECUTE FUNCTION public.bench_refuse_one()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--jobs", type=int, default=2000, help="expired jobs per reaper pass")
    parser.add_argument("--rounds", type=int, default=6, help="alternating passes per figure")
    args = parser.parse_args()
    with scratch_database(args.dsn, BENCH_DB) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE docstatus.settings SET notify_events = false, max_attempts = 1000000,"
                     " retry_base_delay = '0', retry_max_delay = '0'")
        conn.execute("SELECT docstatus.validate_document(d.id, true, 'application/pdf')"
                     "  FROM generate_series(1, %s) AS n,"
                     "       LATERAL docstatus.register_document('bench', 'b' || n, 'f.pdf') AS d", (args.jobs,))
        conn.execute("VACUUM ANALYZE")
        install_reaper_before(conn)
        before, after = [], []
        for _ in range(args.rounds):
            before.append(timed_reap(conn, "before", args.jobs))
            after.append(timed_reap(conn, "after", args.jobs))
        before_us, after_us = statistics.median(before), statistics.median(after)
        print(f"{'reaper':<34}{'us/job':>10}{'ratio':>8}")
        print(f"{'0007 (one loop)':<34}{before_us:>10.1f}{1:>8.2f}")
        print(f"{'0008 (one subtransaction)':<34}{after_us:>10.1f}{after_us / before_us:>8.2f}")
        refuse_one_job(conn)
        one_failing = [timed_reap(conn, "after", args.jobs) for _ in range(args.rounds)]
        fallback_us = statistics.median(one_failing)
        print(f"{'0008, one job failing (job by job)':<34}{fallback_us:>10.1f}{fallback_us / before_us:>8.2f}")


if __name__ == "__main__":
    main()
