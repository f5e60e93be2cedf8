"""Subscriber behaviour on a healthy connection: typed events, cursor, filters, forms, modes."""

import logging
import threading

import pytest

from docstatus import Client, Cursor, EventKind, ProcessingStatus, StatusEvent, Subscriber, TextExtractionStatus

from .helpers import Collector, committed_event_ids, new_blob, run_lifecycle, wait_until

# Short probe settings keep the tests quick; the defaults are for production.
FAST = {"probe_interval": 0.5, "probe_timeout": 2.0}


@pytest.fixture
def client(db_dsn):
    with Client.connect(db_dsn) as client:
        yield client


def started(subscriber: Subscriber, collector: Collector) -> Subscriber:
    """Starts the callback form and waits until it listens (and so has its start cursor)."""
    subscriber.start(collector)
    assert subscriber.wait_caught_up(10)
    return subscriber


def test_lifecycle_events_typed_in_order_with_cursor(db_dsn, client, conn):
    collector = Collector()
    with started(Subscriber(db_dsn, **FAST), collector) as subscriber:
        document_id = run_lifecycle(client, "w1")
        ids = committed_event_ids(conn)
        assert collector.wait_for_ids(ids)
        assert collector.ids == ids  # one writer at a time: cursor order is id order
        assert all(isinstance(event, StatusEvent) for event in collector.events)
        assert collector.events == client.history(document_id)
        first, last = collector.events[0], collector.events[-1]
        assert (first.kind, first.from_status, first.to_status) == (
            EventKind.TEXT_EXTRACTION, None, TextExtractionStatus.NOT_READY)
        assert last.to_status == "done" and last.kind == EventKind.JOB
        wait_until(lambda: subscriber.cursor == last.cursor)
        assert [event.cursor for event in collector.events] == sorted(event.cursor for event in collector.events)


def test_starts_from_now_unless_given_a_cursor(db_dsn, client, conn):
    run_lifecycle(client, "w1")
    before = committed_event_ids(conn)

    collector = Collector()
    with started(Subscriber(db_dsn, **FAST), collector):
        document = client.register_document("docs", new_blob(), "late.pdf")
        assert collector.wait_for_count(2)
        assert {event.document_id for event in collector.events} == {document.id}

    replay = Collector()
    with started(Subscriber(db_dsn, since=Cursor.beginning(), **FAST), replay):
        assert replay.wait_for_ids(committed_event_ids(conn))
        assert replay.ids[: len(before)] == before


def test_iterator_form_and_stop_from_another_thread(db_dsn, client):
    subscriber = Subscriber(db_dsn, since=Cursor.beginning(), **FAST)
    run_lifecycle(client, "w1")
    received = []
    for event in subscriber:
        received.append(event)
        if len(received) == 3:
            break  # leaving the loop closes the connection
    assert subscriber.backend_pid is None
    assert subscriber.cursor == received[-1].cursor

    # Resuming the same object is allowed and continues after the cursor; stop() ends it.
    threading.Timer(0.5, subscriber.stop).start()
    rest = list(subscriber)
    assert [event.id for event in received + rest] == [event.id for event in client.events_after(limit=100)]


def test_filters_by_document_kind_and_status(db_dsn, client, conn):
    by_document, by_kind, by_status, alerts_only = (Collector() for _ in range(4))
    first = client.register_document("docs", new_blob(), "one.pdf")
    subscribers = [
        started(Subscriber(db_dsn, since=Cursor.beginning(), document_ids=[first.id], **FAST), by_document),
        started(Subscriber(db_dsn, since=Cursor.beginning(), kinds=["job"], **FAST), by_kind),
        started(Subscriber(db_dsn, since=Cursor.beginning(), statuses=[ProcessingStatus.OCR_RUNNING], **FAST),
                by_status),
        started(Subscriber(db_dsn, channels=["docstatus_alerts"], since=Cursor.beginning(), **FAST), alerts_only),
    ]
    try:
        run_lifecycle(client, "w1", fail_once=True)
        everything = client.events_after(limit=1000)
        last = everything[-1].cursor
        for subscriber in subscribers:
            wait_until(lambda: subscriber.cursor == last)  # the cursor passes filtered-out events too
        assert by_document.ids == [e.id for e in everything if e.document_id == first.id]
        assert by_kind.ids == [e.id for e in everything if e.kind == "job"]
        assert by_status.ids == [e.id for e in everything if e.to_status == "ocr running"]
        assert alerts_only.ids == [e.id for e in everything if e.to_status == "failed"]
        assert len(alerts_only.ids) == 3  # text extraction, processing and the job
    finally:
        for subscriber in subscribers:
            subscriber.stop()


