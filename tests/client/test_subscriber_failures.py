"""The subscriber delivers every committed event exactly once across lost connections."""

import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from docstatus import Client, Cursor, Subscriber

from .helpers import Collector, TcpProxy, committed_event_ids, dsn_via, run_lifecycle, wait_until

WRITERS = 4
DOCUMENTS = WRITERS * 200  # every 10th fails once during llm and is retried
# Events of one lifecycle: 10, and 9 more for a failure and its retry.
EVENTS = DOCUMENTS * 10 + (DOCUMENTS // 10) * 9


def write_documents(db_dsn, progress: list[int], count: int = DOCUMENTS, start: threading.Event | None = None):
    """Runs `count` lifecycles on WRITERS threads; progress[0] counts finished ones."""
    lock = threading.Lock()

    def writer(index: int) -> None:
        with Client.connect(db_dsn) as client:
            for number in range(count // WRITERS):
                if start is not None:
                    start.wait()
                run_lifecycle(client, f"writer-{index}", fail_once=number % 10 == 9)
                with lock:
                    progress[0] += 1

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(WRITERS)]
    for thread in threads:
        thread.start()
    return threads


def assert_exactly_once_in_order(received, conn):
    ids = [event.id for event in received]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert sorted(ids) == committed_event_ids(conn)
    cursors = [event.cursor for event in received]
    assert cursors == sorted(cursors), "events out of events_after order"


def terminate(conn, pid) -> None:
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


@pytest.mark.slow
def test_lossless_while_the_backend_is_killed_three_times(db_dsn, conn, caplog):
    caplog.set_level(logging.WARNING, logger="docstatus.subscriber")
    collector = Collector()
    subscriber = Subscriber(db_dsn, probe_interval=0.5, reconnect_delay=0.02)
    subscriber.start(collector)
    assert subscriber.wait_caught_up(10)

    progress = [0]
    writers = write_documents(db_dsn, progress)
    kills_while_writing = 0
    for kill in range(1, 4):
        wait_until(lambda: progress[0] >= kill * DOCUMENTS // 5)
        pid = wait_until(lambda: subscriber.backend_pid)
        terminate(conn, pid)
        kills_while_writing += progress[0] < DOCUMENTS
        wait_until(lambda: subscriber.backend_pid not in (None, pid))
    for writer in writers:
        writer.join()

    assert collector.wait_for_ids(committed_event_ids(conn), timeout=30)
    subscriber.stop()
    assert subscriber.error is None
    assert_exactly_once_in_order(collector.events, conn)
    assert kills_while_writing >= 2
    assert len(collector.events) == EVENTS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 3
    for message in warnings[:3]:  # each names what happened
        assert "lost its connection" in message
        assert "administrator command" in message or "closed the connection" in message


@pytest.mark.slow
def test_lossless_across_a_restart_from_a_stored_cursor(db_dsn, conn):
    first = Collector()
    subscriber = Subscriber(db_dsn, probe_interval=0.5)
    subscriber.start(first)
    assert subscriber.wait_caught_up(10)

    progress = [0]
    writers = write_documents(db_dsn, progress)
    wait_until(lambda: progress[0] >= DOCUMENTS // 3)
    subscriber.stop()  # mid-stream, as a process would exit
    stored = str(subscriber.cursor)
    assert stored == str(first.events[-1].cursor)

    second = Collector()
    with Subscriber(db_dsn, since=Cursor.parse(stored), probe_interval=0.5) as restarted:
        restarted.start(second)
        for writer in writers:
            writer.join()
        assert second.wait_for(lambda events: len(first.events) + len(events) >= len(committed_event_ids(conn)),
                               timeout=30)
    assert progress[0] == DOCUMENTS
    assert_exactly_once_in_order(first.events + second.events, conn)


@pytest.fixture
def proxy(db_dsn):
    params = psycopg.conninfo.conninfo_to_dict(db_dsn)
    host = str(params.get("host", ""))
    if host.startswith("/") or not host:
        pytest.skip("the test server is reached over a Unix socket; the proxy needs TCP")
    tcp_proxy = TcpProxy(host, int(params.get("port", 5432)))
    yield tcp_proxy
    tcp_proxy.close()


def test_half_open_connection_is_found_by_the_probe(db_dsn, proxy, conn, caplog):
    caplog.set_level(logging.WARNING, logger="docstatus.subscriber")
    collector = Collector()
    client = Client.connect(db_dsn)
    with Subscriber(dsn_via(db_dsn, proxy.port), probe_interval=0.2, probe_timeout=0.5) as subscriber:
        subscriber.start(collector)
        assert subscriber.wait_caught_up(10)
        frozen_pid = subscriber.backend_pid
        # Nothing comes back on this connection any more, yet its socket stays open: the
        # server still sees a live listener, and no error reaches the subscriber.
        proxy.freeze()
        run_lifecycle(client, "w1")
        assert collector.wait_for_ids(committed_event_ids(conn), timeout=10)
        assert subscriber.backend_pid != frozen_pid
    client.close()
    assert_exactly_once_in_order(collector.events, conn)
    assert "health probe got no answer within 0.5 s" in caplog.text


def test_network_drop_reconnects_and_catches_up(db_dsn, proxy, conn, caplog):
    caplog.set_level(logging.WARNING, logger="docstatus.subscriber")
    collector = Collector()
    client = Client.connect(db_dsn)
    with Subscriber(dsn_via(db_dsn, proxy.port), probe_interval=0.5) as subscriber:
        subscriber.start(collector)
        assert subscriber.wait_caught_up(10)
        for _ in range(3):
            run_lifecycle(client, "w1")
            proxy.cut()
            run_lifecycle(client, "w1")  # notifications sent while it is away are lost: the log is not
            assert collector.wait_for_ids(committed_event_ids(conn), timeout=10)
    client.close()
    assert_exactly_once_in_order(collector.events, conn)
    assert caplog.text.count("lost its connection") >= 3


def _pg_ctl_as_server_owner(conn, pg_server):
    """How to run pg_ctl on the test cluster, or None when it is not ours to restart."""
    if os.environ.get("DOCSTATUS_TEST_DSN"):
        return None
    data_directory = Path(conn.execute("SHOW data_directory").fetchone()[0])
    pg_ctl = pg_server.bindir / "pg_ctl"
    if not pg_ctl.is_file():
        return None
    command = [str(pg_ctl), "-D", str(data_directory)]
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return None
        command = ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.mark.slow
def test_server_restart(db_dsn, conn, pg_server, caplog):
    pg_ctl = _pg_ctl_as_server_owner(conn, pg_server)
    if pg_ctl is None:
        pytest.skip("the test server is not a throwaway cluster this test may restart")
    caplog.set_level(logging.WARNING, logger="docstatus.subscriber")
    collector = Collector()
    with Client.connect(db_dsn) as client:
        run_lifecycle(client, "w1")
    with Subscriber(db_dsn, since=Cursor.beginning(), probe_interval=0.5, reconnect_delay=0.05,
                    max_reconnect_delay=0.5) as subscriber:
        subscriber.start(collector)
        assert subscriber.wait_caught_up(10)
        subprocess.run([*pg_ctl, "restart", "-m", "fast", "-w", "-t", "60"], check=True, cwd="/",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Client.connect(db_dsn) as client:
            run_lifecycle(client, "w1")
        with psycopg.connect(db_dsn, autocommit=True) as fresh:
            ids = committed_event_ids(fresh)
            assert collector.wait_for_ids(ids, timeout=20)
            assert_exactly_once_in_order(collector.events, fresh)
    assert "lost its connection" in caplog.text
