"""Claims of concurrent connections, racing transitions, leases and the events cursor."""

import threading
from concurrent.futures import ThreadPoolExecutor

from .states import OCR, QUEUED, document_state, make_document, register, sqlstate_of


def make_queued_documents(conn, count):
    conn.execute(
        "SELECT docstatus.validate_document(d.id, true, 'application/pdf')"
        " FROM generate_series(1, %s) AS n,"
        " LATERAL docstatus.register_document('bulk', 'blob-' || n, 'f.pdf') AS d", (count,))


def test_racing_the_same_transition_exactly_one_wins(connect, conn):
    doc_id = make_document(conn, QUEUED)
    first, second = connect(), connect()
    first.execute("SELECT docstatus.mark_ocr_running(%s)", (doc_id,))  # holds the row lock
    outcome = {}

    def contender():
        outcome["state"] = sqlstate_of(lambda: second.execute("SELECT docstatus.mark_ocr_running(%s)", (doc_id,)))

    thread = threading.Thread(target=contender)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive(), "the second caller should wait for the first one's row lock"
    first.commit()
    thread.join(timeout=10)
    assert outcome["state"] == "DS001"
    second.rollback()
    assert document_state(conn, doc_id) == OCR
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE document_id = %s"
                        " AND to_status = 'ocr running'", (doc_id,)).fetchone()[0] == 1


def test_eight_connections_claim_500_jobs_each_exactly_once(connect, conn):
    make_queued_documents(conn, 500)
    connections = [connect(autocommit=True) for _ in range(8)]
    start = threading.Barrier(len(connections))

    def drain(worker_conn, name):
        claimed = []
        start.wait()
        while row := worker_conn.execute("SELECT id FROM docstatus.claim_extraction_job(%s)", (name,)).fetchone():
            claimed.append(row[0])
        return claimed

    with ThreadPoolExecutor(len(connections)) as pool:
        results = list(pool.map(drain, connections, [f"w{i}" for i in range(8)]))
    claimed = [job for result in results for job in result]
    assert len(claimed) == 500 and len(set(claimed)) == 500
    assert sum(1 for result in results if result) > 1, "claims should have been spread over connections"
    holders = conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE worker_id IS NULL").fetchone()[0]
    assert holders == 0


def expire_leases(conn):
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                 " WHERE status = 'pending extraction' AND worker_id IS NOT NULL")


def test_reaping_retries_up_to_max_attempts(conn):
    conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0'")  # backoff: tests/sql/test_backoff.py
    doc_id = make_document(conn, QUEUED)
    for attempt in (1, 2, 3):
        job = conn.execute("SELECT id, attempt FROM docstatus.claim_extraction_job(%s)", (f"w{attempt}",)).fetchone()
        assert job[1] == attempt
        conn.execute("SELECT docstatus.mark_ocr_running(%s, %s)", (doc_id, f"w{attempt}"))
        assert conn.execute("SELECT count(*) FROM docstatus.reap_expired_jobs()").fetchone()[0] == 0  # lease alive
        expire_leases(conn)
        reaped = conn.execute("SELECT id, status, error_message FROM docstatus.reap_expired_jobs()").fetchall()
        assert [(r[0], r[1]) for r in reaped] == [(job[0], "failed")]
        assert f"w{attempt}" in reaped[0][2] and "lease expired" in reaped[0][2]
        expected = QUEUED if attempt < 3 else ("failed", "failed")
        assert document_state(conn, doc_id) == expected
    # The history shows each failure and each retry.
    path = [row[0] for row in conn.execute(
        "SELECT to_status FROM docstatus.status_events WHERE document_id = %s AND kind = 'text_extraction'"
        " ORDER BY id", (doc_id,))]
    assert path == ["not ready", "ready"] + ["in progress", "failed", "ready"] * 2 + ["in progress", "failed"]


def test_presumed_dead_worker_cannot_touch_the_next_attempt(conn):
    conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0'")
    doc_id = make_document(conn, QUEUED)
    conn.execute("SELECT docstatus.claim_extraction_job('slow')")
    conn.execute("SELECT docstatus.mark_ocr_running(%s, 'slow')", (doc_id,))
    expire_leases(conn)
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_llm_running(%s, 'slow')", (doc_id,))) == "DS004"
    conn.execute("SELECT docstatus.reap_expired_jobs()")
    conn.execute("SELECT docstatus.claim_extraction_job('fresh')")
    # The old worker wakes up and tries to go on: the document is queued again, held by another.
    assert sqlstate_of(lambda: conn.execute("SELECT docstatus.mark_ocr_running(%s, 'slow')", (doc_id,))) == "DS004"
    assert conn.execute("SELECT docstatus.heartbeat_job(j.id, 'slow') FROM docstatus.extraction_jobs j"
                        " WHERE document_id = %s AND attempt = 2", (doc_id,)).fetchone()[0] is False
    conn.execute("SELECT docstatus.mark_ocr_running(%s, 'fresh')", (doc_id,))


