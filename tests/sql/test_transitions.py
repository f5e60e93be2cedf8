"""Every allowed and every forbidden status move, through raw UPDATEs and through the API."""

import re

import psycopg
import pytest

from .states import (
    COMPLETED,
    EXPECTED_EDGES,
    FAILED,
    JOB_STATUSES,
    LLM,
    OCR,
    PROCESSING_STATUSES,
    QUEUED,
    SIX_STATES,
    TEXT_STATUSES,
    UPLOADED,
    document_state,
    make_document,
    pair_move_allowed,
    register,
    sqlstate_of,
)


def test_transition_table_is_the_seed_graph(conn):
    rows = conn.execute("SELECT kind, from_status, to_status FROM docstatus.status_transitions").fetchall()
    actual = {}
    for kind, source, target in rows:
        actual.setdefault(kind, set()).add((source, target))
    assert actual == EXPECTED_EDGES


def check_values(conn, table, column):
    """The string literals of the CHECK constraint on one status column."""
    (definition,) = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND a.attname = %s AND cardinality(c.conkey) = 1",
        (f"docstatus.{table}", column),
    ).fetchone()
    return re.findall(r"'([^']*)'::text", definition)


def test_check_constraints_list_exactly_the_seed_statuses(conn):
    assert check_values(conn, "documents", "text_extraction_status") == TEXT_STATUSES
    assert check_values(conn, "documents", "processing_status") == PROCESSING_STATUSES
    assert check_values(conn, "extraction_jobs", "status") == JOB_STATUSES


@pytest.mark.parametrize("source", SIX_STATES, ids=lambda s: "/".join(s))
@pytest.mark.parametrize("target", SIX_STATES, ids=lambda s: "/".join(s))
def test_raw_update_between_pairs(conn, source, target):
    doc_id = make_document(conn, source)
    with conn.transaction(force_rollback=True):
        state = sqlstate_of(lambda: conn.execute(
            "UPDATE docstatus.documents SET text_extraction_status = %s, processing_status = %s WHERE id = %s",
            (*target, doc_id)))
        if source == target:
            assert state is None  # not a change: nothing to judge
        elif pair_move_allowed(source, target):
            assert state is None, f"{source} -> {target} should pass the trigger"
            assert document_state(conn, doc_id) == target
        else:
            assert state == "DS001", f"{source} -> {target} should be refused"
    assert document_state(conn, doc_id) == source


@pytest.mark.parametrize("source", SIX_STATES, ids=lambda s: "/".join(s))
@pytest.mark.parametrize("column,values", [
    ("text_extraction_status", TEXT_STATUSES), ("processing_status", PROCESSING_STATUSES)])
def test_raw_update_of_one_column(conn, source, column, values):
    """One column alone: refused by the graph (DS001), else by the six-state CHECK (23514)."""
    doc_id = make_document(conn, source)
    index = 0 if column == "text_extraction_status" else 1
    kind = "text_extraction" if index == 0 else "processing"
    for value in values:
        if value == source[index]:
            continue
        target = list(source)
        target[index] = value
        with conn.transaction(force_rollback=True):
            state = sqlstate_of(lambda: conn.execute(
                f"UPDATE docstatus.documents SET {column} = %s WHERE id = %s", (value, doc_id)))
        if (source[index], value) not in EXPECTED_EDGES[kind]:
            assert state == "DS001", (source, column, value)
        elif tuple(target) not in SIX_STATES:
            assert state == "23514", (source, column, value)
        else:
            assert state is None, (source, column, value)


@pytest.mark.parametrize("column", ["text_extraction_status", "processing_status"])
def test_unknown_status_fails_the_check(conn, column):
    doc_id = make_document(conn, QUEUED)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(f"UPDATE docstatus.documents SET {column} = 'bogus' WHERE id = %s", (doc_id,))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            f"INSERT INTO docstatus.documents (blob_container, blob_name, filename, {column}) "
            "VALUES ('c', 'x', 'x', 'bogus')")
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (doc_id,)).fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE docstatus.extraction_jobs SET status = 'bogus' WHERE id = %s", (job_id,))


