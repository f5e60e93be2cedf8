"""Operations: stage SLAs, stuck documents and their alerts, status counts, failure summary.

The views are checked on known data, status_counts against count(*) after random lifecycles
(raw UPDATEs and rollbacks included), check_stuck with a real LISTEN on a second connection,
and the plans at scale with EXPLAIN on a populated database.
"""

import json
import random
import threading
import time

import psycopg
import pytest

from .states import (
    COMPLETED,
    FAILED,
    LLM,
    OCR,
    QUEUED,
    SIX_STATES,
    UPLOADED,
    claim_document,
    make_document,
    pair_move_allowed,
    register,
    sqlstate_of,
)

STATE_NAMES = {UPLOADED: "uploaded", QUEUED: "queued", OCR: "ocr running", LLM: "llm running",
               COMPLETED: "completed", FAILED: "failed"}
DEFAULT_SLAS = {"uploaded": "00:10:00", "queued": "01:00:00", "ocr running": "00:15:00", "llm running": "00:30:00"}


def backdate(conn, doc_id, interval):
    """Pretends the document entered its current state `interval` ago."""
    conn.execute("UPDATE docstatus.documents SET status_entered_at = now() - %s::interval WHERE id = %s",
                 (interval, doc_id))


def stuck(conn):
    return {row[0]: row[1] for row in conn.execute("SELECT document_id, state FROM docstatus.stuck_documents")}


def expected_counts(conn):
    """What status_counts must say, the slow way."""
    rows = conn.execute("""
        SELECT 'text_extraction', text_extraction_status, count(*) FROM docstatus.documents GROUP BY 2
        UNION ALL SELECT 'processing', processing_status, count(*) FROM docstatus.documents GROUP BY 2
        UNION ALL SELECT 'job', status, count(*) FROM docstatus.extraction_jobs GROUP BY 2""").fetchall()
    return {(kind, status): count for kind, status, count in rows}


def status_counts(conn):
    rows = conn.execute("SELECT kind, status, count FROM docstatus.status_counts").fetchall()
    return {(kind, status): count for kind, status, count in rows if count != 0}


def fold(conn):
    return conn.execute("SELECT docstatus.fold_status_counters()").fetchone()[0]


def listen_alerts(connect):
    listener = connect(autocommit=True)
    listener.execute("LISTEN docstatus_alerts")
    return listener


def alerts_until_marker(conn, listener, timeout=5.0):
    """Every alert sent before now: a marker NOTIFY is sent last and arrives last (commit order),
    so whatever arrives before it is all there is, without sleeping on a guess."""
    conn.execute("SELECT pg_notify('docstatus_alerts', 'marker')")
    payloads = []
    for note in listener.notifies(timeout=timeout):
        if note.payload == "marker":
            return payloads
        payloads.append(json.loads(note.payload))
    raise AssertionError(f"marker not received within {timeout}s; got {payloads}")


def wait_until_blocked(conn, pid, by, timeout=5.0):
    """Returns once backend pid waits for a lock that backend `by` holds."""
    deadline = time.monotonic() + timeout
    while by not in conn.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"backend {pid} never waited for {by}")
        time.sleep(0.01)


def fail_job(conn, doc_id, message, worker_id="w1"):
    """The document's active job fails with message, and the document with it."""
    claim_document(conn, doc_id, worker_id)
    conn.execute("SELECT docstatus.mark_processing_failed(%s, %s, %s)", (doc_id, message, worker_id))


# --- stage_slas ------------------------------------------------------------------------------

def test_stage_slas_name_the_four_non_final_states_with_defaults(conn):
    rows = conn.execute("SELECT state, text_extraction_status, processing_status, max_duration::text"
                        " FROM docstatus.stage_slas").fetchall()
    assert {(t, p): state for state, t, p, _ in rows} == {
        pair: name for pair, name in STATE_NAMES.items() if pair not in (COMPLETED, FAILED)}
    assert {state: sla for state, _, _, sla in rows} == DEFAULT_SLAS
    # Every SLA pair is a pair the documents table allows.
    for _, t, p, _ in rows:
        assert (t, p) in SIX_STATES


