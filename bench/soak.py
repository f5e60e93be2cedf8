"""Soak: docstatus at a million documents against the same at ten thousand, in one run.

1. Two scratch databases are loaded with completed documents: --small (10,000) and --documents
   (1,000,000), ten events each (10 million), fast: one lifecycle runs through the SQL API,
   then generate_series copies its rows (documents, job, events) with the triggers off; the
   loaded database must then pass the invariant check below, and the counters are folded.
2. On each, --clients threads run full lifecycles (register, validate, claim, ocr, llm, done;
   each call its own transaction) for --seconds, in --rounds slices alternating between the two
   databases, while a maintenance thread runs check_stuck and maintain_history, as the worker
   does. Reported: per-transition latency p50/p99 and the 1M / 10k ratio (target: within 1.2x),
   lifecycles per second, and the server's CPU per lifecycle (hence lifecycles/s per core).
3. At 1M: the operations views, one document's timeline and a subscriber's events_after read
   (median ms of 20 runs), each with whether its plan has a sequential scan of documents,
   jobs or events (target: none); table and index sizes; dead tuples and autovacuum runs.
4. Autovacuum and fillfactor: the 1M soak runs twice more, a minute each, with the server's
   defaults and with per-table autovacuum on documents and extraction_jobs
   (--tuned-scale-factor), reporting dead tuples, autovacuum runs, HOT updates (which a lower
   fillfactor would make room for) and latency for each.

    python bench/soak.py [--dsn DSN] [--documents 1000000] [--small 10000] [--seconds 30] [--clients 2]

Needs a superuser (the load turns triggers off with session_replication_role) and autovacuum
on in the server. Takes minutes and a few GB: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import defaultdict

import psycopg
from psycopg import sql
from scratch import dsn_argument, scratch_database

TRANSITIONS = ("register", "validate", "claim", "ocr", "llm", "done")
BATCH = 100_000  # documents loaded per transaction


# --- loading ------------------------------------------------------------------------------------

def columns(conn, table: str, skip: set[str]) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", (f"docstatus.{table}",)) if name not in skip]


def load(dsn: str, documents: int, spread_days: float = 0.0) -> float:
    """Loads `documents` completed documents; returns the seconds it took. With ``spread_days``,
    document g is ``g * step`` older than the newest, its job and events with it (as a real month
    of traffic would be, rather than a million documents all finished in the last minute)."""
    started = time.monotonic()
    step = f"{spread_days * 86400 / documents:.6f} seconds"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The template: one lifecycle through the API (ids 1: document, job; events 1..10).
        conn.execute("SELECT docstatus.register_document('soak', 'soak/1', 'doc.pdf', 'application/pdf', 18231)")
        conn.execute("SELECT docstatus.validate_document(1, true, 'application/pdf')")
        conn.execute("SELECT docstatus.claim_extraction_job('loader')")
        for mark in ("mark_ocr_running", "mark_llm_running", "mark_processing_done"):
            conn.execute(sql.SQL("SELECT docstatus.{}(1, 'loader')").format(sql.Identifier(mark)))
        (per_document,) = conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone()
        age = sql.SQL("(({last}::bigint - g) * {step}::interval)").format(
            last=sql.Literal(documents), step=sql.Literal(step))
        times = {"documents": ("created_at", "updated_at", "status_entered_at"),
                 "extraction_jobs": ("created_at", "started_at", "completed_at", "not_before"),
                 "status_events": ("occurred_at",)}

        def copies(table, fixed: dict[str, sql.Composable], skip: set[str], source: sql.Composable):
            copied = [c for c in columns(conn, table, skip) if c not in fixed]
            shifted = {c: sql.SQL("t.{} - {}").format(sql.Identifier(c), age) for c in times[table] if c in copied}
            names = [*fixed, *copied]
            values = [*fixed.values(), *(shifted.get(c, sql.SQL("t.{}").format(sql.Identifier(c))) for c in copied)]
            return sql.SQL("INSERT INTO docstatus.{} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(values),
                source)

        g = sql.SQL("g")
        series = "generate_series(%(first)s::bigint, %(last)s::bigint) g, docstatus.{} t WHERE t.{} = 1"
        insert_documents = copies("documents", {"id": g, "blob_name": sql.SQL("'soak/' || g"),
                                                "filename": sql.SQL("'doc-' || g || '.pdf'")}, {"id", "blob_name"},
                                  sql.SQL(series.format("documents", "id")))
        insert_jobs = copies("extraction_jobs", {"id": g, "document_id": g}, {"id", "document_id"},
                             sql.SQL(series.format("extraction_jobs", "id")))
        insert_events = copies(
            "status_events", {"id": sql.SQL("(g - 1) * %(per)s::bigint + t.id"), "document_id": g,
                              "job_id": sql.SQL("CASE WHEN t.job_id IS NOT NULL THEN g END")},
            {"id", "tx_id", "document_id", "job_id"}, sql.SQL(series.format("status_events", "document_id")))
        for first in range(2, documents + 1, BATCH):
            last = min(first + BATCH - 1, documents)
            params = {"first": first, "last": last, "per": per_document}
            with conn.transaction():
                # Triggers off: these rows are copies of a lifecycle the triggers already judged.
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute(insert_documents, params)
                conn.execute(insert_jobs, params)
                conn.execute(insert_events, params)
        for table in ("documents", "extraction_jobs", "status_events"):
            conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM docstatus.{}))")
                         .format(sql.Literal(f"docstatus.{table}"), sql.Identifier(table)))
        check_invariants(conn, documents, per_document)
        conn.execute("SELECT docstatus.fold_status_counters()")
        conn.execute("VACUUM (ANALYZE) docstatus.documents, docstatus.extraction_jobs, docstatus.status_events")
        # The load's dirty pages are written now, not by the checkpointer during the measured soak.
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


def check_invariants(conn, documents: int, per_document: int) -> None:
    """What the triggers would have enforced, checked over the loaded rows."""
    checks = {
        "every document completed": (
            "SELECT count(*) FROM docstatus.documents WHERE (text_extraction_status, processing_status)"
            " = ('completed', 'done')", documents),
        "one done job each, none active": (
            "SELECT count(*) FROM docstatus.extraction_jobs j JOIN docstatus.documents d ON d.id = j.document_id"
            " WHERE j.status = 'done' AND j.completed_at IS NOT NULL", documents),
        "no active job": ("SELECT count(*) FROM docstatus.extraction_jobs WHERE status = 'pending extraction'", 0),
        "every event names a document": (
            "SELECT count(*) FROM docstatus.status_events e WHERE NOT EXISTS"
            " (SELECT FROM docstatus.documents d WHERE d.id = e.document_id)", 0),
        "the events of each document": ("SELECT count(*) FROM docstatus.status_events", documents * per_document),
        # A sample: each one's last processing event is its processing_status.
        "last event = status (sample)": (
            "SELECT count(*) FROM (SELECT d.id, d.processing_status, (SELECT e.to_status FROM docstatus.status_events e"
            "  WHERE e.document_id = d.id AND e.kind = 'processing' ORDER BY e.id DESC LIMIT 1) AS last"
            "  FROM docstatus.documents d TABLESAMPLE SYSTEM (1)) s WHERE last IS DISTINCT FROM processing_status", 0),
    }
    for name, (query, expected) in checks.items():
        (found,) = conn.execute(query).fetchone()
        if found != expected:
            raise SystemExit(f"invariant check failed: {name}: {found} != {expected}")


# --- the soak -----------------------------------------------------------------------------------

def lifecycles(dsn: str, seconds: float, clients: int) -> tuple[dict[str, list[float]], int, float | None]:
    """Full lifecycles from `clients` threads for `seconds`: latencies (ms) per transition, how
    many lifecycles, and the server's CPU seconds meanwhile (None when it cannot tell)."""
    latencies: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    stop = threading.Event()
    names = itertools.count()
    done = [0]
    errors: list[BaseException] = []

    def client(worker: str) -> None:
        mine: dict[str, list[float]] = defaultdict(list)
        count = 0
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                def timed(step: str, query: str, params: tuple):
                    started = time.perf_counter()
                    row = conn.execute(query, params).fetchone()
                    mine[step].append((time.perf_counter() - started) * 1000)
                    return row
                while not stop.is_set():
                    (doc_id,) = timed("register", "SELECT id FROM docstatus.register_document('soak', %s, 'f.pdf')",
                                      (f"live/{worker}/{next(names)}",))
                    timed("validate", "SELECT 1 FROM docstatus.validate_document(%s, true, 'application/pdf')",
                          (doc_id,))
                    claimed = timed("claim", "SELECT document_id FROM docstatus.claim_extraction_job(%s)", (worker,))
                    if claimed is None:
                        continue
                    for step, mark in (("ocr", "mark_ocr_running"), ("llm", "mark_llm_running"),
                                       ("done", "mark_processing_done")):
                        # mark is one of the three names above, never input.
                        timed(step, f"SELECT 1 FROM docstatus.{mark}(%s, %s)", (claimed[0], worker))
                    count += 1
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        with lock:
            for step, values in mine.items():
                latencies[step].extend(values)
            done[0] += count

    def maintenance() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(5.0):
                conn.execute("SELECT count(*) FROM docstatus.check_stuck()")
                conn.execute("SELECT docstatus.maintain_history()")

    threads = [threading.Thread(target=client, args=(f"soak-{n}",)) for n in range(clients)]
    threads.append(threading.Thread(target=maintenance))
    cpu_before = server_cpu_seconds(dsn)
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # the soak's fixed duration
    stop.set()
    for thread in threads:
        thread.join()
    cpu_after = server_cpu_seconds(dsn)
    if errors:
        raise errors[0]
    # The server's CPU per lifecycle is what caps lifecycles per core, whatever else runs.
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return latencies, done[0], cpu


