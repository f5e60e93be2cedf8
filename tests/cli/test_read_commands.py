"""status, show, jobs, stuck, failures: human tables and --json against known content."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from docstatus import Client

from .conftest import LLM_ERROR, OCR_ERROR, REJECTED_MIME


def rows_of(output: str, first_header: str) -> list[list[str]]:
    """The table rows below the header line that starts with ``first_header``, split on 2+ blanks."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append([cell for cell in line.strip().split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


# --- status -----------------------------------------------------------------------------------


def test_status_json_counts_every_status(run_cli, known):
    result = run_cli("status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "text_extraction": {"not ready": 1, "ready": 1, "in progress": 1, "completed": 1, "failed": 3},
        "processing": {"pending extraction": 2, "ocr running": 1, "llm running": 0, "done": 1, "failed": 3},
        "job": {"pending extraction": 2, "done": 1, "failed": 2},
        "stuck": 0,
    }


def test_status_table_is_aligned_plain_text_when_piped(run_cli, known):
    result = run_cli("status")
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.stdout  # no colour: stdout is not a terminal
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TEXT", "EXTRACTION", "COUNT", "PROCESSING", "COUNT", "JOBS", "COUNT"]
    assert "not ready" in lines[1] and "pending extraction" in lines[1]
    # Aligned: every COUNT column ends where its header ends.
    count_ends = [index + len("COUNT") for index in range(len(lines[0])) if lines[0].startswith("COUNT", index)]
    for line in lines[1:6]:
        line = line.ljust(len(lines[0]))  # a row ends at its last cell: no trailing blanks
        for end in count_ends:
            assert line[end - 1].isdigit() or line[end - 1] == " ", (line, end)
    assert lines[-1] == "7 documents, 5 jobs, 0 stuck"
    assert all(line == line.rstrip() for line in lines)


def test_status_is_coloured_on_a_colour_terminal(run_cli, known):
    result = run_cli("status", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout


# --- show -------------------------------------------------------------------------------------


def test_show_json_has_statuses_jobs_and_timeline(run_cli, known, conn):
    document_id = known.ocr_failed
    result = run_cli("show", str(document_id), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    document = shown["document"]
    assert (document["document_id"], document["state"], document["text_extraction_status"],
            document["processing_status"]) == (document_id, "failed", "failed", "failed")
    assert document["last_error"] == OCR_ERROR and document["job_id"] == known.jobs[document_id]
    assert isinstance(document["in_status_for"], float) and document["in_status_for"] >= 0
    [job] = shown["jobs"]
    assert (job["job_id"], job["attempt"], job["status"], job["worker_id"], job["error_message"]) == (
        known.jobs[document_id], 1, "failed", "w-fail", OCR_ERROR)
    assert job["ran"] >= 0 and job["waited"] >= 0
    assert datetime.fromisoformat(job["completed_at"]) >= datetime.fromisoformat(job["started_at"])
    moves = [(event["kind"], event["from_status"], event["to_status"]) for event in shown["events"]]
    assert moves == [
        ("text_extraction", None, "not ready"), ("processing", None, "pending extraction"),
        ("text_extraction", "not ready", "ready"), ("job", None, "pending extraction"),
        ("text_extraction", "ready", "in progress"), ("processing", "pending extraction", "ocr running"),
        ("text_extraction", "in progress", "failed"), ("processing", "ocr running", "failed"),
        ("job", "pending extraction", "failed"),
    ]
    assert shown["events"][0]["after"] is None and all(event["after"] >= 0 for event in shown["events"][1:])
    stored = conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s",
                          (document_id,)).fetchone()[0]
    assert stored == len(moves)


def test_show_prints_facts_jobs_and_timeline(run_cli, known):
    result = run_cli("show", str(known.ocr_running))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"Document {known.ocr_running}  running.pdf")
    assert "ocr running" in out and "in progress" in out
    assert f"{known.jobs[known.ocr_running]} (attempt 1, pending extraction, held by w-ocr until" in out
    [job] = rows_of(out, "JOB")
    assert job[:4] == [str(known.jobs[known.ocr_running]), "1", "pending extraction", "w-ocr"]
    timeline = rows_of(out, "TIME")
    assert len(timeline) == 6 and timeline[-1][-2:] == ["pending extraction", "ocr running"]


def test_show_a_document_that_failed_validation(run_cli, known):
    result = run_cli("show", str(known.rejected))
    assert result.exit_code == 0, result.output
    assert f"MIME type {REJECTED_MIME} is not allowed" in result.stdout
    assert "none: the document never had an extraction job" in result.stdout


# --- jobs -------------------------------------------------------------------------------------


