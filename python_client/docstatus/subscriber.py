"""``Subscriber``: every committed status event, exactly once, in ``events_after`` order.

A NOTIFY is only a hint: it arrives only while the listener is connected, and any role can send
one. So the subscriber treats each notification as a wake-up and reads the events themselves
from ``docstatus.events_after`` after its cursor ``(tx_id, event id)``, in batches. The cursor
moves past each event as it is handed out, so after any failure it resumes exactly where it was.

How each way of losing events is closed:

- connection killed (``pg_terminate_backend``), network drop, server restart: reconnect with
  backoff, LISTEN again, then catch up from the cursor. LISTEN comes before the catch-up read,
  so an event committed in between is either read or announced;
- started late: ``Subscriber(..., since=cursor)`` replays from a stored cursor. Without
  ``since`` it starts at "now": every event not yet deliverable when it connects;
- half-open connection: every ``probe_interval`` seconds without event notifications it sends
  itself a NOTIFY with a random token on a private channel; no answer within ``probe_timeout``
  means the connection no longer carries notifications, and it reconnects. Every query it runs
  has a deadline too (``query_timeout``): a watchdog shuts the socket down when a query gets no
  answer, because a half-open socket would otherwise block forever;
- forged notifications: they only wake it; what it hands out comes from ``status_events``;
- ``settings.notify_mode`` per_transaction or throttled (a transaction may commit without a
  notification of its own): after each wake-up it reads once more ``2 x notify_interval`` later;
- ``settings.notify_events = false`` or ``notify_mode = 'off'``: it reads ``events_after`` every
  ``poll_interval`` seconds instead, still waking at once on ``docstatus_alerts``. The setting
  is read at connect time and at every probe;
- a hot standby (``pg_is_in_recovery()``): NOTIFY is not replicated and LISTEN is refused
  there, so it reads ``events_after`` every ``poll_interval`` seconds, without probes (every
  query still has its deadline); when the standby is promoted it reconnects and listens;
- history dropped by ``settings.history_retention`` past its cursor: ``events_after`` raises
  DS007 and the subscriber raises ``CursorTooOld`` to the caller instead of skipping events;
- a long-open transaction anywhere in the cluster holds ``events_after`` back (see the view
  ``docstatus.event_delivery``): when a notification names an event it could not read yet, it
  reads again with a growing delay until that transaction ends.

Two ways to use it::

    with Subscriber(dsn, since=stored_cursor) as subscriber:
        for event in subscriber:          # blocks; stop() from another thread ends the loop
            handle(event)
            store(event.cursor)

    subscriber = Subscriber(dsn, kinds=["processing"])
    subscriber.start(handle)              # a thread calls handle(event) for each event
    ...
    subscriber.stop()

The cursor moves past an event when it is handed out: persist ``event.cursor`` (or
``subscriber.cursor``) once you have handled the event, and pass it as ``since`` to resume.
``stop()`` is final. A callback that blocks for long also stops this connection from reading
its notifications, and PostgreSQL's NOTIFY queue (shared by the whole cluster) grows meanwhile.

Reconnects are logged at WARNING on the ``docstatus.subscriber`` logger, with the reason.

The connection, its deadlines, the probe and the reconnect loop are ``docstatus.listener``'s,
shared with every other LISTENer of the package.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from docstatus.client import DEFAULT_EVENTS_LIMIT, load_query
from docstatus.errors import translated
from docstatus.listener import (
    ALERTS_CHANNEL,
    EVENTS_CHANNEL,
    ConnectionLost,
    ListenConnection,
    probe_unanswered,
    reconnecting,
)
from docstatus.models import Cursor, EventKind, StatusEvent

__all__ = ["ALERTS_CHANNEL", "EVENTS_CHANNEL", "Subscriber"]

log = logging.getLogger("docstatus.subscriber")

# Event ids read recently: a notification that arrives after its event was read is no news.
_RECENT_IDS = 20_000


class _RecentIds:
    """A bounded set of the event ids read last."""

    def __init__(self, size: int) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()
        self._size = size

    def add(self, event_id: int) -> None:
        if len(self._order) >= self._size:
            self._ids.discard(self._order.popleft())
        self._ids.add(event_id)
        self._order.append(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids


class Subscriber:
    """Follows ``docstatus.status_events`` on a dedicated autocommit connection.

    ``channels``: ``docstatus_events`` gives every event; ``docstatus_alerts`` alone gives only
    failures (events whose ``to_status`` is 'failed'), which PostgreSQL announces even when
    ``settings.notify_events`` is off. Filters (``document_ids``, ``kinds``, ``statuses``
    matched against ``to_status``) choose what is handed out; the cursor moves past every event
    either way. ``since`` is a ``Cursor`` (or its ``str``), ``Cursor.beginning()`` for the whole
    history, or None for "from now on". ``connect_kwargs`` go to ``psycopg.connect``.
    """

    def __init__(
        self,
        dsn: str = "",
        channels: Iterable[str] = (EVENTS_CHANNEL, ALERTS_CHANNEL),
        *,
        since: Cursor | str | None = None,
        document_ids: Iterable[int] | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        statuses: Iterable[str] | None = None,
        batch_size: int = DEFAULT_EVENTS_LIMIT,
        poll_interval: float = 1.0,
        probe_interval: float = 10.0,
        probe_timeout: float = 5.0,
        query_timeout: float = 30.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 10.0,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        channels = tuple(dict.fromkeys(channels))
        if not channels or not set(channels) <= {EVENTS_CHANNEL, ALERTS_CHANNEL}:
            raise ValueError(f"channels must be {EVENTS_CHANNEL!r} and/or {ALERTS_CHANNEL!r}, got {channels!r}")
        if batch_size < 1 or min(poll_interval, probe_interval, probe_timeout, query_timeout) <= 0:
            raise ValueError("batch_size, intervals and timeouts must be positive")
        self._all_events = EVENTS_CHANNEL in channels
        # Alerts are listened to in every case: they are what wakes a polling subscriber at once.
        listen_channels = (EVENTS_CHANNEL, ALERTS_CHANNEL) if self._all_events else (ALERTS_CHANNEL,)
        self._cursor: Cursor | None = Cursor.parse(since) if isinstance(since, str) else since
        self._document_ids = None if document_ids is None else frozenset(document_ids)
        self._kinds = None if kinds is None else frozenset(EventKind(kind) for kind in kinds)
        self._statuses = None if statuses is None else frozenset(str(status) for status in statuses)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._query_timeout = query_timeout
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._stopping = threading.Event()
        # The listener's keepalives, unless the caller chose otherwise in dsn or connect_kwargs.
        self._connection = ListenConnection(dsn, listen_channels, application_name="docstatus-subscriber",
                                            stop=self._stopping, connect_kwargs=connect_kwargs)
        self._caught_up = threading.Event()
        self._iterating = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended the callback thread, if anything
        self.reconnects = 0  # connections lost and connection attempts failed so far

        # Per-connection state, reset by _open.
        self._notify_events = True
        # notify_mode per_transaction or throttled: read once more this long after a wake-up.
        self._recheck_after: float | None = None
        self._recheck_at: float | None = None
        self._standby = False
        self._wake = False
        self._hints: set[int] = set()
        self._recent = _RecentIds(_RECENT_IDS)
        self._retry_at: float | None = None
        self._retry_delay = 0.0
        self._next_poll_at = 0.0
        self._next_probe_at = 0.0

    # --- public surface ---------------------------------------------------------------------

    @property
    def cursor(self) -> Cursor | None:
        """Just past the last event handed out (filtered-out events included): persist it and
        pass it as ``since`` to resume. None until the first connection when started without."""
        return self._cursor

    @property
    def backend_pid(self) -> int | None:
        """The server process of the current connection, None while disconnected."""
        return self._connection.backend_pid

    @property
    def polling(self) -> bool:
        """True while event notifications are off and the log is read every poll_interval."""
        return self._standby or (self._all_events and not self._notify_events)

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        """Waits until the subscriber listens and has handed out every event that was
        deliverable when it connected. False when the timeout ran out first."""
        return self._caught_up.wait(timeout)

    def __iter__(self) -> Iterator[StatusEvent]:
        if self._iterating:
            raise RuntimeError("this Subscriber is already being iterated")
        return self._events()

    def start(self, callback: Callable[[StatusEvent], object]) -> threading.Thread:
        """Calls ``callback(event)`` for each event in a thread of its own, until ``stop()``.

        An exception from the callback (or a non-connection error) ends the thread; it is logged
        and kept in ``self.error``. The cursor then already includes that event.
        """
        if self._thread is not None:
            raise RuntimeError("this Subscriber has already been started")

        def run() -> None:
            try:
                for event in self:
                    callback(event)
            except BaseException as exc:  # reported (self.error, the log), and the thread ends
                self.error = exc
                log.exception("docstatus subscriber stopped by an error")
            finally:
                self._close_connection()

        self._thread = threading.Thread(target=run, name="docstatus-subscriber", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ends the iteration (or the callback thread) and closes the connection."""
        self._stopping.set()
        self._connection.interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._iterating:
            # Otherwise the iterating generator closes it on its way out: closing a connection
            # another thread is waiting on would pull the socket from under it.
            self._close_connection()
        self._connection.stop_watchdog()

    close = stop

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the loop ---------------------------------------------------------------------------

    def _events(self) -> Iterator[StatusEvent]:
        self._iterating = True
        try:
            yield from reconnecting(self._connection, self._open, self._follow, stop=self._stopping,
                                    on_lost=self._on_lost, reconnect_delay=self._reconnect_delay,
                                    max_reconnect_delay=self._max_reconnect_delay)
        finally:
            self._iterating = False
            self._close_connection()
            self._connection.stop_watchdog()

    def _on_lost(self, reason: str, delay: float, was_connected: bool) -> None:
        self._caught_up.clear()
        self.reconnects += 1
        log.warning(
            "docstatus subscriber %s (%s); reconnecting in %.2f s, resuming after cursor %s",
            "lost its connection" if was_connected else "could not connect", reason, delay, self._cursor,
        )

    def _open(self) -> None:
        """Connects, LISTENs, then reads the settings and (first time only) the start cursor."""
        self._connection.open()
        ((self._standby,),) = self._run(load_query("in_recovery"), None, "asking pg_is_in_recovery()")
        if self._standby:
            log.info("docstatus subscriber: %s is a hot standby, polling every %g s", self._connection.host,
                     self._poll_interval)
        else:
            self._connection.listen(self._query_timeout)
        if self._cursor is None:
            ((xmin,),) = self._run(load_query("subscriber_start_cursor"), None, "reading the start cursor")
            self._cursor = Cursor(xmin, 0)
        self._read_state()
        now = time.monotonic()
        self._wake = True  # catch up first
        self._hints.clear()
        self._retry_at = None
        self._retry_delay = 0.0
        self._next_poll_at = now + self._poll_interval
        # A standby cannot NOTIFY itself; its queries' deadlines catch a dead connection.
        self._next_probe_at = float("inf") if self._standby else now + self._probe_interval

    def _follow(self) -> Iterator[StatusEvent]:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = self._wake or (self._retry_at is not None and now >= self._retry_at)
            due = due or (self._recheck_at is not None and now >= self._recheck_at)
            if self.polling and now >= self._next_poll_at:
                due = True
            if due:
                yield from self._catch_up()
                continue
            if now >= self._next_probe_at:
                self._probe()
                continue
            wake_at = self._next_probe_at
            if self._retry_at is not None:
                wake_at = min(wake_at, self._retry_at)
            if self._recheck_at is not None:
                wake_at = min(wake_at, self._recheck_at)
            if self.polling:
                wake_at = min(wake_at, self._next_poll_at)
            self._wait(max(0.0, wake_at - now))

    def _catch_up(self) -> Iterator[StatusEvent]:
        """Hands out every deliverable event after the cursor, batch by batch."""
        woken, self._wake, self._recheck_at = self._wake, False, None
        query = load_query("events_after")
        while True:
            tx_id, event_id = self._cursor  # type: ignore[misc]  # _open sets the cursor before any read
            with translated():  # DS007 reaches the caller as CursorTooOld: the events are gone
                rows = self._run(query, {"after_tx": tx_id, "after_id": event_id, "limit": self._batch_size},
                                 "reading events_after")
            for row in rows:
                event = StatusEvent.from_row(row)
                self._cursor = event.cursor
                self._recent.add(event.id)
                self._hints.discard(event.id)
                if self._wanted(event):
                    yield event
                    if self._stopping.is_set():
                        return
            if len(rows) < self._batch_size:
                break
        self._caught_up.set()
        now = time.monotonic()
        self._next_poll_at = now + self._poll_interval
        if woken and self._recheck_after is not None:
            # A transaction that committed without its notification (throttled) is read then.
            self._recheck_at = now + self._recheck_after
        if self._standby:
            self._read_state()  # raises _ConnectionLost once the standby has been promoted
        if not self._hints:
            self._retry_at = None
            self._retry_delay = 0.0
            return
        # A notification named an event that events_after did not hand out: either an older
        # transaction still runs and holds it back, or the notification was forged.
        if self._read_state():
            self._retry_delay = min(max(0.001, self._retry_delay * 2), min(1.0, self._poll_interval))
            self._retry_at = now + self._retry_delay
        else:
            self._hints.clear()
            self._retry_at = None
            self._retry_delay = 0.0

    def _probe(self) -> None:
        """A NOTIFY to ourselves must come back within probe_timeout, else the connection is dead."""
        deadline = time.monotonic() + self._probe_timeout
        self._connection.send_probe(self._probe_timeout)
        while self._connection.probe_pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise probe_unanswered(self._probe_timeout)
            self._wait(remaining)
        if self._read_state():
            self._wake = True  # a safety net: nothing should be waiting that no notification announced
        self._next_probe_at = time.monotonic() + self._probe_interval

    def _read_state(self) -> bool:
        """Reads settings.notify_events; returns whether committed events wait after the cursor."""
        tx_id, event_id = self._cursor  # type: ignore[misc]  # _open sets the cursor before any read
        ((waiting, notify_events, self._recheck_after, standby),) = self._run(
            load_query("subscriber_state"), {"after_tx": tx_id, "after_id": event_id}, "reading the subscriber state")
        if self._standby and not standby:
            raise ConnectionLost("the standby was promoted: reconnecting to listen")
        if notify_events != self._notify_events:
            log.info("docstatus subscriber: settings.notify_events is %s, %s", notify_events,
                     "following notifications" if notify_events else f"polling every {self._poll_interval:g} s")
            self._notify_events = notify_events
        return bool(waiting)

    def _wait(self, timeout: float) -> None:
        """Waits up to timeout for notifications and takes note of them."""
        for notify in self._connection.notifies(timeout, stop_after=1):
            if notify.channel == EVENTS_CHANNEL:
                # Notifications flow, so the connection is alive: no probe needed yet.
                self._next_probe_at = time.monotonic() + self._probe_interval
            event_id = _event_id_of(notify.payload)
            if event_id is None:
                self._wake = True  # not ours to judge: reading the log costs one query
            elif event_id not in self._recent:
                self._hints.add(event_id)
                self._wake = True

    def _wanted(self, event: StatusEvent) -> bool:
        if not self._all_events and event.to_status != "failed":
            return False
        if self._document_ids is not None and event.document_id not in self._document_ids:
            return False
        if self._kinds is not None and event.kind not in self._kinds:
            return False
        return self._statuses is None or event.to_status in self._statuses

    # --- the connection ---------------------------------------------------------------------

    def _run(self, query: str, params: dict[str, Any] | None, what: str) -> list[tuple[Any, ...]]:
        """Runs one query under the connection's deadline (query_timeout); its rows."""
        return self._connection.run(query, params, what, self._query_timeout)

    def _close_connection(self) -> None:
        self._caught_up.clear()
        self._connection.disconnect()


def _event_id_of(payload: str) -> int | None:
    try:
        event_id = json.loads(payload).get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, int) and not isinstance(event_id, bool) else None
