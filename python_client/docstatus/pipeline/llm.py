"""Field extraction by an LLM behind an OpenAI-compatible chat-completions API.

    DOCSTATUS_LLM_URL=http://127.0.0.1:8080/v1   # base URL, or the full .../chat/completions
    DOCSTATUS_LLM_MODEL=llama3.1
    DOCSTATUS_LLM_API_KEY=...                     # optional: sent as "Authorization: Bearer ..."

``llm_from_env()`` returns a ``ChatCompletionsExtractor`` when ``DOCSTATUS_LLM_URL`` is set and
the offline ``RuleBasedExtractor`` otherwise. The model is asked for one JSON object of fields
(``response_format: json_object``); anything else in its reply is a ``LlmReplyError``.

Failures map to ``docstatus.pipeline.errors``: a timeout, a connection refused, 429 and 5xx are
retryable (``LlmTimeout``, ``LlmUnavailable``), and so is a reply that is not a JSON object
(``LlmReplyError``: models do that now and then); any other 4xx (``LlmRequestError``) is not.
Only the standard library is used.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

from docstatus.pipeline.errors import LlmReplyError, LlmRequestError, LlmTimeout, LlmUnavailable
from docstatus.pipeline.rules import RuleBasedExtractor

URL_ENV = "DOCSTATUS_LLM_URL"
MODEL_ENV = "DOCSTATUS_LLM_MODEL"
API_KEY_ENV = "DOCSTATUS_LLM_API_KEY"

SYSTEM_PROMPT = (
    "You extract structured fields from the text of a business document. Reply with one JSON "
    "object and nothing else, with these keys: title (string or null), dates (ISO 8601 strings), "
    "amounts (objects with value as a decimal string and currency as an ISO 4217 code), "
    "emails (strings), parties (names of people or organisations), summary (one sentence). "
    "Use null or [] for what the text does not contain; never invent values."
)

# Enough for the fields of any ordinary document; the rest of a long one costs tokens for little.
MAX_TEXT_CHARS = 20_000
_ERROR_BODY_CHARS = 300
_CODE_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class ChatCompletionsExtractor:
    """Asks an OpenAI-compatible ``/chat/completions`` endpoint for a JSON object of fields."""

    def __init__(self, url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 system_prompt: str = SYSTEM_PROMPT, max_text_chars: int = MAX_TEXT_CHARS,
                 json_mode: bool = True) -> None:
        if not url or not model:
            raise ValueError("an LLM needs a URL and a model name")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.system_prompt = system_prompt
        self.max_text_chars = max_text_chars
        self.json_mode = json_mode
        self.name = f"chat-completions:{model}"

    @classmethod
    def from_env(cls, **options: Any) -> ChatCompletionsExtractor:
        url = os.environ.get(URL_ENV, "")
        model = os.environ.get(MODEL_ENV, "")
        if not url or not model:
            raise ValueError(f"set {URL_ENV} and {MODEL_ENV} to use an LLM"
                             f" (unset {URL_ENV} for the rule-based extractor)")
        return cls(url, model, os.environ.get(API_KEY_ENV) or None, **options)

    def request_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt},
                         {"role": "user", "content": text[: self.max_text_chars]}],
            "temperature": 0,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def __call__(self, text: str) -> dict[str, Any]:
        reply = self._post(self.request_body(text))
        return _fields_of(reply)

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc.read())
            if exc.code == 429 or exc.code >= 500:
                raise LlmUnavailable(f"LLM service answered HTTP {exc.code}: {detail}") from exc
            raise LlmRequestError(f"LLM service refused the request with HTTP {exc.code}: {detail}") from exc
        except TimeoutError as exc:
            raise LlmTimeout(f"LLM service did not answer within {self.timeout:g}s ({self.url})") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise LlmTimeout(f"LLM service did not answer within {self.timeout:g}s ({self.url})") from exc
            raise LlmUnavailable(f"LLM service unreachable at {self.url}: {exc.reason}") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise LlmUnavailable(f"LLM service dropped the connection ({self.url}): {exc}") from exc
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise LlmReplyError(f"LLM service answered with something that is not JSON: {_excerpt(payload)}") from exc


def _fields_of(reply: Any) -> dict[str, Any]:
    """The JSON object in the first choice's message content."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LlmReplyError(f"not a chat-completions reply (no choices[0].message.content): "
                            f"{_excerpt(json.dumps(reply))}") from exc
    if not isinstance(content, str):
        raise LlmReplyError(f"the reply's content is {type(content).__name__}, not text")
    # Some models wrap JSON in a Markdown code fence even when asked not to.
    if fenced := _CODE_FENCE.match(content):
        content = fenced.group(1)
    try:
        fields = json.loads(content)
    except ValueError as exc:
        raise LlmReplyError(f"the model did not answer with JSON: {_excerpt(content)}") from exc
    if not isinstance(fields, dict):
        raise LlmReplyError(f"the model answered with a JSON {type(fields).__name__}, not an object")
    return fields


def _excerpt(data: bytes | str) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_BODY_CHARS else text[:_ERROR_BODY_CHARS] + "..."


def llm_from_env(**options: Any):
    """The chat-completions extractor when DOCSTATUS_LLM_URL is set, else the rule-based one."""
    if os.environ.get(URL_ENV):
        return ChatCompletionsExtractor.from_env(**options)
    return RuleBasedExtractor()


__all__ = ["SYSTEM_PROMPT", "ChatCompletionsExtractor", "llm_from_env"]
