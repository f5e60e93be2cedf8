"""The database's own share of the hot path: pgbench, the SQL API against bare statements, and
the current schema against an older one, side by side in one throwaway cluster.

    python bench/hot_path.py [--baseline-ref main] [--seconds 5] [--clients 1,2,4]

A fresh cluster (PostgreSQL from /usr/lib/postgresql/*/bin, synchronous_commit on, TCP on
127.0.0.1) holds two databases: "new" with this checkout's schema.sql, "old" with the schema.sql
of --baseline-ref (git show). Each also gets trigger-less copies of documents and
extraction_jobs (schema bare), which the bare scripts change with plain INSERT/UPDATE.

pgbench runs each script with -M prepared; every API call is its own transaction:

- lifecycle: register, validate, claim, ocr, llm, done (6 transactions); the API path once per
  notify mode (new: each, per_transaction, throttled, off; old: notify_events on and off).
- claim+finish on a full queue: claim_jobs(p_start_ocr => true), mark_llm_running,
  mark_processing_done (3 transactions); bare: FOR UPDATE SKIP LOCKED and the same row changes;
  the API path with notify modes each, throttled and off (old: notify_events on and off).

A listener drains both channels during every run, as a subscriber would. Printed per workload
and client count: throughput as a share of bare; at the end, CPU per lifecycle (the cluster's
processes, from /proc, children included) and WAL per lifecycle (pg_current_wal_lsn) as
multiples of bare. The machine's other load cancels in the ratios, not in absolute figures.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "database/schemas/schema.sql"
TICKS = os.sysconf("SC_CLK_TCK")

BARE_SCHEMA = """
CREATE SCHEMA bare;
CREATE TABLE bare.documents (LIKE docstatus.documents INCLUDING ALL);
CREATE TABLE bare.extraction_jobs (LIKE docstatus.extraction_jobs INCLUDING ALL);
CREATE SEQUENCE public.bench_names;
"""

# Worker ids per pgbench client, so the lease checks see the holder.
API_LIFECYCLE = """
SELECT id AS doc FROM docstatus.register_document('bench', 'b' || nextval('public.bench_names'), 'f.pdf') \\gset
SELECT 1 FROM docstatus.validate_document(:doc, true, 'application/pdf');
SELECT document_id AS job_doc FROM docstatus.claim_extraction_job('w' || :client_id) \\gset
SELECT 1 FROM docstatus.mark_ocr_running(:job_doc, 'w' || :client_id);
SELECT 1 FROM docstatus.mark_llm_running(:job_doc, 'w' || :client_id);
SELECT 1 FROM docstatus.mark_processing_done(:job_doc, 'w' || :client_id);
"""

BARE_LIFECYCLE = """
INSERT INTO bare.documents (blob_container, blob_name, filename) VALUES ('bench', 'b' || nextval('public.bench_names'), 'f.pdf') RETURNING id AS doc \\gset
WITH d AS (UPDATE bare.documents SET text_extraction_status = 'ready', mime_type = 'application/pdf', status_entered_at = now(), updated_at = now() WHERE id = :doc RETURNING id) INSERT INTO bare.extraction_jobs (document_id, attempt) SELECT id, 1 FROM d;
WITH j AS (SELECT id FROM bare.extraction_jobs WHERE status = 'pending extraction' AND worker_id IS NULL AND not_before <= now() ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE bare.extraction_jobs e SET worker_id = 'w' || :client_id, lease_expires_at = now() + interval '5 minutes', started_at = now() FROM j WHERE e.id = j.id RETURNING e.document_id AS job_doc \\gset
UPDATE bare.documents SET text_extraction_status = 'in progress', processing_status = 'ocr running', status_entered_at = now(), updated_at = now() WHERE id = :job_doc;
UPDATE bare.documents SET processing_status = 'llm running', status_entered_at = now(), updated_at = now() WHERE id = :job_doc;
WITH d AS (UPDATE bare.documents SET text_extraction_status = 'completed', processing_status = 'done', status_entered_at = now(), updated_at = now() WHERE id = :job_doc RETURNING id) UPDATE bare.extraction_jobs SET status = 'done', completed_at = now() WHERE document_id = (SELECT id FROM d) AND status = 'pending extraction';
"""

API_CLAIM_FINISH = """
SELECT document_id AS job_doc FROM docstatus.claim_jobs('w' || :client_id, interval '5 minutes', 1, true) \\gset
SELECT 1 FROM docstatus.mark_llm_running(:job_doc, 'w' || :client_id);
SELECT 1 FROM docstatus.mark_processing_done(:job_doc, 'w' || :client_id);
"""

BARE_CLAIM_FINISH = """
WITH j AS (SELECT id, document_id FROM bare.extraction_jobs WHERE status = 'pending extraction' AND worker_id IS NULL AND not_before <= now() ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED), d AS (UPDATE bare.documents SET text_extraction_status = 'in progress', processing_status = 'ocr running', status_entered_at = now(), updated_at = now() WHERE id = (SELECT document_id FROM j)) UPDATE bare.extraction_jobs e SET worker_id = 'w' || :client_id, lease_expires_at = now() + interval '5 minutes', started_at = now() FROM j WHERE e.id = j.id RETURNING e.document_id AS job_doc \\gset
UPDATE bare.documents SET processing_status = 'llm running', status_entered_at = now(), updated_at = now() WHERE id = :job_doc;
WITH d AS (UPDATE bare.documents SET text_extraction_status = 'completed', processing_status = 'done', status_entered_at = now(), updated_at = now() WHERE id = :job_doc RETURNING id) UPDATE bare.extraction_jobs SET status = 'done', completed_at = now() WHERE document_id = (SELECT id FROM d) AND status = 'pending extraction';
"""

API_FILL = """
SELECT count(docstatus.validate_document(d.id, true, 'application/pdf'))
  FROM generate_series(1, %s) AS n,
       LATERAL docstatus.register_document('queue', 'q' || nextval('public.bench_names') || '-' || n, 'f.pdf') AS d
"""
BARE_FILL = """
WITH d AS (INSERT INTO bare.documents (blob_container, blob_name, filename, text_extraction_status, mime_type)
           SELECT 'queue', 'q' || nextval('public.bench_names'), 'f.pdf', 'ready', 'application/pdf'
             FROM generate_series(1, %s) RETURNING id)
INSERT INTO bare.extraction_jobs (document_id, attempt) SELECT id, 1 FROM d
"""


CLAIM_MODES_NEW = ("each", "throttled", "off")
CLAIM_MODES_OLD = ("on", "off")


@dataclass
class Run:
    tps: float
    cpu_per_unit: float  # seconds of cluster CPU per script run
    wal_per_unit: float  # bytes


class Cluster:
    """A throwaway cluster in a temporary folder, run by the postgres user when we are root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.home = Path(tempfile.mkdtemp(prefix="docstatus-hot-path-", dir="/var/tmp"))
        self.data = self.home / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.home, user.pw_uid, user.pw_gid)

    def _run(self, *command: str) -> None:
        if self.as_root:
            command = ("runuser", "-u", "postgres", "--", *command)
        subprocess.run(command, cwd="/", check=True, capture_output=True, text=True)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-instructions")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.home} "
                   "-c synchronous_commit=on -c shared_buffers=256MB -c max_connections=40 "
                   "-c checkpoint_timeout=30min -c max_wal_size=4GB")
        self._run(str(self.bindir / "pg_ctl"), "start", "-w", "-D", str(self.data), "-l",
                  str(self.home / "log"), "-o", options)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def cpu_seconds(self) -> float:
        """The postmaster's CPU with its exited children's, plus every live child's."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        total = _stat_ticks(postmaster, children=True)
        for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
            total += _stat_ticks(int(child), children=False)
        return total / TICKS


def _stat_ticks(pid: int, children: bool) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    # After the command: state is field 3; utime 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return utime + stime + (cutime + cstime if children else 0)


class Drain(threading.Thread):
    """LISTENs on both channels and reads every notification, as a subscriber would."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN docstatus_events")
        self.conn.execute("LISTEN docstatus_alerts")
        self.stopping = False
        self.count = 0

    def run(self) -> None:
        try:
            while not self.stopping:
                for _ in self.conn.notifies(timeout=0.2):
                    self.count += 1
        except psycopg.OperationalError:
            pass  # the cluster went away: the run failed and says why

    def stop(self) -> None:
        self.stopping = True
        self.join()
        self.conn.close()


