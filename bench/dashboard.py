"""Dashboard: server time of the overview and the document list at a million documents, and
commit-to-browser latency of a status change with 100 open event streams.

1. A scratch database is loaded with --documents completed documents (bench/soak.py's loader:
   one lifecycle through the SQL API, copied by generate_series), then a working set through
   the API: documents queued, running, failed with a few error patterns, some past their SLA.
2. The dashboard runs in this process (uvicorn in a thread, read-only, as the command runs it)
   and each page is fetched over HTTP --rounds times: median and p95 in ms. Target: under
   50 ms for the overview and the document list (first page, page 1,000, a state filter, a
   filename search that matches and one that matches nothing, which reads every document).
3. --clients event streams stay open; --changes status changes are committed from another
   connection, one every 50 ms; for each, the time from its commit returning to each stream
   receiving it. Target: p99 under 1 s.
4. The write cost of the one index the dashboard added (status_events_by_time, BRIN): register
   and validate --writes documents with and without it, in the same run.

    python bench/dashboard.py [--dsn DSN] [--documents 1000000] [--clients 100] [--changes 50]

Needs a superuser (the loader turns triggers off). Takes minutes at a million documents.
"""

from __future__ import annotations

import argparse
import http.client
import select
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from psycopg import sql
from scratch import dsn_argument, scratch_database
from soak import load

ERRORS = ["OCR engine crashed: timeout after {} s", "LLM returned invalid JSON at byte {}", "disk full on /dev/sd{}"]


def working_set(dsn: str, count: int) -> None:
    """Documents in every non-final state and failed ones, through the SQL API."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(count):
            (doc,) = conn.execute("SELECT id FROM docstatus.register_document('bench', %s, %s, 'application/pdf', 100)",
                                  (f"work/{i}", f"work-{i}.pdf")).fetchone()
            if i % 5 == 0:
                continue  # uploaded
            conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc,))
            if i % 5 == 1:
                continue  # queued
            conn.execute("SELECT docstatus.mark_ocr_running(%s)", (doc,))
            if i % 5 == 2:
                continue
            conn.execute("SELECT docstatus.mark_processing_failed(%s, %s)", (doc, ERRORS[i % 3].format(i)))
        # Some of the moving ones are past their SLA: the stuck list has rows.
        conn.execute("UPDATE docstatus.stage_slas SET max_duration = '1 second' WHERE state = 'uploaded'")
        conn.execute("SELECT docstatus.fold_status_counters()")
        conn.execute("ANALYZE")


class Served:
    def __init__(self, dsn: str) -> None:
        import uvicorn

        from docstatus.dashboard import app as app_module
        from docstatus.dashboard.app import create_app

        # Every request reads: the times are the reads', not the shared one-second cache's.
        app_module.SHARED_PAGE_TTL = 0.0
        from docstatus.dashboard.settings import DashboardSettings

        self.app = create_app(DashboardSettings(dsn=dsn, poll_interval=0.2, keepalive=5))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def get(self, path: str) -> tuple[float, int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        elapsed = time.perf_counter() - started
        conn.close()
        return elapsed * 1000, response.status, body

    def stop(self) -> None:
        self.app.state.dashboard.hub.close_streams()
        self.server.should_exit = True
        self.thread.join(10)


def page_times(served: Served, pages: dict[str, str], rounds: int) -> None:
    print(f"{'page':<34} {'median ms':>10} {'p95 ms':>8}")
    for label, path in pages.items():
        served.get(path)  # warm
        times = []
        for _ in range(rounds):
            ms, status, _ = served.get(path)
            assert status == 200, (path, status)
            times.append(ms)
        times.sort()
        print(f"{label:<34} {statistics.median(times):>10.1f} {times[int(len(times) * 0.95) - 1]:>8.1f}")


def stream_latency(served: Served, dsn: str, clients: int, changes: int) -> list[float]:
    socks = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(f"GET /events HTTP/1.0\r\nHost: 127.0.0.1:{served.port}\r\n\r\n".encode())
        socks.append(sock)
    time.sleep(1.0)
    committed: dict[int, float] = {}
    # (document, when it arrived): matched with the commit times at the end, since an event can
    # reach a stream before the writing thread has noted its commit time.
    arrivals: list[tuple[int, float]] = []
    buffers = {sock: b"" for sock in socks}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.1)
            now = time.perf_counter()
            for sock in ready:
                buffers[sock] += sock.recv(65536)
                while b"\n\n" in buffers[sock]:
                    block, _, buffers[sock] = buffers[sock].partition(b"\n\n")
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            arrivals.append((int(line.split(b'"document_id": ')[1].split(b",")[0]), now))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(changes):
            with conn.transaction():
                (doc,) = conn.execute("SELECT id FROM docstatus.register_document('bench', %s, 'live.pdf')",
                                      (f"live/{i}",)).fetchone()
            committed[doc] = time.perf_counter()
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while len(arrivals) < changes * clients * 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    reader.join()
    for sock in socks:
        sock.close()
    latencies = [max(at - committed[doc], 0.0) for doc, at in arrivals if doc in committed]
    expected = changes * clients * 2  # register writes two events
    if len(latencies) != expected:
        print(f"warning: {len(latencies)} deliveries, expected {expected}")
    return sorted(latencies)


INDEXES = {
    "status_events_by_time": "CREATE INDEX status_events_by_time ON docstatus.status_events USING brin (occurred_at)",
    "documents_failed": "CREATE INDEX documents_failed ON docstatus.documents (id)"
                        " WHERE text_extraction_status = 'failed'",
}


# One statement, so the client's round trips (and their noise) stay out of the comparison.
LIFECYCLES = """
DO $$
DECLARE
    v_id bigint;
