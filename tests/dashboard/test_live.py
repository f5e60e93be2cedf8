"""The event stream: one Subscriber per process fanned out, resume from Last-Event-ID without
gaps, exactly once across a killed listener connection, and updates with notify_events off."""

from __future__ import annotations

import time

import psycopg

from .conftest import SseReader
from .helpers import queued, uploaded


def _ids(messages: list[dict]) -> list[int]:
    return [m["event_id"] for m in messages]


def _all_event_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM docstatus.status_events ORDER BY tx_id, id")]


def test_stream_carries_every_event_to_every_browser_over_one_listener(start_dashboard, client, conn, db_dsn):
    served = start_dashboard()
    readers = [SseReader(served.port) for _ in range(3)]
    document_id = queued(client)
    expected = _all_event_ids(conn)
    for reader in readers:
        messages = reader.messages(len(expected))
        assert _ids(messages) == expected
        assert {m["document_id"] for m in messages} == {document_id}
        assert reader.next_message(timeout=0.5) is None  # nothing more, nothing twice
        reader.close()
    listeners = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        "   AND application_name = 'docstatus-subscriber'").fetchone()[0]
    assert listeners == 1


def test_last_event_id_resumes_without_gaps(start_dashboard, client, conn):
    served = start_dashboard()
    reader = SseReader(served.port)
    queued(client)
    first = reader.messages(len(_all_event_ids(conn)))
    resume_from = reader.last_id
    reader.close()
    queued(client)  # while the browser is away
    uploaded(client)
    resumed = SseReader(served.port, last_event_id=resume_from)
    expected = _all_event_ids(conn)[len(first):]
    assert _ids(resumed.messages(len(expected))) == expected
    assert resumed.next_message(timeout=0.5) is None
    uploaded(client)  # and live again after the catch-up
    live = _all_event_ids(conn)[len(first) + len(expected):]
    assert _ids(resumed.messages(len(live))) == live
    resumed.close()


def test_killed_listener_loses_and_repeats_nothing(start_dashboard, client, conn):
    served = start_dashboard()
    reader = SseReader(served.port)
    queued(client)
    subscriber = served.dashboard.hub.subscriber
    for _round in range(3):
        pid = subscriber.backend_pid
        assert pid is not None
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(3):  # written while the listener is down or reconnecting
            uploaded(client)
        deadline = time.monotonic() + 15
        while subscriber.backend_pid in (None, pid):
            assert time.monotonic() < deadline, "the subscriber did not reconnect"
            time.sleep(0.05)
    queued(client)
    expected = _all_event_ids(conn)
    got = reader.messages(len(expected), timeout=30)
    assert _ids(got) == expected  # every event, once, in order
    assert reader.next_message(timeout=1.0) is None
    assert subscriber.reconnects >= 3
    reader.close()


def test_resume_after_the_listener_was_killed_meanwhile(start_dashboard, client, conn):
    served = start_dashboard()
    reader = SseReader(served.port)
    uploaded(client)
    assert len(reader.messages(2)) == 2
    resume_from = reader.last_id
    reader.close()
    conn.execute("SELECT pg_terminate_backend(%s)", (served.dashboard.hub.subscriber.backend_pid,))
    queued(client)
    resumed = SseReader(served.port, last_event_id=resume_from)
    expected = _all_event_ids(conn)[2:]
    assert _ids(resumed.messages(len(expected), timeout=30)) == expected
    assert resumed.next_message(timeout=1.0) is None
    resumed.close()


def test_with_notify_events_off_the_stream_still_updates(start_dashboard, client, conn):
    conn.execute("UPDATE docstatus.settings SET notify_events = false")
    served = start_dashboard()
    reader = SseReader(served.port)
    queued(client)
    expected = _all_event_ids(conn)
    assert _ids(reader.messages(len(expected))) == expected
    assert served.dashboard.hub.subscriber.polling
    reader.close()


def test_read_only_dashboard_cannot_write_even_through_its_pool(start_dashboard):
    served = start_dashboard()
    with served.dashboard.pool.connection() as connection:
        try:
            connection.execute("SELECT docstatus.register_document('docs', 'x', 'x.pdf')")
        except psycopg.errors.ReadOnlySqlTransaction:
            pass
        else:
            raise AssertionError("a read-only dashboard wrote")


def test_a_failed_subscriber_is_replaced_and_streams_lose_nothing(start_dashboard, client, conn):
    served = start_dashboard()
    hub = served.dashboard.hub
    reader = SseReader(served.port)
    uploaded(client)
    assert len(reader.messages(2)) == 2
    handed = hub._from_thread
    calls = []

    def fails_once(event):
        calls.append(event.id)
        if len(calls) == 1:
            raise RuntimeError("a bug in the hand-over")
        handed(event)

    hub._from_thread = fails_once
    queued(client)
    uploaded(client)
    expected = _all_event_ids(conn)[2:]
    assert _ids(reader.messages(len(expected), timeout=30)) == expected
    assert reader.next_message(timeout=1.0) is None
    assert hub.restarts == 1 and calls[0] == calls[1]  # the failed event was handed again
    reader.close()
