"""docstatus.listener.Listener: the LISTEN building block of the worker's wake-up and watch's hints."""

import threading

import psycopg

from docstatus.listener import EVENTS_CHANNEL, Listener, connect_options

from .helpers import TcpProxy, dsn_via, wait_until


def start_listener(dsn, **options):
    received, reconnects = [], threading.Event()
    listener = Listener(dsn, (EVENTS_CHANNEL,), lambda notification: received.append(notification.payload),
                        on_reconnect=reconnects.set, **options)
    listener.start()
    assert listener.listening.wait(10)
    return listener, received, reconnects


def notify(conn, payload):
    conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, payload))


def test_hands_each_notification_to_the_callback(db_dsn, conn):
    listener, received, _ = start_listener(db_dsn)
    try:
        notify(conn, "one")
        notify(conn, "two")
        wait_until(lambda: received == ["one", "two"])
    finally:
        listener.stop()


def test_a_killed_connection_is_opened_again(db_dsn, conn):
    listener, received, reconnects = start_listener(db_dsn)
    try:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'docstatus-listener'")
        assert reconnects.wait(15)
        wait_until(listener.listening.is_set)
        notify(conn, "after")
        wait_until(lambda: received == ["after"])
    finally:
        listener.stop()


def test_a_half_open_connection_fails_its_health_probe_and_is_replaced(db_dsn, conn):
    info = psycopg.conninfo.conninfo_to_dict(db_dsn)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    listener, received, reconnects = start_listener(dsn_via(db_dsn, proxy.port), probe_interval=0.2,
                                                    probe_timeout=0.5)
    try:
        proxy.freeze()  # the socket stays open, nothing comes back: only the probe can tell
        assert reconnects.wait(15)
        notify(conn, "through the new connection")
        wait_until(lambda: received == ["through the new connection"])
    finally:
        listener.stop()
        proxy.close()


def test_connect_options_keep_what_the_caller_set_and_never_autocommit():
    options = connect_options("host=db keepalives_idle=5", "docstatus-test",
                              {"connect_timeout": 3, "autocommit": False})
    assert "keepalives_idle" not in options  # the conninfo's own value stays
    assert options["connect_timeout"] == 3
    assert options["keepalives"] == 1 and options["application_name"] == "docstatus-test"
    assert "autocommit" not in options  # a listening connection is always autocommit
