"""The one LISTEN building block: a dedicated connection that waits for notifications.

``Listener`` runs a thread with its own autocommit connection (never a pooled one), with TCP
keepalives, LISTENs on its channels and hands each notification to a callback. A lost
connection is opened again with backoff; every ``probe_interval`` seconds without a
notification it sends itself a NOTIFY on a private channel, and one that does not come back
within ``probe_timeout`` counts as a lost connection too (a half-open socket the kernel has not
noticed yet). Notifications sent while it is away are lost, as hints are: ``on_reconnect`` lets
the owner look for what it missed.

The worker's job wake-up, ``docstatus watch``'s stuck hints and ``docstatus.Subscriber`` take
the channel names and the connection settings from here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from docstatus.client import load_query

__all__ = ["ALERTS_CHANNEL", "CONNECT_DEFAULTS", "EVENTS_CHANNEL", "Listener", "Watchdog", "listen",
           "shut_down_socket"]

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

RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)
_WAIT_SLICE = 0.5  # how often the thread looks at its stop flag

log = logging.getLogger("docstatus.listener")


def listen(conn: psycopg.Connection, channels: Iterable[str]) -> None:
    """LISTEN on each channel (LISTEN takes no parameter: the name goes in as an identifier)."""
    for channel in channels:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def connect_options(conninfo: str, application_name: str) -> dict[str, Any]:
    """CONNECT_DEFAULTS and the application name, except what ``conninfo`` sets itself."""
    try:
        given = set(psycopg.conninfo.conninfo_to_dict(conninfo))
    except psycopg.Error:
        given = set()
    defaults = {**CONNECT_DEFAULTS, "application_name": application_name}
    return {key: value for key, value in defaults.items() if key not in given}


class Watchdog:
    """Shuts a socket down when a query outlives its deadline, so the blocked call fails.

    One thread while its owner (Subscriber, Listener) runs, started on first use and ended by
    ``close()``; arming and disarming only take a lock.
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


class _ProbeUnanswered(Exception):
    """The health probe did not come back: the connection no longer carries notifications."""


class Listener:
    """Calls ``on_notify(notification)`` for each notification on ``channels``, from its thread."""

    def __init__(self, conninfo: str, channels: Iterable[str], on_notify: Callable[[psycopg.Notify], None], *,
                 name: str = "docstatus-listener", on_reconnect: Callable[[], None] | None = None,
                 probe_interval: float = 10.0, probe_timeout: float = 5.0) -> None:
        self.conninfo = conninfo
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.name = name
        self.listening = threading.Event()
        self._probe_channel = f"docstatus_probe_{uuid.uuid4().hex}"
        self._conn: psycopg.Connection | None = None
        self._conn_lock = threading.Lock()
        self._watchdog = Watchdog(self._interrupt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._watchdog.close()

    def _interrupt(self) -> None:
        with self._conn_lock:
            if self._conn is not None and not self._conn.closed:
                shut_down_socket(self._conn)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True,
                                     **connect_options(self.conninfo, self.name)) as conn:
                    with self._conn_lock:
                        self._conn = conn
                    # Under the watchdog: a half-open socket would block a statement for minutes.
                    self._guarded(lambda: listen(conn, (*self.channels, self._probe_channel)), "LISTEN")
                    self.listening.set()
                    if failures:
                        log.warning("%s: listening again", self.name,
                                    extra={"fields": {"event": "listener reconnected", "listener": self.name}})
                        if self.on_reconnect is not None:
                            self.on_reconnect()
                    failures = 0
                    self._follow(conn)
            except (psycopg.Error, _ProbeUnanswered) as exc:
                self.listening.clear()
                with self._conn_lock:
                    self._conn = None
                exc = self._watchdog.take_reason() or exc
                if self._stop.is_set():
                    return
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                # One WARNING per outage; the attempts after it at DEBUG (a long outage would
                # otherwise log a line every 10 s, each saying the same).
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "%s: connection lost (%s); reconnecting in %ss", self.name, " ".join(str(exc).split()), delay,
                        extra={"fields": {"event": "listener lost", "listener": self.name, "error": str(exc),
                                          "attempt": failures}})
                self._stop.wait(delay)

    def _follow(self, conn: psycopg.Connection) -> None:
        probe_at = time.monotonic() + self.probe_interval
        token: str | None = None
        answer_by = 0.0
        while not self._stop.is_set():
            for notification in conn.notifies(timeout=_WAIT_SLICE):
                if notification.channel == self._probe_channel:
                    if notification.payload == token:
                        token = None
                    continue
                self.on_notify(notification)
                probe_at = time.monotonic() + self.probe_interval  # notifications flow: alive
            now = time.monotonic()
            if token is not None and now >= answer_by:
                raise _ProbeUnanswered(f"health probe got no answer within {self.probe_timeout:g} s")
            if token is None and now >= probe_at:
                token = uuid.uuid4().hex
                answer_by = now + self.probe_timeout
                probe_at = now + self.probe_interval
                self._guarded(lambda: conn.execute(load_query("listener_probe"),
                                                   {"channel": self._probe_channel, "token": token}),
                              "health probe")

    def _guarded(self, statement: Callable[[], object], what: str) -> None:
        """Runs a statement that must answer within probe_timeout, else the connection is shut."""
        self._watchdog.arm(self.probe_timeout, f"{what} got no answer within {self.probe_timeout:g} s")
        try:
            statement()
        finally:
            self._watchdog.disarm()
