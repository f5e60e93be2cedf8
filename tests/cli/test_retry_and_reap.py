"""retry (processing failures retried, validation failures validated again through the real blob
store, or left alone when it cannot be reached) and reap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docstatus import Client
from docstatus.dev.azurite import Azurite, AzuriteError, find_azurite_blob
from docstatus.options import EXIT_SOME_NOT_DONE

from .conftest import LLM_ERROR, closed_port

DATA = Path(__file__).resolve().parents[1] / "data"


def statuses(conn, *document_ids: int) -> dict[int, tuple[str, str | None, int]]:
    """(text_extraction_status, status_reason, number of jobs) per document."""
    rows = conn.execute(
        "SELECT d.id, d.text_extraction_status, d.status_reason,"
        "       (SELECT count(*) FROM docstatus.extraction_jobs j WHERE j.document_id = d.id)"
        "  FROM docstatus.documents d WHERE d.id = ANY(%s)", (list(document_ids),)).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_retry_documents_by_id(run_cli, known, conn):
    result = run_cli("retry", str(known.ocr_failed), "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["document_id"] == known.ocr_failed and outcome["action"] == "retried" and outcome["ok"]
    assert (outcome["text_extraction_status"], outcome["attempt"]) == ("ready", 2)
    assert statuses(conn, known.ocr_failed)[known.ocr_failed] == ("ready", None, 2)

    # A document that did not fail is reported and left alone; the exit status says so.
    result = run_cli("retry", str(known.uploaded), str(known.llm_failed))
    assert result.exit_code == EXIT_SOME_NOT_DONE, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["DOC", "ACTION"]
    assert any(line.split()[:2] == [str(known.uploaded), "skipped"] and "not failed: it is 'not ready'" in line
               for line in lines)
    assert any(line.split()[:3] == [str(known.llm_failed), "retried", "ready"] for line in lines)
    assert lines[-1] == "1 of 2 queued again"
    assert statuses(conn, known.uploaded)[known.uploaded][0] == "not ready"


def test_retry_all_failed_with_error_like(run_cli, known, conn):
    # Dry run first: nothing changes.
    result = run_cli("retry", "--all-failed", "--error-like", "%timeout%", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert [(o["document_id"], o["action"]) for o in json.loads(result.stdout)] == [(known.ocr_failed, "would retry")]
    assert statuses(conn, known.ocr_failed)[known.ocr_failed][0] == "failed"

    # An ILIKE pattern on the error.
    result = run_cli("retry", "--all-failed", "--error-like", "%TIMEOUT after%")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "1 of 1 queued again"
    after = statuses(conn, known.ocr_failed, known.llm_failed, known.rejected)
    assert after[known.ocr_failed] == ("ready", None, 2)
    assert after[known.llm_failed] == ("failed", LLM_ERROR, 1)
    assert after[known.rejected][0] == "failed"

    # The pattern exactly as `docstatus failures` prints it.
    pattern = next(row["error_pattern"] for row in json.loads(run_cli("failures", "--json").stdout)
                   if row["error_pattern"].startswith("LLM"))
    result = run_cli("retry", "--all-failed", "--error-like", pattern, "--json")
    assert [(o["document_id"], o["action"], o["attempt"]) for o in json.loads(result.stdout)] == [
        (known.llm_failed, "retried", 2)]

    # Nothing left that matches.
    result = run_cli("retry", "--all-failed", "--error-like", "%timeout%")
    assert result.exit_code == 0 and result.stdout.strip() == "no failed documents with an error like '%timeout%'"


def test_retry_of_a_validation_failure_without_a_reachable_blob_store(run_cli, known, conn):
    port = closed_port()
    unreachable = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                   f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    before = statuses(conn, known.rejected)
    result = run_cli("retry", "--all-failed", "--json", env={"AZURE_STORAGE_CONNECTION_STRING": unreachable})
    assert result.exit_code == EXIT_SOME_NOT_DONE, result.output
    outcomes = {o["document_id"]: o for o in json.loads(result.stdout)}
    assert {doc: o["action"] for doc, o in outcomes.items()} == {
        known.ocr_failed: "retried", known.llm_failed: "retried", known.rejected: "not validated"}
    detail = outcomes[known.rejected]["detail"]
    assert f"cannot reach the blob store at http://127.0.0.1:{port}/devstoreaccount1: connection refused" in detail
    assert "left failed" in detail and "a2V5" not in detail
    assert statuses(conn, known.rejected) == before  # an outage of the store moves nothing

    human = run_cli("retry", str(known.rejected), env={"AZURE_STORAGE_CONNECTION_STRING": unreachable})
    assert human.exit_code == EXIT_SOME_NOT_DONE
    assert "not validated" in human.stdout and "cannot reach the blob store" in human.stdout

    misconfigured = run_cli("retry", str(known.rejected), "--json", env={"AZURE_STORAGE_CONNECTION_STRING": "nonsense"})
    assert misconfigured.exit_code == EXIT_SOME_NOT_DONE
    [outcome] = json.loads(misconfigured.stdout)
    assert outcome["action"] == "not validated" and outcome["detail"].startswith("no usable blob store")
    assert statuses(conn, known.rejected) == before


@pytest.fixture
def azurite(request: pytest.FixtureRequest) -> Azurite:
    """The session's Azurite (tests/conftest.py); without an azurite-blob this test is skipped."""
    try:
        find_azurite_blob()
    except AzuriteError as exc:
        pytest.skip(str(exc))
    return request.getfixturevalue("azurite")


