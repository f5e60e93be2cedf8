"""Defects an outside reliability suite found (migration 0008_hardening): a backoff that overflowed
and stopped the reaper for every document, long names reaching a btree limit (54000) instead of
DS003, blank names and worker ids, error texts of any size."""

from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from docstatus import Client
from docstatus.errors import InvalidArgument

from .states import FAILED, OCR, QUEUED, claim_document, document_state, make_document, sqlstate_of


def settings(conn, **values):
    """One UPDATE, so the delays pass their CHECK together. Column names come from this file only."""
    assignments = ", ".join(f"{column} = %s" for column in values)
    conn.execute(f"UPDATE docstatus.settings SET {assignments}", tuple(values.values()))


def error_of(callable_):
    try:
        callable_()
    except psycopg.Error as exc:
        return exc
    raise AssertionError("no error raised")


def expire(conn, doc_id):
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE document_id = %s AND status = 'pending extraction' AND worker_id IS NOT NULL", (doc_id,))


def fail_attempts_by_reaping(conn, doc_id, count):
    """Fails `count` attempts of a document through the reaper; returns the waits of the retries."""
    waits = []
    for _ in range(count):
        conn.execute("UPDATE docstatus.extraction_jobs SET not_before = now() - interval '1 second'"
                     " WHERE document_id = %s AND status = 'pending extraction'", (doc_id,))
        claim_document(conn, doc_id, "w")
        expire(conn, doc_id)
        reaped = conn.execute("SELECT id FROM docstatus.reap_expired_jobs()").fetchall()
        assert len(reaped) == 1
        waits.append(conn.execute(
            "SELECT j.not_before - p.completed_at FROM docstatus.extraction_jobs j"
            "  JOIN docstatus.extraction_jobs p ON p.document_id = j.document_id AND p.attempt = j.attempt - 1"
            " WHERE j.document_id = %s ORDER BY j.attempt DESC LIMIT 1", (doc_id,)).fetchone()[0])
    return waits


# --- backoff that cannot overflow ------------------------------------------------------------

def test_the_reported_settings_reach_attempt_30_with_the_cap(conn):
    settings(conn, max_attempts=40, retry_base_delay="24 hours", retry_max_delay="48 hours")
    doc_id = make_document(conn, QUEUED)
    waits = fail_attempts_by_reaping(conn, doc_id, 30)
    assert waits[0] == timedelta(hours=24)
    assert set(waits[1:]) == {timedelta(hours=48)}
    assert conn.execute("SELECT max(attempt) FROM docstatus.extraction_jobs WHERE document_id = %s",
                        (doc_id,)).fetchone()[0] == 31


def test_max_attempts_at_its_largest_value(conn):
    settings(conn, max_attempts=2**31 - 1, retry_base_delay="24 hours", retry_max_delay="48 hours")
    doc_id = make_document(conn, QUEUED)
    assert fail_attempts_by_reaping(conn, doc_id, 32)[-1] == timedelta(hours=48)
    assert document_state(conn, doc_id) == QUEUED


@pytest.mark.parametrize("base, cap", [
    ("0", "0"), ("0", "2562047 hours"), ("1 microsecond", "2562047 hours"), ("1 second", "1 second"),
    ("24 hours", "48 hours"), ("24 hours", "2562047 hours"), ("1 month", "178000000 years"),
    ("2562047 hours", "2562047 hours"), ("1 microsecond", "178000000 years"),
])
def test_retry_delay_never_overflows_and_stays_within_its_bounds(conn, base, cap):
    settings(conn, retry_base_delay=base, retry_max_delay=cap)  # the CHECKs accept them
    previous = None
    for failures in [1, 2, 27, 28, 30, 31, 32, 63, 64, 1025, 2**31 - 1]:
        # Epoch seconds: a delay of many years does not fit a Python timedelta.
        within, seconds = conn.execute(
            "SELECT d BETWEEN least(%s::interval, %s::interval) AND %s::interval, extract(epoch FROM d)"
            "  FROM docstatus._retry_delay(%s, %s, %s) AS d", (base, cap, cap, failures, base, cap)).fetchone()
        assert within, (base, cap, failures)
        assert previous is None or seconds >= previous, (base, cap, failures)
        previous = seconds


