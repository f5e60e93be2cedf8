"""The README cannot drift from the database: its state diagram is generated, its state names are
the database's, and its psql block pastes cleanly into a fresh database and a busy one."""

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from docstatus import Client, migrations
from docstatus.diagram import state_diagram

README = Path(__file__).resolve().parents[2] / "README.md"
DIAGRAM_BLOCK = re.compile(r"<!-- docstatus diagram:[^\n]*-->\n```mermaid\n(.*?)```\n<!-- end docstatus diagram -->",
                           re.DOTALL)
PSQL_BLOCK = re.compile(r"Paste these into psql.*?```sql\n(.*?)```\n", re.DOTALL)


def readme_block(pattern: re.Pattern) -> str:
    found = pattern.findall(README.read_text(encoding="utf-8"))
    assert len(found) == 1, f"README.md must hold exactly one block matching {pattern.pattern[:40]!r}"
    return found[0]


@pytest.fixture
def migrated_dsn(empty_db_dsn):
    """A database built as users build theirs: `docstatus migrate`, not schema.sql."""
    migrations.apply(empty_db_dsn)
    return empty_db_dsn


def test_readme_diagram_is_what_docstatus_diagram_prints(migrated_dsn):
    with Client.connect(migrated_dsn) as client:
        generated = state_diagram(client)
    assert readme_block(DIAGRAM_BLOCK) == generated, (
        "README's state diagram is out of date: replace the block between the markers with "
        "`docstatus diagram` run on a migrated database")


def test_readme_model_table_uses_the_state_names_of_the_database(conn):
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| state "):]
    table = table[:table.index("\n\n")]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    expected = [(str(state.state), str(state.text_extraction_status), str(state.processing_status))
                for state in Client(conn).document_states()]
    assert [tuple(row[:3]) for row in rows] == expected


def paste(pg_server, dsn: str) -> str:
    """The README's block through psql as a person pastes it: stop at the first error."""
    result = subprocess.run(
        [str(pg_server.bindir / "psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", f"--dbname={dsn}"],
        input=readme_block(PSQL_BLOCK), text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr and "WARNING" not in result.stderr, result.stderr
    return result.stdout


def assert_done_and_failed_paths(client: Client, done_id: int, failed_id: int) -> None:
    done = client.get_document(done_id)
    assert (done.text_extraction_status, done.processing_status) == ("completed", "done")
    [done_job] = client.list_jobs(done_id)
    assert done_job.status == "done" and done_job.completed_at is not None
    assert client.current_result(done_id) is not None
    failed_jobs = client.list_jobs(failed_id)
    assert [(job.attempt, job.status) for job in failed_jobs] == [(1, "failed"), (2, "done")]
    assert failed_jobs[0].error_message == "OCR: no text layer" and failed_jobs[0].completed_at is not None
    assert client.get_document(failed_id).text_extraction_status == "completed"
    assert all(job.document_id not in (done_id, failed_id) for job in client.recent_jobs(status="pending extraction"))


def test_psql_block_pastes_into_a_fresh_migrated_database(pg_server, migrated_dsn):
    output = paste(pg_server, migrated_dsn)
    with Client.connect(migrated_dsn) as client:
        assert_done_and_failed_paths(client, 1, 2)
    assert "OCR: no text layer" in output


def fill_with_documents_in_every_state(client: Client) -> None:
    """A database in use, as the demo leaves it and more: one document per state, the blob name
    the README used to hard-code included, a job held by a live worker."""
    def queued(name):
        document = client.register_document("docs", name, name.rsplit("/", 1)[-1], "application/pdf", 10)
        return client.validate_document(document.id, True, "application/pdf", blob_size=10)

    client.register_document("docs", "invoices/42.pdf", "42.pdf", "image/png", 18231)  # stays uploaded
    bad = client.register_document("docs", "bad.exe", "bad.exe", None, 10)
    client.validate_document(bad.id, True, "application/x-dosexec", blob_size=10)       # validation failed
    for name in ("a/completed.pdf", "a/failed.pdf", "a/held.pdf", "a/llm.pdf", "a/queued.pdf"):
        queued(name)
    for document_id, worker in ((3, "w-done"), (4, "w-failed"), (5, "w-held"), (6, "w-llm")):
        [claimed] = client.claim_jobs(worker, lease=timedelta(hours=1), start_ocr=True)
        assert claimed.document_id == document_id
    client.mark_llm_running(3, worker_id="w-done")
    client.finish_job(3, "t.txt", "f.json", worker_id="w-done")
    client.mark_processing_failed(4, "boom", worker_id="w-failed")
    client.mark_llm_running(6, worker_id="w-llm")


def snapshot(conn) -> list[tuple]:
    return conn.execute(
        "SELECT d::text, coalesce(array_agg(j::text ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{}')"
        "  FROM docstatus.documents d LEFT JOIN docstatus.extraction_jobs j ON j.document_id = d.id"
        " GROUP BY d.id ORDER BY d.id").fetchall()


def test_psql_block_pastes_twice_into_a_database_in_use_and_changes_no_other_row(pg_server, db_dsn, conn):
    client = Client(conn)
    fill_with_documents_in_every_state(client)
    before = snapshot(conn)
    states = {overview.state for overview in map(client.document_overview, range(1, 8))}
    assert states == {"uploaded", "failed", "completed", "ocr running", "llm running", "queued"}

    paste(pg_server, db_dsn)
    assert snapshot(conn)[:len(before)] == before
    assert_done_and_failed_paths(client, 8, 9)

    paste(pg_server, db_dsn)  # a second paste makes two more documents, and leaves the first two alone
    after = snapshot(conn)
    assert after[:len(before)] == before
    assert_done_and_failed_paths(client, 10, 11)
    assert len(after) == len(before) + 4