@pytest.mark.parametrize("row", [
    ("completed", "completed", "done", "1 hour"),       # final states have no SLA
    ("queued", "not ready", "pending extraction", "1 hour"),  # name and pair disagree
    ("stalled", "ready", "pending extraction", "1 hour"),
])
def test_stage_slas_refuse_states_that_are_not_the_four(conn, row):
    conn.execute("DELETE FROM docstatus.stage_slas WHERE state = %s", (row[0],))
    assert sqlstate_of(lambda: conn.execute("INSERT INTO docstatus.stage_slas VALUES (%s, %s, %s, %s)", row)) == "23514"


@pytest.mark.parametrize("duration", ["0 seconds", "-5 minutes"])
def test_stage_slas_refuse_non_positive_durations(conn, duration):
    assert sqlstate_of(lambda: conn.execute(
        "UPDATE docstatus.stage_slas SET max_duration = %s WHERE state = 'queued'", (duration,))) == "23514"


# --- stuck_documents -------------------------------------------------------------------------

def test_stuck_documents_lists_only_states_past_their_sla(conn):
    docs = {state: make_document(conn, state) for state in SIX_STATES}
    fresh = {state: make_document(conn, state) for state in (UPLOADED, QUEUED, OCR, LLM)}
    for doc_id in docs.values():
        backdate(conn, doc_id, "2 hours")  # past every SLA
    for doc_id in fresh.values():
        backdate(conn, doc_id, "5 minutes")  # within every SLA
    assert stuck(conn) == {docs[state]: STATE_NAMES[state] for state in (UPLOADED, QUEUED, OCR, LLM)}

    row = conn.execute("SELECT state, text_extraction_status, processing_status, sla::text, job_id, attempt,"
                       " worker_id, in_state_for > interval '119 minutes' FROM docstatus.stuck_documents"
                       " WHERE document_id = %s", (docs[OCR],)).fetchone()
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (docs[OCR],)).fetchone()[0]
    assert row == ("ocr running", "in progress", "ocr running", "00:15:00", job_id, 1, "w1", True)
    uploaded_job = conn.execute("SELECT job_id FROM docstatus.stuck_documents WHERE document_id = %s",
                                (docs[UPLOADED],)).fetchone()[0]
    assert uploaded_job is None


def test_stuck_documents_follow_the_slas_as_data(conn):
    queued = make_document(conn, QUEUED)
    backdate(conn, queued, "30 minutes")
    assert stuck(conn) == {}
    conn.execute("UPDATE docstatus.stage_slas SET max_duration = '20 minutes' WHERE state = 'queued'")
    assert stuck(conn) == {queued: "queued"}
    conn.execute("DELETE FROM docstatus.stage_slas WHERE state = 'queued'")  # stop watching queued
    assert stuck(conn) == {}


def test_moving_on_leaves_stuck_documents(conn):
    doc_id = make_document(conn, OCR)
    backdate(conn, doc_id, "1 hour")
    assert stuck(conn) == {doc_id: "ocr running"}
    conn.execute("SELECT docstatus.mark_llm_running(%s, 'w1')", (doc_id,))
    assert stuck(conn) == {}


# --- check_stuck -----------------------------------------------------------------------------

def test_check_stuck_alerts_once_per_stuck_state_and_again_after_moving_on(connect, conn):
    listener = listen_alerts(connect)
    queued = make_document(conn, QUEUED)
    ocr = make_document(conn, OCR)
    fine = make_document(conn, LLM)
    backdate(conn, queued, "2 hours")
    backdate(conn, ocr, "20 minutes")
    assert alerts_until_marker(conn, listener) == []  # nothing alerted by making them

    returned = conn.execute("SELECT document_id, state FROM docstatus.check_stuck()").fetchall()
    assert sorted(returned) == sorted([(queued, "queued"), (ocr, "ocr running")])
    payloads = alerts_until_marker(conn, listener)
    assert sorted((p["document_id"], p["state"]) for p in payloads) == sorted(returned)
    by_doc = {p["document_id"]: p for p in payloads}
    queued_job = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s",
                              (queued,)).fetchone()[0]
    entered_at = conn.execute("SELECT to_json(status_entered_at)::text FROM docstatus.documents WHERE id = %s",
                              (queued,)).fetchone()[0]
    assert set(by_doc[queued]) == {"document_id", "job_id", "kind", "state", "entered_at", "sla", "at"}
    assert by_doc[queued]["kind"] == "stuck" and by_doc[queued]["job_id"] == queued_job
    assert by_doc[queued]["sla"] == "PT1H" and by_doc[ocr]["sla"] == "PT15M"
    assert json.dumps(by_doc[queued]["entered_at"]) == entered_at
    assert all(len(json.dumps(p)) < 500 for p in payloads)

    # Still stuck, same stay: no second alert.
    assert conn.execute("SELECT count(*) FROM docstatus.check_stuck()").fetchone()[0] == 0
    assert alerts_until_marker(conn, listener) == []
    assert conn.execute("SELECT count(*) FROM docstatus.stuck_alerts").fetchone()[0] == 2

    # The ocr document moves on and gets stuck in its next state: a new alert.
    conn.execute("SELECT docstatus.mark_llm_running(%s, 'w1')", (ocr,))
    assert conn.execute("SELECT count(*) FROM docstatus.check_stuck()").fetchone()[0] == 0
    backdate(conn, ocr, "31 minutes")
    assert conn.execute("SELECT document_id, state FROM docstatus.check_stuck()").fetchall() == [(ocr, "llm running")]
    assert [(p["document_id"], p["state"]) for p in alerts_until_marker(conn, listener)] == [(ocr, "llm running")]
    assert fine not in stuck(conn)