def test_retry_validates_a_validation_failure_again_through_the_blob_store(run_cli, conn, db_dsn, azurite):
    from docstatus.dms import DocumentStore

    # Rejected because text/plain was not allowed then; the operator allows it and retries.
    conn.execute("DELETE FROM docstatus.allowed_mime_types WHERE mime_type = 'text/plain'")
    with DocumentStore(conn, azurite.connection_string, "cli-tests", retry_total=0) as store:
        document, job = store.upload_and_validate(DATA / "invoice.txt")
    assert (document.text_extraction_status, job) == ("failed", None)
    assert document.status_reason == "MIME type text/plain is not allowed"
    conn.execute("INSERT INTO docstatus.allowed_mime_types (mime_type) VALUES ('text/plain')")

    result = run_cli("retry", str(document.id), env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert result.exit_code == 0, result.output
    header, row, summary = result.stdout.splitlines()
    assert row.split()[:5] == [str(document.id), "validated", "again", "ready",
                               str(Client(conn).list_jobs(document.id)[0].id)]
    assert summary == "1 of 1 queued again"
    assert statuses(conn, document.id)[document.id] == ("ready", None, 1)


def test_reap_ends_expired_leases(run_cli, known, conn):
    assert run_cli("reap").stdout.strip() == "no expired leases"
    job_id = known.jobs[known.ocr_running]
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE id = %s", (job_id,))
    result = run_cli("reap", "--json")
    assert result.exit_code == 0, result.output
    [reaped] = json.loads(result.stdout)
    assert (reaped["job_id"], reaped["document_id"], reaped["worker_id"], reaped["document_status"]) == (
        job_id, known.ocr_running, "w-ocr", "ready")
    assert reaped["error_message"].startswith("lease expired: worker w-ocr held the job until")
    assert run_cli("reap", "--json").stdout.strip() == "[]"

    conn.execute("UPDATE docstatus.settings SET max_attempts = 1")
    second = Client(conn).list_jobs(known.ocr_running)[-1]
    conn.execute("UPDATE docstatus.extraction_jobs SET worker_id = 'w-2', lease_expires_at = now() - interval '1 s'"
                 " WHERE id = %s", (second.id,))
    result = run_cli("reap")
    assert result.exit_code == 0, result.output
    assert "(attempts used up)" in result.stdout and result.stdout.splitlines()[-1] == "1 expired job reaped"
