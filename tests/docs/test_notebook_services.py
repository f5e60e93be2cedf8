"""`make notebook` finds the demo's services through `python -m docstatus.dev.demo env`."""

import subprocess

import psycopg

from docstatus.dev import demo


def test_env_prints_exports_a_shell_evaluates_and_migrates(empty_db_dsn, azurite, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCSTATUS_DSN", empty_db_dsn)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    demo.main(["env", "--base", str(tmp_path)])
    captured = capsys.readouterr()
    assert [line.split("=", 1)[0] for line in captured.out.splitlines()] == [
        "export DOCSTATUS_DSN", "export AZURE_STORAGE_CONNECTION_STRING"]
    assert "using DOCSTATUS_DSN" in captured.err  # the steps go to stderr, so `eval` sees only exports

    # The connection string holds ';' and '=': the quoting must survive a shell.
    evaluated = subprocess.run(
        ["bash", "-c", 'eval "$EXPORTS" && printf "%s\\n%s" "$DOCSTATUS_DSN" "$AZURE_STORAGE_CONNECTION_STRING"'],
        env={"EXPORTS": captured.out, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    assert evaluated.stdout.split("\n") == [empty_db_dsn, azurite.connection_string]

    with psycopg.connect(empty_db_dsn) as conn:  # migrated, ready for the notebook
        assert conn.execute("SELECT count(*) FROM docstatus.document_states").fetchone()[0] == 6

    demo.main(["down", "--base", str(tmp_path)])
    assert capsys.readouterr().out.strip() == "demo: nothing running"  # it started nothing
