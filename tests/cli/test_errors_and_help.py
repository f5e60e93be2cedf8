"""One clear line on stderr and a non-zero exit: unknown documents, an unreachable database
(its password never shown), bad usage. And `docstatus --help` lists every command readably."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from docstatus.cli import main
from docstatus.ops.db import redact_dsn

from .conftest import closed_port

SECRET = "s3cr3t-Pa55"

# Every command that reads or writes the database, with the arguments it needs.
DATABASE_COMMANDS = [
    ["status"], ["status", "--json"], ["show", "1"], ["jobs"], ["stuck"], ["failures"], ["reap"],
    ["retry", "1"], ["retry", "--all-failed"], ["watch"], ["watch", "--alerts", "--json"],
    ["metrics", "--port", "0"],
]


def test_unknown_document(run_cli, known):
    for args in (["show", "424242"], ["show", "424242", "--json"], ["retry", str(known.ocr_failed), "424242"]):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == "Error: document 424242 not found\n"
        assert result.stdout == ""
    # retry acts on none of the documents when one of them does not exist
    assert run_cli("show", str(known.ocr_failed), "--json").stdout.count('"status": "failed"') == 1


@pytest.mark.parametrize("dsn_form", ["url", "conninfo"])
@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=" ".join)
def test_unreachable_database_names_it_without_the_password(args, dsn_form):
    port = closed_port()
    dsn = (f"postgresql://alice:{SECRET}@127.0.0.1:{port}/docs" if dsn_form == "url"
           else f"host=127.0.0.1 port={port} dbname=docs user=alice password={SECRET}")
    result = CliRunner().invoke(main, [*args, "--dsn", dsn], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert SECRET not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: cannot connect to PostgreSQL at ")
    assert "127.0.0.1" in line and str(port) in line and "alice" in line and "docs" in line


def test_redact_dsn_keeps_everything_but_the_password():
    assert redact_dsn("postgresql://bob:pw@db.example:5433/app?sslmode=require&password=pw2") == (
        "postgresql://bob@db.example:5433/app?sslmode=require")
    assert sorted(redact_dsn("host=db port=5433 user=bob password='p w' dbname=app").split()) == [
        "dbname=app", "host=db", "port=5433", "user=bob"]
    assert "pw" not in redact_dsn("postgresql://bob:pw@db/app")
    assert redact_dsn("").startswith("(empty DSN")


def test_a_database_without_the_schema_says_what_to_do(empty_db_dsn):
    result = CliRunner().invoke(main, ["status", "--dsn", empty_db_dsn], catch_exceptions=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "does not exist" in line and "docstatus migrate" in line


def test_usage_errors(run_cli):
    for args, message in [
        (["retry"], "give the documents to retry (DOC...) or --all-failed"),
        (["retry", "1", "--all-failed"], "give DOC... or --all-failed, not both"),
        (["retry", "1", "--error-like", "%x%"], "--error-like goes with --all-failed"),
        (["show", "abc"], "'abc' is not a valid integer"),
        (["jobs", "--status", "running"], "'running' is not one of"),
        (["watch", "--since", "yesterday"], "is not a cursor"),
        (["metrics"], "Missing option '--port'"),
    ]:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)


def test_help_lists_every_command_on_one_line_each():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n")[1].splitlines()
    names = [line.split()[0] for line in listed]
    for command in ("status", "show", "jobs", "stuck", "failures", "retry", "watch", "reap", "metrics",
                    "migrate", "upload", "worker"):
        assert command in names
    ours = [line for line in listed if line.split()[0] in
            ("status", "show", "jobs", "stuck", "failures", "retry", "watch", "reap", "metrics")]
    assert all(not line.endswith("...") for line in ours), ours  # whole first sentences, not cut
    for command in ("status", "show", "jobs", "stuck", "failures", "retry", "watch", "reap", "metrics"):
        help_text = CliRunner().invoke(main, [command, "--help"])
        assert help_text.exit_code == 0 and "--dsn" in help_text.stdout
        assert ("--json" in help_text.stdout) == (command != "metrics")
