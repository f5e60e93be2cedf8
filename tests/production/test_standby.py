"""The read side on a hot standby: CLI read commands, the views, events_after, the Subscriber.

A streaming standby of a primary of our own (pg_basebackup -R). Commits on the primary wait
for the standby to apply them (synchronous_commit = remote_apply), so each check sees what was
written before it without polling the standby.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from docstatus import Client, Cursor, Subscriber
from docstatus.cli import main

from .cluster import Cluster, cluster_root, make_synchronous, remove, wait_replayed

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Replicated:
    primary_dsn: str
    standby_dsn: str
    done: int
    failed: int
    queued: int


def make_documents(dsn: str) -> tuple[int, int, int]:
    """A finished, a failed and a queued document."""
    with Client.connect(dsn) as client:
        ids = []
        for name in ("done", "failed", "queued"):
            document = client.register_document("docs", f"{name}.pdf", f"{name}.pdf", "application/pdf", 100)
            client.validate_document(document.id, True, "application/pdf")
            ids.append(document.id)
        for document_id, ending in zip(ids, ("done", "failed"), strict=False):
            job = client.claim_extraction_job("w")
            assert job is not None and job.document_id == document_id
            client.mark_ocr_running(document_id, "w")
            if ending == "done":
                client.mark_llm_running(document_id, "w")
                client.mark_processing_done(document_id, "w")
            else:
                client.mark_processing_failed(document_id, "OCR: no text", "w")
    return ids[0], ids[1], ids[2]


@pytest.fixture(scope="module")
def replicated():
    root = cluster_root()
    primary = Cluster.primary(root)
    clusters = [primary]
    try:
        primary.start()
        dsn = primary.create_database("docs")
        done, failed, queued = make_documents(dsn)
        clusters.append(primary.standby(root))
        make_synchronous(primary.dsn())
        wait_replayed(dsn)
        yield Replicated(dsn, clusters[1].dsn("docs"), done, failed, queued)
    finally:
        remove(root, *reversed(clusters))


def without_durations(output: str):
    """The JSON output, without the "..._for" durations that grow from one run to the next."""
    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if not key.endswith("_for")}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return [strip(json.loads(line)) for line in output.splitlines()]


def run_cli(dsn: str, *args: str):
    return CliRunner().invoke(main, list(args), env={"DOCSTATUS_DSN": dsn, "NO_COLOR": "1"}, catch_exceptions=False)


def test_it_is_a_standby(replicated):
    with psycopg.connect(replicated.standby_dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_every_read_command_answers_from_the_standby_as_from_the_primary(replicated):
    for args in (["status", "--json"], ["show", str(replicated.failed), "--json"], ["jobs", "--json"],
                 ["failures", "--json"], ["jobs", "--status", "failed", "--json"]):
        on_standby = run_cli(replicated.standby_dsn, *args)
        assert on_standby.exit_code == 0, (args, on_standby.output)
        assert without_durations(on_standby.stdout) == without_durations(run_cli(replicated.primary_dsn, *args).stdout)
    stuck = run_cli(replicated.standby_dsn, "stuck", "--json")  # its durations differ run to run
    assert stuck.exit_code == 0, stuck.output


def test_write_commands_fail_with_one_clear_line(replicated):
    sample = Path(__file__).resolve().parents[1] / "data" / "invoice.txt"
    for args in (["retry", str(replicated.failed)], ["reap"], ["stuck", "--check"], ["upload", str(sample)],
                 ["worker", "--once"]):
        result = run_cli(replicated.standby_dsn, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == "Error: read-only standby: use the primary's DSN\n", args
    with psycopg.connect(replicated.primary_dsn) as conn:  # and nothing happened
        assert conn.execute("SELECT processing_status FROM docstatus.documents WHERE id = %s",
                            (replicated.failed,)).fetchone() == ("failed",)


def test_views_and_events_after_read_the_same_on_the_standby(replicated):
    def read(dsn):
        with psycopg.connect(dsn) as conn:
            views = [conn.execute("SELECT * FROM docstatus.status_counts").fetchall(),
                     conn.execute("SELECT * FROM docstatus.failure_summary").fetchall(),
                     # in_status_for grows between the two reads
                     conn.execute("SELECT document_id, state, status_entered_at, job_id, last_error"
                                  "  FROM docstatus.document_overview ORDER BY document_id").fetchall()]
            conn.execute("SELECT * FROM docstatus.stuck_documents").fetchall()
            conn.execute("SELECT * FROM docstatus.event_delivery").fetchall()
            events = conn.execute("SELECT * FROM docstatus.events_after('0', 0, 1000)").fetchall()
        return views, events

    assert read(replicated.standby_dsn) == read(replicated.primary_dsn)
    assert len(read(replicated.standby_dsn)[1]) > 20  # three lifecycles: something to compare


def test_the_subscriber_polls_a_standby_and_delivers_each_event_once(replicated):
    delivered = []
    expected_count = threading.Event()
    with Client.connect(replicated.primary_dsn) as client:
        total_before = len(client.events_after(0, 0))

    def collect(event):
        delivered.append(event)
        if len(delivered) >= total_before + 2:
            expected_count.set()

    with Subscriber(replicated.standby_dsn, since=Cursor(0, 0), poll_interval=0.05) as subscriber:
        subscriber.start(collect)
        assert subscriber.wait_caught_up(timeout=30)
        assert subscriber.polling  # it found the standby by itself: NOTIFY is not replicated
        with Client.connect(replicated.primary_dsn, options="-c synchronous_commit=remote_apply") as client:
            client.register_document("docs", "later.pdf", "later.pdf", "application/pdf", 10)
        assert expected_count.wait(timeout=30), f"{len(delivered)} events of {total_before + 2}"
        assert subscriber.error is None
    with Client.connect(replicated.primary_dsn) as client:
        assert [event.id for event in delivered] == [event.id for event in client.events_after(0, 0)]
