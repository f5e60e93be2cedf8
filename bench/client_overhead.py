"""What the Python client costs: the full lifecycle through docstatus.Client against the same
SQL function calls through bare psycopg, in one run, on the same server and database.

Lifecycle: register, validate, claim, ocr, llm, done, each its own transaction, one client on
an autocommit connection (the client adds no round trip there), and the same again over a
psycopg_pool.ConnectionPool against bare `with pool.connection()` calls. The two paths alternate
lifecycle by lifecycle, so drift in the server's load hits both alike.

    python bench/client_overhead.py [--dsn DSN] [--lifecycles 1000] [--rounds 6]

The DSN names a server where the bench may create and drop its own database (default: the local
server, or DOCSTATUS_BENCH_DSN). Target: the client keeps at least 90% of bare throughput.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool
from scratch import dsn_argument, scratch_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_client"))
from docstatus import Client

BENCH_DB = "docstatus_bench_client"

_blobs = itertools.count()


def bare_lifecycle(execute: Callable) -> None:
    """The six calls as anyone would write them with psycopg alone."""
    doc_id = execute("SELECT * FROM docstatus.register_document(%s, %s, %s, %s, %s)",
                     ("bench", f"b{next(_blobs)}", "f.pdf", "application/pdf", 1000))[0]
    execute("SELECT * FROM docstatus.validate_document(%s, %s, %s)", (doc_id, True, "application/pdf"))
    execute("SELECT * FROM docstatus.claim_extraction_job(%s)", ("w1",))
    execute("SELECT * FROM docstatus.mark_ocr_running(%s, %s)", (doc_id, "w1"))
    execute("SELECT * FROM docstatus.mark_llm_running(%s, %s)", (doc_id, "w1"))
    execute("SELECT * FROM docstatus.mark_processing_done(%s, %s)", (doc_id, "w1"))


def client_lifecycle(client: Client) -> None:
    document = client.register_document("bench", f"b{next(_blobs)}", "f.pdf", "application/pdf", 1000)
    client.validate_document(document.id, True, "application/pdf")
    client.claim_extraction_job("w1")
    client.mark_ocr_running(document.id, "w1")
    client.mark_llm_running(document.id, "w1")
    client.mark_processing_done(document.id, "w1")


def compare(name: str, bare: Callable[[], None], via_client: Callable[[], None], lifecycles: int, rounds: int):
    """Interleaves the two paths lifecycle by lifecycle, so the server's load (other databases,
    checkpoints, autovacuum) weighs on both alike; the ratio is of total time per path."""
    for _ in range(max(20, lifecycles // 20)):  # warm up: prepared statements, caches
        bare()
        via_client()
    clock = time.perf_counter
    ratios, bare_total, client_total = [], 0.0, 0.0
    for _ in range(rounds):
        bare_time = client_time = 0.0
        for _ in range(lifecycles):
            started = clock()
            bare()
            middle = clock()
            via_client()
            bare_time += middle - started
            client_time += clock() - middle
        ratios.append(bare_time / client_time)
        bare_total += bare_time
        client_total += client_time
    count = lifecycles * rounds
    print(f"{name:<24} bare {count / bare_total:7.0f} lifecycles/s   client {count / client_total:7.0f} lifecycles/s   "
          f"ratio {bare_total / client_total:5.3f}   (per round {min(ratios):.3f}-{max(ratios):.3f})")
    return bare_total / client_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dsn_argument(parser)
    parser.add_argument("--lifecycles", type=int, default=1000, help="lifecycles per round and path")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    with scratch_database(args.dsn, BENCH_DB) as dsn:
        print(f"client overhead: {args.lifecycles} lifecycles x {args.rounds} rounds per path, 6 transactions each")

        with psycopg.connect(dsn, autocommit=True) as bare_conn, psycopg.connect(dsn, autocommit=True) as client_conn:
            client = Client(client_conn)
            ratio = compare("autocommit connection", lambda: bare_lifecycle(
                lambda query, params: bare_conn.execute(query, params).fetchone()),
                lambda: client_lifecycle(client), args.lifecycles, args.rounds)

        with ConnectionPool(dsn, min_size=1, max_size=1, open=True) as bare_pool, \
                ConnectionPool(dsn, min_size=1, max_size=1, open=True) as client_pool:
            def pooled(query, params):
                with bare_pool.connection() as conn:
                    return conn.execute(query, params).fetchone()

            client = Client(client_pool)
            pool_ratio = compare("pool (non-autocommit)", lambda: bare_lifecycle(pooled),
                                 lambda: client_lifecycle(client), args.lifecycles, args.rounds)
        print(f"target >= 0.90: autocommit {'met' if ratio >= 0.9 else 'MISSED'}, "
              f"pool {'met' if pool_ratio >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