def test_check_stuck_alerts_again_when_a_document_returns_to_the_same_state(connect, conn):
    listener = listen_alerts(connect)
    doc_id = make_document(conn, QUEUED)
    backdate(conn, doc_id, "2 hours")
    assert len(conn.execute("SELECT * FROM docstatus.check_stuck()").fetchall()) == 1
    # Fails and is retried: queued again, a new stay with a new attempt.
    fail_job(conn, doc_id, "boom")
    conn.execute("SELECT docstatus.retry_document(%s)", (doc_id,))
    backdate(conn, doc_id, "3 hours")
    rows = conn.execute("SELECT document_id, state, attempt FROM docstatus.check_stuck()").fetchall()
    assert rows == [(doc_id, "queued", 2)]
    states = [(p["kind"], p.get("state")) for p in alerts_until_marker(conn, listener)]
    assert states.count(("stuck", "queued")) == 2  # the failure's own alerts come in between


def test_check_stuck_rolled_back_sends_and_records_nothing(connect, conn):
    listener = listen_alerts(connect)
    doc_id = make_document(conn, QUEUED)
    backdate(conn, doc_id, "2 hours")
    with conn.transaction(force_rollback=True):
        assert len(conn.execute("SELECT * FROM docstatus.check_stuck()").fetchall()) == 1
    assert alerts_until_marker(conn, listener) == []
    assert len(conn.execute("SELECT * FROM docstatus.check_stuck()").fetchall()) == 1
    assert len(alerts_until_marker(conn, listener)) == 1


def test_concurrent_check_stuck_alerts_once(connect, conn):
    listener = listen_alerts(connect)
    doc_id = make_document(conn, QUEUED)
    backdate(conn, doc_id, "2 hours")
    first, second = connect(), connect()
    assert len(first.execute("SELECT * FROM docstatus.check_stuck()").fetchall()) == 1  # not committed yet
    result = {}

    def run_second():
        result["rows"] = second.execute("SELECT * FROM docstatus.check_stuck()").fetchall()
        second.commit()

    thread = threading.Thread(target=run_second)
    thread.start()
    # The second caller waits on the first one's alert row, then sees it and leaves it alone.
    wait_until_blocked(conn, second.info.backend_pid, by=first.info.backend_pid)
    first.commit()
    thread.join(timeout=10)
    assert result["rows"] == []
    assert [p["document_id"] for p in alerts_until_marker(conn, listener)] == [doc_id]


# --- document_overview -----------------------------------------------------------------------

def test_document_overview_on_known_data(conn):
    docs = {state: make_document(conn, state) for state in SIX_STATES}
    rows = {row[0]: row[1:] for row in conn.execute(
        "SELECT document_id, state, text_extraction_status, processing_status, job_status, attempt,"
        " worker_id, last_error, in_status_for < interval '1 minute' FROM docstatus.document_overview")}
    assert rows[docs[UPLOADED]] == ("uploaded", "not ready", "pending extraction", None, None, None, None, True)
    assert rows[docs[QUEUED]] == ("queued", "ready", "pending extraction", "pending extraction", 1, None, None, True)
    assert rows[docs[OCR]] == ("ocr running", "in progress", "ocr running", "pending extraction", 1, "w1", None, True)
    assert rows[docs[LLM]] == ("llm running", "in progress", "llm running", "pending extraction", 1, "w1", None, True)
    assert rows[docs[COMPLETED]] == ("completed", "completed", "done", "done", 1, "w1", None, True)
    assert rows[docs[FAILED]] == ("failed", "failed", "failed", "failed", 1, None, "boom", True)


