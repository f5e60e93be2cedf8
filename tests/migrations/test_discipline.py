"""Migration discipline: landed migrations never change, they form one chain, each one rolls
back to exactly the schema before it, and `docstatus schema` builds what the migrations build.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import yoyo
from click.testing import CliRunner

from docstatus import migrations
from docstatus.cli import main

from .test_migrations import assert_same_schema, normalised_schema_dump

REPO_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = REPO_ROOT / "database" / "migrations"
CHECKSUMS = REPO_ROOT / "database" / "migrations.sha256"
ADD_CHECKSUMS = "add the new files with `make migration-checksums` (it appends, never rewrites)"

# These landed before the chain rule, each depending on 0001_core alone. Landed files never
# change (see the checksums), so their depends: lines stay; every later migration names its
# predecessor, which makes the order one line again from 0004 on.
LANDED_BEFORE_THE_CHAIN_RULE = {
    "0002_document_size_limits": ["0001_core"],
    "0003_operations_views": ["0001_core"],
    "0004_worker_backoff": ["0001_core"],
}
_DEPENDS = re.compile(r"^--\s*depends:(.*)$", re.MULTILINE)


def listed_checksums() -> dict[str, str]:
    """``migrations/NNNN_slug.sql`` -> sha256, from the sha256sum-format list."""
    listed: dict[str, str] = {}
    for number, line in enumerate(CHECKSUMS.read_text().splitlines(), start=1):
        digest, separator, name = line.partition("  ")
        assert separator and re.fullmatch(r"[0-9a-f]{64}", digest), f"{CHECKSUMS.name}:{number}: {line!r}"
        assert name not in listed, f"{CHECKSUMS.name}:{number}: {name} is listed twice"
        listed[name] = digest
    return listed


def forward_migrations() -> list[Path]:
    return sorted(path for path in MIGRATIONS_DIR.glob("*.sql") if not path.name.endswith(".rollback.sql"))


def test_landed_migrations_never_change():
    listed = listed_checksums()
    changed = [name for name, digest in listed.items()
               if (REPO_ROOT / "database" / name).is_file()
               and hashlib.sha256((REPO_ROOT / "database" / name).read_bytes()).hexdigest() != digest]
    assert not changed, (f"landed migrations changed: {changed}. Never edit a landed migration: "
                         "undo the edit and write a new NNNN_slug.sql with its .rollback.sql")
    gone = [name for name in listed if not (REPO_ROOT / "database" / name).is_file()]
    assert not gone, f"landed migrations deleted or renamed: {gone}"
    unlisted = sorted(f"migrations/{path.name}" for path in MIGRATIONS_DIR.iterdir()
                      if f"migrations/{path.name}" not in listed)
    assert not unlisted, f"migrations without a checksum: {unlisted}; {ADD_CHECKSUMS}"


def test_the_checksum_check_sees_a_one_byte_change(tmp_path):
    # The list is sha256sum's own format: the same check works without Python, and fails on an edit.
    database = tmp_path / "database"
    (database / "migrations").mkdir(parents=True)
    for name in listed_checksums():
        (database / name).write_bytes((REPO_ROOT / "database" / name).read_bytes())
    (database / "migrations.sha256").write_bytes(CHECKSUMS.read_bytes())
    check = ["sha256sum", "--check", "--quiet", "migrations.sha256"]
    assert subprocess.run(check, cwd=database, capture_output=True).returncode == 0
    with (database / "migrations" / "0001_core.sql").open("a") as landed:
        landed.write("\n")
    failed = subprocess.run(check, cwd=database, capture_output=True, text=True)
    assert failed.returncode != 0 and "0001_core.sql: FAILED" in failed.stdout


def test_make_migration_checksums_appends_and_never_rewrites(tmp_path):
    (tmp_path / "database" / "migrations").mkdir(parents=True)
    for name in listed_checksums():
        (tmp_path / "database" / name).write_bytes((REPO_ROOT / "database" / name).read_bytes())
    # A wrong digest stays as it is: rewriting it would hide an edit from the test above.
    kept = ["0" * 64 + line[64:] if line.endswith("  migrations/0001_core.sql") else line
            for line in CHECKSUMS.read_text().splitlines()]
    (tmp_path / "database" / "migrations.sha256").write_text("\n".join(kept) + "\n")
    (tmp_path / "database" / "migrations" / "9999_new.sql").write_text("-- depends: 0004_worker_backoff\n")

    make = ["make", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "migration-checksums"]
    subprocess.run(make, cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(make, cwd=tmp_path, check=True, capture_output=True)  # twice: still one line each

    lines = (tmp_path / "database" / "migrations.sha256").read_text().splitlines()
    new_digest = hashlib.sha256(b"-- depends: 0004_worker_backoff\n").hexdigest()
    assert lines == [*kept, f"{new_digest}  migrations/9999_new.sql"]


def test_depends_lines_form_one_chain():
    forward = forward_migrations()
    ids = [path.stem for path in forward]
    numbers = [migration_id.split("_", 1)[0] for migration_id in ids]
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+", migration_id) for migration_id in ids), ids
    assert len(set(numbers)) == len(numbers), f"two migrations share a number: {ids}"
    for path in forward:
        assert path.with_name(f"{path.stem}.rollback.sql").is_file(), f"{path.name} has no .rollback.sql"

    def depends(path: Path) -> list[str]:
        found = _DEPENDS.findall(path.read_text())
        assert len(found) == 1, f"{path.name}: one '-- depends:' line, found {len(found)}"
        return found[0].split()

    assert depends(forward[0]) == [], f"{forward[0].name} is the first and depends on nothing"
    for previous, current in zip(ids, ids[1:], strict=False):
        expected = LANDED_BEFORE_THE_CHAIN_RULE.get(current, [previous])
        assert depends(MIGRATIONS_DIR / f"{current}.sql") == expected, (
            f"{current}.sql must say '-- depends: {' '.join(expected)}' (the migration before it)")
    # yoyo applies them in the order of the files, the order the numbers promise.
    assert [m.id for m in yoyo.read_migrations(str(MIGRATIONS_DIR))] == ids


@pytest.mark.slow
def test_each_migration_rolls_back_to_the_schema_before_it(pg_server, empty_db_dsn):
    chain = yoyo.read_migrations(str(migrations.find_migrations_dir()))
    assert len(chain) >= 4
    backend = yoyo.get_backend(migrations.yoyo_url(empty_db_dsn))
    try:
        before = normalised_schema_dump(pg_server, empty_db_dsn)
        for migration in chain:
            one = yoyo.migrations.MigrationList([migration])
            with backend.lock():
                backend.apply_migrations(one)
            applied = normalised_schema_dump(pg_server, empty_db_dsn)
            assert applied != before, f"{migration.id} changed nothing the dump shows"
            with backend.lock():
                backend.rollback_migrations(one)
            assert_same_schema(before, normalised_schema_dump(pg_server, empty_db_dsn),
                               f"before {migration.id}", f"{migration.id} applied and rolled back")
            with backend.lock():
                backend.apply_migrations(one)
            before = applied
    finally:
        backend.connection.close()


@pytest.fixture
def psql_db_dsn(pg_server):
    """A second empty database, for `docstatus schema | psql`."""
    dbname = f"docstatus_{os.getpid()}_schema_psql"
    with pg_server.janitor(dbname, template="template0"):
        yield pg_server.dsn(dbname)


@pytest.mark.slow
def test_docstatus_schema_through_psql_builds_what_the_migrations_build(pg_server, empty_db_dsn, psql_db_dsn):
    printed = CliRunner().invoke(main, ["schema"])
    assert printed.exit_code == 0, printed.output
    subprocess.run([str(pg_server.bindir / "psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                    f"--dbname={psql_db_dsn}"], input=printed.stdout, text=True, check=True, capture_output=True)
    migrations.apply(empty_db_dsn)
    assert_same_schema(normalised_schema_dump(pg_server, empty_db_dsn), normalised_schema_dump(pg_server, psql_db_dsn),
                       "docstatus migrate", "docstatus schema | psql")


def test_schema_migrations_lists_what_is_applied(empty_db_dsn):
    ids = [path.stem for path in forward_migrations()]
    listed = CliRunner().invoke(main, ["schema", "--migrations", "--dsn", empty_db_dsn])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [f"pending  {migration_id}" for migration_id in ids]

    migrations.apply(empty_db_dsn)
    listed = CliRunner().invoke(main, ["schema", "--migrations"], env={"DOCSTATUS_DSN": empty_db_dsn})
    assert listed.stdout.splitlines() == [f"applied  {migration_id}" for migration_id in ids]


def test_schema_migrations_counts_applied_migrations_it_does_not_ship(empty_db_dsn, tmp_path):
    # A database migrated by a newer docstatus: one more applied migration than this one ships.
    newer = tmp_path / "migrations"
    newer.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        (newer / path.name).write_bytes(path.read_bytes())
    (newer / "9999_from_the_future.sql").write_text("-- depends:\nSELECT 1;\n")
    migrations.apply(empty_db_dsn, newer)

    listed = CliRunner().invoke(main, ["schema", "--migrations", "--dsn", empty_db_dsn])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[-1].startswith("applied  (1 more that this docstatus does not ship")


def test_schema_migrations_on_an_unreachable_database_is_one_line():
    listed = CliRunner().invoke(main, ["schema", "--migrations", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"])
    assert listed.exit_code == 1
    [line] = listed.stderr.splitlines()
    assert line.startswith("Error: ") and "127.0.0.1" in line
