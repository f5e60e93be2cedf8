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

With --modes, each settings.notify_mode named (all four when the flag has no value) runs in
turn on the same scratch database: the latency of part 1, the same latency while --writers
threads run lifecycles in the background (in throttled mode most of their commits skip their
hint, and so may the writer's), and part 2. In mode off the subscriber polls every
--poll-interval seconds. Each mode also checks that every event written was handed out exactly
once; the run ends with one markdown table and exits non-zero when a mode missed or repeated one.

    python bench/subscriber_latency.py [--dsn DSN] [--events 5000] [--writers 4] [--seconds 10]
        [--poll-interval 0.05] [--modes [each,per_transaction,throttled,off]]

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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from scratch import dsn_argument, scratch_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_client"))
from docstatus import Client, Subscriber

BENCH_DB = "docstatus_bench_subscriber"
NOTIFY_MODES = ("each", "per_transaction", "throttled", "off")
# register_document writes two events in its one transaction (text_extraction and processing status).
EVENTS_PER_REGISTRATION = 2

_blobs = itertools.count()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Deliveries:
    """The subscriber's callback: how many times each event was handed out, and when the events
    of each document arrived. Every document is recorded, because an event may arrive before
    the writer that committed it has learnt its document's id."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._times_handed_out: Counter[int] = Counter()
        self._arrivals: dict[int, list[float]] = {}  # document id -> perf_counter() of each callback
        self._awaited_document: int | None = None

    def __call__(self, event) -> None:
        now = time.perf_counter()
        with self._cond:
            self._times_handed_out[event.id] += 1
            self._arrivals.setdefault(event.document_id, []).append(now)
            # Wake the writer for its own document only: under load, waking it for every
            # background event would cost the GIL time the measured callbacks need.
            if event.document_id == self._awaited_document:
                self._cond.notify()

    @property
    def callbacks(self) -> int:
        with self._cond:
            return self._times_handed_out.total()

    @property
    def distinct_events(self) -> int:
        with self._cond:
            return len(self._times_handed_out)

    def times_handed_out(self) -> Counter[int]:
        with self._cond:
            return self._times_handed_out.copy()

    def wait_for_document(self, document_id: int, events: int, timeout: float) -> list[float] | None:
        """The callback times of the document's first `events` events, once they all came; None
        when the timeout ran out first."""
        with self._cond:
            self._awaited_document = document_id
            arrived = self._cond.wait_for(lambda: len(self._arrivals.get(document_id, ())) >= events, timeout)
            self._awaited_document = None
            return self._arrivals[document_id][:events] if arrived else None


@dataclass(frozen=True)
class DeliveryCheck:
    """Events written after a starting id against the callbacks a subscriber made for them."""

    written: int
    missing: int = 0  # written, never handed out
    repeated: int = 0  # handed out more than once
    unexpected: int = 0  # handed out, yet not written after the starting id

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.repeated or self.unexpected)

    def __add__(self, other: DeliveryCheck) -> DeliveryCheck:
        return DeliveryCheck(self.written + other.written, self.missing + other.missing,
                             self.repeated + other.repeated, self.unexpected + other.unexpected)

    def __str__(self) -> str:
        if self.exactly_once:
            return f"all {self.written} events handed out exactly once"
        return (f"NOT exactly once: {self.written} events written, {self.missing} missing, {self.repeated} "
                f"handed out more than once, {self.unexpected} unexpected")


def last_event_id(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM docstatus.status_events").fetchone()[0]


def events_written_after(conn: psycopg.Connection, after_id: int) -> int:
    # Counted, not max(id) - after_id: a rolled-back transaction leaves a gap in the ids.
    return conn.execute("SELECT count(*) FROM docstatus.status_events WHERE id > %s", (after_id,)).fetchone()[0]


def check_exactly_once(dsn: str, after_id: int, deliveries: Deliveries) -> DeliveryCheck:
    """Compares the events written after after_id with the callbacks, event id by event id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        written = {row[0] for row in conn.execute("SELECT id FROM docstatus.status_events WHERE id > %s",
                                                  (after_id,))}
    handed_out = deliveries.times_handed_out()
    return DeliveryCheck(written=len(written), missing=len(written - handed_out.keys()),
                         repeated=sum(1 for times in handed_out.values() if times > 1),
                         unexpected=len(handed_out.keys() - written))


def wait_drained(deliveries: Deliveries, written: int, timeout: float = 60.0) -> float:
    """Waits until `written` distinct events were handed out; the seconds it took."""
    started = time.perf_counter()
    while deliveries.distinct_events < written:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"subscriber did not catch up: {deliveries.distinct_events} of {written}")
        time.sleep(0.001)
    return time.perf_counter() - started