def pgbench(cluster: Cluster, dbname: str, script: str, clients: int, seconds: float) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", dir=cluster.home, delete=False) as f:
        f.write(script)
    os.chmod(f.name, 0o644)
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        cpu_before = cluster.cpu_seconds()
        result = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
             "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-f", f.name, dbname],
            capture_output=True, text=True, check=False)
        cpu = cluster.cpu_seconds() - cpu_before
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (wal_before,)).fetchone()[0]
    os.unlink(f.name)
    done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if result.returncode != 0 or not done or int(done.group(1)) == 0 or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed on {dbname}:\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}")
    count = int(done.group(1))
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", result.stdout).group(1))
    return Run(tps, cpu / count, float(wal) / count)


def install(cluster: Cluster, dbname: str, schema_sql: str) -> None:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname}")  # a fixed name of ours, not input
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(schema_sql)
        conn.execute(BARE_SCHEMA)


def fill(cluster: Cluster, dbname: str, count: int) -> None:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(API_FILL % int(count))
        conn.execute(BARE_FILL % int(count))
        conn.execute("VACUUM ANALYZE")


def set_mode(cluster: Cluster, dbname: str, mode: str, new: bool) -> None:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        if new:
            conn.execute("UPDATE docstatus.settings SET notify_events = true, notify_mode = %s", (mode,))
        else:
            conn.execute("UPDATE docstatus.settings SET notify_events = %s", (mode != "off",))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default="main", help="git ref whose schema.sql is the old code")
    parser.add_argument("--seconds", type=int, default=5, help="length of one pgbench run")
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--queue", type=int, default=12000, help="ready documents added before each claim+finish run")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    bindir = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))

    new_schema = (ROOT / SCHEMA).read_text()
    old_schema = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline_ref}:{SCHEMA}"],
                                capture_output=True, text=True, check=True).stdout
    cluster = Cluster(bindir)
    cluster.start()
    try:
        install(cluster, "new", new_schema)
        install(cluster, "old", old_schema)
        drains = [Drain(cluster.dsn(db)) for db in ("new", "old")]
        for drain in drains:
            drain.start()

        new_modes = ["each", "per_transaction", "throttled", "off"]
        old_modes = ["on", "off"]
        results: dict[tuple[str, int], Run] = {}
        for clients in client_counts:
            # Bare first and between, so drift in the machine's load hits both sides.
            results[("bare lifecycle", clients)] = pgbench(cluster, "new", BARE_LIFECYCLE, clients, args.seconds)
            for mode in new_modes:
                set_mode(cluster, "new", mode, new=True)
                results[(f"new lifecycle {mode}", clients)] = pgbench(cluster, "new", API_LIFECYCLE, clients, args.seconds)
            for mode in old_modes:
                set_mode(cluster, "old", mode, new=False)
                results[(f"old lifecycle {mode}", clients)] = pgbench(cluster, "old", API_LIFECYCLE, clients, args.seconds)
            # A full queue for each claim+finish run; every notify mode but per_transaction (each
            # of the three transactions notifies once either way).
            fill(cluster, "new", args.queue)
            results[("bare claim+finish", clients)] = pgbench(cluster, "new", BARE_CLAIM_FINISH, clients, args.seconds)
            for mode in CLAIM_MODES_NEW:
                set_mode(cluster, "new", mode, new=True)
                fill(cluster, "new", args.queue)
                results[(f"new claim+finish {mode}", clients)] = pgbench(
                    cluster, "new", API_CLAIM_FINISH, clients, args.seconds)
            for mode in CLAIM_MODES_OLD:
                set_mode(cluster, "old", mode, new=False)
                fill(cluster, "old", args.queue)
                results[(f"old claim+finish {mode}", clients)] = pgbench(
                    cluster, "old", API_CLAIM_FINISH, clients, args.seconds)
            print(f"... {clients} client(s) measured", file=sys.stderr, flush=True)
        for drain in drains:
            drain.stop()
        report(results, client_counts, new_modes, old_modes, args)
    finally:
        cluster.stop()
    return 0


