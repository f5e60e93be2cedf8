"""Sixteen threads share one pool through one Client, and every connection comes back."""

import threading
from concurrent.futures import ThreadPoolExecutor

from psycopg_pool import ConnectionPool

from docstatus import Client, JobStatus

from .helpers import run_lifecycle

THREADS = 16
LIFECYCLES_PER_THREAD = 10


def test_sixteen_threads_share_a_pool_without_leaking(db_dsn, conn):
    with ConnectionPool(db_dsn, min_size=2, max_size=6, open=True, name="client-test") as pool:
        client = Client(pool)
        start = threading.Barrier(THREADS)

        def work(index):
            start.wait()
            return [run_lifecycle(client, f"worker-{index}", fail_once=n == 3) for n in range(LIFECYCLES_PER_THREAD)]

        with ThreadPoolExecutor(THREADS) as executor:
            documents = [doc for result in executor.map(work, range(THREADS)) for doc in result]

        assert len(set(documents)) == THREADS * LIFECYCLES_PER_THREAD
        assert all(client.get_document(doc).processing_status == "done" for doc in documents)
        assert all(client.list_jobs(doc)[-1].status is JobStatus.DONE for doc in documents)

        stats = pool.get_stats()
        assert stats["requests_waiting"] == 0
        assert stats["pool_available"] == stats["pool_size"]  # every borrowed connection came back
        assert stats.get("requests_errors", 0) == 0
        # ...and none of them sits in an open transaction on the server.
        states = conn.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = '' AND datname = current_database()"
            " AND pid <> pg_backend_pid()").fetchall()
        assert states and all(state == "idle" for (state,) in states)