def test_documents_start_uploaded(conn):
    for column, value in [("text_extraction_status", "ready"), ("processing_status", "done")]:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(
                f"INSERT INTO docstatus.documents (blob_container, blob_name, filename, {column}) "
                "VALUES ('c', 'x', 'x', %s)", (value,))
        assert err.value.sqlstate == "DS001"


@pytest.mark.parametrize("source", JOB_STATUSES)
@pytest.mark.parametrize("target", JOB_STATUSES)
def test_job_transitions_by_raw_update(conn, source, target):
    doc_id = make_document(conn, QUEUED)
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (doc_id,)).fetchone()[0]
    with conn.transaction(force_rollback=True):
        if source != "pending extraction":
            conn.execute("UPDATE docstatus.extraction_jobs SET status = %s, error_message = 'e' WHERE id = %s",
                         (source, job_id))
        state = sqlstate_of(lambda: conn.execute(
            "UPDATE docstatus.extraction_jobs SET status = %s, error_message = 'e' WHERE id = %s", (target, job_id)))
        if source == target:
            assert state is None
        elif (source, target) in EXPECTED_EDGES["job"]:
            assert state is None
        else:
            assert state == "DS001", (source, target)


def test_jobs_start_pending(conn):
    doc_id = make_document(conn, UPLOADED)
    with pytest.raises(psycopg.Error) as err:
        conn.execute("INSERT INTO docstatus.extraction_jobs (document_id, attempt, status, completed_at, error_message)"
                     " VALUES (%s, 1, 'failed', now(), 'x')", (doc_id,))
    assert err.value.sqlstate == "DS001"


def test_full_lifecycle_through_the_api(conn):
    doc_id = register(conn)
    assert document_state(conn, doc_id) == UPLOADED
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
    assert document_state(conn, doc_id) == QUEUED
    job = conn.execute("SELECT id, worker_id, attempt FROM docstatus.claim_extraction_job('w1')").fetchone()
    assert job[1:] == ("w1", 1)
    conn.execute("SELECT docstatus.mark_ocr_running(%s, 'w1')", (doc_id,))
    assert document_state(conn, doc_id) == OCR
    conn.execute("SELECT docstatus.mark_llm_running(%s, 'w1')", (doc_id,))
    assert document_state(conn, doc_id) == LLM
    conn.execute("SELECT docstatus.mark_processing_done(%s, 'w1')", (doc_id,))
    assert document_state(conn, doc_id) == COMPLETED
    status, completed_at = conn.execute(
        "SELECT status, completed_at FROM docstatus.extraction_jobs WHERE id = %s", (job[0],)).fetchone()
    assert status == "done" and completed_at is not None


MARKS = {
    "mark_ocr_running": (OCR, "SELECT docstatus.mark_ocr_running(%s)"),
    "mark_llm_running": (LLM, "SELECT docstatus.mark_llm_running(%s)"),
    "mark_processing_done": (COMPLETED, "SELECT docstatus.mark_processing_done(%s)"),
    "mark_processing_failed": (FAILED, "SELECT docstatus.mark_processing_failed(%s, 'boom')"),
}


@pytest.mark.parametrize("source", SIX_STATES, ids=lambda s: "/".join(s))
@pytest.mark.parametrize("mark", sorted(MARKS))
def test_mark_functions_from_every_state(conn, source, mark):
    """Each mark_* moves exactly along the graph; the same state again is DS001 too."""
    target, statement = MARKS[mark]
    doc_id = make_document(conn, source)
    state = sqlstate_of(lambda: conn.execute(statement, (doc_id,)))
    if pair_move_allowed(source, target):
        assert state is None, (source, mark)
        assert document_state(conn, doc_id) == target
    else:
        assert state == "DS001", (source, mark)
        assert document_state(conn, doc_id) == source
