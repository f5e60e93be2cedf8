"""A job this worker holds, as the worker sees it: may it still write, and until when."""

from __future__ import annotations

import threading
import time

from docstatus.models import ExtractionJob


class HeldJob:
    """One claimed job. ``lock`` serialises the job's database writes with its release, so a
    release on shutdown never interleaves with a mark of the processing thread."""

    def __init__(self, job: ExtractionJob, lease_seconds: float, claimed_at: float) -> None:
        self.job = job
        self.lock = threading.Lock()
        # Measured from before the claim was sent: never later than the database's lease end.
        self.lease_deadline = claimed_at + lease_seconds
        self.lost = False  # the heartbeat found the lease gone: write nothing more
        self.abandoned: str | None = None  # why this worker gave the job up (released, lost)
        self.stage: str | None = None

    @property
    def expired_locally(self) -> bool:
        return time.monotonic() >= self.lease_deadline

    def log_fields(self, worker_id: str, **more: object) -> dict[str, object]:
        """The fields of a log line about this job (``extra={"fields": ...}``)."""
        job = self.job
        return {"document_id": job.document_id, "job_id": job.id, "attempt": job.attempt,
                "worker_id": worker_id, "stage": self.stage, **more}


__all__ = ["HeldJob"]