BEGIN
    FOR i IN 1..{writes} LOOP
        v_id := (docstatus.register_document('cost', 'cost/' || clock_timestamp() || '/' || i, 'c.pdf',
                                             'application/pdf', 1)).id;
        PERFORM docstatus.validate_document(v_id, true, 'application/pdf');
        PERFORM docstatus.mark_ocr_running(v_id);
        PERFORM docstatus.mark_processing_failed(v_id, 'disk full');
    END LOOP;
END;
$$"""


def write_cost(dsn: str, writes: int, rounds: int = 6) -> None:
    """Each index the dashboard added, against the same writes without it: register, validate,
    ocr, fail (a failure enters documents_failed; every step writes events), in alternating
    rounds so that drift of a shared machine hits both alike."""
    lifecycles = sql.SQL(LIFECYCLES.format(writes=int(writes)))

    def run(conn) -> float:
        started = time.perf_counter()
        conn.execute(lifecycles)
        return (time.perf_counter() - started) / writes * 1e6

    with psycopg.connect(dsn, autocommit=True) as conn:
        run(conn)  # warm
        for name, ddl in INDEXES.items():
            results: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(rounds):
                results["with"].append(run(conn))
                conn.execute(sql.SQL("DROP INDEX docstatus.{}").format(sql.Identifier(name)))
                results["without"].append(run(conn))
                conn.execute(ddl)
            with_, without = statistics.median(results["with"]), statistics.median(results["without"])
            print(f"register+validate+ocr+fail per document: {with_:.0f} µs with {name}, {without:.0f} µs "
                  f"without: ratio {with_ / without:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--working-set", type=int, default=2_000)
    parser.add_argument("--spread-days", type=float, default=30.0,
                        help="the loaded documents' history spans this many days up to now")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()

    with scratch_database(args.dsn, "docstatus_bench_dashboard") as dsn:
        seconds = load(dsn, args.documents, args.spread_days)
        working_set(dsn, args.working_set)
        print(f"loaded {args.documents:,} documents + {args.working_set:,} in a working set in {seconds:.0f} s")
        with psycopg.connect(dsn) as conn:
            (top,) = conn.execute("SELECT max(id) FROM docstatus.documents").fetchone()
        served = Served(dsn)
        try:
            page_times(served, {
                "overview": "/",
                "documents, first page": "/documents",
                "documents, page 1,000": f"/documents?after={top - 50 * 999}",
                "documents, state=failed": "/documents?state=failed",
                "documents, state=failed past all": f"/documents?state=failed&after={top - args.working_set}",
                "documents, created 20 days ago": "/documents?created_from={}&created_to={}".format(
                    *(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - days * 86400)) for days in (20, 19))),
                "documents, state=completed deep": f"/documents?state=completed&after={top - 500_000}",
                "documents, filename 'doc-99'": "/documents?filename_contains=doc-99",
                "documents, filename no match": "/documents?filename_contains=nomatch",
                "one document": f"/documents/{top}",
                "state machine": "/states",
            }, args.rounds)
            latencies = stream_latency(served, dsn, args.clients, args.changes)
            if latencies:
                p = lambda q: latencies[min(int(len(latencies) * q), len(latencies) - 1)] * 1000  # noqa: E731
                print(f"commit to browser, {args.clients} streams, {args.changes} changes: p50 {p(0.5):.1f} ms, "
                      f"p99 {p(0.99):.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        finally:
            served.stop()
        write_cost(dsn, args.writes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
