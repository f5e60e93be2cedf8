"""``docstatus worker`` in a process of its own, with its JSON log lines readable as they come."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """Starts ``docstatus worker ARGS`` with the given environment; reads its stderr in a thread."""

    def __init__(self, dsn: str, connection_string: str, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {**os.environ, "DOCSTATUS_DSN": dsn, "AZURE_STORAGE_CONNECTION_STRING": connection_string,
                       # tests.pipeline.engines must be importable in the worker process
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                       **(env or {})}
        command = [sys.executable, "-c", "import sys; from docstatus.cli import main; sys.exit(main())",
                   "worker", *args]
        self.process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.process.stderr:  # type: ignore[union-attr]  # Popen(stderr=PIPE): never None
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                line = json.loads(text)
            except ValueError:
                continue  # a traceback or a click message
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
        """The first log line (from now on) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; log:\n{self.log_tail()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the worker exited ({self.process.poll()}) before {what};"
                                     f" log:\n{self.log_tail()}")
            if predicate(line):
                return line

    def wait_for_event(self, event: str, timeout: float = 15.0, **fields: object) -> dict:
        return self.wait_for_line(
            lambda line: line.get("event") == event and all(line.get(k) == v for k, v in fields.items()),
            timeout, f"{event} {fields}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {timeout}s; log:\n{self.log_tail()}") from None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.raw[-lines:])

    def events(self, event: str) -> list[dict]:
        return [line for line in self.lines if line.get("event") == event]
