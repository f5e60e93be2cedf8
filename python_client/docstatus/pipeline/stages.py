"""The two stages as small protocols: any callable with the right shape plugs in.

    def my_ocr(data: bytes, mime_type: str) -> str: ...
    def my_fields(text: str) -> dict: ...

    Worker(client, store, ocr=my_ocr, llm=my_fields)

A stage runs in a worker thread while a heartbeat keeps the job's lease. It may raise: see
``docstatus.pipeline.errors`` for which failures are retried. An optional ``name`` attribute
names the engine in logs and in the stored fields.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class OcrEngine(Protocol):
    """Reads the text of a document from its bytes and its detected MIME type."""

    def __call__(self, data: bytes, mime_type: str) -> str: ...


@runtime_checkable
class LlmExtractor(Protocol):
    """Turns the extracted text into a JSON object of fields."""

    def __call__(self, text: str) -> dict[str, Any]: ...


def engine_name(engine: object) -> str:
    """The ``name`` an engine gives itself, else its class or function name."""
    name = getattr(engine, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(engine, "__qualname__", None) or type(engine).__name__


__all__ = ["LlmExtractor", "OcrEngine", "engine_name"]