def test_document_overview_current_job_is_the_latest_attempt(conn):
    doc_id = make_document(conn, QUEUED)
    fail_job(conn, doc_id, "timeout calling OCR", worker_id="w7")
    conn.execute("SELECT docstatus.retry_document(%s)", (doc_id,))
    backdate(conn, doc_id, "90 minutes")
    latest = conn.execute("SELECT max(id) FROM docstatus.extraction_jobs WHERE document_id = %s",
                          (doc_id,)).fetchone()[0]
    row = conn.execute(
        "SELECT state, job_id, job_status, attempt, worker_id, last_error, status_reason,"
        " in_status_for BETWEEN interval '89 minutes' AND interval '91 minutes'"
        " FROM docstatus.document_overview WHERE document_id = %s", (doc_id,)).fetchone()
    # Queued again for attempt 2, and the error of attempt 1 is still in sight.
    assert row == ("queued", latest, "pending extraction", 2, None, "timeout calling OCR", None, True)


def test_document_overview_shows_a_validation_failure_as_last_error(conn):
    doc_id = register(conn)
    conn.execute("SELECT docstatus.validate_document(%s, true, 'application/x-msdownload')", (doc_id,))
    row = conn.execute("SELECT state, job_id, last_error FROM docstatus.document_overview WHERE document_id = %s",
                       (doc_id,)).fetchone()
    assert row == ("failed", None, "MIME type application/x-msdownload is not allowed")


# --- failure_summary -------------------------------------------------------------------------

@pytest.mark.parametrize("message, pattern", [
    ("lease expired: worker w1 held the job until 2026-03-01 10:11:12.123456+00",
     "lease expired: worker <worker> held the job until <time>"),
    ("lease expired: worker ocr-node-7 held the job until 2026-03-02 01:02:03+00",
     "lease expired: worker <worker> held the job until <time>"),
    ("object 0xDEADBEEF missing; id 550e8400-e29b-41d4-a716-446655440000", "object <hex> missing; id <uuid>"),
    ("file \"a b.pdf\" has 12 pages, expected 'x'", "file <value> has <n> pages, expected <value>"),
    ("timeout after 30s, request 3f2a9b1c7d at 2026-01-02T03:04:05Z", "timeout after <n>s, request <hex> at <time>"),
    ("  Unable   to extract\ttext ", "Unable to extract text"),
    ("a facade decade cafe", "a facade decade cafe"),  # words made of hex letters stay
])
def test_normalise_error(conn, message, pattern):
    assert conn.execute("SELECT docstatus.normalise_error(%s)", (message,)).fetchone()[0] == pattern


def test_failure_summary_groups_by_normalised_error(conn):
    lease_docs = []
    for worker in ["w1", "w2", "w3", "worker-b", "w1", "w2", "w9"]:
        doc_id = make_document(conn, QUEUED)
        claim_document(conn, doc_id, worker, lease="-1 second")  # already expired
        conn.execute("SELECT * FROM docstatus.reap_expired_jobs()")
        lease_docs.append(doc_id)
    pages_doc = make_document(conn, QUEUED)
    fail_job(conn, pages_doc, "file 'a.pdf' has 0 pages")
    conn.execute("SELECT docstatus.retry_document(%s)", (pages_doc,))
    fail_job(conn, pages_doc, "file 'b.pdf' has 0 pages")

    rows = conn.execute("SELECT error_pattern, failures, documents, first_seen <= last_seen, example_error,"
                        " example_document_ids FROM docstatus.failure_summary").fetchall()
    assert [row[0] for row in rows] == ["lease expired: worker <worker> held the job until <time>",
                                        "file <value> has <n> pages"]
    lease, pages = rows
    assert lease[1:4] == (7, 7, True)
    assert lease[4].startswith("lease expired: worker w9 held the job until ")
    assert lease[5] == list(reversed(lease_docs))[:5]  # latest first, at most five
    assert pages[1:5] == (2, 1, True, "file 'b.pdf' has 0 pages")
    assert pages[5] == [pages_doc]