def test_retry_delay_doubles_below_the_cap(conn):
    delays = [conn.execute("SELECT docstatus._retry_delay(%s, '10 seconds', '10 minutes')", (n,)).fetchone()[0]
              for n in range(1, 9)]
    assert delays == [timedelta(seconds=s) for s in (10, 20, 40, 80, 160, 320, 600, 600)]


# --- one job never stops the reaper ----------------------------------------------------------

def test_a_job_that_cannot_be_reaped_does_not_stop_the_others(conn):
    docs = [make_document(conn, OCR) for _ in range(3)]
    bad_job = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (docs[1],)).fetchone()[0]
    # A failure only this job's reaping meets (as the overflow did for one document).
    conn.execute(sql.SQL("""
        CREATE FUNCTION public.refuse_one_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.id = {} AND NEW.status = 'failed' THEN
                RAISE EXCEPTION 'interval out of range' USING ERRCODE = '22008';
            END IF;
            RETURN NEW;
        END $$""").format(sql.Literal(int(bad_job))))
    conn.execute("CREATE TRIGGER refuse_one_job BEFORE UPDATE ON docstatus.extraction_jobs"
                 " FOR EACH ROW EXECUTE FUNCTION public.refuse_one_job()")
    for doc_id in docs:
        expire(conn, doc_id)
    warnings = []
    conn.add_notice_handler(lambda diag: warnings.append((diag.severity_nonlocalized, diag.message_primary)))

    reaped = conn.execute("SELECT id, document_id FROM docstatus.reap_expired_jobs()").fetchall()

    assert sorted(doc for _, doc in reaped) == [docs[0], docs[2]]
    assert [d for d in docs if document_state(conn, d) == QUEUED] == [docs[0], docs[2]]
    assert document_state(conn, docs[1]) == OCR  # untouched, still expired: the next pass tries again
    assert any(severity == "WARNING" and f"job {bad_job}" in message and "interval out of range" in message
               for severity, message in warnings), warnings

    conn.execute("DROP TRIGGER refuse_one_job ON docstatus.extraction_jobs")
    assert [row[0] for row in conn.execute("SELECT id FROM docstatus.reap_expired_jobs()")] == [bad_job]
    assert document_state(conn, docs[1]) == QUEUED


def test_run_maintenance_reaps_the_others_too(conn):
    docs = [make_document(conn, OCR) for _ in range(2)]
    bad_job = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (docs[0],)).fetchone()[0]
    for doc_id in docs:
        expire(conn, doc_id)
    conn.execute(sql.SQL("""
        CREATE FUNCTION public.refuse_one_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.id = {} THEN RAISE EXCEPTION 'no'; END IF;
            RETURN NEW;
        END $$""").format(sql.Literal(int(bad_job))))
    conn.execute("CREATE TRIGGER refuse_one_job BEFORE UPDATE ON docstatus.extraction_jobs"
                 " FOR EACH ROW EXECUTE FUNCTION public.refuse_one_job()")
    actions = conn.execute("SELECT action, document_id FROM docstatus.run_maintenance(false)").fetchall()
    assert actions == [("reaped", docs[1])]


# --- text arguments: non-blank, bounded, DS003 naming the argument ---------------------------

def register(conn, container="c", blob="b", filename="f.pdf", mime=None):
    return conn.execute("SELECT id FROM docstatus.register_document(%s, %s, %s, %s)",
                        (container, blob, filename, mime)).fetchone()[0]


