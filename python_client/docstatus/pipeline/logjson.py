"""Structured logs: one JSON object per line, the record's ``extra={"fields": {...}}`` merged in.

    {"time": "2026-03-01T10:11:12.123456+00:00", "level": "info", "logger": "docstatus.worker",
     "message": "document 7 -> ocr running", "event": "status", "document_id": 7, ...}
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_json_logging(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Sends the ``docstatus`` loggers to ``stream`` (stderr) as JSON lines; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("docstatus")
    logger.addHandler(handler)
    logger.setLevel(level)
    # The Azure SDK logs every HTTP request at INFO; warnings and errors are enough here.
    logging.getLogger("azure").setLevel(logging.WARNING)
    return handler


__all__ = ["JsonFormatter", "configure_json_logging"]