def test_failure_summary_first_and_last_seen(conn):
    doc_ids = [make_document(conn, QUEUED) for _ in range(3)]
    for doc_id in doc_ids:
        fail_job(conn, doc_id, f"OCR engine crashed with code {doc_id}")
    conn.execute("UPDATE docstatus.extraction_jobs SET completed_at = now() - interval '3 days' WHERE document_id = %s",
                 (doc_ids[0],))
    row = conn.execute("SELECT failures, now() - first_seen > interval '2 days',"
                       "       now() - last_seen < interval '1 minute'"
                       " FROM docstatus.failure_summary").fetchone()
    assert row == (3, True, True)


# --- status_counts ---------------------------------------------------------------------------

def test_status_counts_lists_every_status_with_zeros(conn):
    rows = conn.execute("SELECT kind, status, count FROM docstatus.status_counts").fetchall()
    statuses = conn.execute("SELECT DISTINCT kind, s FROM docstatus.status_transitions,"
                            " unnest(ARRAY[from_status, to_status]) AS s ORDER BY 1, 2").fetchall()
    assert [(kind, status) for kind, status, _ in rows] == statuses
    assert {count for _, _, count in rows} == {0}


# Each action, how often it is picked, and the states of the documents it picks from.
ACTION_STATES = {
    "register": [], "validate": [UPLOADED], "reject": [UPLOADED], "advance": [QUEUED, OCR, LLM],
    "fail": [UPLOADED, QUEUED, OCR, LLM, COMPLETED], "retry": [FAILED], "reap": [OCR, LLM], "raw": SIX_STATES,
    "rollback": [UPLOADED, QUEUED, OCR, LLM, COMPLETED], "savepoint": SIX_STATES, "fold": [],
}
ACTIONS = (["register"] * 2 + ["validate"] * 2 + ["reject"] + ["advance"] * 6 + ["fail", "retry", "retry", "reap"]
           + ["raw"] * 3 + ["rollback", "savepoint", "fold"])


def _random_step(conn, rng, tag):
    """One lifecycle step chosen at random: through the API, raw UPDATEs, rollbacks, folds.

    Steps that the rules refuse (a lease someone else holds, a raw move the agreement check
    rejects at commit) are part of the mix: they must leave the counts alone too.
    """
    action = rng.choice(ACTIONS)
    if action == "fold":
        fold(conn)
        return
    candidates = [(doc_id, (text, processing)) for doc_id, text, processing in conn.execute(
        "SELECT id, text_extraction_status, processing_status FROM docstatus.documents ORDER BY id")
        if (text, processing) in ACTION_STATES[action]]
    if action == "register" or not candidates:
        register(conn)
        return
    doc_id, pair = rng.choice(candidates)

    def attempt(statement, params):
        return sqlstate_of(lambda: conn.execute(statement, params))

    def attempt_in_savepoint(statement, params):
        try:
            with conn.transaction():
                conn.execute(statement, params)
        except psycopg.Error:
            pass  # rolled back to the savepoint; the transaction goes on

    if action == "validate":
        attempt("SELECT docstatus.validate_document(%s, %s, 'application/pdf')", (doc_id, rng.random() < 0.8))
    elif action == "reject":
        attempt("SELECT docstatus.validate_document(%s, true, 'video/mp4')", (doc_id,))
    elif action == "advance":
        if pair == QUEUED:
            claim_document(conn, doc_id, tag)
        step = {QUEUED: "mark_ocr_running", OCR: "mark_llm_running", LLM: "mark_processing_done"}[pair]
        attempt(f"SELECT docstatus.{step}(%s)", (doc_id,))
    elif action == "fail":
        attempt("SELECT docstatus.mark_processing_failed(%s, %s)", (doc_id, f"error {rng.randint(1, 9)}"))
    elif action == "retry":
        attempt("SELECT docstatus.retry_document(%s)", (doc_id,))
    elif action == "reap":
        conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                     " WHERE document_id = %s AND status = 'pending extraction' AND worker_id IS NOT NULL", (doc_id,))
        conn.execute("SELECT * FROM docstatus.reap_expired_jobs()")
    elif action == "raw":
        # A raw UPDATE an operator might type; the agreement check may refuse it at commit.
        target = rng.choice(SIX_STATES)
        if pair_move_allowed(pair, target):
            attempt("UPDATE docstatus.documents SET text_extraction_status = %s, processing_status = %s"
                    " WHERE id = %s", (*target, doc_id))
    elif action == "rollback":
        with conn.transaction(force_rollback=True):
            register(conn)
            attempt_in_savepoint("SELECT docstatus.mark_processing_failed(%s, 'rolled back')", (doc_id,))
    elif action == "savepoint":
        with conn.transaction():
            register(conn)
            with conn.transaction():
                register(conn)
                attempt_in_savepoint("SELECT docstatus.mark_processing_failed(%s, 'in a savepoint')", (doc_id,))
                raise psycopg.Rollback()  # this savepoint only; the outer transaction commits
            attempt_in_savepoint("SELECT docstatus.retry_document(%s)", (doc_id,))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_status_counts_equal_count_star_after_random_lifecycles(conn, seed):
    rng = random.Random(seed)
    for step in range(200):
        _random_step(conn, rng, f"w{seed}")
        if step % 25 == 0:
            assert status_counts(conn) == expected_counts(conn), f"seed {seed} step {step}"
    assert status_counts(conn) == expected_counts(conn)
    fold(conn)
    assert status_counts(conn) == expected_counts(conn)