def report(results, client_counts, new_modes, old_modes, args) -> None:
    print(f"\nThroughput as a share of bare (pgbench -M prepared, {args.seconds:g} s per run; "
          f"new = this checkout, old = {args.baseline_ref}):\n")
    print("| workload | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in client_counts) + " |")
    print("|---|" + "---|" * len(client_counts))
    rows = [(f"lifecycle, notify {m}", f"new lifecycle {m}", "bare lifecycle") for m in new_modes]
    rows += [(f"old: lifecycle, notify_events {m}", f"old lifecycle {m}", "bare lifecycle") for m in old_modes]
    rows += [(f"claim + finish, full queue, notify {m}", f"new claim+finish {m}", "bare claim+finish")
             for m in CLAIM_MODES_NEW]
    rows += [(f"old: claim + finish, full queue, notify_events {m}", f"old claim+finish {m}", "bare claim+finish")
             for m in CLAIM_MODES_OLD]
    for label, key, bare in rows:
        cells = [f"{results[(key, c)].tps / results[(bare, c)].tps:.2f}" for c in client_counts]
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\nPer lifecycle, averaged over the client counts (CPU of the cluster's processes, WAL):\n")
    print("| path | lifecycles/s at " + "/".join(map(str, client_counts)) + " | CPU ms | x bare | WAL KB | x bare |")
    print("|---|---|---|---|---|---|")
    keys = ["bare lifecycle"] + [f"new lifecycle {m}" for m in new_modes] + [f"old lifecycle {m}" for m in old_modes]
    bare_cpu = sum(results[("bare lifecycle", c)].cpu_per_unit for c in client_counts) / len(client_counts)
    bare_wal = sum(results[("bare lifecycle", c)].wal_per_unit for c in client_counts) / len(client_counts)
    for key in keys:
        cpu = sum(results[(key, c)].cpu_per_unit for c in client_counts) / len(client_counts)
        wal = sum(results[(key, c)].wal_per_unit for c in client_counts) / len(client_counts)
        tps = " / ".join(f"{results[(key, c)].tps:.0f}" for c in client_counts)
        print(f"| {key} | {tps} | {cpu * 1000:.2f} | {cpu / bare_cpu:.2f} | {wal / 1024:.1f} | {wal / bare_wal:.2f} |")

    print("\nA worker's database path per document (claim with OCR started, llm, done: three transactions):\n")
    print("| path | ms per document at 1 client | documents/s at " + "/".join(map(str, client_counts))
          + " | CPU ms | x bare | WAL KB | x bare |")
    print("|---|---|---|---|---|---|---|")
    bare = [results[("bare claim+finish", c)] for c in client_counts]
    bare_cpu = sum(r.cpu_per_unit for r in bare) / len(bare)
    bare_wal = sum(r.wal_per_unit for r in bare) / len(bare)
    keys = (["bare claim+finish"] + [f"new claim+finish {m}" for m in CLAIM_MODES_NEW]
            + [f"old claim+finish {m}" for m in CLAIM_MODES_OLD])
    for key in keys:
        runs = [results[(key, c)] for c in client_counts]
        cpu = sum(r.cpu_per_unit for r in runs) / len(runs)
        wal = sum(r.wal_per_unit for r in runs) / len(runs)
        tps = " / ".join(f"{r.tps:.0f}" for r in runs)
        print(f"| {key} | {1000 / runs[0].tps:.2f} | {tps} | {cpu * 1000:.2f} | {cpu / bare_cpu:.2f} "
              f"| {wal / 1024:.1f} | {wal / bare_wal:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