def test_jobs_lists_newest_first_and_filters_by_status(run_cli, known):
    result = run_cli("jobs", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [job["job_id"] for job in listed] == sorted(known.jobs.values(), reverse=True)

    result = run_cli("jobs", "--status", "failed", "--json")
    failed = json.loads(result.stdout)
    assert {(job["document_id"], job["error_message"]) for job in failed} == {
        (known.ocr_failed, OCR_ERROR), (known.llm_failed, LLM_ERROR)}
    assert all(job["ran_for"] >= 0 for job in failed)

    result = run_cli("jobs", "--status", "failed")
    rows = rows_of(result.stdout, "JOB")
    assert [row[1] for row in rows] == [str(known.llm_failed), str(known.ocr_failed)]
    assert rows[0][-1] == LLM_ERROR and rows[0][3] == "failed"


def test_jobs_since(run_cli, known):
    assert len(json.loads(run_cli("jobs", "--since", "1h", "--json").stdout)) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert json.loads(run_cli("jobs", "--since", future, "--json").stdout) == []
    result = run_cli("jobs", "--since", future)
    assert result.stdout.strip() == "no jobs match"
    result = run_cli("jobs", "--since", "yesterday-ish")
    assert result.exit_code == 2 and "neither a duration ago" in result.stderr


# --- stuck ------------------------------------------------------------------------------------


def make_everything_overdue(conn) -> None:
    """SLAs are data: a microsecond makes every moving document stuck at once."""
    conn.execute("UPDATE docstatus.stage_slas SET max_duration = interval '1 microsecond'")


def test_stuck_lists_overdue_documents_with_their_alerts(run_cli, known, conn, db_dsn):
    result = run_cli("stuck")
    assert result.exit_code == 0 and result.stdout.strip() == "no stuck documents"

    make_everything_overdue(conn)
    with Client.connect(db_dsn) as client:
        alerted = {row.document_id for row in client.check_stuck()}
    assert alerted == {known.uploaded, known.queued, known.ocr_running}

    result = run_cli("stuck", "--json")
    assert result.exit_code == 0, result.output
    stuck = {row["document_id"]: row for row in json.loads(result.stdout)}
    assert {doc: row["state"] for doc, row in stuck.items()} == {
        known.uploaded: "uploaded", known.queued: "queued", known.ocr_running: "ocr running"}
    assert all(row["alerted_at"] is not None and not row["newly_alerted"] for row in stuck.values())
    assert stuck[known.ocr_running]["worker_id"] == "w-ocr"
    assert stuck[known.ocr_running]["job_id"] == known.jobs[known.ocr_running]
    assert stuck[known.uploaded]["sla"] == 1e-06

    rows = rows_of(run_cli("stuck").stdout, "DOC")
    assert sorted(int(row[0]) for row in rows) == sorted(stuck)
    assert json.loads(run_cli("status", "--json").stdout)["stuck"] == 3


def test_stuck_check_alerts_once(run_cli, known, conn):
    make_everything_overdue(conn)
    first = run_cli("stuck", "--check")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1] == "3 newly alerted"
    assert sum(re.search(r"  now\b", line) is not None for line in first.stdout.splitlines()) == 3
    second = json.loads(run_cli("stuck", "--check", "--json").stdout)
    assert len(second) == 3 and not any(row["newly_alerted"] for row in second)
    assert conn.execute("SELECT count(*) FROM docstatus.stuck_alerts").fetchone()[0] == 3


# --- failures ---------------------------------------------------------------------------------


def test_failures_groups_by_normalised_error(run_cli, known, db_dsn):
    with Client.connect(db_dsn) as client:  # the same OCR failure with other numbers: one pattern
        document = client.register_document("docs", "again.pdf", "again.pdf", "application/pdf", 10)
        client.validate_document(document.id, True, "application/pdf")
        client.mark_processing_failed(document.id, "OCR engine crashed: timeout after 45 s")
    result = run_cli("failures", "--json")
    assert result.exit_code == 0, result.output
    summary = {row["error_pattern"]: row for row in json.loads(result.stdout)}
    assert set(summary) == {"OCR engine crashed: timeout after <n> s", "LLM returned invalid JSON at byte <n>"}
    ocr = summary["OCR engine crashed: timeout after <n> s"]
    assert (ocr["failures"], ocr["documents"]) == (2, 2)
    assert ocr["example_document_ids"] == [document.id, known.ocr_failed]
    assert ocr["example_error"] == "OCR engine crashed: timeout after 45 s"

    rows = rows_of(run_cli("failures").stdout, "FAILURES")
    assert rows[0][0] == "2" and rows[0][4] == "OCR engine crashed: timeout after <n> s"
    assert rows[0][5] == f"{document.id} {known.ocr_failed}"


def test_empty_database_says_so(run_cli):
    assert run_cli("failures").stdout.strip() == "no failed jobs"
    assert run_cli("jobs").stdout.strip() == "no jobs"
    assert json.loads(run_cli("jobs", "--json").stdout) == []
    assert run_cli("status").stdout.splitlines()[-1] == "0 documents, 0 jobs, 0 stuck"