def test_fold_never_skips_a_transaction_that_commits_late(connect, conn):
    make_document(conn, QUEUED)
    late = connect()
    late_doc = register(late)  # events written, transaction still open
    register(conn)
    make_document(conn, COMPLETED)
    fold(conn)  # must stop below the open transaction
    assert status_counts(conn) == expected_counts(conn)
    late.commit()
    assert status_counts(conn) == expected_counts(conn)
    fold(conn)
    assert status_counts(conn) == expected_counts(conn)
    assert conn.execute("SELECT count(*) FROM docstatus.documents WHERE id = %s", (late_doc,)).fetchone()[0] == 1


def test_a_second_fold_leaves_the_work_to_the_running_one(connect, conn):
    make_document(conn, COMPLETED)
    running = connect()
    fold(running)  # holds the fold row until it commits
    conn.execute("SET lock_timeout = '5s'")  # a fold that waited would fail here, not hang
    assert fold(conn) == 0
    running.commit()
    assert status_counts(conn) == expected_counts(conn)


def test_status_counts_exact_inside_a_transaction(connect, conn):
    """Each snapshot sees its own uncommitted changes counted, and others' not."""
    make_document(conn, OCR)
    fold(conn)
    writer = connect()
    make_document(writer, COMPLETED)
    assert status_counts(writer) == expected_counts(writer)
    assert status_counts(conn) == expected_counts(conn)
    assert status_counts(writer) != status_counts(conn)
    writer.rollback()
    assert status_counts(conn) == expected_counts(conn)


# --- roles and comments ----------------------------------------------------------------------

READS = ["SELECT * FROM docstatus.stage_slas", "SELECT * FROM docstatus.stuck_documents",
         "SELECT * FROM docstatus.document_overview", "SELECT * FROM docstatus.status_counts",
         "SELECT * FROM docstatus.failure_summary", "SELECT * FROM docstatus.stuck_alerts",
         "SELECT * FROM docstatus.status_counters", "SELECT * FROM docstatus.status_counters_fold",
         "SELECT docstatus.normalise_error('x 1')"]
CHECKS = ["SELECT * FROM docstatus.check_stuck()", "SELECT docstatus.fold_status_counters()"]
WRITES = ["UPDATE docstatus.stage_slas SET max_duration = '1 day'",
          "INSERT INTO docstatus.stuck_alerts VALUES (1, now(), 'queued', '1 hour')",
          "UPDATE docstatus.status_counters SET count = 0",
          "UPDATE docstatus.status_counters_fold SET folded_below_tx = '0'"]


@pytest.mark.parametrize("role, may_check", [("docstatus_reader", False), ("docstatus_dms", False),
                                             ("docstatus_worker", True)])
