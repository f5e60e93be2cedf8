"""History rows and NOTIFY payloads: written for every change, sent only on commit."""

import json

from .states import QUEUED, make_document, register


def history(conn, doc_id):
    return conn.execute(
        "SELECT kind, from_status, to_status, job_id IS NOT NULL FROM docstatus.status_events"
        " WHERE document_id = %s ORDER BY id", (doc_id,)).fetchall()


def listen(connect, *channels):
    listener = connect(autocommit=True)
    for channel in channels:
        listener.execute(f"LISTEN {channel}")
    return listener


def received(listener, count=None, timeout=2.0):
    """Notifications that arrive within timeout (stops early after count)."""
    return [(n.channel, json.loads(n.payload)) for n in listener.notifies(timeout=timeout, stop_after=count)]


def test_lifecycle_history(conn):
    doc_id = make_document(conn, ("completed", "done"))
    assert history(conn, doc_id) == [
        ("text_extraction", None, "not ready", False),
        ("processing", None, "pending extraction", False),
        ("text_extraction", "not ready", "ready", False),
        ("job", None, "pending extraction", True),
        ("text_extraction", "ready", "in progress", False),
        ("processing", "pending extraction", "ocr running", False),
        ("processing", "ocr running", "llm running", False),
        ("text_extraction", "in progress", "completed", False),
        ("processing", "llm running", "done", False),
        ("job", "pending extraction", "done", True),
    ]
    tx_ids = conn.execute("SELECT count(DISTINCT tx_id) FROM docstatus.status_events WHERE document_id = %s",
                          (doc_id,)).fetchone()[0]
    assert tx_ids == 5  # register, validate, ocr, llm, done (the test's claim writes no event)


def test_notify_after_commit_with_small_json(connect, conn):
    listener = listen(connect, "docstatus_events")
    doc_id = register(conn)
    notes = received(listener, count=2)
    assert [channel for channel, _ in notes] == ["docstatus_events"] * 2
    payloads = [payload for _, payload in notes]
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM docstatus.status_events WHERE document_id = %s ORDER BY id", (doc_id,))]
    assert [p["event_id"] for p in payloads] == ids
    assert payloads[0]["document_id"] == doc_id and payloads[0]["job_id"] is None
    assert {p["kind"] for p in payloads} == {"text_extraction", "processing"}
    assert payloads[0]["from"] is None
    assert set(payloads[0]) == {"event_id", "document_id", "job_id", "kind", "from", "to", "at"}


def test_no_notify_on_rollback(connect, conn):
    listener = listen(connect, "docstatus_events", "docstatus_alerts")
    writer = connect()
    writer.execute("SELECT docstatus.register_document('c', 'rolled-back', 'f')")
    writer.rollback()
    assert received(listener, timeout=0.5) == []
    assert conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone()[0] == 0


def test_nothing_sent_before_commit(connect):
    listener = listen(connect, "docstatus_events")
    writer = connect()
    writer.execute("SELECT docstatus.register_document('c', 'late', 'f')")
    assert received(listener, timeout=0.3) == []
    writer.commit()
    assert len(received(listener, count=2)) == 2


def test_alert_on_failure_with_bounded_payload(connect, conn):
    doc_id = make_document(conn, QUEUED)
    listener = listen(connect, "docstatus_alerts")
    huge = "x" * 100_000
    conn.execute("SELECT docstatus.mark_processing_failed(%s, %s)", (doc_id, huge))
    notes = received(listener, count=3)
    assert sorted(p["kind"] for _, p in notes) == ["job", "processing", "text_extraction"]
    for _, payload in notes:
        assert payload["to"] == "failed"
        assert 0 < len(payload["error"]) <= 500
        assert len(json.dumps(payload)) < 1000
    # The history keeps the error as stored: its first 4 KB, saying how much was cut (0008).
    details = conn.execute("SELECT detail FROM docstatus.status_events WHERE document_id = %s AND to_status = 'failed'",
                           (doc_id,)).fetchall()
    assert len(details) == 3
    for (detail,) in details:
        kept = 4096 - len(" ... [cut 96028 bytes]") - 10
        assert detail.endswith(f" ... [cut {100_000 - len(detail.split(' ... ')[0])} bytes]"), detail[-40:]
        assert kept <= len(detail) <= 4096


def test_notify_events_off_sends_only_alerts(connect, conn):
    conn.execute("UPDATE docstatus.settings SET notify_events = false")
    listener = listen(connect, "docstatus_events", "docstatus_alerts")
    doc_id = make_document(conn, QUEUED)
    conn.execute("SELECT docstatus.mark_processing_failed(%s, 'boom')", (doc_id,))
    notes = received(listener, count=3, timeout=1.0)
    assert {channel for channel, _ in notes} == {"docstatus_alerts"}
    assert len(notes) == 3
    assert len(history(conn, doc_id)) == 4 + 3  # the history is written all the same


def test_events_after_pages_in_order(conn):
    for _ in range(3):
        make_document(conn, QUEUED)
    everything = conn.execute("SELECT id FROM docstatus.status_events ORDER BY tx_id, id").fetchall()
    seen, cursor = [], ("0", 0)
    while True:
        page = conn.execute("SELECT tx_id::text, id FROM docstatus.events_after(%s::xid8, %s, 4)", cursor).fetchall()
        if not page:
            break
        seen += [(row[1],) for row in page]
        cursor = page[-1]
    assert seen == everything


def test_delivery_delay_names_the_open_writer(connect, conn):
    make_document(conn, QUEUED)
    blocker = connect()
    blocker.execute("SELECT pg_current_xact_id()")  # an open transaction with an id
    register(conn)
    pending, pid = conn.execute("SELECT pending_events, oldest_writer_pid FROM docstatus.event_delivery").fetchone()
    assert pending == 2
    assert pid == blocker.info.backend_pid
    blocker.rollback()
    assert conn.execute("SELECT pending_events FROM docstatus.event_delivery").fetchone()[0] == 0


def test_read_only_transactions_do_not_hold_delivery_back(connect, conn):
    reader = connect(autocommit=True)  # explicit BEGIN, so the isolation level is really RR
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    reader.execute("SELECT count(*) FROM docstatus.documents")  # a long reader, no transaction id
    register(conn)
    delivered = conn.execute("SELECT count(*) FROM docstatus.events_after()").fetchone()[0]
    assert delivered == 2
    assert reader.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
    reader.execute("ROLLBACK")
