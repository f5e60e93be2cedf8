"""An OCR engine for the failover test's worker processes (``--ocr tests.production.engines:slow_ocr``)."""

from __future__ import annotations

import time

from docstatus.pipeline import PlainText

_plain_text = PlainText()


def slow_ocr(data: bytes, mime_type: str) -> str:
    # A stage that takes time, as real OCR does, so that the primary stops while jobs are held.
    time.sleep(0.3)
    return _plain_text(data, mime_type)
