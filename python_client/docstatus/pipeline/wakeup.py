"""Idle worker threads sleep until a job is created (NOTIFY), a retry falls due, or the poll.

A listener thread LISTENs on ``docstatus_events`` over a dedicated autocommit connection (never
a pooled one) and wakes the idle threads on every job that enters 'pending extraction'. A
notification is only a hint: the woken threads claim, and claiming decides. Notifications are
missed while the connection is down (it reconnects with backoff) and are not sent at all with
``settings.notify_events`` off; the slow poll covers both.
"""

from __future__ import annotations

import json
import logging
import threading

import psycopg

from docstatus.pipeline.db import load_query

log = logging.getLogger("docstatus.worker")

RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)


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
    """Calls ``wakeup.notify()`` for each job-creation notification."""

    def __init__(self, conninfo: str, wakeup: Wakeup) -> None:
        self.conninfo = conninfo
        self.wakeup = wakeup
        self.notifications = 0
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docstatus-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(load_query("listen"))
                    self.listening.set()
                    if failures:
                        log.warning("listening for new jobs again", extra={"fields": {"event": "listener reconnected"}})
                        # Jobs created while we were away sent no hint we could hear.
                        self.wakeup.notify()
                    failures = 0
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            if _is_new_job(notification.payload):
                                self.notifications += 1
                                self.wakeup.notify()
            except psycopg.Error as exc:
                self.listening.clear()
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("listener connection lost (%s); reconnecting in %ss, polling meanwhile", exc, delay,
                            extra={"fields": {"event": "listener lost", "error": str(exc)}})
                self._stop.wait(delay)


def _is_new_job(payload: str) -> bool:
    try:
        event = json.loads(payload)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("kind") == "job" and event.get("to") == "pending extraction"


__all__ = ["JobListener", "Wakeup"]