def lifecycle(client: Client, worker_id: str) -> None:
    document = client.register_document("bench", f"r{next(_blobs)}", "f.pdf", "application/pdf", 1000)
    client.validate_document(document.id, True, "application/pdf")
    while (job := client.claim_extraction_job(worker_id)) is None:
        pass
    client.mark_ocr_running(job.document_id, worker_id)
    client.mark_llm_running(job.document_id, worker_id)
    client.mark_processing_done(job.document_id, worker_id)


@contextmanager
def lifecycles_running(dsn: str, writers: int) -> Iterator[list[int]]:
    """`writers` threads run full lifecycles until the with block ends; yields the count of
    lifecycles each has finished so far."""
    stop = threading.Event()
    lifecycles = [0] * writers

    def write(index: int) -> None:
        with Client.connect(dsn) as client:
            while not stop.is_set():
                lifecycle(client, f"w{index}")
                lifecycles[index] += 1

    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    try:
        yield lifecycles
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def foreground_latencies(dsn: str, events: int, background_writers: int = 0,
                         **subscriber_kwargs) -> tuple[list[float], DeliveryCheck]:
    """Commit-to-callback latency in ms of the events of documents one writer registers one at a
    time, waiting for the callbacks of each before the next, while `background_writers` threads
    run lifecycles; and whether every event written meanwhile was handed out exactly once."""
    deliveries = Deliveries()
    with psycopg.connect(dsn, autocommit=True) as probe:
        start_id = last_event_id(probe)
    latencies: list[float] = []
    with Subscriber(dsn, **subscriber_kwargs) as subscriber:
        subscriber.start(deliveries)
        subscriber.wait_caught_up(10)
        with Client.connect(dsn) as client:
            for _ in range(200):  # warm up
                warm = client.register_document("warm", f"w{next(_blobs)}", "f.pdf")
            # Events come in commit order, so the last document's arrival means all of them came.
            if deliveries.wait_for_document(warm.id, EVENTS_PER_REGISTRATION, 30) is None:
                raise SystemExit("the warm-up's events did not arrive within 30 s")
            with lifecycles_running(dsn, background_writers):
                while len(latencies) < events:
                    document = client.register_document("bench", f"l{next(_blobs)}", "f.pdf")
                    committed = time.perf_counter()
                    arrivals = deliveries.wait_for_document(document.id, EVENTS_PER_REGISTRATION, 5)
                    if arrivals is None:
                        raise SystemExit(f"no callback within 5 s for document {document.id}")
                    latencies.extend((arrived - committed) * 1000 for arrived in arrivals)
        # The background writers' last events may still be on their way: the check waits for them.
        with psycopg.connect(dsn, autocommit=True) as probe:
            wait_drained(deliveries, events_written_after(probe, start_id))
        check = check_exactly_once(dsn, start_id, deliveries)
    return latencies[:events], check


def print_latency(label: str, ms: list[float]) -> None:
    print(f"latency, {label}, {len(ms)} events: p50 {percentile(ms, 0.50):.3f} ms, "
          f"p90 {percentile(ms, 0.90):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms, max {max(ms):.3f} ms "
          f"(mean {statistics.fmean(ms):.3f} ms)")


def measure_latency(dsn: str, events: int) -> None:
    ms, _ = foreground_latencies(dsn, events)
    print_latency("commit returned -> callback", ms)


@dataclass(frozen=True)
class Sustained:
    events_per_second: float  # written
    callbacks: int
    drain_seconds: float
    check: DeliveryCheck


def measure_sustained(dsn: str, writers: int, seconds: float, label: str, **subscriber_kwargs) -> Sustained:
    deliveries = Deliveries()
    with psycopg.connect(dsn, autocommit=True) as probe:
        start_id = last_event_id(probe)
    with Subscriber(dsn, **subscriber_kwargs) as subscriber:
        subscriber.start(deliveries)
        subscriber.wait_caught_up(10)
        backlog_samples = []
        with psycopg.connect(dsn, autocommit=True) as probe:
            started = time.perf_counter()
            with lifecycles_running(dsn, writers) as lifecycles:
                while time.perf_counter() - started < seconds:
                    time.sleep(0.5)
                    # Ids are taken in commit order closely enough for a backlog estimate.
                    backlog_samples.append(last_event_id(probe) - start_id - deliveries.callbacks)
            writing_time = time.perf_counter() - started
            total = events_written_after(probe, start_id)
        drain_time = wait_drained(deliveries, total)
        check = check_exactly_once(dsn, start_id, deliveries)
    half = len(backlog_samples) // 2
    print(f"sustained, {label}: {writers} writers, {sum(lifecycles)} lifecycles in {writing_time:.1f} s, "
          f"{total / writing_time:.0f} events/s written, {deliveries.callbacks} delivered (exactly {total} expected); "
          f"backlog samples: median {statistics.median(backlog_samples):.0f}, max {max(backlog_samples)}, "
          f"first half mean {statistics.fmean(backlog_samples[:half] or [0]):.0f}, "
          f"second half mean {statistics.fmean(backlog_samples[half:]):.0f}; drained {drain_time * 1000:.0f} ms after "
          f"the writers stopped")
    return Sustained(total / writing_time, deliveries.callbacks, drain_time, check)


