"""Builds documents in each of the six states through the SQL API, for the contract tests.

The expected graph below is written from the seed's two flow charts, independently of the
database's status_transitions table, so a wrong row in that table fails the tests.
"""

import itertools

import psycopg

# (text_extraction_status, processing_status): the only pairs a document can be in.
UPLOADED = ("not ready", "pending extraction")
QUEUED = ("ready", "pending extraction")
OCR = ("in progress", "ocr running")
LLM = ("in progress", "llm running")
COMPLETED = ("completed", "done")
FAILED = ("failed", "failed")
SIX_STATES = [UPLOADED, QUEUED, OCR, LLM, COMPLETED, FAILED]

TEXT_STATUSES = ["not ready", "ready", "in progress", "completed", "failed"]
PROCESSING_STATUSES = ["pending extraction", "ocr running", "llm running", "done", "failed"]
JOB_STATUSES = ["pending extraction", "done", "failed"]


def _chain_to_failed(chain):
    """The seed's charts: a chain, and every state may fail."""
    edges = set(zip(chain, chain[1:], strict=False))
    edges |= {(state, "failed") for state in chain}
    return edges


EXPECTED_EDGES = {
    "text_extraction": _chain_to_failed(["not ready", "ready", "in progress", "completed"])
    | {("failed", "ready"), ("failed", "not ready")},
    "processing": _chain_to_failed(["pending extraction", "ocr running", "llm running", "done"])
    | {("failed", "pending extraction")},
    "job": {("pending extraction", "done"), ("pending extraction", "failed")},
}


def pair_move_allowed(source, target):
    """Whether a raw UPDATE moving a document from one pair to another passes the graph."""
    if source == target:
        return False
    kinds = ("text_extraction", "processing")
    return all(
        before == after or (before, after) in EXPECTED_EDGES[kind]
        for kind, before, after in zip(kinds, source, target, strict=True)
    )


_blob_counter = itertools.count(1)


def register(conn, filename="doc.pdf"):
    blob = f"blob-{next(_blob_counter)}"
    row = conn.execute(
        "SELECT id FROM docstatus.register_document('docs', %s, %s)", (blob, filename)
    ).fetchone()
    return row[0]


def make_document(conn, state, worker_id="w1"):
    """A document in the given pair, reached through the API as a pipeline would."""
    doc_id = register(conn)
    if state == UPLOADED:
        return doc_id
    if state == FAILED:
        conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
        conn.execute("SELECT docstatus.mark_processing_failed(%s, 'boom')", (doc_id,))
        return doc_id
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
    if state == QUEUED:
        return doc_id
    claim_document(conn, doc_id, worker_id)
    conn.execute("SELECT docstatus.mark_ocr_running(%s, %s)", (doc_id, worker_id))
    if state == OCR:
        return doc_id
    conn.execute("SELECT docstatus.mark_llm_running(%s, %s)", (doc_id, worker_id))
    if state == LLM:
        return doc_id
    conn.execute("SELECT docstatus.mark_processing_done(%s, %s)", (doc_id, worker_id))
    return doc_id


def claim_document(conn, doc_id, worker_id, lease="5 minutes"):
    """Gives the active job of this document to worker_id (as a claim would, for this doc only)."""
    job = conn.execute(
        "SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s AND status = 'pending extraction'",
        (doc_id,),
    ).fetchone()
    assert job is not None, f"document {doc_id} has no active job"
    # claim_extraction_job hands out the oldest job; tests with several documents
    # would claim the wrong one, so the lease is set the way claim sets it.
    conn.execute(
        "UPDATE docstatus.extraction_jobs SET worker_id = %s, lease_expires_at = now() + %s::interval,"
        " started_at = now() WHERE id = %s",
        (worker_id, lease, job[0]),
    )
    return job[0]


def document_state(conn, doc_id):
    return tuple(
        conn.execute(
            "SELECT text_extraction_status, processing_status FROM docstatus.documents WHERE id = %s",
            (doc_id,),
        ).fetchone()
    )


def sqlstate_of(callable_):
    """Runs callable_ and returns the SQLSTATE it raised, or None."""
    try:
        callable_()
    except psycopg.Error as exc:
        return exc.sqlstate
    return None