def server_cpu_seconds(dsn: str) -> float | None:
    """CPU time the server's processes have used so far (Linux, server on this host): the
    postmaster's own and its exited children's, plus its live children's. None elsewhere."""
    def fields(pid) -> list[str]:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...

    try:
        with psycopg.connect(dsn) as conn:
            postmaster = int(fields(conn.info.backend_pid)[1])
        own = fields(postmaster)
        ticks = sum(int(value) for value in own[11:15])  # utime, stime, cutime, cstime
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    child = fields(entry)
                except OSError:
                    continue  # it ended meanwhile: its time is in the postmaster's cutime now
                if int(child[1]) == postmaster:
                    ticks += int(child[11]) + int(child[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, psycopg.Error):
        return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


# --- reads, sizes, vacuum -------------------------------------------------------------------------

READS = {
    "status_counts": "SELECT * FROM docstatus.status_counts",
    "document_overview (one)": "SELECT * FROM docstatus.document_overview WHERE document_id = %(doc)s",
    "stuck_documents": "SELECT * FROM docstatus.stuck_documents",
    "failure_summary": "SELECT * FROM docstatus.failure_summary",
    "event_delivery": "SELECT * FROM docstatus.event_delivery",
    "timeline (one document)": "SELECT * FROM docstatus.status_events WHERE document_id = %(doc)s ORDER BY id",
    "events_after (subscriber)": "SELECT * FROM docstatus.events_after(%(tx)s::text::xid8, %(id)s, 1000)",
}
WATCHED = ("documents", "extraction_jobs", "status_events")


def seq_scans(plan: dict) -> list[str]:
    """Relations of documents, jobs or events (partitions included) the plan reads whole."""
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name", "").startswith(WATCHED):
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found.extend(seq_scans(child))
    return found


def reads(dsn: str) -> list[tuple[str, float, list[str]]]:
    """Median ms of each read, and the non-empty relations its plan scans sequentially (a plan
    may scan an empty partition, such as one of the coming days: that reads nothing)."""
    results = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE docstatus.status_events")
        empty = {name for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'docstatus'::regnamespace AND relkind = 'r'"
            " AND pg_relation_size(oid) = 0")}
        (top,) = conn.execute("SELECT max(id) FROM docstatus.documents").fetchone()
        tx, event_id = conn.execute("SELECT tx_id::text::bigint, id FROM docstatus.status_events"
                                    " ORDER BY tx_id DESC, id DESC OFFSET 500 LIMIT 1").fetchone()
        for name, query in READS.items():
            timings = []
            for _ in range(20):
                params = {"doc": random.randint(1, top), "tx": tx, "id": event_id}
                started = time.perf_counter()
                conn.execute(query, params).fetchall()
                timings.append((time.perf_counter() - started) * 1000)
            params = {"doc": random.randint(1, top), "tx": tx, "id": event_id}
            explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(query)
            (plan,) = conn.execute(explain, params).fetchone()
            scans = seq_scans(plan[0]["Plan"])
            if name.startswith("events_after"):  # a function: its plan is inside
                (inner,) = conn.execute(
                    "EXPLAIN (FORMAT JSON) SELECT * FROM docstatus.status_events"
                    " WHERE (tx_id, id) > (%(tx)s::text::xid8, %(id)s)"
                    " AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id, id LIMIT 1000",
                    params).fetchone()
                scans = seq_scans(inner[0]["Plan"])
            results.append((name, statistics.median(timings), [scan for scan in scans if scan not in empty]))
    return results


