"""Is PostgreSQL there, is the blob store there: the worker's probes, and its memory of an outage.

At start, ``docstatus worker`` probes both (``probe_postgres``, ``docstatus.dms.blob_store.probe``):
with ``--once`` an unreachable one is one line on stderr and exit status 1 within seconds; a
long-running worker logs one WARNING and probes again with backoff until both answer
(``wait_for_dependencies``).

While it runs, ``Dependencies`` remembers which one is down: the first failure of an outage is
one WARNING (not one per attempt), the first success after it one INFO. While the blob store
is known to be down, no slot claims a job (claiming it and failing would burn an attempt of a
healthy document); a thread probes the store with backoff and opens the way again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from docstatus.client import Client
from docstatus.connection_errors import postgres_unreachable_message

log = logging.getLogger("docstatus.worker")

POSTGRES = "PostgreSQL"
BLOB_STORE = "blob store"

# Seconds between probes of a dependency that is down: quick at first, then every 30 s.
BACKOFF = (1, 2, 4, 8, 15, 30)


def backoff(attempt: int) -> float:
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


def probe_postgres(dsn: str, timeout: float = 3.0) -> str | None:
    """None when PostgreSQL answers ``SELECT 1`` within ``timeout`` s; else one line (no password)."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            Client(conn).in_recovery()  # any question answered will do; this one is cheap
    except psycopg.Error as exc:
        return postgres_unreachable_message(dsn, exc)
    return None


class Dependencies:
    """Which dependency is down since when, shared by the worker's threads."""

    def __init__(self, worker_id: str = "") -> None:
        self.worker_id = worker_id
        self._down: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.failures = 0  # outages seen, for ``--once``'s exit status

    def down(self, name: str, reason: str) -> bool:
        """Records a failure; logs a WARNING if it starts an outage. True when it did."""
        with self._lock:
            if name in self._down:
                return False
            self._down[name] = (time.monotonic(), reason)
            self.failures += 1
        log.warning("%s unavailable: %s; retrying with backoff", name, reason, extra={"fields": {
            "event": "dependency down", "dependency": name, "error": reason, "worker_id": self.worker_id}})
        return True

    def up(self, name: str) -> None:
        """Records a success; logs an INFO if it ends an outage."""
        with self._lock:
            since = self._down.pop(name, None)
            if since is None:
                return
            self._changed.notify_all()
        seconds = round(time.monotonic() - since[0], 3)
        log.info("%s is back after %ss", name, seconds, extra={"fields": {
            "event": "dependency back", "dependency": name, "down_seconds": seconds, "worker_id": self.worker_id}})

    def is_down(self, name: str) -> bool:
        with self._lock:
            return name in self._down

    def reason(self, name: str) -> str | None:
        with self._lock:
            entry = self._down.get(name)
            return entry[1] if entry else None

    def wait_up(self, name: str, timeout: float) -> bool:
        """Until ``name`` is up (True) or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: name not in self._down, timeout)

    def wake(self) -> None:
        """Wakes every waiter (a stop)."""
        with self._changed:
            self._changed.notify_all()


def watch_until_up(dependencies: Dependencies, name: str, probe: Callable[[], str | None],
                   stopping: threading.Event, on_up: Callable[[], None] | None = None) -> None:
    """Probes ``name`` with backoff until it answers (then marks it up and calls ``on_up``) or
    ``stopping`` is set."""
    attempt = 0
    while not stopping.wait(backoff(attempt)):
        attempt += 1
        if probe() is None:
            dependencies.up(name)
            if on_up is not None:
                on_up()
            return


def wait_for_dependencies(probes: dict[str, Callable[[], str | None]], stopping: threading.Event,
                          dependencies: Dependencies) -> bool:
    """A long-running worker's start: probe each dependency until all answer; one WARNING per
    dependency down, one INFO when it is back. False when ``stopping`` was set first."""
    attempt = 0
    while True:
        failed = False
        for name, probe in probes.items():
            problem = probe()
            if problem is None:
                dependencies.up(name)
            else:
                failed = True
                dependencies.down(name, problem)
        if not failed:
            return True
        if stopping.wait(backoff(attempt)):
            return False
        attempt += 1


__all__ = ["BLOB_STORE", "POSTGRES", "Dependencies", "backoff", "probe_postgres", "wait_for_dependencies",
           "watch_until_up"]
