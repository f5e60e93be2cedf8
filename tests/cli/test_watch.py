"""`docstatus watch` as a real process: live events committed from another connection, filters,
stuck hints in --alerts mode, and Ctrl-C (SIGINT) ending it with exit status 0."""

from __future__ import annotations

import json

from docstatus import Client

from .conftest import CliProcess


def is_ready(line: str) -> bool:
    return line.startswith("watching ")


def read_json_lines(process: CliProcess, count: int, timeout: float = 10.0) -> list[dict]:
    return [json.loads(process.stdout_line(timeout, what=f"JSON line {index + 1} of {count}"))
            for index in range(count)]


def stop(process: CliProcess) -> None:
    process.interrupt()
    assert process.wait() == 0
    assert not any("Traceback" in line for line in process.stderr_lines), process.stderr_lines


def test_watch_json_streams_events_committed_elsewhere(cli_process, db_dsn):
    process = cli_process("watch", "--json")
    process.stderr_line(is_ready, what="watch to be ready")

    with Client.connect(db_dsn) as client:  # another connection, each call its own commit
        document = client.register_document("docs", "live.pdf", "live.pdf", "application/pdf", 100)
        client.validate_document(document.id, True, "application/pdf")
        job = client.claim_extraction_job("w-live")
        client.mark_ocr_running(document.id, "w-live")
        client.mark_llm_running(document.id, "w-live")
        client.mark_processing_done(document.id, "w-live")

    events = read_json_lines(process, 10)
    assert all(event["type"] == "event" and event["document_id"] == document.id for event in events)
    assert [(event["kind"], event["from_status"], event["to_status"]) for event in events] == [
        ("text_extraction", None, "not ready"), ("processing", None, "pending extraction"),
        ("text_extraction", "not ready", "ready"), ("job", None, "pending extraction"),
        ("text_extraction", "ready", "in progress"), ("processing", "pending extraction", "ocr running"),
        ("processing", "ocr running", "llm running"),
        ("text_extraction", "in progress", "completed"), ("processing", "llm running", "done"),
        ("job", "pending extraction", "done"),
    ]
    assert len({event["event_id"] for event in events}) == 10
    assert {event["job_id"] for event in events if event["kind"] == "job"} == {job.id}
    tx_id, event_id = events[-1]["cursor"].split(":")
    assert int(event_id) == events[-1]["event_id"] and int(tx_id) > 0
    stop(process)


def test_watch_filters_by_document_and_kind_in_plain_text(cli_process, db_dsn):
    with Client.connect(db_dsn) as client:
        watched = client.register_document("docs", "watched.pdf", "watched.pdf", "application/pdf", 100)
        process = cli_process("watch", "--document", str(watched.id), "--kind", "processing")
        process.stderr_line(is_ready, what="watch to be ready")
        other = client.register_document("docs", "other.pdf", "other.pdf", "application/pdf", 100)
        client.validate_document(other.id, True, "application/pdf")
        client.mark_processing_failed(other.id, "not watched")
        client.mark_processing_failed(watched.id, "scanner on fire")

    line = process.stdout_line(what="the watched document's processing event")
    assert "\x1b[" not in line  # piped: no colour
    assert f"doc {watched.id}" in line and "processing" in line
    assert "pending extraction -> failed" in line and line.endswith("scanner on fire")
    stop(process)
    assert process.stdout.get(timeout=5) is None  # nothing else was printed


def test_watch_alerts_shows_failures_and_stuck_hints(cli_process, db_dsn, conn):
    with Client.connect(db_dsn) as client:
        slow = client.register_document("docs", "slow.pdf", "slow.pdf", "application/pdf", 100)
        process = cli_process("watch", "--alerts", "--json")
        process.stderr_line(is_ready, what="watch to be ready")

        client.register_document("docs", "fine.pdf", "fine.pdf", "application/pdf", 100)  # no alert
        failing = client.register_document("docs", "bad.exe", "bad.exe", "application/x-msdownload", 100)
        client.validate_document(failing.id, True, "application/x-msdownload")
        conn.execute("UPDATE docstatus.stage_slas SET max_duration = interval '1 microsecond'")
        stuck = {row.document_id for row in client.check_stuck()}
    assert slow.id in stuck

    lines = read_json_lines(process, 2 + len(stuck))
    failures = [line for line in lines if line["type"] == "event"]
    hints = [line for line in lines if line["type"] == "hint"]
    assert {(line["document_id"], line["kind"], line["to_status"]) for line in failures} == {
        (failing.id, "text_extraction", "failed"), (failing.id, "processing", "failed")}
    assert failures[0]["detail"] == "MIME type application/x-msdownload is not allowed"
    assert {line["document_id"] for line in hints} == stuck
    assert all(line["kind"] == "stuck" and line["state"] == "uploaded" for line in hints)
    assert all(line["sla"] == 0.000001 for line in hints)  # seconds, as every duration of --json
    stop(process)
