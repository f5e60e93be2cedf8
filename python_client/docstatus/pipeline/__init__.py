"""The pipeline worker: OCR then LLM on claimed jobs, with leases, heartbeats, retries and
crash recovery. See ``docstatus.pipeline.worker`` for how a job runs and how the worker stops.

    from docstatus.pipeline import Worker

    with Worker("postgresql://...", store, concurrency=4) as worker:   # store: DocumentStore
        worker.run()                                                   # until SIGTERM/SIGINT

    get_result(pool, store, document_id)   # the extracted text and fields of a done document
"""

from docstatus.pipeline.errors import (
    LlmError,
    LlmReplyError,
    LlmRequestError,
    LlmTimeout,
    LlmUnavailable,
    NoTextFound,
    OcrEngineNotInstalled,
    OcrError,
    RetryableError,
    UnsupportedDocumentType,
    is_retryable,
)
from docstatus.pipeline.llm import ChatCompletionsExtractor, llm_from_env
from docstatus.pipeline.ocr import DocumentOcr, PdfTextLayer, PlainText, TesseractOcr
from docstatus.pipeline.results import ExtractionResult, get_result
from docstatus.pipeline.rules import RuleBasedExtractor
from docstatus.pipeline.stages import LlmExtractor, OcrEngine
from docstatus.pipeline.worker import Worker, WorkerStats, error_message

__all__ = [
    "ChatCompletionsExtractor", "DocumentOcr", "ExtractionResult", "LlmError", "LlmExtractor", "LlmReplyError",
    "LlmRequestError", "LlmTimeout", "LlmUnavailable", "NoTextFound", "OcrEngine", "OcrEngineNotInstalled",
    "OcrError", "PdfTextLayer", "PlainText", "RetryableError", "RuleBasedExtractor", "TesseractOcr",
    "UnsupportedDocumentType", "Worker", "WorkerStats", "error_message", "get_result", "is_retryable",
    "llm_from_env",
]