def table_stats(dsn: str) -> dict[str, dict[str, int]]:
    """Sizes and vacuum counters per table; status_events summed over its partitions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        rows = conn.execute(
            "SELECT CASE WHEN c.relname LIKE 'status\\_events%%' THEN 'status_events' ELSE c.relname END,"
            "       sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid)), sum(s.n_live_tup), sum(s.n_dead_tup),"
            "       sum(s.n_tup_upd), sum(s.n_tup_hot_upd), sum(s.autovacuum_count), sum(s.autoanalyze_count)"
            "  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.schemaname = 'docstatus' AND (c.relname IN ('documents', 'extraction_jobs')"
            "       OR c.relname LIKE 'status\\_events%%')"
            " GROUP BY 1 ORDER BY 1").fetchall()
    keys = ("table_bytes", "index_bytes", "live", "dead", "updates", "hot_updates", "autovacuums", "autoanalyzes")
    return {name: dict(zip(keys, map(int, values), strict=True)) for name, *values in rows}


# --- report -------------------------------------------------------------------------------------

def mb(value: int) -> str:
    return f"{value / 1024 / 1024:,.0f} MB"


def print_latencies(small, big, small_rate, big_rate, seconds, labels) -> None:
    print(f"\nlatency per transition, ms (p50 / p99), {seconds:g} s each")
    print(f"{'transition':<10} {labels[0]:>16} {labels[1]:>16} {'p50 ratio':>10} {'p99 ratio':>10}")
    for step in TRANSITIONS:
        s50, s99 = percentile(small[step], 0.5), percentile(small[step], 0.99)
        b50, b99 = percentile(big[step], 0.5), percentile(big[step], 0.99)
        print(f"{step:<10} {s50:7.2f} / {s99:6.2f} {b50:7.2f} / {b99:6.2f} {b50 / s50:10.2f} {b99 / s99:10.2f}")
    print(f"lifecycles/s: {labels[0]} {small_rate:.0f}, {labels[1]} {big_rate:.0f} (ratio {big_rate / small_rate:.2f})")


def soak(dsn: str, seconds: float, clients: int, totals: dict) -> None:
    """One slice of lifecycles, added to the running totals of that database."""
    latencies, count, cpu = lifecycles(dsn, seconds, clients)
    for step, values in latencies.items():
        totals["latencies"][step].extend(values)
    totals["lifecycles"] += count
    totals["seconds"] += seconds
    if cpu is None or totals["cpu"] is None:
        totals["cpu"] = None
    else:
        totals["cpu"] += cpu


def new_totals() -> dict:
    return {"latencies": defaultdict(list), "lifecycles": 0, "seconds": 0.0, "cpu": 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dsn_argument(parser)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="soak time on each database")
    parser.add_argument("--rounds", type=int, default=3, help="alternating slices the soak time is cut into")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--tuned-scale-factor", type=float, default=0.005,
                        help="autovacuum_vacuum_scale_factor set on documents and extraction_jobs"
                             " for the second 1M run")
    args = parser.parse_args()

    with psycopg.connect(args.dsn) as conn:
        (autovacuum,) = conn.execute("SHOW autovacuum").fetchone()
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync',"
            " 'autovacuum_vacuum_scale_factor', 'autovacuum_naptime', 'max_wal_size')").fetchall())
    if autovacuum != "on":
        print("warning: autovacuum is off on this server: dead tuple figures mean nothing", file=sys.stderr)
    print(f"server: {json.dumps(settings)}; load average {os.getloadavg()[0]:.1f} at start; {os.cpu_count()} CPUs")

    labels = (f"{args.small:,} docs", f"{args.documents:,} docs")
    with scratch_database(args.dsn, "docstatus_bench_soak_small", template="template0") as small_dsn, \
            scratch_database(args.dsn, "docstatus_bench_soak", template="template0") as big_dsn:
        loaded = load(small_dsn, args.small)
        print(f"loaded {args.small:,} documents in {loaded:.1f} s")
        loaded = load(big_dsn, args.documents)
        stats = table_stats(big_dsn)
        print(f"loaded {args.documents:,} documents ({stats['status_events']['live']:,} events) in {loaded:.1f} s"
              f" ({args.documents / loaded:,.0f} documents/s); load average {os.getloadavg()[0]:.1f}")

        # Alternating slices: whatever else the machine does falls on both sizes alike.
        small, big = new_totals(), new_totals()
        for _ in range(args.rounds):
            soak(small_dsn, args.seconds / args.rounds, args.clients, small)
            soak(big_dsn, args.seconds / args.rounds, args.clients, big)
        after_default = table_stats(big_dsn)
        print_latencies(small["latencies"], big["latencies"], small["lifecycles"] / small["seconds"],
                        big["lifecycles"] / big["seconds"], args.seconds, labels)
        for label, totals in zip(labels, (small, big), strict=True):
            if totals["cpu"] is not None and totals["lifecycles"]:
                per_lifecycle = totals["cpu"] / totals["lifecycles"] * 1000
                print(f"server CPU at {label}: {per_lifecycle:.2f} ms per lifecycle"
                      f" ({1000 / per_lifecycle:,.0f} lifecycles/s per core)")
        print(f"load average {os.getloadavg()[0]:.1f}")

        print(f"\nreads at {labels[1]}, median of 20 (ms), sequential scans of documents/jobs/events")
        for name, median, scans in reads(big_dsn):
            print(f"  {name:<28} {median:8.2f}   {'none' if not scans else ', '.join(scans)}")

        print(f"\nsizes at {labels[1]} after the soak")
        for name, values in after_default.items():
            print(f"  {name:<16} table {mb(values['table_bytes']):>9}  indexes {mb(values['index_bytes']):>9}"
                  f"  live {values['live']:>11,}  dead {values['dead']:>8,}")

        # Autovacuum, one minute each way (autovacuum_naptime): the server's defaults, then
        # per-table settings on the two tables every lifecycle updates.
        defaults = new_totals()
        soak(big_dsn, 60.0, args.clients, defaults)
        after_defaults_soak = table_stats(big_dsn)
        with psycopg.connect(big_dsn, autocommit=True) as conn:
            for table in ("documents", "extraction_jobs"):
                conn.execute(sql.SQL("ALTER TABLE docstatus.{} SET (autovacuum_vacuum_scale_factor = {},"
                                     " autovacuum_vacuum_threshold = 1000)").format(
                    sql.Identifier(table), sql.Literal(args.tuned_scale_factor)))
        tuned = new_totals()
        soak(big_dsn, 60.0, args.clients, tuned)
        after_tuned = table_stats(big_dsn)

        print(f"\nautovacuum at {labels[1]}: server defaults, then autovacuum_vacuum_scale_factor ="
              f" {args.tuned_scale_factor:g} (threshold 1000) on documents and extraction_jobs, 60 s each")
        for label, start, end, totals in (("defaults", after_default, after_defaults_soak, defaults),
                                          ("tuned", after_defaults_soak, after_tuned, tuned)):
            for table in ("documents", "extraction_jobs"):
                updates = end[table]["updates"] - start[table]["updates"]
                hot = end[table]["hot_updates"] - start[table]["hot_updates"]
                print(f"  {label:<8} {table:<16} dead at end {end[table]['dead']:>8,}"
                      f"  autovacuums {end[table]['autovacuums'] - start[table]['autovacuums']:>3}"
                      f"  HOT updates {hot / updates if updates else 0:6.1%}")
            latencies = totals["latencies"]
            claim, done = latencies["claim"], latencies["done"]
            print(f"  {label:<8} lifecycles/s {totals['lifecycles'] / totals['seconds']:.0f},"
                  f" claim p50/p99 {percentile(claim, 0.5):.2f}/{percentile(claim, 0.99):.2f} ms,"
                  f" done p50/p99 {percentile(done, 0.5):.2f}/{percentile(done, 0.99):.2f} ms")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