def test_forged_notifications_deliver_nothing(db_dsn, client, conn):
    collector = Collector()
    with started(Subscriber(db_dsn, **FAST), collector):
        for channel in ("docstatus_events", "docstatus_alerts"):
            for payload in ('{"event_id": 987654, "document_id": 1, "kind": "processing", "to": "done"}',
                            "not json", '{"event_id": "1"}', "[]"):
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        document = client.register_document("docs", new_blob(), "real.pdf")
        assert collector.wait_for_count(2)
        real = client.history(document.id)
        # Give a wrongly delivered event every chance to show up behind the real ones.
        conn.execute("SELECT pg_notify('docstatus_events', '{\"event_id\": 987655}')")
        assert not collector.wait_for_count(3, timeout=0.5)
        assert collector.events == real


def test_polling_when_event_notifications_are_off(db_dsn, client, conn):
    conn.execute("UPDATE docstatus.settings SET notify_events = false")
    collector = Collector()
    with started(Subscriber(db_dsn, poll_interval=0.1, **FAST), collector) as subscriber:
        assert subscriber.polling
        run_lifecycle(client, "w1")
        assert collector.wait_for_ids(committed_event_ids(conn))
        assert collector.ids == committed_event_ids(conn)


def test_polling_subscriber_wakes_at_once_on_an_alert(db_dsn, client, conn):
    conn.execute("UPDATE docstatus.settings SET notify_events = false")
    collector = Collector()
    # Neither a poll nor a probe comes within this test: only the alert can wake it.
    with started(Subscriber(db_dsn, poll_interval=60, probe_interval=60), collector):
        document = client.register_document("docs", new_blob(), "quiet.pdf")
        assert not collector.wait_for_count(1, timeout=0.3)
        client.validate_document(document.id, True, "application/x-unknown")  # fails: an alert
        ids = committed_event_ids(conn)
        assert collector.wait_for_ids(ids, timeout=5)
        assert collector.ids == ids


def test_notice_when_notifications_are_switched_off_while_running(db_dsn, client, conn, caplog):
    collector = Collector()
    with started(Subscriber(db_dsn, poll_interval=0.1, probe_interval=0.2), collector) as subscriber:
        assert not subscriber.polling
        with caplog.at_level(logging.INFO, logger="docstatus.subscriber"):
            conn.execute("UPDATE docstatus.settings SET notify_events = false")
            wait_until(lambda: subscriber.polling)
        client.register_document("docs", new_blob(), "after-switch.pdf")
        assert collector.wait_for_ids(committed_event_ids(conn))
    assert "polling every 0.1 s" in caplog.text


def test_event_held_back_by_an_older_transaction_arrives_when_it_ends(db_dsn, client, connect, conn):
    collector = Collector()
    with started(Subscriber(db_dsn, **FAST), collector):
        # An older transaction with an xid that writes no event: its end sends no notification.
        blocker = connect()
        blocker.execute("SELECT pg_current_xact_id()")
        document = client.register_document("docs", new_blob(), "held.pdf")
        assert not collector.wait_for_count(1, timeout=0.3)
        assert client.event_delivery().pending_events == 2
        blocker.rollback()
        assert collector.wait_for_ids([e.id for e in client.history(document.id)], timeout=5)


def test_callback_error_stops_the_thread_and_is_kept(db_dsn, client):
    def explode(event):
        raise RuntimeError("callback failed")

    subscriber = Subscriber(db_dsn, **FAST)
    thread = subscriber.start(explode)
    assert subscriber.wait_caught_up(10)
    client.register_document("docs", new_blob(), "boom.pdf")
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(subscriber.error, RuntimeError)
    assert subscriber.backend_pid is None
    subscriber.stop()


def test_stop_is_prompt_while_idle(db_dsn):
    subscriber = Subscriber(db_dsn, probe_interval=60)
    thread = subscriber.start(lambda event: None)
    assert subscriber.wait_caught_up(10)
    subscriber.stop(timeout=5)
    assert not thread.is_alive()


def test_rejects_unknown_channels():
    with pytest.raises(ValueError):
        Subscriber("", channels=["docstatus_other"])


def test_event_whose_transaction_sent_no_hint_is_read_after_the_interval(db_dsn, client, connect, conn):
    conn.execute("UPDATE docstatus.settings SET notify_mode = 'throttled', notify_interval = '1 second'")
    collector = Collector()
    # No probe within the test: only the read after the interval can find the silent event.
    with started(Subscriber(db_dsn, probe_interval=60, probe_timeout=5), collector):
        client.register_document("docs", new_blob(), "a.pdf")  # sends the hint, wakes the subscriber
        silent = connect()
        silent.execute("SELECT docstatus.register_document('docs', %s, 'b.pdf')", (new_blob(),))  # throttled
        assert collector.wait_for_count(2, timeout=10)
        silent.commit()  # no wake-up of its own, after the subscriber's read
        assert collector.wait_for_ids(committed_event_ids(conn), timeout=10)
        assert collector.ids == committed_event_ids(conn)
