"""The one LISTEN building block: a dedicated connection that waits for notifications.

Everything that waits for a notification (``docstatus.Subscriber``, the worker's job wake-up,
``docstatus watch``'s stuck hints) builds on three parts of this module:

- ``ListenConnection``: one autocommit connection of its own (never a pooled one), with TCP
  keepalives, LISTEN on its channels and on a private probe channel, every statement under a
  deadline (a ``Watchdog`` shuts the socket down when a statement gets no answer: a half-open
  socket would otherwise block it for minutes), and the health probe, a NOTIFY to itself that
  must come back within its timeout;
- ``reconnecting``: the connect / follow / reconnect loop, with backoff;
- ``Listener``: both in a thread that hands each notification to a callback.

Notifications sent while a connection is away are lost, as hints are: the owner looks for what
it missed when it connects again (``Listener``'s ``on_reconnect``; the subscriber reads its
cursor).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
from psycopg import sql

from docstatus.client import load_query

__all__ = ["ALERTS_CHANNEL", "CONNECT_DEFAULTS", "EVENTS_CHANNEL", "ConnectionLost", "ListenConnection", "Listener",
           "Watchdog", "connect_options", "describe_loss", "reconnecting", "shut_down_socket"]

# The channels the database notifies on (the NOTIFY contract of the README).
EVENTS_CHANNEL = "docstatus_events"
ALERTS_CHANNEL = "docstatus_alerts"

# libpq settings that make a dead peer visible to the kernel, unless the caller chose otherwise.
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# A connection that lived this long counts as healthy: the next loss reconnects at once.
STABLE_AFTER = 1.0
_WAIT_SLICE = 0.5  # how often the Listener's thread looks at its stop flag

log = logging.getLogger("docstatus.listener")

T = TypeVar("T")


def connect_options(conninfo: str, application_name: str,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """CONNECT_DEFAULTS and the application name, except what ``conninfo`` or ``overrides`` set,
    then ``overrides``; never ``autocommit`` (a listening connection is always autocommit:
    LISTEN and NOTIFY act at commit)."""
    overrides = overrides or {}
    given = set(psycopg.conninfo.conninfo_to_dict(conninfo)) | set(overrides)
    defaults = {**CONNECT_DEFAULTS, "application_name": application_name}
    merged = {key: value for key, value in defaults.items() if key not in given}
    merged.update(overrides)
    merged.pop("autocommit", None)
    return merged


class Watchdog:
    """Shuts a socket down when a query outlives its deadline, so the blocked call fails.

    One thread while its owner runs, started on first use and ended by ``close()``; arming and
    disarming only take a lock.
    """

    def __init__(self, interrupt: Callable[[], None]) -> None:
        self._interrupt = interrupt
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._reason = ""
        self._sleeping_until: float | None = None
        self._generation = 0  # a thread runs while its generation is the current one
        self._running = False
        self.fired_reason: str | None = None

    def arm(self, timeout: float, reason: str) -> None:
        with self._cond:
            self._deadline = time.monotonic() + timeout
            self._reason = reason
            if not self._running:
                self._running = True
                self._sleeping_until = None
                threading.Thread(target=self._run, args=(self._generation,),
                                 name="docstatus-watchdog", daemon=True).start()
            elif self._sleeping_until is None or self._sleeping_until > self._deadline:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def take_reason(self) -> str | None:
        reason, self.fired_reason = self.fired_reason, None
        return reason

    def close(self) -> None:
        with self._cond:
            self._generation += 1
            self._running = False
            self._deadline = None
            self._cond.notify_all()

    def _run(self, generation: int) -> None:
        with self._cond:
            while generation == self._generation:
                if self._deadline is None:
                    self._sleeping_until = None
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._sleeping_until = self._deadline
                    self._cond.wait(remaining)
                    continue
                self.fired_reason = self._reason
                self._deadline = None
                self._interrupt()


def shut_down_socket(conn: psycopg.Connection) -> None:
    """Makes a call blocked on the connection fail at once (from any thread)."""
    try:
        # shutdown() acts on the socket itself, so a duplicate descriptor is enough and
        # libpq's own descriptor stays valid until the connection is closed.
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass


class ConnectionLost(Exception):
    """The connection stopped working in a way psycopg cannot see (e.g. the probe got no answer)."""


def probe_unanswered(timeout: float) -> ConnectionLost:
    return ConnectionLost(f"health probe got no answer within {timeout:g} s")


def describe_loss(exc: BaseException) -> str:
    """One line naming what ended a connection."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ConnectionLost):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ListenConnection:
    """A dedicated autocommit connection that LISTENs, with a deadline on every statement.

    ``open()`` connects (again), ``listen()`` LISTENs on the channels and the private probe
    channel, ``run()`` runs a statement under the watchdog, ``send_probe()`` and ``notifies()``
    make the health probe (``notifies`` keeps the probe's answers to itself), ``interrupt()``
    makes a blocked call fail from any thread, ``disconnect()`` closes the connection.
    ``stop`` set: ``open()`` refuses, so a connection opened while stopping does not linger.
    """

    def __init__(self, conninfo: str, channels: Iterable[str], *, application_name: str,
                 stop: threading.Event, connect_kwargs: dict[str, Any] | None = None) -> None:
        self.conninfo = conninfo
        self.channels = tuple(channels)
        self.connect_kwargs = connect_options(conninfo, application_name, connect_kwargs)
        self.probe_channel = f"docstatus_probe_{uuid.uuid4().hex}"
        self._stop = stop
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # guards replacing/closing _conn against interrupt()
        self._watchdog = Watchdog(self.interrupt)
        self._probe_token: str | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process of the current connection, None while disconnected."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    @property
    def host(self) -> str | None:
        conn = self._conn
        return None if conn is None else conn.info.host

    def open(self) -> None:
        self.disconnect()
        conn = psycopg.connect(self.conninfo, autocommit=True, **self.connect_kwargs)
        with self._lock:
            if self._stop.is_set():
                conn.close()
                raise ConnectionLost("stopping")
            self._conn = conn
        self._probe_token = None

    def listen(self, timeout: float) -> None:
        for channel in (*self.channels, self.probe_channel):
            # LISTEN takes no parameter: the name goes in as an identifier.
            self.run(sql.SQL("LISTEN {}").format(sql.Identifier(channel)), None, f"LISTEN {channel}", timeout)

    def run(self, query: str | sql.Composed, params: dict[str, Any] | None, what: str,
            timeout: float) -> list[tuple[Any, ...]]:
        """Runs one statement under the watchdog; its rows (none for a command)."""
        conn = self._conn
        if conn is None:
            raise ConnectionLost("not connected")
        self._watchdog.arm(timeout, f"{what} got no answer within {timeout:g} s")
        try:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []
        finally:
            self._watchdog.disarm()

    @property
    def probe_pending(self) -> bool:
        """A probe was sent and its answer has not come back yet."""
        return self._probe_token is not None

    def send_probe(self, timeout: float) -> None:
        """A NOTIFY to ourselves on the probe channel; ``notifies()`` sees its answer."""
        self._probe_token = uuid.uuid4().hex
        self.run(load_query("listener_probe"), {"channel": self.probe_channel, "token": self._probe_token},
                 "health probe", timeout)

    def notifies(self, timeout: float, stop_after: int | None = None) -> Iterator[psycopg.Notify]:
        """The notifications of the LISTENed channels within ``timeout``; probe answers are
        taken note of, not handed out."""
        conn = self._conn
        if conn is None:
            raise ConnectionLost("not connected")
        for notification in conn.notifies(timeout=timeout, stop_after=stop_after):
            if notification.channel == self.probe_channel:
                if notification.payload == self._probe_token:
                    self._probe_token = None
                continue
            yield notification

    def take_lost_reason(self) -> str | None:
        """Why the watchdog shut the connection down, once, if it did."""
        return self._watchdog.take_reason()

    def interrupt(self) -> None:
        """Makes a call blocked on the connection fail at once (thread-safe)."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed:
                return
            shut_down_socket(conn)

    def disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to say goodbye
                pass

    def stop_watchdog(self) -> None:
        """Ends the watchdog's thread (the next statement starts it again)."""
        self._watchdog.close()


