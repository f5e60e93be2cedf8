"""validate_document's size rules (migration 0002): an empty document and one larger than
settings.max_document_bytes fail validation, each with its own reason."""

import re
import shutil
import subprocess

import psycopg
import pytest

from docstatus import migrations

from .states import FAILED, QUEUED, UPLOADED, document_state, make_document, sqlstate_of

DEFAULT_LIMIT = 100 * 1024 * 1024


def register_sized(conn, size_bytes, blob="blob"):
    return conn.execute(
        "SELECT id FROM docstatus.register_document('docs', %s, 'f.pdf', 'application/pdf', %s)",
        (blob, size_bytes),
    ).fetchone()[0]


def validate(conn, doc_id, mime="application/pdf", retrievable=True):
    return conn.execute(
        "SELECT text_extraction_status, processing_status, status_reason, mime_type"
        " FROM docstatus.validate_document(%s, %s, %s)",
        (doc_id, retrievable, mime),
    ).fetchone()


def job_count(conn, doc_id):
    return conn.execute(
        "SELECT count(*) FROM docstatus.extraction_jobs WHERE document_id = %s", (doc_id,)
    ).fetchone()[0]


def test_default_limit_is_100_mib_and_must_be_positive(conn):
    assert conn.execute("SELECT max_document_bytes FROM docstatus.settings").fetchone()[0] == DEFAULT_LIMIT
    for bad in (0, -1):
        assert sqlstate_of(lambda bad=bad: conn.execute(
            "UPDATE docstatus.settings SET max_document_bytes = %s", (bad,))) == "23514"
    assert sqlstate_of(lambda: conn.execute("UPDATE docstatus.settings SET max_document_bytes = NULL")) == "23502"


def test_an_empty_document_fails_with_its_own_reason(conn):
    doc_id = register_sized(conn, 0)
    # What a detector says about zero bytes does not matter: the size is judged first.
    assert validate(conn, doc_id, mime="application/x-empty") == (
        "failed", "failed", "document is empty (0 bytes)", "application/x-empty")
    assert job_count(conn, doc_id) == 0


def test_a_document_over_the_limit_fails_naming_size_and_limit(conn):
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1000")
    doc_id = register_sized(conn, 1001)
    state = validate(conn, doc_id)
    assert state[:2] == ("failed", "failed")
    assert state[2] == "document is 1001 bytes, more than the limit of 1000 bytes (settings.max_document_bytes)"
    assert job_count(conn, doc_id) == 0
    alert_detail = conn.execute(
        "SELECT detail FROM docstatus.status_events WHERE document_id = %s AND to_status = 'failed'"
        " AND kind = 'text_extraction'", (doc_id,)).fetchone()[0]
    assert alert_detail == state[2]


def test_exactly_the_limit_and_one_byte_pass(conn):
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1000")
    at_limit = register_sized(conn, 1000, "at-limit")
    one_byte = register_sized(conn, 1, "one-byte")
    assert validate(conn, at_limit)[:3] == ("ready", "pending extraction", None)
    assert validate(conn, one_byte, mime="text/plain")[:3] == ("ready", "pending extraction", None)
    assert job_count(conn, at_limit) == job_count(conn, one_byte) == 1


def test_an_unknown_size_is_not_judged(conn):
    doc_id = register_sized(conn, None)
    assert validate(conn, doc_id)[:2] == ("ready", "pending extraction")


def test_size_is_judged_before_the_mime_type(conn):
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 10")
    doc_id = register_sized(conn, 11)
    assert "more than the limit" in validate(conn, doc_id, mime="application/x-dosexec")[2]


def test_an_unretrievable_blob_stays_not_ready_whatever_its_size(conn):
    doc_id = register_sized(conn, 0)
    assert validate(conn, doc_id, mime=None, retrievable=False)[:3] == (
        "not ready", "pending extraction", "blob not retrievable")


def test_a_size_rejection_can_be_validated_again_after_the_limit_is_raised(conn):
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1000")
    doc_id = register_sized(conn, 5000)
    assert validate(conn, doc_id)[0] == "failed"
    # Rejected again (another reason this time): the reason follows, no round trip.
    assert validate(conn, doc_id, mime="application/zip")[:3] == (
        "failed", "failed", "document is 5000 bytes, more than the limit of 1000 bytes (settings.max_document_bytes)")
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 5000")
    assert validate(conn, doc_id)[:3] == ("ready", "pending extraction", None)
    path = conn.execute("SELECT from_status, to_status FROM docstatus.status_events"
                        " WHERE document_id = %s AND kind = 'text_extraction' ORDER BY id", (doc_id,)).fetchall()
    assert path == [(None, "not ready"), ("not ready", "failed"), ("failed", "not ready"), ("not ready", "ready")]


