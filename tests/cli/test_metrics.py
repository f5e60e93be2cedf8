"""Prometheus metrics scraped over HTTP and parsed with prometheus_client's own parser:
counts, stuck, failures, and stage-duration histograms built incrementally from the event log."""

from __future__ import annotations

import math
import re
import time
import urllib.request

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from docstatus import Client
from docstatus.ops.metrics import serve_metrics


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape_until(url: str, name: str, expected: float, timeout: float = 10.0, **labels: str) -> dict:
    """Scrapes until the sample has the expected value. events_after hands out an event once no
    older transaction runs anywhere in the cluster (an autovacuum ANALYZE may hold one briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)  # polling a condition, with a deadline


def ocr_durations(conn, document_ids) -> list[float]:
    """Seconds each document spent in 'ocr running', from its events (what the histogram must see)."""
    return [row[0] for row in conn.execute(
        "SELECT extract(epoch FROM leave.occurred_at - enter.occurred_at)::float8"
        "  FROM docstatus.status_events enter JOIN docstatus.status_events leave"
        "    ON leave.document_id = enter.document_id AND leave.kind = 'processing'"
        "   AND leave.from_status = 'ocr running'"
        " WHERE enter.kind = 'processing' AND enter.to_status = 'ocr running' AND enter.document_id = ANY(%s)",
        (list(document_ids),))]


@pytest.fixture
def metrics_url(db_dsn):
    with serve_metrics(db_dsn, 0, "127.0.0.1", registry=CollectorRegistry(), failures_every=0) as server:
        yield f"http://127.0.0.1:{server.port}/metrics"


def test_counts_stuck_and_failures(known, metrics_url, conn):
    samples = scrape(metrics_url)
    assert value(samples, "docstatus_database_up") == 1
    assert value(samples, "docstatus_documents", kind="text_extraction", status="failed") == 3
    assert value(samples, "docstatus_documents", kind="text_extraction", status="not ready") == 1
    assert value(samples, "docstatus_documents", kind="processing", status="ocr running") == 1
    assert value(samples, "docstatus_documents", kind="processing", status="llm running") == 0
    assert sum(v for (name, labels), v in samples.items()
               if name == "docstatus_documents" and ("kind", "processing") in labels) == 7
    assert value(samples, "docstatus_jobs", status="pending extraction") == 2
    assert value(samples, "docstatus_jobs", status="done") == 1
    assert value(samples, "docstatus_jobs", status="failed") == 2
    assert {labels: v for (name, labels), v in samples.items() if name == "docstatus_stuck_documents"} == {
        (("state", state),): 0 for state in ("uploaded", "queued", "ocr running", "llm running")}
    assert value(samples, "docstatus_failed_jobs", error_pattern="OCR engine crashed: timeout after <n> s") == 1
    assert value(samples, "docstatus_failed_jobs", error_pattern="LLM returned invalid JSON at byte <n>") == 1

    conn.execute("UPDATE docstatus.stage_slas SET max_duration = interval '1 microsecond'")
    samples = scrape(metrics_url)
    assert value(samples, "docstatus_stuck_documents", state="uploaded") == 1
    assert value(samples, "docstatus_stuck_documents", state="queued") == 1
    assert value(samples, "docstatus_stuck_documents", state="ocr running") == 1
    assert value(samples, "docstatus_stuck_documents", state="llm running") == 0


def test_stage_durations_are_read_incrementally_from_the_events(known, metrics_url, db_dsn, conn):
    samples = scrape(metrics_url)
    for stage in ("ocr running", "llm running"):
        for outcome in ("ok", "failed"):
            assert value(samples, "docstatus_stage_duration_seconds_count", stage=stage, outcome=outcome) == 0

    with Client.connect(db_dsn) as client:
        # Already in 'ocr running' when the server started: measured from status_entered_at.
        client.mark_llm_running(known.ocr_running, "w-ocr")
        # A whole run after the start, each step its own transaction.
        document = client.register_document("docs", "timed.pdf", "timed.pdf", "application/pdf", 100)
        client.validate_document(document.id, True, "application/pdf")
        claimed = client.claim_extraction_job("w-timed")
        assert claimed is not None and claimed.document_id == known.queued  # the oldest free job first
        client.mark_ocr_running(known.queued, "w-timed")
        client.mark_processing_failed(known.queued, "OCR gave up", "w-timed")

    samples = scrape_until(metrics_url, "docstatus_stage_duration_seconds_count", 1, stage="ocr running",
                           outcome="failed")
    ok = ocr_durations(conn, [known.ocr_running])
    failed = ocr_durations(conn, [known.queued])
    assert value(samples, "docstatus_stage_duration_seconds_count", stage="ocr running", outcome="ok") == 1
    assert value(samples, "docstatus_stage_duration_seconds_sum", stage="ocr running", outcome="ok") == (
        pytest.approx(ok[0], abs=1e-6))
    assert value(samples, "docstatus_stage_duration_seconds_count", stage="ocr running", outcome="failed") == 1
    assert value(samples, "docstatus_stage_duration_seconds_sum", stage="ocr running", outcome="failed") == (
        pytest.approx(failed[0], abs=1e-6))
    assert value(samples, "docstatus_stage_duration_seconds_bucket", stage="ocr running", outcome="ok",
                 le="+Inf") == 1
    assert value(samples, "docstatus_stage_duration_seconds_count", stage="llm running", outcome="ok") == 0

    # The next scrape adds only what happened since.
    with Client.connect(db_dsn) as client:
        client.mark_processing_done(known.ocr_running, "w-ocr")
    samples = scrape_until(metrics_url, "docstatus_stage_duration_seconds_count", 1, stage="llm running", outcome="ok")
    assert value(samples, "docstatus_stage_duration_seconds_count", stage="ocr running", outcome="ok") == 1
    assert value(samples, "docstatus_stage_duration_seconds_count", stage="llm running", outcome="ok") == 1
    assert value(samples, "docstatus_stage_duration_seconds_sum", stage="llm running", outcome="ok") > 0


def test_served_from_a_pool_into_the_callers_registry(known, db_dsn):
    """What the worker does with --metrics-port: its pool, and its own metrics beside ours."""
    from prometheus_client import Counter

    registry = CollectorRegistry()
    claimed = Counter("worker_jobs_claimed", "jobs this worker claimed", registry=registry)
    claimed.inc(3)
    with ConnectionPool(db_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool, \
            serve_metrics(pool, 0, "127.0.0.1", registry=registry) as server:
        samples = scrape(server.url.replace("0.0.0.0", "127.0.0.1"))
        assert value(samples, "worker_jobs_claimed_total") == 3
        assert value(samples, "docstatus_jobs", status="done") == 1
    assert list(registry.collect())[0].name == "worker_jobs_claimed"  # ours unregistered on close


def test_database_down_is_a_metric_not_an_error(db_dsn, pg_server):
    with serve_metrics(db_dsn, 0, "127.0.0.1", registry=CollectorRegistry()) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert value(scrape(url), "docstatus_database_up") == 1
        # Every backend of the scraper's connection is terminated: the next scrape reports it.
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            # The timeout (ms) makes it wait until the backend is gone.
            [(terminated,)] = admin.execute(
                "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE application_name = 'docstatus-metrics'").fetchall()
            assert terminated
        samples = scrape(url)
        assert value(samples, "docstatus_database_up") == 0
        assert not any(name == "docstatus_jobs" for name, _ in samples)
        assert value(samples, "docstatus_stage_duration_seconds_count", stage="ocr running", outcome="ok") == 0
        assert value(scrape(url), "docstatus_database_up") == 1  # and it connects again


def test_metrics_command_serves_until_ctrl_c(cli_process, known):
    process = cli_process("metrics", "--port", "0", "--addr", "127.0.0.1")
    line = process.stderr_line(lambda text: text.startswith("serving Prometheus metrics on"), what="the server")
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line).group(1))
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "docstatus_documents", kind="text_extraction", status="completed") == 1
    assert any(name.startswith("process_") for name, _ in samples)
    assert not math.isnan(value(samples, "docstatus_database_up"))
    process.interrupt()
    assert process.wait() == 0