def test_roles_read_the_views_and_only_the_worker_runs_the_checks(conn, role, may_check):
    make_document(conn, QUEUED)

    def outcome(statement):
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            return sqlstate_of(lambda: conn.execute(statement))

    for statement in READS:
        assert outcome(statement) is None, (role, statement)
    for statement in CHECKS:
        assert (outcome(statement) is None) == may_check, (role, statement)
    for statement in WRITES:
        assert outcome(statement) == "42501", (role, statement)


OBJECTS = {"r": ["stage_slas", "status_counters", "status_counters_fold", "stuck_alerts"],
           "v": ["stuck_documents", "document_overview", "status_counts", "failure_summary"]}
FUNCTIONS = ["normalise_error", "status_counters_folded_below", "fold_status_counters", "check_stuck"]


def test_every_new_object_has_a_comment(conn):
    for kind, names in OBJECTS.items():
        for name in names:
            comment = conn.execute(
                "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
                " WHERE c.relnamespace = 'docstatus'::regnamespace AND c.relname = %s AND c.relkind = %s",
                (name, kind)).fetchone()
            assert comment and comment[0], name
    for name in FUNCTIONS:
        comment = conn.execute("SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p"
                               " WHERE p.pronamespace = 'docstatus'::regnamespace AND p.proname = %s",
                               (name,)).fetchone()
        assert comment and comment[0], name


def test_definer_functions_pin_their_search_path(conn):
    rows = conn.execute("SELECT proname, prosecdef, proconfig FROM pg_proc"
                        " WHERE pronamespace = 'docstatus'::regnamespace AND proname = ANY(%s)",
                        (["check_stuck", "fold_status_counters"],)).fetchall()
    assert len(rows) == 2
    for name, definer, config in rows:
        assert definer and "search_path=pg_catalog, pg_temp" in config, name


# --- plans at scale --------------------------------------------------------------------------

# 1,000,000 documents take about 40 s to load on a 2-core machine; 200,000 (still 1% active)
# already make a sequential scan five times costlier than an index and keep this test near 10 s.
SCALE_DOCUMENTS = 200_000

BULK_LOAD = [
    """
INSERT INTO docstatus.documents (blob_container, blob_name, filename, text_extraction_status, processing_status,
                                 created_at, updated_at, status_entered_at)
SELECT 'bulk', 'b' || i, 'f' || i || '.pdf', p.t, p.p, x.at - interval '1 minute', x.at, x.at
  FROM generate_series(1, %(n)s) AS i
 -- 1%% active, spread over the four watched states; 5%% failed; the rest completed.
 CROSS JOIN LATERAL (
       SELECT CASE WHEN i %% 100 = 0
                   THEN (ARRAY['uploaded', 'queued', 'ocr running', 'llm running'])[(i / 100) %% 4 + 1]
                   WHEN i %% 100 < 6 THEN 'failed' ELSE 'completed' END AS state,
              CASE WHEN i %% 100 = 0 THEN now() - (i %% 7200) * interval '1 second'
                   ELSE now() - interval '1 day' - i * interval '1 second' END AS at) AS x
 CROSS JOIN LATERAL (
       SELECT CASE x.state WHEN 'uploaded' THEN 'not ready' WHEN 'queued' THEN 'ready' WHEN 'completed' THEN 'completed'
                           WHEN 'failed' THEN 'failed' ELSE 'in progress' END AS t,
              CASE x.state WHEN 'uploaded' THEN 'pending extraction' WHEN 'queued' THEN 'pending extraction'
                           WHEN 'completed' THEN 'done' WHEN 'failed' THEN 'failed' ELSE x.state END AS p) AS p;
""",
    """
INSERT INTO docstatus.extraction_jobs (document_id, status, attempt, worker_id, lease_expires_at, created_at,
                                       started_at, completed_at, error_message)
SELECT d.id, j.status, 1, j.worker, CASE WHEN j.worker IS NOT NULL THEN now() + interval '5 minutes' END,
       d.created_at, d.created_at, CASE WHEN j.status <> 'pending extraction' THEN d.status_entered_at END,
       CASE WHEN j.status = 'failed' THEN format('lease expired: worker w%%s held the job until %%s', d.id %% 10,
                                                 d.status_entered_at) END
  FROM docstatus.documents d
 CROSS JOIN LATERAL (
       SELECT CASE d.processing_status WHEN 'done' THEN 'done' WHEN 'failed' THEN 'failed'
                                       ELSE 'pending extraction' END AS status,
              CASE WHEN d.processing_status IN ('ocr running', 'llm running') THEN 'w' || d.id %% 10 END AS worker) AS j
 WHERE d.text_extraction_status <> 'not ready';
""",
    """
-- The history the triggers would have written, reduced to one creation event per column and job:
-- status_counts is folded from it, so it must agree with the rows.
INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, occurred_at)
SELECT d.id, k.kind, NULL, k.status, d.created_at
  FROM docstatus.documents d
 CROSS JOIN LATERAL (VALUES ('text_extraction', d.text_extraction_status),
                            ('processing', d.processing_status)) AS k (kind, status);
""",
    """
INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, occurred_at)
SELECT document_id, id, 'job', NULL, status, created_at FROM docstatus.extraction_jobs;
""",
]

