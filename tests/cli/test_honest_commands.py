"""Issue 9's "honest commands": each says what it will do, and does what it said.

- ``retry --dry-run`` asks the database the real question (the real calls, rolled back);
- ``metrics`` listens on 127.0.0.1 unless --host; its histograms say they start empty;
- ``show -1`` / ``show 0`` are unknown documents, not unknown options;
- control characters in a filename or an error never break a human table's row;
- ``migrate --migrations-dir`` accepts only docstatus SQL migrations and never runs Python.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from docstatus import Client, migrations
from docstatus.dms import DocumentStore
from docstatus.ops.watch import seconds_of

DATA = Path(__file__).resolve().parents[1] / "data"


def _snapshot(conn) -> tuple:
    return (conn.execute("SELECT count(*), max(id) FROM docstatus.status_events").fetchone(),
            conn.execute("SELECT array_agg((id, text_extraction_status, status_reason) ORDER BY id) "
                         "FROM docstatus.documents").fetchone()[0],
            conn.execute("SELECT count(*) FROM docstatus.extraction_jobs").fetchone()[0])


def test_retry_dry_run_counts_equal_the_real_run(run_cli, known, conn, azurite, db_dsn):
    # A document that failed validation and fails it again: the old dry run counted it as queued.
    with DocumentStore(conn, azurite.connection_string, "dry-run") as store:
        rejected = store.upload_and_validate(DATA / "spoofed_pe.pdf").document
    assert str(rejected.text_extraction_status) == "failed"
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}

    before = _snapshot(conn)
    dry = run_cli("retry", "--all-failed", "--dry-run", env=env)
    assert dry.exit_code == 0, dry.output
    assert _snapshot(conn) == before  # nothing changed, not even an event
    dry_json = json.loads(run_cli("retry", "--all-failed", "--dry-run", "--json", env=env).stdout)
    assert _snapshot(conn) == before

    real = run_cli("retry", "--all-failed", env=env)
    real_counts = re.fullmatch(r"(\d+) of (\d+) queued again", real.stdout.splitlines()[-1]).groups()
    dry_counts = re.fullmatch(r"dry run: (\d+) of (\d+) would be queued again; nothing changed",
                              dry.stdout.splitlines()[-1]).groups()
    assert dry_counts == real_counts
    assert {row["document_id"]: row["ok"] for row in dry_json}[rejected.id] is False
    assert {row["document_id"]: row["action"] for row in dry_json}[rejected.id] == "would be rejected again"


@pytest.mark.parametrize("document_id", ["-1", "0", "-99999999999"])
def test_show_of_a_negative_or_zero_id_is_not_found(run_cli, db_dsn, document_id):
    result = run_cli("show", document_id)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"Error: document {document_id} not found"]


def test_show_still_refuses_what_is_not_a_number(run_cli, db_dsn):
    result = run_cli("show", "--jsn")
    assert result.exit_code == 2 and "is not a valid integer" in result.output


def test_metrics_listens_on_localhost_by_default_and_says_histograms_start_empty(cli_process, known, run_cli):
    process = cli_process("metrics", "--port", "0")
    line = process.stderr_line(lambda text: text.startswith("serving Prometheus metrics on"), what="the server")
    url = re.search(r"http://\S+/metrics", line).group(0)
    assert url.startswith("http://127.0.0.1:"), line
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    help_line = next(row for row in text.splitlines() if row.startswith("# HELP docstatus_stage_duration_seconds "))
    assert "Starts empty when this exporter starts" in help_line
    process.interrupt()
    assert process.wait() == 0
    usage = " ".join(run_cli("metrics", "--help").output.split())
    assert "--host" in usage and "127.0.0.1" in usage and "start empty when the exporter starts" in usage


@pytest.mark.parametrize(("value", "seconds"), [
    ("PT10S", 10.0), ("PT0.000001S", 0.000001), ("P1DT2H", 93_600.0), ("PT1M30S", 90.0),
    ("00:00:10", 10.0), ("1 day 02:00:00", 93_600.0), ("3 days", 259_200.0), (12, 12.0)])
def test_a_hint_sla_in_seconds(value, seconds):
    assert seconds_of(value) == pytest.approx(seconds)


def test_control_characters_never_break_a_table_row(run_cli, conn, db_dsn, azurite, tmp_path):
    nasty = "evil\nname\t\x1b[2J.txt"
    path = tmp_path / nasty
    path.write_bytes(b"plain text for the table test\n")
    result = run_cli("upload", str(path), "--container", "textcells",
                     env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert len(rows) == 2 and rows[1].endswith("evil\\nname\\t\\x1b[2J.txt"), rows
    assert "\x1b" not in result.stdout

    with Client.connect(db_dsn) as client:
        document_id = int(rows[1].split()[0])
        job = client.claim_extraction_job("w-cells")
        client.mark_ocr_running(document_id, "w-cells")
        client.mark_processing_failed(document_id, "line one\nline two\x07 [red]markup[/red]", "w-cells")
    for command in (["show", str(document_id)], ["jobs"], ["failures"], ["status"]):
        output = run_cli(*command).stdout
        assert "\x1b" not in output and "\x07" not in output, command
        assert "line one\nline two" not in output and "evil\nname" not in output, command
    show = run_cli("show", str(document_id)).stdout
    assert "evil\\nname\\t\\x1b[2J.txt" in show.splitlines()[0]
    assert "line one\\nline two\\x07 [red]markup[/red]" in show  # and markup printed as written
    assert job is not None


def _copy_migrations(folder: Path) -> Path:
    folder.mkdir()
    for path in migrations.find_migrations_dir().iterdir():
        shutil.copyfile(path, folder / path.name)
    return folder


def test_migrate_refuses_a_folder_with_python_and_never_runs_it(run_cli, empty_db_dsn, tmp_path):
    folder = _copy_migrations(tmp_path / "migrations")
    marker = tmp_path / "ran"
    (folder / "0099_payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nsteps = []\n")
    result = run_cli("migrate", "--migrations-dir", str(folder), "--dsn", empty_db_dsn)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {folder} is not a docstatus migrations folder: '0099_payload.py' is not a NNNN_name.sql or "
        "NNNN_name.rollback.sql file (nothing was applied)"]
    assert not marker.exists()
    (folder / "0099_payload.py").unlink()
    (folder / "0100_orphan.rollback.sql").write_text("SELECT 1;")
    result = run_cli("migrate", "--migrations-dir", str(folder), "--dsn", empty_db_dsn)
    assert result.exit_code == 1 and "'0100_orphan.rollback.sql' has no migration 0100_orphan.sql" in result.output
    (folder / "0100_orphan.rollback.sql").unlink()
    (folder / "README").write_text("notes")
    result = run_cli("migrate", "--migrations-dir", str(folder), "--dsn", empty_db_dsn)
    assert result.exit_code == 1 and "'README' is not a NNNN_name.sql" in result.output
    (folder / "README").unlink()
    result = run_cli("migrate", "--migrations-dir", str(folder), "--dsn", empty_db_dsn)
    assert result.exit_code == 0, result.output
    assert "applied 0001_core" in result.stdout.splitlines()


def test_migrate_refuses_a_shared_temporary_folder(run_cli, empty_db_dsn, tmp_path):
    (tmp_path / "unrelated_script.py").write_text("raise SystemExit('must never run')\n")
    result = run_cli("migrate", "--migrations-dir", str(tmp_path), "--dsn", empty_db_dsn)
    assert result.exit_code == 1
    assert "is not a docstatus migrations folder" in result.output
