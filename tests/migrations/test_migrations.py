"""The migrations and schema.sql must build the same database, and migrations must reverse.

A fresh install runs schema.sql; an existing install runs the migrations. If the
two drift, one of them ships a bug, so we compare normalised `pg_dump --schema-only`
output, which covers tables, constraints, indexes, functions (bodies included),
triggers, comments and grants.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from urllib.parse import parse_qsl, urlsplit

import psycopg
from click.testing import CliRunner

from docstatus import migrations
from docstatus.cli import main

# Lines of a dump that say nothing about the schema: comments, session SETs,
# and the random-keyed \restrict / \unrestrict guards of newer pg_dump releases.
_NOISE = re.compile(r"^(--.*|SET .*|SELECT pg_catalog\.set_config\(.*|\\(un)?restrict .*|\s*)$")


def normalised_schema_dump(pg_server, dsn: str) -> str:
    """Schema-only dump without owners, noise lines or yoyo's bookkeeping tables."""
    dump = subprocess.run(
        [
            str(pg_server.bindir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            # yoyo's own tables exist only in the migrated database.
            "--exclude-table=_yoyo_*",
            "--exclude-table=yoyo_lock",
            f"--dbname={dsn}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(line for line in dump.splitlines() if not _NOISE.match(line)) + "\n"


def docstatus_schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'docstatus'").fetchone()
    return row == (1,)


def assert_same_schema(expected: str, actual: str, expected_name: str, actual_name: str) -> None:
    """Two normalised dumps are equal, or the failure shows their diff."""
    if expected != actual:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=expected_name,
                tofile=actual_name,
            )
        )
        raise AssertionError(f"{expected_name} and {actual_name} build different schemas:\n{diff}")


def test_migrations_build_the_same_schema_as_schema_sql(pg_server, empty_db_dsn, db_dsn):
    # db_dsn is a clone of the template built from schema.sql.
    migrations.apply(empty_db_dsn)

    from_migrations = normalised_schema_dump(pg_server, empty_db_dsn)
    from_schema_sql = normalised_schema_dump(pg_server, db_dsn)

    assert_same_schema(from_schema_sql, from_migrations,
                       "database/schemas/schema.sql", "database/migrations (applied with yoyo)")
    assert "CREATE SCHEMA docstatus;" in from_schema_sql


def test_apply_rollback_all_apply(empty_db_dsn):
    applied = migrations.apply(empty_db_dsn)
    assert applied, "no migrations found to apply"
    assert docstatus_schema_exists(empty_db_dsn)

    rolled_back = migrations.rollback_all(empty_db_dsn)
    assert rolled_back == list(reversed(applied))
    assert not docstatus_schema_exists(empty_db_dsn)

    assert migrations.apply(empty_db_dsn) == applied
    assert docstatus_schema_exists(empty_db_dsn)


def test_apply_twice_is_a_no_op(empty_db_dsn):
    migrations.apply(empty_db_dsn)
    assert migrations.apply(empty_db_dsn) == []


def test_cli_migrate_uses_docstatus_dsn_and_rolls_back(empty_db_dsn):
    runner = CliRunner()

    result = runner.invoke(main, ["migrate"], env={"DOCSTATUS_DSN": empty_db_dsn})
    assert result.exit_code == 0, result.output
    assert "applied" in result.output
    assert docstatus_schema_exists(empty_db_dsn)

    result = runner.invoke(main, ["migrate", "--dsn", empty_db_dsn])
    assert result.exit_code == 0, result.output
    assert "already up to date" in result.output

    result = runner.invoke(main, ["migrate", "--dsn", empty_db_dsn, "--rollback-all"])
    assert result.exit_code == 0, result.output
    assert not docstatus_schema_exists(empty_db_dsn)


def test_yoyo_url_keeps_every_libpq_parameter():
    def query_of(url: str) -> dict[str, str]:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == ("postgresql+psycopg", "", "/")
        return dict(parse_qsl(parts.query))

    assert query_of(migrations.yoyo_url("host=/run/postgresql port=5433 dbname='my db' sslmode=disable")) == {
        "host": "/run/postgresql",
        "port": "5433",
        "dbname": "my db",
        "sslmode": "disable",
    }
    assert query_of(migrations.yoyo_url("postgresql://u:p%40ss@h:5/d")) == {
        "user": "u",
        "password": "p@ss",
        "host": "h",
        "port": "5",
        "dbname": "d",
    }