def backoff(failures: int, first_delay: float, max_delay: float) -> float:
    """0 for the first retry, then exponential from ``first_delay`` with jitter, capped."""
    if failures == 0:
        return 0.0
    delay = min(max_delay, first_delay * 2 ** (failures - 1))
    return delay * random.uniform(0.5, 1.0)


def reconnecting(connection: ListenConnection, open_session: Callable[[], None],
                 follow: Callable[[], Iterator[T]], *, stop: threading.Event,
                 on_lost: Callable[[str, float, bool], None],
                 recoverable: tuple[type[BaseException], ...] = (psycopg.OperationalError,),
                 reconnect_delay: float = 0.1, max_reconnect_delay: float = 10.0) -> Iterator[T]:
    """What ``follow()`` yields, across lost connections, until ``stop`` is set.

    ``open_session()`` connects (``connection.open()``) and prepares the session (LISTEN, ...);
    then ``follow()`` runs until it returns (the end) or a ``recoverable`` error or
    ``ConnectionLost`` ends the connection. Then ``on_lost(reason, delay, was_connected)`` is
    told, and after ``delay`` (backoff, reset once a connection lived ``STABLE_AFTER`` seconds)
    the loop connects again. The connection is closed whichever way the loop ends.
    """
    lost: tuple[type[BaseException], ...] = (*recoverable, ConnectionLost)
    failures = 0
    try:
        while not stop.is_set():
            connected_at = None
            try:
                open_session()
                connected_at = time.monotonic()
                yield from follow()
                return
            except lost as exc:
                if stop.is_set():
                    return
                reason = connection.take_lost_reason() or describe_loss(exc)
                connection.disconnect()
                if connected_at is not None and time.monotonic() - connected_at >= STABLE_AFTER:
                    failures = 0
                delay = backoff(failures, reconnect_delay, max_reconnect_delay)
                failures += 1
                on_lost(reason, delay, connected_at is not None)
                if stop.wait(delay):
                    return
    finally:
        connection.disconnect()