def test_the_disallowed_mime_rule_is_unchanged(conn):
    doc_id = register_sized(conn, 10)
    assert validate(conn, doc_id, mime="Application/X-Executable")[:4] == (
        "failed", "failed", "MIME type application/x-executable is not allowed", "application/x-executable")


@pytest.mark.parametrize("pair", [QUEUED, FAILED], ids=lambda p: "/".join(p))
def test_documents_past_validation_are_left_alone(conn, pair):
    doc_id = make_document(conn, pair)
    conn.execute("UPDATE docstatus.documents SET size_bytes = 0 WHERE id = %s", (doc_id,))
    validate(conn, doc_id)
    assert document_state(conn, doc_id) == pair


def test_limit_changes_apply_to_the_next_validation_only(conn):
    doc_id = register_sized(conn, 2000)
    assert validate(conn, doc_id)[0] == "ready"
    conn.execute("UPDATE docstatus.settings SET max_document_bytes = 1000")
    assert validate(conn, doc_id)[0] == "ready"  # queued: unchanged
    other = register_sized(conn, 2000, "other")
    assert validate(conn, other)[0] == "failed"
    assert document_state(conn, register_sized(conn, 1, "third")) == UPLOADED


def test_dms_role_can_still_validate(conn):
    doc_id = register_sized(conn, 0)
    with conn.transaction():
        conn.execute("SET LOCAL ROLE docstatus_dms")
        assert validate(conn, doc_id, mime="text/plain")[2] == "document is empty (0 bytes)"
    granted = conn.execute(
        "SELECT has_function_privilege(r, 'docstatus.validate_document(bigint, boolean, text, text, bigint)',"
        "                              'EXECUTE')"
        "  FROM unnest(ARRAY['docstatus_dms', 'docstatus_worker', 'public']) WITH ORDINALITY AS roles(r, n)"
        " ORDER BY n").fetchall()
    granted = tuple(row[0] for row in granted)
    assert granted == (True, False, False)


# The migration's way back

_DUMP_NOISE = re.compile(r"^(--.*|SET .*|SELECT pg_catalog\.set_config\(.*|\\(un)?restrict .*|\s*)$")


def _schema_dump(pg_server, dsn):
    dump = subprocess.run(
        [str(pg_server.bindir / "pg_dump"), "--schema-only", "--no-owner",
         "--exclude-table=_yoyo_*", "--exclude-table=yoyo_lock", f"--dbname={dsn}"],
        capture_output=True, text=True, check=True).stdout
    return [line for line in dump.splitlines() if not _DUMP_NOISE.match(line)]


def _migrations_dir(tmp_path, name, migration_ids):
    """A folder holding only the given migrations (and their rollbacks), so later ones stay out."""
    folder = tmp_path / name
    folder.mkdir()
    for migration_id in migration_ids:
        for suffix in (".sql", ".rollback.sql"):
            name = f"{migration_id}{suffix}"
            shutil.copy(migrations.find_migrations_dir() / name, folder / name)
    return folder


def test_rollback_of_0002_restores_the_0001_schema(pg_server, empty_db_dsn, db_dsn, tmp_path):
    only_core = _migrations_dir(tmp_path, "core", ["0001_core"])
    core_and_limits = _migrations_dir(tmp_path, "limits", ["0001_core", "0002_document_size_limits"])
    # db_dsn comes with schema.sql applied: empty it, then build 0001 alone into it.
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        admin.execute("DROP SCHEMA docstatus CASCADE")
    assert migrations.apply(db_dsn, only_core) == ["0001_core"]

    assert migrations.apply(empty_db_dsn, core_and_limits) == ["0001_core", "0002_document_size_limits"]
    _rollback_only(empty_db_dsn, core_and_limits, "0002_document_size_limits")
    assert _schema_dump(pg_server, empty_db_dsn) == _schema_dump(pg_server, db_dsn)


def _rollback_only(dsn, folder, migration_id):
    import yoyo

    backend = yoyo.get_backend(migrations.yoyo_url(dsn))
    try:
        with backend.lock():
            chosen = [m for m in backend.to_rollback(yoyo.read_migrations(str(folder))) if m.id == migration_id]
            assert len(chosen) == 1
            backend.rollback_migrations(chosen)
    finally:
        backend.connection.close()


def test_the_reason_a_blob_is_not_retrievable_is_recorded(conn):
    doc_id = register_sized(conn, 10)
    conn.execute("SELECT docstatus.validate_document(%s, false, NULL, %s)", (doc_id, "blob store error: timeout"))
    reason = conn.execute("SELECT status_reason FROM docstatus.documents WHERE id = %s", (doc_id,)).fetchone()[0]
    assert reason == "blob not retrievable: blob store error: timeout"
    conn.execute("SELECT docstatus.validate_document(%s, false, NULL)", (doc_id,))  # three arguments still work
    reason = conn.execute("SELECT status_reason FROM docstatus.documents WHERE id = %s", (doc_id,)).fetchone()[0]
    assert reason == "blob not retrievable"
