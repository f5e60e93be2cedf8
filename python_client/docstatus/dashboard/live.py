"""One ``Subscriber`` per dashboard process, fanned out to every open event stream.

The subscriber's thread hands each event to the event loop, which copies it into the queue of
every stream. A stream that falls too far behind (a browser that stopped reading) is closed:
the browser reconnects with ``Last-Event-ID`` and reads what it missed from the database
(``events_after``), so dropping it loses nothing.

Exactly once per stream: the queue is registered before the catch-up read from the database,
and every event at or before the last cursor sent is skipped. ``events_after`` hands out a
prefix of the log that never grows in the middle, so the hub's events and the catch-up read are
one sequence, and the cursor comparison is all it takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

from docstatus.errors import CursorTooOld
from docstatus.models import Cursor, StatusEvent
from docstatus.subscriber import Subscriber

log = logging.getLogger("docstatus.dashboard")

# Events queued for one stream before it counts as gone.
STREAM_BACKLOG = 10_000

CLOSED = object()  # put into a stream's queue: the stream ends


class EventHub:
    """Starts one Subscriber (from "now") and copies its events into every subscribed queue."""

    def __init__(self, dsn: str, poll_interval: float = 1.0) -> None:
        self._dsn = dsn
        self._poll_interval = poll_interval
        self._subscriber = Subscriber(dsn, poll_interval=poll_interval)
        self._queues: set[asyncio.Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Just past the last event handed to the event loop: a restarted Subscriber starts here.
        self._handed: Cursor | None = None
        self.restarts = 0

    @property
    def subscriber(self) -> Subscriber:
        return self._subscriber

    @property
    def cursor(self) -> Cursor | None:
        """Just past the last event the hub handed out: where a page rendered now starts."""
        return self._subscriber.cursor

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._follow, name="docstatus-dashboard-hub", daemon=True)
        self._thread.start()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._subscriber.wait_caught_up(timeout)

    def stop(self) -> None:
        """Stops the Subscriber and ends every stream (call on the event loop)."""
        self._stopping.set()
        self._subscriber.stop()
        if self._thread is not None:
            self._thread.join(10)
        self._close_streams()

    def _follow(self) -> None:
        """Hands every event to the loop; when the Subscriber fails, a new one resumes after
        the last event handed over, so the streams still see each event once."""
        while not self._stopping.is_set():
            subscriber = self._subscriber
            try:
                for event in subscriber:
                    self._from_thread(event)
                    self._handed = event.cursor
                return  # stopped
            except CursorTooOld:
                # History retention dropped what it had not read: start from now; each stream
                # catches up from its own cursor and is told to reload if that is gone too.
                log.error("the dashboard's subscriber fell behind the retained history; following from now")
                since = None
            except Exception:
                log.exception("the dashboard's subscriber failed; starting a new one")
                since = self._handed or subscriber.cursor
            subscriber.stop()
            if self._stopping.wait(1.0):
                return
            self.restarts += 1
            self._subscriber = Subscriber(self._dsn, since=since, poll_interval=self._poll_interval)

    def close_streams(self) -> None:
        """Ends every open stream, from any thread: a server shutting down calls it first, so
        it need not wait for browsers that would keep their streams open forever."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._close_streams)

    def _close_streams(self) -> None:
        with self._lock:
            queues = list(self._queues)
            self._queues.clear()
        for queue in queues:
            self._put(queue, CLOSED)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(STREAM_BACKLOG + 1)
        with self._lock:
            self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._queues.discard(queue)

    def _from_thread(self, event: StatusEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: StatusEvent) -> None:
        with self._lock:
            queues = list(self._queues)
        for queue in queues:
            if queue.qsize() >= STREAM_BACKLOG:
                log.warning("an event stream fell %d events behind: closed (it resumes from its last id)",
                            STREAM_BACKLOG)
                self.unsubscribe(queue)
                self._put(queue, CLOSED)
            else:
                queue.put_nowait(event)

    @staticmethod
    def _put(queue: asyncio.Queue, item: object) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:  # full: it is being closed anyway; make room for the end mark
            queue.get_nowait()
            queue.put_nowait(item)


def sse_message(event: StatusEvent) -> str:
    """One server-sent event: its id is the event's cursor (what Last-Event-ID sends back)."""
    data = {
        "event_id": event.id, "document_id": event.document_id, "job_id": event.job_id,
        "kind": str(event.kind), "from": None if event.from_status is None else str(event.from_status),
        "to": str(event.to_status), "at": event.occurred_at.isoformat(),
    }
    return f"id: {event.cursor}\nevent: status\ndata: {json.dumps(data)}\n\n"
