"""``make demo`` on the test services (DOCSTATUS_DSN / AZURE_STORAGE_CONNECTION_STRING honoured),
and the embedded PostgreSQL it starts on a machine with nothing configured."""

from __future__ import annotations

import os
import shutil
import sys

import psycopg
import pytest

from docstatus.dev import demo
from docstatus.dev.embedded import LocalPostgres, find_bindir


def test_demo_on_configured_services_ends_every_document_and_stops_nothing(empty_db_dsn, azurite, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("DOCSTATUS_DSN", empty_db_dsn)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    demo.main(["up", "--base", str(tmp_path)])
    output = capsys.readouterr().out
    table = output.split("6. Status")[1].split("7. Timeline")[0]
    rows = {line.split()[1]: line.split()[2] for line in table.splitlines()[2:] if line.strip()}
    assert rows["invoice.pdf"] == rows["invoice.txt"] == "completed"
    assert rows["spoofed_pe.pdf"] == rows["spoofed_elf.pdf"] == rows["empty.txt"] == "failed"  # validation
    assert rows["scanned-letter.pdf"] == "failed"  # its OCR
    assert "NoTextFound: no text found" in table
    expected_images = "completed" if shutil.which("tesseract") else "failed"
    assert rows["invoice.png"] == rows["invoice.jpg"] == rows["invoice.tiff"] == expected_images
    timeline = output.split("7. Timeline")[1]
    assert "ready -> in progress" in timeline and "llm running -> done" in timeline
    assert "using DOCSTATUS_DSN" in output and "using AZURE_STORAGE_CONNECTION_STRING" in output

    hint = output.split("Explore:")[1]
    assert f"{os.path.relpath(os.path.join(os.path.dirname(sys.executable), 'docstatus'))} upload FILE..." in hint \
        or f"{os.path.join(os.path.dirname(sys.executable), 'docstatus')} upload FILE..." in hint
    assert "make demo-clean" in hint

    # A second run finds the first run's documents, starts no worker, and reports only those.
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        documents_before = conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0]
    demo.main(["up", "--base", str(tmp_path)])
    again = capsys.readouterr().out
    assert "documents of an earlier run (same bytes, same names): reused" in again
    assert "none of the demo's documents is queued; the worker is not started" in again
    again_table = again.split("6. Status")[1].split("7. Timeline")[0]
    assert {line.split()[1]: line.split()[2] for line in again_table.splitlines()[2:] if line.strip()} == rows
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == documents_before

    demo.main(["down", "--base", str(tmp_path)])
    assert capsys.readouterr().out.strip() == "demo: nothing running"
    assert azurite.running


@pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL server binaries installed (the pgserver path)")
def test_embedded_postgres_starts_again_and_stops(tmp_path):
    cluster = LocalPostgres(tmp_path / ".local")
    try:
        dsn = cluster.start()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database(), current_setting('listen_addresses')").fetchone() == (
                "docstatus", "127.0.0.1")
        assert cluster.start() == dsn  # already running: same server, same database
        if os.geteuid() == 0:
            # pytest's tmp dir is root's alone: the cluster went where the postgres user can reach it.
            assert not str(cluster.cluster_dir).startswith(str(tmp_path))
        assert (tmp_path / ".local" / "pg" / "password").stat().st_mode & 0o077 == 0
    finally:
        assert cluster.stop()
        shutil.rmtree(cluster.cluster_dir, ignore_errors=True)
    assert not cluster.stop()


@pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL server binaries installed (the pgserver path)")
def test_demo_down_purge_removes_the_cluster_and_the_blobs(tmp_path, capsys):
    base = tmp_path / ".local"
    cluster = LocalPostgres(base)
    cluster.start()
    cluster_dir = cluster.cluster_dir
    blobs = base / "demo" / "azurite"
    blobs.mkdir(parents=True)
    (blobs / "some-blob").write_bytes(b"x")
    (base / "demo" / "started.json").write_text('{"postgres": true}')
    demo.main(["down", "--base", str(base), "--purge"])
    output = capsys.readouterr().out
    assert "stopped PostgreSQL" in output and "removed its data" in output
    assert not cluster_dir.exists() and not (base / "pg").exists() and not (base / "demo").exists()
