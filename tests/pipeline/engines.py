"""OCR engines for tests that run the worker in another process (``--ocr tests.pipeline.engines:...``).

They are configured through the environment, which the test sets for the worker process:

- ``DOCSTATUS_TEST_GATE``: a folder. ``gated_ocr`` blocks until the file ``open`` appears in it
  (the test opens the gate), as an OCR program busy with a long document would.
- ``DOCSTATUS_TEST_OCR_LOG``: a file. ``logged_ocr`` appends one line per call, so a test can
  count how often each document went through OCR, across processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from docstatus.pipeline import PlainText

GATE_ENV = "DOCSTATUS_TEST_GATE"
OCR_LOG_ENV = "DOCSTATUS_TEST_OCR_LOG"
GATE_TIMEOUT = 120.0

_plain_text = PlainText()


def gated_ocr(data: bytes, mime_type: str) -> str:
    gate = Path(os.environ[GATE_ENV]) / "open"
    deadline = time.monotonic() + GATE_TIMEOUT
    while not gate.exists():  # the stage of a busy OCR program: the test decides when it ends
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never opened {gate}")
        time.sleep(0.01)
    return _plain_text(data, mime_type)


def logged_ocr(data: bytes, mime_type: str) -> str:
    text = _plain_text(data, mime_type)
    line = f"{os.getpid()} {text.splitlines()[0]}\n".encode()
    # O_APPEND: lines of concurrent processes never interleave (each is one small write).
    descriptor = os.open(os.environ[OCR_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    return text