@pytest.mark.parametrize("argument, kwargs", [
    ("blob container", {"container": "c" * 64}),
    ("blob container", {"container": "   "}),
    ("blob container", {"container": "\t\n"}),
    ("blob name", {"blob": "b" * 1025}),
    ("blob name", {"blob": "b" * 2700}),
    ("blob name", {"blob": "\u00e9" * 1025}),
    ("blob name", {"blob": " "}),
    ("filename", {"filename": "f" * 1025}),
    ("filename", {"filename": "  "}),
    ("MIME type", {"mime": "a/" + "b" * 254}),
])
def test_register_document_refuses_blank_or_long_names(conn, argument, kwargs):
    error = error_of(lambda: register(conn, **kwargs))
    assert error.sqlstate == "DS003"
    assert str(error).startswith(argument), str(error)
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 0


def test_blob_name_is_also_limited_in_bytes(conn):
    error = error_of(lambda: register(conn, blob="\U0001F600" * 600))  # 600 characters, 2400 bytes
    assert error.sqlstate == "DS003" and "2048 bytes" in str(error)


def test_the_longest_names_are_accepted(conn):
    register(conn, container="c" * 63, blob="b" * 1024, filename="f" * 1024, mime="a/" + "b" * 253)
    register(conn, container="c" * 63, blob="\U0001F600" * 512)  # 2048 bytes
    assert conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0] == 2


def test_the_client_raises_invalid_argument_not_program_limit(conn):
    with pytest.raises(InvalidArgument) as caught:
        Client(conn).register_document("c", "b" * 2700, "f.pdf")
    assert "blob name" in str(caught.value)


@pytest.mark.parametrize("key", ["k" * 201, "  ", "\n"])
def test_idempotency_keys_are_bounded_and_non_blank(conn, key):
    queued = make_document(conn, QUEUED)
    failed = make_document(conn, FAILED)
    for call in ("SELECT docstatus.create_extraction_job(%s, %s)", "SELECT docstatus.retry_document(%s, %s)"):
        doc_id = queued if "create" in call else failed
        error = error_of(lambda call=call, doc_id=doc_id: conn.execute(call, (doc_id, key)))
        assert error.sqlstate == "DS003" and str(error).startswith("idempotency key"), (call, str(error))
    conn.execute("SELECT docstatus.create_extraction_job(%s, %s)", (queued, "k" * 200))
    conn.execute("SELECT docstatus.retry_document(%s, %s)", (failed, "k" * 200))


@pytest.mark.parametrize("worker_id", ["   ", "\t", "w" * 201])
def test_worker_ids_are_bounded_and_non_blank(conn, worker_id):
    held = make_document(conn, OCR, worker_id="w1")
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (held,)).fetchone()[0]
    make_document(conn, QUEUED)
    calls = [
        ("SELECT docstatus.claim_extraction_job(%s)", (worker_id,)),
        ("SELECT docstatus.claim_jobs(%s, '1 minute', 5)", (worker_id,)),
        ("SELECT docstatus.heartbeat_job(%s, %s)", (job_id, worker_id)),
        ("SELECT docstatus.release_job(%s, %s)", (job_id, worker_id)),
        ("SELECT docstatus.mark_llm_running(%s, %s)", (held, worker_id)),
        ("SELECT docstatus.record_result(%s, 't', 'f', %s)", (held, worker_id)),
        ("SELECT docstatus.finish_job(%s, 't', 'f', %s)", (held, worker_id)),
        ("SELECT docstatus.mark_attempt_failed(%s, 'e', %s)", (held, worker_id)),
        ("SELECT docstatus.mark_processing_failed(%s, 'e', %s)", (held, worker_id)),
    ]
    for statement, params in calls:
        error = error_of(lambda statement=statement, params=params: conn.execute(statement, params))
        assert error.sqlstate == "DS003" and str(error).startswith("worker id"), (statement, str(error))
    assert document_state(conn, held) == OCR
    assert conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE worker_id IS NOT NULL").fetchone()[0] == 1


