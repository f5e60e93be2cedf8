"""How fast a docstatus.Subscriber hands out events, and whether it keeps up with writers.

1. Latency: one writer registers documents one at a time (2 events per commit) and waits for
   the subscriber's callback before the next; commit-to-callback is measured from the moment
   the writer's commit returns to the moment the callback runs, over --events events.
2. Sustained rate: --writers threads run full lifecycles (register, validate, claim, ocr, llm,
   done) for --seconds; the backlog (events committed but not yet handed out) is sampled every
   0.5 s, and the time to drain it after the writers stop is reported. It keeps up when the
   backlog stays flat and small instead of growing.

Both run with settings.notify_events on; part 2 runs again with it off (the subscriber polls
every --poll-interval seconds).

    python bench/subscriber_latency.py [--dsn DSN] [--events 5000] [--writers 4] [--seconds 10]

The DSN names a server where the bench may create and drop its own database (default: the
local server, or DOCSTATUS_BENCH_DSN). Every open writing transaction anywhere in the cluster
holds events_after back (see the view docstatus.event_delivery), so run it on an idle server.
Targets: p99 under 2 ms; no growing backlog.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from scratch import dsn_argument, scratch_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_client"))
from docstatus import Client, Subscriber

BENCH_DB = "docstatus_bench_subscriber"

_blobs = itertools.count()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_latency(dsn: str, events: int) -> None:
    arrived: dict[int, float] = {}
    cond = threading.Condition()

    def on_event(event) -> None:
        now = time.perf_counter()
        with cond:
            arrived[event.id] = now
            cond.notify()

    latencies: list[float] = []
    with Subscriber(dsn) as subscriber, Client.connect(dsn) as client:
        subscriber.start(on_event)
        subscriber.wait_caught_up(10)
        for _ in range(200):  # warm up
            client.register_document("warm", f"w{next(_blobs)}", "f.pdf")
        with cond:
            cond.wait_for(lambda: len(arrived) >= 400, 30)
        arrived.clear()
        while len(latencies) < events:
            document = client.register_document("bench", f"l{next(_blobs)}", "f.pdf")
            committed = time.perf_counter()
            with cond:
                if not cond.wait_for(lambda: sum(1 for t in arrived.values() if t >= committed) >= 2 or
                                     len(arrived) >= 2, 5):
                    raise SystemExit(f"no callback within 5 s for document {document.id}")
                latencies.extend(t - committed for t in arrived.values())
                arrived.clear()
    ms = [latency * 1000 for latency in latencies[:events]]
    print(f"latency, commit returned -> callback, {len(ms)} events: p50 {percentile(ms, 0.50):.3f} ms, "
          f"p90 {percentile(ms, 0.90):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms, max {max(ms):.3f} ms "
          f"(mean {statistics.fmean(ms):.3f} ms)")


def lifecycle(client: Client, worker_id: str) -> None:
    document = client.register_document("bench", f"r{next(_blobs)}", "f.pdf", "application/pdf", 1000)
    client.validate_document(document.id, True, "application/pdf")
    while (job := client.claim_extraction_job(worker_id)) is None:
        pass
    client.mark_ocr_running(job.document_id, worker_id)
    client.mark_llm_running(job.document_id, worker_id)
    client.mark_processing_done(job.document_id, worker_id)


def measure_sustained(dsn: str, writers: int, seconds: float, label: str, **subscriber_kwargs) -> None:
    delivered = [0]
    lock = threading.Lock()

    def on_event(event) -> None:
        with lock:
            delivered[0] += 1

    with psycopg.connect(dsn, autocommit=True) as probe:
        start_id = probe.execute("SELECT coalesce(max(id), 0) FROM docstatus.status_events").fetchone()[0]
    with Subscriber(dsn, **subscriber_kwargs) as subscriber:
        subscriber.start(on_event)
        subscriber.wait_caught_up(10)
        stop = threading.Event()
        lifecycles = [0] * writers

        def write(index: int) -> None:
            with Client.connect(dsn) as client:
                while not stop.is_set():
                    lifecycle(client, f"w{index}")
                    lifecycles[index] += 1

        threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        backlog_samples = []
        with psycopg.connect(dsn, autocommit=True) as probe:
            while time.perf_counter() - started < seconds:
                stop.wait(0.5)
                # Ids are taken in commit order closely enough for a backlog estimate.
                committed = probe.execute("SELECT coalesce(max(id), 0) FROM docstatus.status_events").fetchone()[0]
                with lock:
                    backlog_samples.append(committed - start_id - delivered[0])
            stop.set()
            for thread in threads:
                thread.join()
            writing_time = time.perf_counter() - started
            total = probe.execute("SELECT count(*) FROM docstatus.status_events WHERE id > %s",
                                  (start_id,)).fetchone()[0]
            drain_started = time.perf_counter()
            while True:
                with lock:
                    if delivered[0] >= total:
                        break
                if time.perf_counter() - drain_started > 60:
                    raise SystemExit(f"subscriber did not catch up: {delivered[0]} of {total}")
                stop.wait(0.001)
            drain_time = time.perf_counter() - drain_started
    half = len(backlog_samples) // 2
    print(f"sustained, {label}: {writers} writers, {sum(lifecycles)} lifecycles in {writing_time:.1f} s, "
          f"{total / writing_time:.0f} events/s written, {delivered[0]} delivered (exactly {total} expected); "
          f"backlog samples: median {statistics.median(backlog_samples):.0f}, max {max(backlog_samples)}, "
          f"first half mean {statistics.fmean(backlog_samples[:half] or [0]):.0f}, "
          f"second half mean {statistics.fmean(backlog_samples[half:]):.0f}; drained {drain_time * 1000:.0f} ms after "
          f"the writers stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dsn_argument(parser)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args()

    with scratch_database(args.dsn, BENCH_DB) as dsn:
        measure_latency(dsn, args.events)
        measure_sustained(dsn, args.writers, args.seconds, "notify_events on")
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("UPDATE docstatus.settings SET notify_events = false")
        measure_sustained(dsn, args.writers, args.seconds, f"notify_events off, polling every {args.poll_interval:g} s",
                          poll_interval=args.poll_interval)


if __name__ == "__main__":
    main()
