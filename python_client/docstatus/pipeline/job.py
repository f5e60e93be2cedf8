"""One claimed job, start to end: the worker's processing path, with every SQL call written out.

``claim_jobs(start_ocr => true)`` has already moved the document to 'ocr running'. Then:

1. the document's bytes from its blob, the OCR stage;
2. ``mark_llm_running``, the LLM stage;
3. the text and the fields written as blobs beside the document; ``finish_job`` records them and
   ends the job done, in one transaction.

Each write carries the worker id, so the database refuses (DS004) a worker whose lease ran out;
such a job is dropped without another write. A step that raises fails the job:
``mark_attempt_failed`` for a failure worth retrying (``errors.is_retryable``), else
``mark_processing_failed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from docstatus.client import Client
from docstatus.errors import InvalidTransition, LeaseLost
from docstatus.models import Document, TextExtractionStatus
from docstatus.pipeline.blobs import BlobIO
from docstatus.pipeline.errors import BlobStoreUnreachable, is_retryable
from docstatus.pipeline.lease import HeldJob
from docstatus.pipeline.results import write_result
from docstatus.pipeline.stages import LlmExtractor, OcrEngine
from docstatus.pipeline.stats import StatsRecorder

log = logging.getLogger("docstatus.worker")

T = TypeVar("T")

MAX_ERROR_CHARS = 1000


class Abandoned(Exception):
    """This worker no longer holds the job: leave it without another write."""


class StepFailed(Exception):
    """A step of the job's own work (download, a stage, storing the result) raised."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