def test_expired_claim_is_not_claimed_again(conn):
    make_document(conn, QUEUED)
    conn.execute("SELECT docstatus.claim_extraction_job('w1')")
    expire_leases(conn)
    assert conn.execute("SELECT * FROM docstatus.claim_extraction_job('w2')").fetchone() is None


def test_reaper_skips_a_document_a_worker_is_moving(connect, conn):
    doc_id = make_document(conn, OCR)
    expire_leases(conn)
    busy = connect()
    busy.execute("SELECT id FROM docstatus.documents WHERE id = %s FOR UPDATE", (doc_id,))
    assert conn.execute("SELECT count(*) FROM docstatus.reap_expired_jobs()").fetchone()[0] == 0
    busy.rollback()
    assert conn.execute("SELECT count(*) FROM docstatus.reap_expired_jobs()").fetchone()[0] == 1


def read_all_events(reader, cursor):
    """Drains events_after from cursor; returns (ids, new cursor)."""
    ids = []
    while page := reader.execute("SELECT tx_id::text, id FROM docstatus.events_after(%s::xid8, %s, 100)",
                                 cursor).fetchall():
        ids += [row[1] for row in page]
        cursor = page[-1]
    return ids, cursor


def test_events_after_waits_for_a_late_commit(connect, conn):
    reader = connect(autocommit=True)
    late = connect()
    late.execute("SELECT docstatus.register_document('c', 'late', 'f')")  # ids taken, not committed
    early_docs = [register(conn) for _ in range(3)]
    seen, cursor = read_all_events(reader, ("0", 0))
    assert seen == []  # held back: the open transaction is older than the committed ones
    late.commit()
    seen, cursor = read_all_events(reader, cursor)
    all_ids = [row[0] for row in conn.execute("SELECT id FROM docstatus.status_events ORDER BY tx_id, id")]
    assert seen == all_ids and len(seen) == 2 * (1 + len(early_docs))
    late_ids = [row[0] for row in conn.execute(
        "SELECT e.id FROM docstatus.status_events e JOIN docstatus.documents d ON d.id = e.document_id"
        " WHERE d.blob_name = 'late'")]
    assert seen[:2] == late_ids  # its ids are the smallest and it is delivered first


def test_events_cursor_under_concurrent_writers(connect, conn):
    """Writers commit in any order, one of them late; the reader gets every event exactly once."""
    stop = threading.Event()
    delivered = []
    reads = threading.Semaphore(0)  # one release per read pass of the reader

    def reader_loop():
        reader = connect(autocommit=True)
        cursor = ("0", 0)
        while not stop.is_set():
            ids, cursor = read_all_events(reader, cursor)
            delivered.extend(ids)
            reads.release()
        ids, cursor = read_all_events(reader, cursor)
        delivered.extend(ids)

    def writer(index):
        writer_conn = connect()
        for n in range(25):
            writer_conn.execute("SELECT docstatus.register_document('c', %s, 'f')", (f"{index}-{n}",))
            writer_conn.execute("SELECT docstatus.validate_document(d.id, true, 'text/plain')"
                                " FROM docstatus.documents d WHERE blob_name = %s", (f"{index}-{n}",))
            writer_conn.commit()

    def late_writer():
        """Takes its ids first, then commits only after the reader has read past others' events."""
        late_conn = connect()
        late_conn.execute("SELECT docstatus.register_document('c', 'late', 'f')")
        for _ in range(5):
            assert reads.acquire(timeout=30), "the reader stopped reading"
        late_conn.commit()

    reader_thread = threading.Thread(target=reader_loop)
    reader_thread.start()
    with ThreadPoolExecutor(5) as pool:
        late = pool.submit(late_writer)
        list(pool.map(writer, range(4)))
        late.result(timeout=60)
    stop.set()
    reader_thread.join(timeout=30)
    committed = [row[0] for row in conn.execute("SELECT id FROM docstatus.status_events ORDER BY tx_id, id")]
    assert len(committed) == 4 * 25 * 4 + 2
    assert delivered == committed  # same set, same order, no duplicates
