"""Fixtures for the operations commands: a database with known content, the CLI in-process
(CliRunner) and as a real process (for watch and metrics, which run until a signal).

- ``known``     per test: seven documents, one in each situation an operator meets (see Known).
- ``run_cli``   per test: ``run_cli("status", "--json")`` -> click Result, DOCSTATUS_DSN set to
                the test database.
- ``CliProcess``: ``docstatus ARGS`` as a subprocess; its stdout and stderr lines readable with
                a timeout, SIGINT and the exit status.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from docstatus import Client
from docstatus.cli import main
from docstatus.dev.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

OCR_ERROR = "OCR engine crashed: timeout after 30 s"
LLM_ERROR = "LLM returned invalid JSON at byte 123"
REJECTED_MIME = "application/x-msdownload"


@dataclass(frozen=True)
class Known:
    """Document ids of the known content, and the one job each has (if any)."""

    uploaded: int        # 'not ready', no job
    queued: int          # 'ready', job pending and unheld
    ocr_running: int     # 'in progress' / 'ocr running', job held by w-ocr
    completed: int       # 'completed' / 'done'
    ocr_failed: int      # failed during OCR: OCR_ERROR
    llm_failed: int      # failed during LLM: LLM_ERROR
    rejected: int        # failed validation (REJECTED_MIME), never had a job
    jobs: dict[int, int]  # document id -> its job id


def make_known(dsn: str) -> Known:
    """Each claim below finds exactly one unheld job, so it takes the intended document's."""
    with Client.connect(dsn) as client:
        def register(name: str) -> int:
            return client.register_document("docs", f"{name}.pdf", f"{name}.pdf", "application/pdf", 2048).id

        def start(name: str, worker: str) -> tuple[int, int]:
            document_id = register(name)
            client.validate_document(document_id, True, "application/pdf")
            job = client.claim_extraction_job(worker)
            assert job is not None and job.document_id == document_id
            client.mark_ocr_running(document_id, worker)
            return document_id, job.id

        ocr_running, ocr_running_job = start("running", "w-ocr")
        completed, completed_job = start("done", "w-done")
        client.mark_llm_running(completed, "w-done")
        client.mark_processing_done(completed, "w-done")
        ocr_failed, ocr_failed_job = start("ocr-fails", "w-fail")
        client.mark_processing_failed(ocr_failed, OCR_ERROR, "w-fail")
        llm_failed, llm_failed_job = start("llm-fails", "w-fail")
        client.mark_llm_running(llm_failed, "w-fail")
        client.mark_processing_failed(llm_failed, LLM_ERROR, "w-fail")
        rejected = register("rejected")
        client.validate_document(rejected, True, REJECTED_MIME)
        queued = register("queued")
        client.validate_document(queued, True, "application/pdf")
        queued_job = client.list_jobs(queued)[0].id
        uploaded = register("uploaded")
    return Known(uploaded=uploaded, queued=queued, ocr_running=ocr_running, completed=completed,
                 ocr_failed=ocr_failed, llm_failed=llm_failed, rejected=rejected,
                 jobs={ocr_running: ocr_running_job, completed: completed_job, ocr_failed: ocr_failed_job,
                       llm_failed: llm_failed_job, queued: queued_job})


@pytest.fixture
def known(db_dsn: str) -> Known:
    return make_known(db_dsn)


@pytest.fixture
def run_cli(db_dsn: str) -> Callable[..., Result]:
    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        environment = {"DOCSTATUS_DSN": db_dsn, "NO_COLOR": None, "FORCE_COLOR": None, **(env or {})}
        return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)

    return run


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    return free_port()


class CliProcess:
    """``docstatus ARGS`` in a process of its own; stdout and stderr are read line by line."""

    def __init__(self, *args: str, dsn: str, env: dict[str, str] | None = None) -> None:
        environment = {**os.environ, "DOCSTATUS_DSN": dsn, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("FORCE_COLOR", None)
        command = [sys.executable, "-c",
                   "import sys; from docstatus.cli import main; sys.exit(main(prog_name='docstatus'))", *args]
        self.process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.stderr, self.stderr_lines),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: queue.Queue, keep: list[str] | None = None) -> None:
        for line in stream:
            if keep is not None:
                keep.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def _next(self, lines: queue.Queue, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; stderr: {self.stderr_lines}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process ended ({self.process.poll()}) before {what}; "
                                     f"stderr: {self.stderr_lines}")
            if predicate(line):
                return line

    def stdout_line(self, timeout: float = 10.0, what: str = "a line on stdout") -> str:
        return self._next(self.stdout, lambda line: True, timeout, what)

    def stderr_line(self, predicate: Callable[[str], bool], timeout: float = 15.0, what: str = "stderr") -> str:
        return self._next(self.stderr, predicate, timeout, what)

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout}s after the signal; stderr: {self.stderr_lines}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def cli_process(db_dsn: str) -> Iterator[Callable[..., CliProcess]]:
    started: list[CliProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> CliProcess:
        process = CliProcess(*args, dsn=db_dsn, env=env)
        started.append(process)
        return process

    yield start
    for process in started:  # a failed test must not leave a process holding the database
        process.kill()