@dataclass(frozen=True)
class ModeFigures:
    mode: str
    quiet_ms: list[float]
    loaded_ms: list[float]
    sustained: Sustained
    check: DeliveryCheck  # all three parts together


def measure_mode(dsn: str, mode: str, args: argparse.Namespace) -> ModeFigures:
    """The three measurements with settings.notify_mode = mode, each with a subscriber of its own
    started after the setting changed (a subscriber reads it when it connects)."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("UPDATE docstatus.settings SET notify_events = true, notify_mode = %s", (mode,))
        interval_ms = setup.execute("SELECT extract(epoch FROM notify_interval)::float8 * 1000"
                                    " FROM docstatus.settings").fetchone()[0]
    print(f"\n## notify_mode {mode} (notify_interval {interval_ms:g} ms)")
    # The other modes keep the subscriber's default poll_interval: it never polls in them.
    subscriber_kwargs = {"poll_interval": args.poll_interval} if mode == "off" else {}
    quiet_ms, quiet_check = foreground_latencies(dsn, args.events, **subscriber_kwargs)
    print_latency("one writer", quiet_ms)
    loaded_ms, loaded_check = foreground_latencies(dsn, args.events, args.writers, **subscriber_kwargs)
    print_latency(f"one writer's events while {args.writers} more run lifecycles", loaded_ms)
    sustained = measure_sustained(dsn, args.writers, args.seconds, f"notify_mode {mode}", **subscriber_kwargs)
    check = quiet_check + loaded_check + sustained.check
    print(f"delivery, notify_mode {mode}: {check}")
    return ModeFigures(mode, quiet_ms, loaded_ms, sustained, check)


def print_modes_table(figures: list[ModeFigures], writers: int, poll_interval: float) -> None:
    print(f"\n| mode | p50 ms | p99 ms | p99 ms under load ({writers} writers) | events/s written "
          "| delivered == written | drain ms |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for row in figures:
        mode_label = f"off (poll {poll_interval:g} s)" if row.mode == "off" else row.mode
        delivered = f"yes ({row.check.written})" if row.check.exactly_once else "NO"
        print(f"| {mode_label} | {percentile(row.quiet_ms, 0.50):.2f} | {percentile(row.quiet_ms, 0.99):.2f} "
              f"| {percentile(row.loaded_ms, 0.99):.2f} | {row.sustained.events_per_second:.0f} | {delivered} "
              f"| {row.sustained.drain_seconds * 1000:.0f} |")
    print("\ndelivered == written: every event the mode's three parts wrote was handed out exactly once"
          " (callbacks per event id == 1, none missing); drain: after the sustained part's writers stopped.")


def notify_modes(value: str) -> tuple[str, ...]:
    """--modes each,throttled: the settings.notify_mode values to run, in the order given."""
    modes = tuple(mode.strip() for mode in value.split(",") if mode.strip())
    unknown = [mode for mode in modes if mode not in NOTIFY_MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(NOTIFY_MODES)}")
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dsn_argument(parser)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--modes", nargs="?", const=NOTIFY_MODES, type=notify_modes, metavar="MODE,...",
                        help=f"compare settings.notify_mode values (without a value: {','.join(NOTIFY_MODES)})")
    args = parser.parse_args()

    with scratch_database(args.dsn, BENCH_DB) as dsn:
        if args.modes:
            figures = [measure_mode(dsn, mode, args) for mode in args.modes]
            print_modes_table(figures, args.writers, args.poll_interval)
            if not all(row.check.exactly_once for row in figures):
                raise SystemExit("some events were not handed out exactly once (see the delivery lines above)")
            return
        measure_latency(dsn, args.events)
        measure_sustained(dsn, args.writers, args.seconds, "notify_events on")
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("UPDATE docstatus.settings SET notify_events = false")
        measure_sustained(dsn, args.writers, args.seconds, f"notify_events off, polling every {args.poll_interval:g} s",
                          poll_interval=args.poll_interval)


if __name__ == "__main__":
    main()
