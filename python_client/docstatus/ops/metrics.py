"""Prometheus metrics of docstatus, with the official client library (``prometheus_client``).

    from docstatus.ops.metrics import serve_metrics

    server = serve_metrics(pool, port=9464)   # /metrics from a daemon thread, until server.close()

``docstatus metrics --port P`` runs exactly this; the worker's ``--metrics-port`` can too, with
its pool (a scrape borrows one connection) or a conninfo string (one connection of its own).
Each scrape reads:

- ``docstatus_documents{kind, status}``: documents per status of each column (``status_counts``;
  each document counts once per kind, so sum within one kind only);
- ``docstatus_jobs{status}``: extraction jobs per status;
- ``docstatus_stuck_documents{state}``: documents past their SLA (``stuck_documents``), zeros included;
- ``docstatus_failed_jobs{error_pattern}``: failed jobs per normalised error (``failure_summary``),
  the top patterns by name and the rest as ``<other>``; read at most every ``failures_every``
  seconds, because that view normalises the error of every failed job;
- ``docstatus_stage_duration_seconds{stage, outcome}``: a histogram of the time documents spent in
  'ocr running' and 'llm running', outcome ``ok`` (moved on) or ``failed``. It is built from
  ``status_events`` with a cursor, so a scrape reads only the events since the previous one
  (``events_after``). It counts stays that end after the collector started; documents already in
  a stage then are measured from their ``status_entered_at``;
- ``docstatus_database_up``: 0 when the last scrape could not read the database (the histogram
  is still served, the other metrics are left out until it can).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg.conninfo
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from docstatus.client import Client
from docstatus.errors import DocStatusError
from docstatus.models import Cursor, EventKind, FailurePattern, ProcessingStatus, StatusEvent
from docstatus.ops.db import one_line

__all__ = ["DURATION_BUCKETS", "DocstatusCollector", "MetricsServer", "StageDurations", "serve_metrics"]

log = logging.getLogger("docstatus.metrics")

STAGES = (str(ProcessingStatus.OCR_RUNNING), str(ProcessingStatus.LLM_RUNNING))
# Seconds: OCR of a page takes about a second, an LLM call tens of seconds; the SLAs are minutes.
DURATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, math.inf)
OTHER_ERRORS = "<other>"
# Label values stay readable and bounded: normalised patterns are usually short.
MAX_PATTERN_CHARS = 200
EVENT_BATCH = 1000
# A scrape after a long pause reads at most this many batches; the rest waits for the next one.
MAX_BATCHES_PER_SCRAPE = 50
# A query of a scrape that takes longer than this is cancelled (own connection only).
STATEMENT_TIMEOUT_MS = 10_000


class StageDurations:
    """How long documents stay in the OCR and LLM stages, from the event log, incrementally.

    ``start`` takes the cursor "from now on" and the documents already in a stage, in one
    snapshot; ``advance`` reads the events after the cursor and observes every stay that ended.
    Memory: one entry per document currently in a stage.
    """

    def __init__(self) -> None:
        self.histogram = Histogram(
            "docstatus_stage_duration_seconds",
            "Time documents spent in a pipeline stage ('ocr running', 'llm running'), from status_events; "
            "outcome ok: moved on, failed: failed there. Starts empty when this exporter starts: counts the "
            "stays that end after it",
            ["stage", "outcome"], buckets=DURATION_BUCKETS, registry=None)
        for stage in STAGES:
            for outcome in ("ok", "failed"):
                self.histogram.labels(stage, outcome)  # every series from the first scrape on
        self.cursor: Cursor | None = None
        self._entered: dict[int, tuple[str, datetime]] = {}

    @property
    def started(self) -> bool:
        return self.cursor is not None

    def start(self, conn: psycopg.Connection) -> None:
        cursor, entries = Client(conn).stage_snapshot(list(STAGES))  # one statement: one snapshot
        self._entered = {entry.document_id: (str(entry.processing_status), entry.status_entered_at)
                         for entry in entries}
        self.cursor = cursor

    def advance(self, conn: psycopg.Connection, max_batches: int = MAX_BATCHES_PER_SCRAPE) -> int:
        """Reads and observes the events after the cursor; returns how many it read."""
        assert self.cursor is not None, "start() first"
        client = Client(conn)
        read = 0
        for _ in range(max_batches):
            events = client.events_after(*self.cursor, limit=EVENT_BATCH)
            for event in events:
                self.feed(event)
            read += len(events)
            if events:
                self.cursor = events[-1].cursor
            if len(events) < EVENT_BATCH:
                break
        return read

    def feed(self, event: StatusEvent) -> None:
        if event.kind != EventKind.PROCESSING:
            return
        # Any change of processing_status ends the stay in the previous one.
        entered = self._entered.pop(event.document_id, None)
        if entered is not None and event.from_status == entered[0]:
            stage, entered_at = entered
            outcome = "failed" if event.to_status == ProcessingStatus.FAILED else "ok"
            seconds = max(0.0, (event.occurred_at - entered_at).total_seconds())
            self.histogram.labels(stage, outcome).observe(seconds)
        if event.to_status in STAGES:
            self._entered[event.document_id] = (str(event.to_status), event.occurred_at)


class DocstatusCollector(Collector):
    """A prometheus_client collector reading docstatus at each scrape (see the module docstring).

    ``database``: a ``psycopg_pool.ConnectionPool`` (a scrape borrows a connection) or a conninfo
    string (one connection of its own, opened on first use and again after it breaks).
    Scrapes are serialised. ``close()`` closes the connection it opened.
    """

    def __init__(self, database: str | ConnectionPool, *, failures_every: float = 60.0,
                 top_error_patterns: int = 20) -> None:
        if failures_every < 0 or top_error_patterns < 1:
            raise ValueError("failures_every must not be negative and top_error_patterns must be positive")
        self._pool = database if isinstance(database, ConnectionPool) else None
        self._dsn = None if self._pool is not None else str(database)
        self._conn: psycopg.Connection | None = None
        self._failures_every = failures_every
        self._top_error_patterns = top_error_patterns
        self._lock = threading.Lock()
        self._failures: list[FailurePattern] | None = None
        self._failures_read_at = -math.inf
        self.stage_durations = StageDurations()

    # --- prometheus_client's side -------------------------------------------------------------

    def describe(self) -> list[Metric]:
        # Names only: registering the collector must not need the database.
        return [*self._families(), *self.stage_durations.histogram.collect()]

    def collect(self) -> list[Metric]:
        with self._lock:
            families = self._families()
            up, documents, jobs, stuck, failed = families
            try:
                with self._connection() as conn:
                    if not self.stage_durations.started:
                        self.stage_durations.start(conn)
                    client = Client(conn)
                    counts = client.status_counts()
                    stuck_by_state = client.stuck_counts_by_state()
                    failures = self._read_failures(client)
                    self.stage_durations.advance(conn)
            except (psycopg.Error, DocStatusError) as exc:  # e.g. down, or a role without the rights
                log.warning("docstatus metrics: cannot read the database: %s", one_line(str(exc)))
                up.add_metric([], 0)
                return [up, *self.stage_durations.histogram.collect()]
            up.add_metric([], 1)
            for row in counts:
                if row.kind == EventKind.JOB:
                    jobs.add_metric([row.status], row.count)
                else:
                    documents.add_metric([str(row.kind), row.status], row.count)
            for state, count in stuck_by_state.items():
                stuck.add_metric([state], count)
            for pattern, count in self._failures_by_pattern(failures):
                failed.add_metric([pattern], count)
            return [*families, *self.stage_durations.histogram.collect()]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("docstatus_database_up", "1 when the last scrape could read the docstatus database"),
            GaugeMetricFamily("docstatus_documents",
                              "Documents per status of one column (kind text_extraction or processing); "
                              "each document counts once per kind", labels=["kind", "status"]),
            GaugeMetricFamily("docstatus_jobs", "Extraction jobs per status", labels=["status"]),
            GaugeMetricFamily("docstatus_stuck_documents",
                              "Documents in a state longer than its SLA (docstatus.stage_slas)", labels=["state"]),
            GaugeMetricFamily("docstatus_failed_jobs",
                              "Failed extraction jobs per normalised error (docstatus.failure_summary); "
                              f"patterns beyond the top ones are summed as {OTHER_ERRORS}",
                              labels=["error_pattern"]),
        ]

    # --- reading ------------------------------------------------------------------------------

    def _read_failures(self, client: Client) -> list[FailurePattern]:
        now = time.monotonic()
        if self._failures is None or now - self._failures_read_at >= self._failures_every:
            self._failures = client.failure_summary()
            self._failures_read_at = now
        return self._failures

    def _failures_by_pattern(self, rows: list[FailurePattern]) -> list[tuple[str, int]]:
        """The top patterns by failures (the view's order), the rest summed as <other>."""
        result: dict[str, int] = {}
        other = 0
        for row in rows:
            pattern = (row.error_pattern or "")[:MAX_PATTERN_CHARS]
            if pattern in result or len(result) < self._top_error_patterns:
                result[pattern] = result.get(pattern, 0) + row.failures
            else:
                other += row.failures
        if other:
            result[OTHER_ERRORS] = result.get(OTHER_ERRORS, 0) + other
        return list(result.items())

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
            return
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self._dsn or "")
        try:
            yield self._conn
        except psycopg.OperationalError:
            self._conn.close()  # broken: the next scrape connects again
            self._conn = None
            raise

    def prime(self) -> None:
        """Starts the stage-duration cursor now rather than at the first scrape (best effort)."""
        with self._lock:
            if self.stage_durations.started:
                return
            try:
                with self._connection() as conn:
                    self.stage_durations.start(conn)
            except (psycopg.Error, DocStatusError) as exc:
                log.warning("docstatus metrics: cannot read the database yet: %s", one_line(str(exc)))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _connect(dsn: str) -> psycopg.Connection:
    given = set(psycopg.conninfo.conninfo_to_dict(dsn))
    options: dict[str, Any] = {"autocommit": True}
    defaults = {"connect_timeout": 10, "application_name": "docstatus-metrics",
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    options.update({key: value for key, value in defaults.items() if key not in given})
    return psycopg.connect(dsn, **options)


class MetricsServer:
    """What ``serve_metrics`` returns: ``port``, ``url``, ``registry``, ``collector``; ``close()``
    (or the ``with`` block) stops serving and closes the collector's own connection."""

    def __init__(self, httpd: Any, thread: threading.Thread, registry: CollectorRegistry,
                 collector: DocstatusCollector, addr: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.registry = registry
        self.collector = collector
        self.addr = addr

    @property
    def port(self) -> int:
        return self._httpd.server_port

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        self.registry.unregister(self.collector)
        self.collector.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_metrics(database: str | ConnectionPool, port: int, addr: str = "127.0.0.1", *,
                  registry: CollectorRegistry | None = None, failures_every: float = 60.0,
                  top_error_patterns: int = 20) -> MetricsServer:
    """Serves the docstatus metrics on ``http://addr:port/metrics`` from a daemon thread.

    ``database``: a ``psycopg_pool.ConnectionPool`` (each scrape borrows one connection) or a
    conninfo string (a connection of its own). ``registry``: where the collector is registered and
    what is served; by default a new registry with the docstatus metrics and ``process_*``; pass
    ``prometheus_client.REGISTRY`` to serve your own metrics beside them. ``port`` 0 picks a free
    one (``server.port``). Raises OSError when the port cannot be bound.
    """
    collector = DocstatusCollector(database, failures_every=failures_every, top_error_patterns=top_error_patterns)
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
    registry.register(collector)
    try:
        httpd, thread = start_http_server(port, addr, registry=registry)
    except BaseException:
        registry.unregister(collector)
        collector.close()
        raise
    collector.prime()
    return MetricsServer(httpd, thread, registry, collector, addr)
