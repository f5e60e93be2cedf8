"""settings.notify_mode: how many docstatus_events hints go out; alerts always; history always."""

import psycopg
import pytest

from .states import FAILED, QUEUED, make_document, register
from .test_events import listen, received


def set_mode(conn, mode, interval="50 milliseconds"):
    conn.execute("UPDATE docstatus.settings SET notify_mode = %s, notify_interval = %s", (mode, interval))


def events_in_history(conn):
    return conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone()[0]


def test_each_sends_one_hint_per_event(connect, conn):
    listener = listen(connect, "docstatus_events")
    before = events_in_history(conn)
    make_document(conn, QUEUED)
    notes = received(listener, timeout=1.0)
    assert len(notes) == events_in_history(conn) - before == 4


def test_per_transaction_sends_one_hint_per_transaction(connect, conn):
    set_mode(conn, "per_transaction")
    listener = listen(connect, "docstatus_events")
    writer = connect()  # one transaction for two documents
    first, second = register(writer), register(writer)
    writer.commit()
    notes = received(listener, timeout=1.0)
    assert len(notes) == 1
    # The hint is the first event of the transaction, with the usual fields.
    assert notes[0][1]["document_id"] == first and notes[0][1]["kind"] == "text_extraction"
    assert set(notes[0][1]) == {"event_id", "document_id", "job_id", "kind", "from", "to", "at"}
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id IN (%s, %s)",
                        (first, second)).fetchone()[0] == 4
    make_document(conn, QUEUED)  # register, validate: two transactions
    assert len(received(listener, timeout=1.0)) == 2


def test_per_transaction_hint_survives_a_rolled_back_savepoint(connect, conn):
    set_mode(conn, "per_transaction")
    listener = listen(connect, "docstatus_events")
    writer = connect()
    writer.execute("SAVEPOINT s")
    register(writer)
    writer.execute("ROLLBACK TO SAVEPOINT s")  # its NOTIFY goes, and so does the flag
    kept = register(writer)
    writer.commit()
    notes = received(listener, timeout=1.0)
    assert [payload["document_id"] for _, payload in notes] == [kept]


def test_throttled_sends_at_most_one_hint_per_interval(connect, conn):
    set_mode(conn, "throttled", "1 minute")
    listener = listen(connect, "docstatus_events", "docstatus_alerts")
    doc_id = make_document(conn, QUEUED)  # two transactions within the minute
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'boom')", (doc_id,))
    notes = received(listener, timeout=1.0)
    assert [channel for channel, _ in notes].count("docstatus_events") == 1
    assert [channel for channel, _ in notes].count("docstatus_alerts") == 3  # alerts always go out
    # Once the interval has passed, the next transaction sends again.
    conn.execute("UPDATE docstatus.notify_throttle SET last_sent_at = now() - interval '2 minutes'")
    register(conn)
    assert [channel for channel, _ in received(listener, timeout=1.0)] == ["docstatus_events"]


def test_throttled_writers_never_wait_for_the_throttle(connect, conn):
    set_mode(conn, "throttled")
    listener = listen(connect, "docstatus_events")
    holder = connect()
    register(holder)  # took the throttle row; its transaction stays open
    other = connect()
    other.execute("SET lock_timeout = '200ms'")
    register(other)  # skips the locked row instead of waiting: no lock_timeout error
    other.commit()
    assert received(listener, timeout=0.5) == []
    holder.commit()
    assert len(received(listener, timeout=1.0)) == 1


def test_off_sends_only_alerts_and_writes_history(connect, conn):
    set_mode(conn, "off")
    listener = listen(connect, "docstatus_events", "docstatus_alerts")
    before = events_in_history(conn)
    make_document(conn, FAILED)
    notes = received(listener, timeout=1.0)
    assert notes and {channel for channel, _ in notes} == {"docstatus_alerts"}
    assert events_in_history(conn) - before == 7


def test_notify_events_false_is_off_whatever_the_mode(connect, conn):
    conn.execute("UPDATE docstatus.settings SET notify_events = false, notify_mode = 'each'")
    listener = listen(connect, "docstatus_events")
    make_document(conn, QUEUED)
    assert received(listener, timeout=0.5) == []


@pytest.mark.parametrize("assignment", ["notify_mode = 'sometimes'", "notify_mode = NULL",
                                        "notify_interval = '0'", "notify_interval = '-1 second'",
                                        "notify_interval = '2 minutes'"])
def test_bad_notify_settings_are_refused(conn, assignment):
    with pytest.raises((psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation)):
        conn.execute(f"UPDATE docstatus.settings SET {assignment}")  # test input, not user input