class Listener:
    """Calls ``on_notify(notification)`` for each notification on ``channels``, from its thread.

    Every ``probe_interval`` seconds without a notification it probes its connection; a lost
    connection is opened again with backoff, and ``on_reconnect()`` is called once it listens
    again.
    """

    def __init__(self, conninfo: str, channels: Iterable[str], on_notify: Callable[[psycopg.Notify], None], *,
                 name: str = "docstatus-listener", on_reconnect: Callable[[], None] | None = None,
                 probe_interval: float = 10.0, probe_timeout: float = 5.0) -> None:
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.name = name
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._connection = ListenConnection(conninfo, channels, application_name=name, stop=self._stop)
        self._was_lost = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._connection.stop_watchdog()

    def _run(self) -> None:
        for notification in reconnecting(self._connection, self._open, self._follow, stop=self._stop,
                                         on_lost=self._on_lost, recoverable=(psycopg.Error,),
                                         reconnect_delay=0.5):
            self.on_notify(notification)

    def _open(self) -> None:
        self._connection.open()
        # Under the watchdog: a half-open socket would block a statement for minutes.
        self._connection.listen(self.probe_timeout)
        self.listening.set()
        if self._was_lost:
            self._was_lost = False
            log.warning("%s: listening again", self.name,
                        extra={"fields": {"event": "listener reconnected", "listener": self.name}})
            if self.on_reconnect is not None:
                self.on_reconnect()

    def _on_lost(self, reason: str, delay: float, was_connected: bool) -> None:
        self.listening.clear()
        # One WARNING per outage; the attempts after it at DEBUG (a long outage would
        # otherwise log a line every few seconds, each saying the same).
        level = logging.DEBUG if self._was_lost else logging.WARNING
        self._was_lost = True
        log.log(level, "%s: connection lost (%s); reconnecting in %.2f s", self.name, reason, delay,
                extra={"fields": {"event": "listener lost", "listener": self.name, "error": reason}})

    def _follow(self) -> Iterator[psycopg.Notify]:
        connection = self._connection
        probe_at = time.monotonic() + self.probe_interval
        answer_by = 0.0
        while not self._stop.is_set():
            for notification in connection.notifies(_WAIT_SLICE):
                yield notification
                probe_at = time.monotonic() + self.probe_interval  # notifications flow: alive
            now = time.monotonic()
            if connection.probe_pending:
                if now >= answer_by:
                    raise probe_unanswered(self.probe_timeout)
            elif now >= probe_at:
                answer_by = now + self.probe_timeout
                probe_at = now + self.probe_interval
                connection.send_probe(self.probe_timeout)