class JobRun:
    """Runs one held job through the pipeline on ``client`` (the slot's connection)."""

    def __init__(self, held: HeldJob, document: Document, client: Client, *, worker_id: str, blobs: BlobIO,
                 ocr: OcrEngine, llm: LlmExtractor, ocr_name: str, llm_name: str, stats: StatsRecorder,
                 on_blob_store_down: Callable[[str], None] | None = None) -> None:
        self.held = held
        self.document = document
        self.client = client
        self.worker_id = worker_id
        self.blobs = blobs
        self.ocr = ocr
        self.llm = llm
        self.ocr_name = ocr_name
        self.llm_name = llm_name
        self.stats = stats
        self.on_blob_store_down = on_blob_store_down

    def run(self) -> None:
        held, document = self.held, self.document
        try:
            self.log_status("ocr running")  # claimed with start_ocr: the document is there already
            data = self._step("download", "blob_seconds", lambda: self.blobs.download(document))
            text = self._step("ocr", "stage_seconds", lambda: self.ocr(data, document.mime_type or ""))
            with self._writing():
                self.client.mark_llm_running(document.id, worker_id=self.worker_id)
            self.log_status("llm running")
            fields = self._step("llm", "stage_seconds", lambda: self.llm(text))
            if not isinstance(fields, dict):
                raise StepFailed("llm", TypeError(f"{self.llm_name} returned {type(fields).__name__}, not a dict"))
            text_blob, fields_blob = self._step("store result", "blob_seconds", lambda: write_result(
                self.blobs, document, held.job, text, fields, self.llm_name, self.ocr_name))
            with self._writing():
                self.client.finish_job(document.id, text_blob, fields_blob, worker_id=self.worker_id)
            self.log_status("done")
            self.stats.count("done")
        except StepFailed as failure:
            self._fail(failure)
        except Abandoned as why:
            self.stats.count("abandoned")
            log.warning("job %s dropped without another write: %s", held.job.id, why,
                        extra={"fields": held.log_fields(self.worker_id, event="abandoned", reason=str(why))})
        except Exception as exc:  # the database or a bug: the lease runs out and the reaper retries
            held.abandoned = f"{type(exc).__name__}: {exc}"
            self.stats.count("abandoned")
            log.exception("job %s left to the reaper after an unexpected error", held.job.id,
                          extra={"fields": held.log_fields(self.worker_id, event="abandoned",
                                                           reason=held.abandoned)})

    def _step(self, step: str, timer: str, work: Callable[[], T]) -> T:
        """Runs the job's own work (a stage, a blob read or write); its failure fails the job."""
        check_held(self.held)
        self.held.stage = step
        started = time.monotonic()
        try:
            return work()
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        finally:
            self.stats.add_time(timer, time.monotonic() - started)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write on the job's behalf: only while this worker still holds the job, never
        interleaved with a release on shutdown (``held.lock``)."""
        with self.held.lock:
            check_held(self.held)
            started = time.monotonic()
            try:
                yield
            except (LeaseLost, InvalidTransition) as exc:
                # DS004: the lease ran out (the reaper's now); DS001: somebody moved the document.
                self.held.abandoned = f"{type(exc).__name__}: {exc}"
                raise Abandoned(self.held.abandoned) from exc
            finally:
                self.stats.add_time("db_seconds", time.monotonic() - started)

    def _fail(self, failure: StepFailed) -> None:
        held = self.held
        message = error_message(failure.error)
        retry = is_retryable(failure.error)
        if isinstance(failure.error, BlobStoreUnreachable) and self.on_blob_store_down is not None:
            self.on_blob_store_down(str(failure.error))  # before the write: no slot claims meanwhile
        try:
            with self._writing():
                if retry:
                    document = self.client.mark_attempt_failed(held.job.document_id, message, worker_id=self.worker_id)
                else:
                    document = self.client.mark_processing_failed(held.job.document_id, message,
                                                                  worker_id=self.worker_id)
        except Abandoned as why:
            self.stats.count("abandoned")
            log.warning("job %s failed (%s) but is no longer ours: %s", held.job.id, message, why,
                        extra={"fields": held.log_fields(self.worker_id, event="abandoned", reason=str(why),
                                                         error=message)})
            return
        except Exception:
            log.exception("job %s: recording its failure failed; the reaper will end it", held.job.id,
                          extra={"fields": held.log_fields(self.worker_id, event="abandoned", error=message)})
            self.stats.count("abandoned")
            return
        requeued = document.text_extraction_status == TextExtractionStatus.READY
        self.stats.count("retried" if requeued else "failed")
        self.log_status("failed", level=logging.WARNING, step=failure.step, error=message,
                        retry="queued" if requeued else ("exhausted" if retry else "not retryable"))

    def log_status(self, status: str, level: int = logging.INFO, **more: object) -> None:
        log_status(self.held, self.worker_id, status, level, **more)


def check_held(held: HeldJob) -> None:
    """Raises ``Abandoned`` once the job is no longer this worker's to write."""
    if held.abandoned is not None:
        raise Abandoned(held.abandoned)
    if held.lost:
        held.abandoned = "lease lost"
        raise Abandoned(held.abandoned)


def log_status(held: HeldJob, worker_id: str, status: str, level: int = logging.INFO, **more: object) -> None:
    """One log line per status change of the job (``docstatus worker`` prints it as JSON)."""
    log.log(level, "document %s -> %s", held.job.document_id, status,
            extra={"fields": held.log_fields(worker_id, event="status", status=status, **more)})


def error_message(error: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """'ExceptionType: message' on one line, at most ``limit`` characters. An answer of the blob
    store is said in a few words (``blob not found``, ``HTTP 503 ServerBusy``), never its XML."""
    text = " ".join(str(error).split())
    if _is_blob_store_answer(error):
        from docstatus.connection_errors import blob_cause

        text = blob_cause(error)
    message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _is_blob_store_answer(error: BaseException) -> bool:
    try:
        from azure.core.exceptions import HttpResponseError
    except ImportError:  # pragma: no cover - azure-storage-blob comes with the worker extra
        return False
    return isinstance(error, HttpResponseError)


__all__ = ["Abandoned", "JobRun", "StepFailed", "check_held", "error_message", "log_status"]