USER_TABLES = ["documents", "extraction_jobs", "status_events"]


def plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def seq_scanned(conn, query, params=None):
    plan = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()[0][0]["Plan"]
    return {node["Relation Name"] for node in plan_nodes(plan) if node["Node Type"] == "Seq Scan"}


# The counters as of the load: every event so far is the load's own (the database is fresh), so
# they are the rows counted, and folded_below_tx is just past the load's transaction. Set by hand
# rather than by fold_status_counters, whose horizon any open transaction on the server holds back.
SET_COUNTERS = """
WITH counted AS (
    SELECT 'text_extraction' AS kind, text_extraction_status AS status, count(*) AS n
      FROM docstatus.documents GROUP BY 2
    UNION ALL SELECT 'processing', processing_status, count(*) FROM docstatus.documents GROUP BY 2
    UNION ALL SELECT 'job', status, count(*) FROM docstatus.extraction_jobs GROUP BY 2)
UPDATE docstatus.status_counters c
   SET count = coalesce((SELECT n FROM counted WHERE (kind, status) = (c.kind, c.status)), 0);
UPDATE docstatus.status_counters_fold
   SET folded_below_tx = (pg_current_xact_id()::text::bigint + 1)::text::xid8, folded_at = now();
"""


@pytest.fixture
def populated(conn):
    """SCALE_DOCUMENTS documents, 1% active, loaded set-based with the triggers off, then analyzed."""
    assert conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone()[0] == 0
    for table in USER_TABLES:
        conn.execute(f"ALTER TABLE docstatus.{table} DISABLE TRIGGER USER")
    with conn.transaction():
        for statement in BULK_LOAD:
            conn.execute(statement, {"n": SCALE_DOCUMENTS})
        conn.execute(SET_COUNTERS)
    for table in USER_TABLES:
        conn.execute(f"ALTER TABLE docstatus.{table} ENABLE TRIGGER USER")
    conn.execute("ANALYZE")
    return conn


@pytest.mark.slow
def test_plans_at_scale_use_no_sequential_scan(populated):
    conn = populated
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == SCALE_DOCUMENTS
    # Life goes on after the fold: these events are not folded yet.
    for state in (QUEUED, OCR, COMPLETED, FAILED):
        make_document(conn, state)
    doc_id = make_document(conn, LLM)

    queries = {
        "stuck_documents": ("SELECT * FROM docstatus.stuck_documents", None),
        "status_counts": ("SELECT * FROM docstatus.status_counts", None),
        "timeline": ("SELECT * FROM docstatus.status_events WHERE document_id = %s ORDER BY id", (doc_id,)),
        "one document's overview": ("SELECT * FROM docstatus.document_overview WHERE document_id = %s", (doc_id,)),
    }
    for name, (query, params) in queries.items():
        assert seq_scanned(conn, query, params) & set(USER_TABLES) == set(), name

    assert status_counts(conn) == expected_counts(conn)
    # The same answer as the slow way round.
    slow = conn.execute("""
        SELECT d.id FROM docstatus.documents d JOIN docstatus.stage_slas s
            ON (s.text_extraction_status, s.processing_status) = (d.text_extraction_status, d.processing_status)
         WHERE now() - d.status_entered_at > s.max_duration""").fetchall()
    assert set(stuck(conn)) == {row[0] for row in slow} and len(slow) > 0
    assert len(conn.execute("SELECT * FROM docstatus.status_events WHERE document_id = %s",
                            (doc_id,)).fetchall()) == 7
