"""`docstatus upload FILE...` end to end: real Azurite, real PostgreSQL, configured from the environment."""

from __future__ import annotations

from click.testing import CliRunner

from docstatus.cli import main
from docstatus.dms.cli import EXIT_SOME_FAILED

from .conftest import DATA


def run_upload(db_dsn, azurite, *args):
    env = {"DOCSTATUS_DSN": db_dsn, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    return CliRunner().invoke(main, ["upload", *args], env=env, catch_exceptions=False)


def table_rows(output):
    lines = [line for line in output.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    return lines[header_at + 1:]


def test_upload_prints_a_table_and_succeeds(db_dsn, azurite, container, conn):
    files = [str(DATA / name) for name in ("invoice.pdf", "invoice.png", "invoice.txt")]
    result = run_upload(db_dsn, azurite, "--container", container, *files)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert len(rows) == 3
    for row, path in zip(rows, files, strict=True):  # the order given, whatever order they finished in
        assert row.split()[1] == "ready" and row.endswith(path)
    stored = conn.execute("SELECT count(*), min(blob_container), max(blob_container)"
                          " FROM docstatus.documents WHERE text_extraction_status = 'ready'").fetchone()
    assert stored == (3, container, container)


def test_upload_exits_non_zero_when_any_file_fails(db_dsn, azurite, container):
    files = [str(DATA / name) for name in ("invoice.jpg", "spoofed_elf.pdf", "empty.txt")]
    result = run_upload(db_dsn, azurite, "--container", container, "--jobs", "2", *files)
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    rows = table_rows(result.output)
    assert rows[0].split()[1] == "ready"
    assert "failed" in rows[1] and "MIME type application/x-executable is not allowed" in rows[1]
    assert "failed" in rows[2] and "document is empty (0 bytes)" in rows[2]


def test_container_comes_from_the_environment(db_dsn, azurite, container, conn):
    env = {"DOCSTATUS_DSN": db_dsn, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
           "DOCSTATUS_CONTAINER": container}
    result = CliRunner().invoke(main, ["upload", str(DATA / "invoice.tiff")], env=env)
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT blob_container FROM docstatus.documents").fetchone() == (container,)


def test_unreachable_database_is_a_clear_error(azurite, tmp_path):
    result = CliRunner().invoke(main, ["upload", str(DATA / "invoice.txt")], env={
        "DOCSTATUS_DSN": "host=127.0.0.1 port=1 connect_timeout=1",
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: cannot connect to PostgreSQL at connect_timeout=1 host=127.0.0.1 port=1: "
                                     "connection refused")  # the form every command uses (issue 9)


def test_bad_container_name_is_a_clear_error(db_dsn, azurite):
    result = run_upload(db_dsn, azurite, "--container", "Not_Valid", str(DATA / "invoice.txt"))
    assert result.exit_code == 1
    assert "invalid blob container name" in result.output
