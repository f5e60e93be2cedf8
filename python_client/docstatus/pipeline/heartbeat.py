"""One thread extends the leases of every job the worker holds, while its stages run.

Every ``interval`` (a third of the lease by default) it calls ``heartbeat_job`` for each held
job. False (or an unknown job) means the lease is gone: the reaper ended the attempt, or is
about to; the job is marked lost and its thread drops it without writing. When the database
cannot be reached, the job is held until the lease runs out by the worker's own clock.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import psycopg
import psycopg_pool

from docstatus.client import Client
from docstatus.errors import DocStatusError, NotFound
from docstatus.pipeline.lease import HeldJob

log = logging.getLogger("docstatus.worker")


class Heartbeat:
    def __init__(self, client: Client, worker_id: str, lease: timedelta, interval: float) -> None:
        self.client = client
        self.worker_id = worker_id
        self.lease = lease
        self.interval = interval
        self.beats = 0
        self._held: dict[int, HeldJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docstatus-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def add(self, held: HeldJob) -> None:
        with self._lock:
            self._held[held.job.id] = held

    def remove(self, held: HeldJob) -> None:
        with self._lock:
            self._held.pop(held.job.id, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held_jobs = list(self._held.values())
            for held in held_jobs:
                if held.abandoned is None and not held.lost:
                    self.beat(held)

    def beat(self, held: HeldJob) -> bool:
        """Extends one lease; returns whether the job is still held."""
        sent_at = time.monotonic()
        try:
            alive = self.client.heartbeat_job(held.job.id, self.worker_id, lease=self.lease)
        except NotFound:
            alive = False
        except (psycopg.Error, psycopg_pool.PoolTimeout, DocStatusError) as exc:
            if held.expired_locally:
                held.lost = True
                log.warning("job %s: lease ran out while the database could not be reached", held.job.id,
                            extra={"fields": held.log_fields(self.worker_id, event="lease lost", error=str(exc))})
            else:
                log.warning("job %s: heartbeat failed, retrying: %s", held.job.id, exc,
                            extra={"fields": held.log_fields(self.worker_id, event="heartbeat failed")})
            return not held.lost
        self.beats += 1
        if alive:
            held.lease_deadline = sent_at + self.lease.total_seconds()
        else:
            held.lost = True
            log.warning("job %s: lease lost; the job is dropped without another write", held.job.id,
                        extra={"fields": held.log_fields(self.worker_id, event="lease lost")})
        return alive


__all__ = ["Heartbeat"]
