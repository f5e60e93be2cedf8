"""What a stage may raise, and which failures are worth another attempt.

A stage that raises fails its document. Most failures are the document's own (a corrupt PDF, an
image without text): trying again gives the same answer, so the document ends 'failed' at once
(``mark_processing_failed``). A failure of the world around it (a timeout, a service that is
down) may pass: the attempt fails and the database queues the next one after a backoff
(``mark_attempt_failed``), up to ``settings.max_attempts``. Raise ``RetryableError`` (or
subclass it) from your own stages to ask for that.
"""

from __future__ import annotations


class RetryableError(Exception):
    """A failure that may pass: the attempt fails and the document is retried after a backoff."""


class OcrError(Exception):
    """The OCR stage could not read text from the document."""


class OcrEngineNotInstalled(OcrError):
    """The OCR program this document type needs (e.g. Tesseract) is not installed."""


class UnsupportedDocumentType(OcrError):
    """No OCR engine reads this MIME type."""


class NoTextFound(OcrError):
    """The document was read, but it holds no text (e.g. a scanned PDF without a text layer)."""


class LlmError(Exception):
    """The field extraction (LLM) stage failed."""


class LlmRequestError(LlmError):
    """The LLM service refused the request (4xx other than 429): fix the configuration."""


class LlmUnavailable(LlmError, RetryableError):
    """The LLM service could not be reached, or answered 429 or 5xx."""


class LlmTimeout(LlmUnavailable):
    """The LLM service did not answer in time."""


class LlmReplyError(LlmError, RetryableError):
    """The LLM answered, but not with a JSON object of fields (models do this now and then)."""


class BlobStoreUnreachable(RetryableError):
    """The blob store did not answer (refused, timed out, reset): the document is not at fault."""


class BlobMissing(Exception):
    """The document's blob (or its container) is not in the store: trying again cannot help."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failure is worth another attempt: RetryableError, timeouts, lost connections,
    and the Azure SDK's transport errors (the blob store did not answer)."""
    if isinstance(exc, (RetryableError, TimeoutError, ConnectionError)):
        return True
    try:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    except ImportError:  # pragma: no cover - azure-storage-blob is a dependency
        return False
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500:
        return True  # the store answered, but is not well
    return isinstance(exc, (ServiceRequestError, ServiceResponseError))


__all__ = [
    "BlobMissing", "BlobStoreUnreachable", "LlmError", "LlmReplyError", "LlmRequestError", "LlmTimeout",
    "LlmUnavailable", "NoTextFound", "OcrEngineNotInstalled", "OcrError", "RetryableError", "UnsupportedDocumentType",
    "is_retryable",
]
