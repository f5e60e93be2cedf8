"""Idle worker threads sleep until a job is created (NOTIFY), a retry falls due, or the poll.

A ``docstatus.listener.Listener`` thread LISTENs on ``docstatus_events`` over a dedicated
autocommit connection (never a pooled one) and wakes the idle threads on every job that enters 'pending extraction'. A
notification is only a hint: the woken threads claim, and claiming decides. Notifications are
missed while the connection is down (it reconnects with backoff) and are not sent at all with
``settings.notify_events`` off; the slow poll covers both.
"""

from __future__ import annotations

import json
import threading

import psycopg

from docstatus.listener import EVENTS_CHANNEL, Listener


class Wakeup:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before looking for work; ``wait`` returns at once if a wake-up came since."""
        with self._condition:
            return self._generation

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen_generation: int, timeout: float) -> bool:
        """Until a wake-up after ``seen_generation``, or ``timeout``; True when woken."""
        with self._condition:
            return self._condition.wait_for(lambda: self._generation != seen_generation, timeout)


class JobListener:
    """Calls ``wakeup.notify()`` for each job-creation notification (``docstatus.listener``)."""

    def __init__(self, conninfo: str, wakeup: Wakeup) -> None:
        self.wakeup = wakeup
        self.notifications = 0
        # Jobs created while the connection was down sent no hint we could hear: look on reconnect.
        self._listener = Listener(conninfo, (EVENTS_CHANNEL,), self._on_notify, name="docstatus-worker-wakeup",
                                  on_reconnect=wakeup.notify)
        self.listening = self._listener.listening

    def start(self) -> None:
        self._listener.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._listener.stop(timeout)

    def _on_notify(self, notification: psycopg.Notify) -> None:
        if _is_new_job(notification.payload):
            self.notifications += 1
            self.wakeup.notify()


def _is_new_job(payload: str) -> bool:
    try:
        event = json.loads(payload)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("kind") == "job" and event.get("to") == "pending extraction"


__all__ = ["JobListener", "Wakeup"]