def test_release_reason_and_result_blob_names_are_bounded(conn):
    held = make_document(conn, OCR, worker_id="w1")
    job_id = conn.execute("SELECT id FROM docstatus.extraction_jobs WHERE document_id = %s", (held,)).fetchone()[0]
    error = error_of(lambda: conn.execute("SELECT docstatus.release_job(%s, 'w1', %s)", (job_id, "r" * 1001)))
    assert error.sqlstate == "DS003" and "release reason" in str(error)
    for text_blob, fields_blob, argument in [("t" * 1025, "f", "text blob name"), ("t", " ", "fields blob name")]:
        error = error_of(lambda t=text_blob, f=fields_blob: conn.execute(
            "SELECT docstatus.record_result(%s, %s, %s, 'w1')", (held, t, f)))
        assert error.sqlstate == "DS003" and str(error).startswith(argument), str(error)


@pytest.mark.parametrize("sql", [
    "UPDATE docstatus.documents SET blob_container = repeat('c', 64)",
    "UPDATE docstatus.documents SET blob_name = ' '",
    "UPDATE docstatus.documents SET blob_name = repeat(chr(128512), 600)",
    "UPDATE docstatus.documents SET filename = E'\\t'",
    "UPDATE docstatus.documents SET mime_type = repeat('m', 256)",
    "UPDATE docstatus.extraction_jobs SET idempotency_key = repeat('k', 201)",
    "UPDATE docstatus.extraction_jobs SET worker_id = ' ', lease_expires_at = now()",
])
def test_raw_writes_obey_the_same_limits(conn, sql):
    make_document(conn, QUEUED)
    assert sqlstate_of(lambda: conn.execute(sql)) == "23514"


# --- error_message and status_reason keep their first 4 KB -----------------------------------

def stored_error(conn, doc_id):
    return conn.execute(
        "SELECT d.status_reason, j.error_message FROM docstatus.documents d"
        "  JOIN docstatus.extraction_jobs j ON j.document_id = d.id WHERE d.id = %s"
        " ORDER BY j.attempt DESC LIMIT 1", (doc_id,)).fetchone()


