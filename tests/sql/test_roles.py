"""Least privilege: each role may do its job and nothing else."""

import pytest

from .states import QUEUED, make_document, register, sqlstate_of

READ = ["SELECT count(*) FROM docstatus.documents", "SELECT count(*) FROM docstatus.extraction_jobs",
        "SELECT count(*) FROM docstatus.status_events", "SELECT count(*) FROM docstatus.status_transitions",
        "SELECT count(*) FROM docstatus.settings", "SELECT * FROM docstatus.events_after()",
        "SELECT * FROM docstatus.event_delivery"]
DMS = ["SELECT docstatus.register_document('c', 'role-test', 'f')",
       "SELECT docstatus.validate_document({doc}, true, 'application/pdf')",
       "SELECT docstatus.create_extraction_job({queued})"]
WORKER = ["SELECT docstatus.create_extraction_job({queued})",
          "SELECT * FROM docstatus.claim_extraction_job('w')",
          "SELECT docstatus.heartbeat_job({job}, 'w')",
          "SELECT docstatus.mark_ocr_running({queued})",
          "SELECT docstatus.mark_llm_running({queued})",
          "SELECT docstatus.mark_processing_done({queued})",
          "SELECT docstatus.mark_processing_failed({queued}, 'x')",
          "SELECT docstatus.retry_document({queued})",
          "SELECT * FROM docstatus.reap_expired_jobs()"]
RAW_WRITES = ["UPDATE docstatus.documents SET status_reason = 'x'",
              "DELETE FROM docstatus.extraction_jobs",
              "INSERT INTO docstatus.status_events (document_id, kind, to_status) VALUES ({doc}, 'processing', 'done')",
              "UPDATE docstatus.settings SET max_attempts = 9",
              "INSERT INTO docstatus.allowed_mime_types VALUES ('application/x-evil', NULL)"]

ALLOWED = {
    "docstatus_reader": READ,
    "docstatus_dms": READ + DMS,
    "docstatus_worker": READ + WORKER,
}


@pytest.fixture
def fixtures(conn):
    queued = make_document(conn, QUEUED)
    job = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (queued,)).fetchone()[0]
    return {"doc": register(conn), "queued": queued, "job": job}


@pytest.fixture
def nobody(conn):
    """A role with no docstatus rights at all (only what PUBLIC has)."""
    conn.execute("DO $$ BEGIN CREATE ROLE docstatus_test_nobody NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    yield "docstatus_test_nobody"
    conn.execute("RESET ROLE")
    conn.execute("REVOKE ALL ON SCHEMA docstatus FROM docstatus_test_nobody")


def outcome_as(conn, role, statement):
    """The SQLSTATE of running statement as role, rolled back either way (None when allowed)."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL ROLE {role}")
        return sqlstate_of(lambda: conn.execute(statement))


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_role_may_do_its_job_and_nothing_else(conn, fixtures, role):
    every = READ + DMS + WORKER
    for template in every:
        statement = template.format(**fixtures)
        state = outcome_as(conn, role, statement)
        if template in ALLOWED[role]:
            assert state != "42501", f"{role} should be allowed: {statement}"
        else:
            assert state == "42501", f"{role} should be denied: {statement}"
    for template in RAW_WRITES:
        assert outcome_as(conn, role, template.format(**fixtures)) == "42501", (role, template)


def test_public_has_nothing(conn, fixtures, nobody):
    conn.execute("GRANT USAGE ON SCHEMA docstatus TO docstatus_test_nobody")
    for template in READ[:-2] + DMS + WORKER:
        assert outcome_as(conn, nobody, template.format(**fixtures)) == "42501", template


def test_worker_lifecycle_commits_as_its_role(connect, conn):
    """Deferred agreement checks run at COMMIT as the calling role; they must still work."""
    doc_id = make_document(conn, QUEUED)
    worker = connect()
    worker.execute("SET ROLE docstatus_worker")
    for statement in ("SELECT * FROM docstatus.claim_extraction_job('w')",
                      "SELECT docstatus.mark_ocr_running(%s, 'w')", "SELECT docstatus.mark_llm_running(%s, 'w')",
                      "SELECT docstatus.mark_processing_done(%s, 'w')"):
        worker.execute(statement, (doc_id,) if "%s" in statement else None)
        worker.commit()
    assert conn.execute("SELECT processing_status FROM docstatus.documents WHERE id = %s",
                        (doc_id,)).fetchone()[0] == "done"


def test_search_path_hijack_does_not_reach_definer_functions(conn, fixtures):
    """A caller's own objects named like ours are never used by the SECURITY DEFINER functions."""
    conn.execute("CREATE SCHEMA evil AUTHORIZATION docstatus_dms")
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE docstatus_dms")
        conn.execute("CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS"
                     " $$ BEGIN RAISE EXCEPTION 'hijacked lower'; END $$")
        conn.execute("CREATE FUNCTION evil.btrim(text) RETURNS text LANGUAGE plpgsql AS"
                     " $$ BEGIN RAISE EXCEPTION 'hijacked btrim'; END $$")
        conn.execute("CREATE TEMP TABLE documents (id bigint, text_extraction_status text)")
        conn.execute("CREATE TEMP TABLE allowed_mime_types (mime_type text)")
        conn.execute("INSERT INTO pg_temp.allowed_mime_types VALUES ('application/x-evil')")
        conn.execute("SET LOCAL search_path = pg_temp, evil, docstatus, pg_catalog")
        conn.execute("SELECT docstatus.validate_document(%s, true, 'application/x-evil')", (fixtures["doc"],))
        state = conn.execute("SELECT text_extraction_status FROM docstatus.documents WHERE id = %s",
                             (fixtures["doc"],)).fetchone()[0]
        assert state == "failed"  # the real allowlist decided, and evil.lower was never called


def test_no_function_is_executable_by_public(conn):
    """Every migration must REVOKE what it creates: PUBLIC would otherwise run it."""
    public = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'docstatus'::regnamespace"
        "   AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a"
        "        WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))").fetchall()
    assert public == []
