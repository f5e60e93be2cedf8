"""DMS speed against a real Azurite: upload+validate throughput, and memory for one huge file.

1. Throughput: N small distinct documents (default 1,000, 1-4 KB of text each) through
   ``DocumentStore.upload_and_validate`` at 1, 4 and 8 threads; documents/s and per-document
   latency (p50, p99). Each run writes to a fresh container, so every upload is a new blob.
2. Memory: one big file (default 500 MB) uploaded and validated in a child process that
   reports its peak RSS (``getrusage``). The child first reports the peak of the same imports
   and setup without the upload, so the upload's own cost is visible. Target: under 100 MB.

    .venv/bin/python bench/dms_throughput.py [--dsn DSN] [--files 1000] [--big-mb 500]

The DSN names a server where the bench may create and drop its own database (default: the
local server as postgres, or DOCSTATUS_BENCH_DSN). Azurite is started from the pinned npm
install (docstatus.dev.azurite) in a temporary folder, and stopped at the end. Not part of the
test run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from scratch import dsn_argument, scratch_database

from docstatus.dev.azurite import Azurite

BENCH_DB = "docstatus_bench_dms"


def allow_big_documents(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1024 * 1024 * 1024")


def make_small_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        # No commas: libmagic calls comma-rich text text/csv, which the allowlist does not hold.
        line = (f"Invoice {index:05d} dated 2024-03-{index % 28 + 1:02d} "
                f"total {index * 7 % 10000}.{index % 100:02d} EUR\n")
        path = folder / f"invoice-{index:05d}.txt"
        path.write_text(line * (20 + index % 60))  # 1-4 KB
        paths.append(path)
    return paths


def throughput(dsn: str, azurite: Azurite, paths: list[Path], threads: int, run: int) -> dict:
    from psycopg_pool import ConnectionPool

    from docstatus.dms import DocumentStore

    with ConnectionPool(dsn, min_size=threads, max_size=threads, kwargs={"autocommit": True}) as pool, \
            DocumentStore(pool, azurite.connection_string, f"bench-{run}-{threads}") as store:
        store.upload(b"warm-up", filename="warm-up.txt")  # creates the container, warms connections

        def one(path: Path) -> float:
            started = time.perf_counter()
            document, _job = store.upload_and_validate(path)
            assert document.text_extraction_status == "ready", document
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as executor:
            latencies = sorted(executor.map(one, paths))
        elapsed = time.perf_counter() - started
    return {
        "threads": threads,
        "documents": len(paths),
        "seconds": elapsed,
        "per_second": len(paths) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
    }


def make_big_file(path: Path, megabytes: int) -> None:
    """A big "PDF": a PDF header, so validation sees an allowed type, then distinct MiBs."""
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as out:
        out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        for index in range(megabytes):
            out.write(index.to_bytes(8, "little") + block[8:])


def child_peak_rss(dsn: str, azurite: Azurite, path: Path | None) -> dict:
    """Runs this script as a child: set up a store, upload+validate ``path`` (or nothing)."""
    command = [sys.executable, __file__, "--child", "--dsn", dsn, "--connection-string", azurite.connection_string]
    if path is not None:
        command += ["--child-file", str(path)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    from psycopg_pool import ConnectionPool

    from docstatus.dms import DocumentStore

    result: dict = {}
    with ConnectionPool(args.dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool, \
            DocumentStore(pool, args.connection_string, "bench-big") as store:
        store.upload(b"warm-up", filename="warm-up.txt")
        if args.child_file:
            started = time.perf_counter()
            document, job = store.upload_and_validate(Path(args.child_file))
            result.update(seconds=time.perf_counter() - started, status=str(document.text_extraction_status),
                          mime_type=document.mime_type, size_bytes=document.size_bytes, job=job is not None)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child started by a big parent
    reports at least the parent's size. VmHWM belongs to the child's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsn_argument(parser)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-file", help=argparse.SUPPRESS)
    parser.add_argument("--connection-string", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    work = Path(tempfile.mkdtemp(prefix="docstatus-bench-dms-"))
    try:
        with scratch_database(args.dsn, BENCH_DB, template="template0") as dsn, Azurite(work / "azurite") as azurite:
            allow_big_documents(dsn)
            paths = make_small_files(work / "small", args.files)
            print(f"upload+validate of {args.files} small files (1-4 KB) against Azurite:")
            for run, threads in enumerate(int(t) for t in args.threads.split(",")):
                r = throughput(dsn, azurite, paths, threads, run)
                print(f"  {r['threads']} thread(s): {r['per_second']:7.1f} documents/s "
                      f"({r['seconds']:.1f} s; latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms)")

            if args.big_mb:
                big = work / "big.bin"
                make_big_file(big, args.big_mb)
                baseline = child_peak_rss(dsn, azurite, None)
                loaded = child_peak_rss(dsn, azurite, big)
                mb_per_s = args.big_mb / loaded["seconds"]
                print(f"one {args.big_mb} MB file, upload+validate in a child process:")
                print(f"  peak RSS {loaded['peak_rss_mb']:.1f} MB (same setup without the upload: "
                      f"{baseline['peak_rss_mb']:.1f} MB); {loaded['seconds']:.1f} s, {mb_per_s:.0f} MB/s; "
                      f"document {loaded['status']} as {loaded['mime_type']}, {loaded['size_bytes']} bytes")
                print(f"  target < 100 MB: {'met' if loaded['peak_rss_mb'] < 100 else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
