"""The hot path's database cost in instructions: repeatable where CPU time is not.

    python bench/hot_path_instructions.py [--baseline-ref c3d9663] [--notify-mode each|off]

On a shared or virtual machine the CPU seconds of bench/hot_path.py move by 10-20% between
runs. valgrind's callgrind counts the instructions a backend executes instead, the same count
for the same work whatever else the machine does. A throwaway cluster runs under callgrind
(every backend traced, about 50 times slower, synchronous_commit off, autovacuum off), with two
databases as in hot_path.py: "new" (this checkout's schema.sql) and "old" (--baseline-ref's),
each with the bare copies of the tables and a queue of ready documents. pgbench (-M prepared,
one client) runs each script of hot_path.py 30 and then 130 times; the difference of the two
backends' totals over 100 is the cost of one script run, without the connection's start.

Needs valgrind (Debian package valgrind). Takes about ten minutes.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from hot_path import (
    API_CLAIM_FINISH,
    API_LIFECYCLE,
    BARE_CLAIM_FINISH,
    BARE_LIFECYCLE,
    SCHEMA,
    Cluster,
    fill,
    install,
)

ROOT = Path(__file__).resolve().parents[1]
SHORT, LONG = 30, 130


class TracedCluster(Cluster):
    """The throwaway cluster of hot_path.py, its postmaster and every backend under callgrind."""

    def start_traced(self) -> None:
        self.traces = self.home / "callgrind"
        self.traces.mkdir()
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.traces, user.pw_uid, user.pw_gid)
        command = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                   f"--callgrind-out-file={self.traces}/trace.%p", str(self.bindir / "postgres"), "-D", str(self.data),
                   "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                   "-c", f"unix_socket_directories={self.home}",
                   "-c", "synchronous_commit=off", "-c", "autovacuum=off", "-c", "shared_buffers=256MB",
                   "-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=30min"]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.server = subprocess.Popen(command, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(180):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError("the traced server did not start")

    def traces_written(self) -> set[str]:
        return set(os.listdir(self.traces))

    def settle(self) -> None:
        """Waits until the exited backends have written their traces (callgrind writes at exit)."""
        previous = None
        while (current := len(os.listdir(self.traces))) != previous:
            previous = current
            time.sleep(1.5)

    def instructions(self, trace: str) -> int:
        with open(self.traces / trace) as lines:
            for line in lines:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        return 0


def backend_instructions(cluster: TracedCluster, dbname: str, script: str, runs: int) -> int:
    """Instructions of the backend that ran the script `runs` times (pgbench's busiest connection)."""
    path = cluster.home / "script.sql"
    path.write_text(script)
    path.chmod(0o644)
    cluster.settle()
    before = cluster.traces_written()
    result = subprocess.run(["pgbench", "-n", "-M", "prepared", "-h", "127.0.0.1", "-p", str(cluster.port),
                             "-U", "postgres", "-c", "1", "-t", str(runs), "-f", str(path), dbname],
                            capture_output=True, text=True, check=False)
    if f"actually processed: {runs}/{runs}" not in result.stdout:
        raise RuntimeError(f"pgbench failed on {dbname}:\n{result.stdout[-1000:]}\n{result.stderr[-1000:]}")
    cluster.settle()
    return max(cluster.instructions(trace) for trace in cluster.traces_written() - before)


def per_run(cluster: TracedCluster, dbname: str, script: str) -> float:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    short = backend_instructions(cluster, dbname, script, SHORT)
    long = backend_instructions(cluster, dbname, script, LONG)
    return (long - short) / (LONG - SHORT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default="main", help="git ref whose schema.sql is the old code")
    parser.add_argument("--notify-mode", choices=("each", "off"), default="each",
                        help="settings.notify_mode of the new schema; the old one gets notify_events on or off")
    args = parser.parse_args()
    bindir = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    old_schema = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline_ref}:{SCHEMA}"],
                                capture_output=True, text=True, check=True).stdout

    cluster = TracedCluster(bindir)
    cluster.start()  # untraced while the schemas load
    try:
        for dbname, schema in (("new", (ROOT / SCHEMA).read_text()), ("old", old_schema)):
            install(cluster, dbname, schema)
            with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
                if dbname == "new":
                    conn.execute("UPDATE docstatus.settings SET notify_mode = %s", (args.notify_mode,))
                else:
                    conn.execute("UPDATE docstatus.settings SET notify_events = %s", (args.notify_mode == "each",))
            fill(cluster, dbname, 2 * (SHORT + LONG))  # a queue for the claim+finish runs
        cluster._run(str(bindir / "pg_ctl"), "stop", "-m", "fast", "-D", str(cluster.data))
        cluster.start_traced()
        rows = []
        for label, api, bare in (("lifecycle (6 transactions)", API_LIFECYCLE, BARE_LIFECYCLE),
                                 ("claim + finish (3 transactions)", API_CLAIM_FINISH, BARE_CLAIM_FINISH)):
            bare_cost = per_run(cluster, "new", bare)
            new_cost = per_run(cluster, "new", api)
            old_cost = per_run(cluster, "old", api)
            rows.append((label, bare_cost, new_cost, old_cost))
            print(f"... {label} measured", file=sys.stderr, flush=True)
    finally:
        cluster.stop()

    print(f"\nInstructions per script run, one backend (callgrind; new = this checkout, old = {args.baseline_ref}, "
          f"notify_mode {args.notify_mode}):\n")
    print("| workload | bare | new | x bare | old | x bare | new / old |")
    print("|---|---|---|---|---|---|---|")
    for label, bare_cost, new_cost, old_cost in rows:
        print(f"| {label} | {bare_cost / 1e6:.2f} M | {new_cost / 1e6:.2f} M | {new_cost / bare_cost:.2f} "
              f"| {old_cost / 1e6:.2f} M | {old_cost / bare_cost:.2f} | {new_cost / old_cost:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
