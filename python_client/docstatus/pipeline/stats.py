"""What a worker counts: jobs by outcome and time spent, summed over its threads."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class WorkerStats:
    """Counts and time spent, summed over the worker's threads (for logs and benchmarks)."""

    claimed: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    abandoned: int = 0
    reaped: int = 0
    db_seconds: float = 0.0  # docstatus calls of the processing threads (claim ... done)
    blob_seconds: float = 0.0  # reading the document, writing the result
    stage_seconds: float = 0.0  # OCR and LLM stages

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StatsRecorder:
    """Adds to one ``WorkerStats`` from several threads."""

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats
        self._lock = threading.Lock()

    def count(self, counter: str) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def add_time(self, timer: str, seconds: float) -> None:
        with self._lock:
            setattr(self.stats, timer, getattr(self.stats, timer) + seconds)


__all__ = ["StatsRecorder", "WorkerStats"]