@pytest.mark.parametrize("unit", ["x", "\u00e9", "\u20ac", "\U0001F600"])
def test_a_huge_error_is_cut_to_4096_bytes_saying_how_much(conn, unit):
    doc_id = make_document(conn, OCR)
    message = unit * (10_000_000 // len(unit.encode()))
    conn.execute("SELECT docstatus.mark_processing_failed(%s, %s)", (doc_id, message))
    for stored in stored_error(conn, doc_id):
        kept, _, cut = stored.rpartition(" ... [cut ")
        assert len(stored.encode()) <= 4096
        assert message.startswith(kept) and len(kept.encode()) >= 4096 - 40
        assert cut == f"{len(message.encode()) - len(kept.encode())} bytes]"


def test_an_error_of_exactly_4096_bytes_is_kept_whole(conn):
    doc_id = make_document(conn, OCR)
    conn.execute("SELECT docstatus.mark_processing_failed(%s, %s)", (doc_id, "x" * 4096))
    assert stored_error(conn, doc_id) == ("x" * 4096, "x" * 4096)
    doc_id = make_document(conn, OCR)
    conn.execute("SELECT docstatus.mark_processing_failed(%s, %s)", (doc_id, "x" * 4097))
    assert all(s.endswith(" ... [cut 33 bytes]") for s in stored_error(conn, doc_id))


def test_raw_updates_are_capped_too(conn):
    doc_id = make_document(conn, FAILED)
    conn.execute("UPDATE docstatus.documents SET status_reason = repeat('r', 100000) WHERE id = %s", (doc_id,))
    conn.execute("UPDATE docstatus.extraction_jobs SET error_message = repeat('e', 100000) WHERE document_id = %s",
                 (doc_id,))
    reason, error = stored_error(conn, doc_id)
    assert reason.startswith("rrr") and reason.endswith(" bytes]") and len(reason) <= 4096
    assert error.startswith("eee") and error.endswith(" bytes]") and len(error) <= 4096


def test_the_failure_summary_stays_fast_with_huge_messages(conn):
    for _ in range(3):
        doc_id = make_document(conn, OCR)
        conn.execute("SELECT docstatus.mark_attempt_failed(%s, %s)", (doc_id, "z" * 10_000_000))
    assert conn.execute("SELECT max(octet_length(error_message)) FROM docstatus.extraction_jobs").fetchone()[0] <= 4096
    conn.execute("SELECT * FROM docstatus.failure_summary").fetchall()


# --- docstatus_owner: the functions' rights end at the schema --------------------------------

# Creating, attaching and dropping status_events partitions needs the table's owner.
PARTITION_UPKEEP = {"maintain_history", "_create_history_partition", "_create_history_partitions",
                    "_protect_history_partition", "_guard_history"}


def test_every_function_but_the_partition_upkeep_is_owned_by_docstatus_owner(conn):
    owners = dict(conn.execute(
        "SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p"
        " WHERE p.pronamespace = 'docstatus'::regnamespace").fetchall())
    wrong = {name: owner for name, owner in owners.items()
             if (owner == "docstatus_owner") == (name in PARTITION_UPKEEP)}
    assert not wrong
    definers = {name for (name,) in conn.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'docstatus'::regnamespace AND prosecdef")}
    assert "register_document" in definers and "reap_expired_jobs" in definers
    assert definers - PARTITION_UPKEEP <= {n for n, o in owners.items() if o == "docstatus_owner"}


def test_docstatus_owner_has_table_rights_and_nothing_more(conn):
    role = conn.execute("SELECT rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication"
                        "  FROM pg_roles WHERE rolname = 'docstatus_owner'").fetchone()
    assert role == (False,) * 6
    rights = conn.execute(
        "SELECT c.relname, has_table_privilege('docstatus_owner', c.oid, 'SELECT'),"
        "       has_table_privilege('docstatus_owner', c.oid, 'INSERT'),"
        "       has_table_privilege('docstatus_owner', c.oid, 'DELETE'),"
        "       has_table_privilege('docstatus_owner', c.oid, 'TRUNCATE')"
        "  FROM pg_class c WHERE c.relnamespace = 'docstatus'::regnamespace AND c.relkind IN ('r', 'p')"
        "   AND NOT c.relispartition").fetchall()
    assert rights and all(r[1:] == (True, True, False, False) for r in rights), rights
    assert not conn.execute("SELECT has_schema_privilege('docstatus_owner', 'docstatus', 'CREATE')").fetchone()[0]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM public.hardening_secret",
    "CREATE TABLE public.hardening_other (x int)",
    "CREATE TABLE docstatus.hardening_other (x int)",
    "DELETE FROM docstatus.documents",
    "TRUNCATE docstatus.status_events",
    "DROP TABLE docstatus.settings",
    "ALTER TABLE docstatus.documents DISABLE TRIGGER USER",
    "COPY docstatus.documents TO PROGRAM 'true'",
])
def test_a_mistake_in_a_function_cannot_reach_beyond_the_schema(conn, sql):
    conn.execute("CREATE TABLE public.hardening_secret (x int)")
    make_document(conn, QUEUED)
    # What a function owned by docstatus_owner could do with SECURITY DEFINER: its owner's rights.
    with conn.transaction():
        conn.execute("SET LOCAL ROLE docstatus_owner")
        assert sqlstate_of(lambda: conn.execute(sql)) == "42501"
        raise psycopg.Rollback()


def test_the_api_runs_as_docstatus_owner(conn):
    conn.execute("CREATE FUNCTION public.whoami() RETURNS trigger LANGUAGE plpgsql AS $$"
                 " BEGIN RAISE WARNING 'running as %', current_user; RETURN NEW; END $$")
    conn.execute("CREATE TRIGGER whoami BEFORE INSERT ON docstatus.documents"
                 " FOR EACH ROW EXECUTE FUNCTION public.whoami()")
    seen = []
    conn.add_notice_handler(lambda diag: seen.append(diag.message_primary))
    register(conn, blob="as-owner")
    assert seen == ["running as docstatus_owner"]
