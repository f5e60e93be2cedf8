"""The chat-completions client against a local server that speaks the format: replies good and
bad, HTTP errors, a timeout, and which failures are retryable."""

from __future__ import annotations

import json
import time

import pytest

from docstatus.pipeline import (
    ChatCompletionsExtractor,
    LlmReplyError,
    LlmRequestError,
    LlmTimeout,
    LlmUnavailable,
    RuleBasedExtractor,
    is_retryable,
    llm_from_env,
)
from docstatus.pipeline.errors import LlmError

from .chat_server import ChatServer

FIELDS = {"title": "Invoice 2024-0042", "dates": ["2024-03-15"], "emails": ["billing@example.com"]}


@pytest.fixture
def server():
    with ChatServer() as running:
        yield running


def extractor(server: ChatServer, **options) -> ChatCompletionsExtractor:
    options.setdefault("timeout", 5)
    return ChatCompletionsExtractor(server.url, "test-model", **options)


def test_asks_for_a_json_object_and_returns_the_fields(server):
    server.reply_with_fields(FIELDS)
    assert extractor(server, api_key="sk-test")("INVOICE 2024-0042\nDate: 2024-03-15") == FIELDS

    [(headers, body)] = server.requests
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "test-model"
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0
    assert [message["role"] for message in body["messages"]] == ["system", "user"]
    assert "JSON object" in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "INVOICE 2024-0042\nDate: 2024-03-15"


def test_no_key_no_authorization_header_and_long_text_is_cut(server):
    server.reply_with_fields({})
    extractor(server, max_text_chars=10)("x" * 100)
    [(headers, body)] = server.requests
    assert "Authorization" not in headers
    assert body["messages"][1]["content"] == "x" * 10


def test_a_json_object_in_a_code_fence_is_accepted(server):
    server.reply_with_content("```json\n" + json.dumps(FIELDS) + "\n```")
    assert extractor(server)("text") == FIELDS


@pytest.mark.parametrize("content, message", [
    ("Sure! The title is Invoice 2024-0042.", "did not answer with JSON"),
    ('["a", "list"]', "JSON list, not an object"),
    ('{"title": "unterminated', "did not answer with JSON"),
])
def test_a_reply_that_is_not_a_json_object_is_a_retryable_reply_error(server, content, message):
    server.reply_with_content(content)
    with pytest.raises(LlmReplyError, match=message) as caught:
        extractor(server)("text")
    assert is_retryable(caught.value)


@pytest.mark.parametrize("body, message", [
    (b"<html>Bad Gateway</html>", "not JSON"),
    ({"id": "x", "choices": []}, "no choices"),
    ({"choices": [{"message": {"role": "assistant", "content": None}}]}, "NoneType, not text"),
])
def test_a_malformed_chat_completions_reply(server, body, message):
    server.reply_with_body(body)
    with pytest.raises(LlmReplyError, match=message):
        extractor(server)("text")


def test_a_timeout_is_retryable(server):
    server.hang()
    started = time.monotonic()
    with pytest.raises(LlmTimeout, match="did not answer within 0.3s") as caught:
        extractor(server, timeout=0.3)("text")
    assert time.monotonic() - started < 3
    assert is_retryable(caught.value)


@pytest.mark.parametrize("status, error, retryable", [
    (429, LlmUnavailable, True), (500, LlmUnavailable, True), (503, LlmUnavailable, True),
    (400, LlmRequestError, False), (401, LlmRequestError, False),
])
def test_http_errors(server, status, error, retryable):
    server.reply_with_status(status, "model overloaded" if retryable else "invalid request")
    with pytest.raises(error, match=f"HTTP {status}") as caught:
        extractor(server)("text")
    assert is_retryable(caught.value) is retryable


def test_nobody_listening_is_retryable():
    with ChatServer() as closed:
        url = closed.url
    with pytest.raises(LlmUnavailable, match="unreachable") as caught:
        ChatCompletionsExtractor(url, "m", timeout=2)("text")
    assert is_retryable(caught.value) and isinstance(caught.value, LlmError)


def test_full_endpoint_url_and_configuration_from_the_environment(server, monkeypatch):
    assert ChatCompletionsExtractor(server.url + "/chat/completions/", "m").url == server.url + "/chat/completions"
    monkeypatch.delenv("DOCSTATUS_LLM_URL", raising=False)
    assert isinstance(llm_from_env(), RuleBasedExtractor)
    monkeypatch.setenv("DOCSTATUS_LLM_URL", server.url)
    with pytest.raises(ValueError, match="DOCSTATUS_LLM_MODEL"):
        llm_from_env()
    monkeypatch.setenv("DOCSTATUS_LLM_MODEL", "env-model")
    monkeypatch.setenv("DOCSTATUS_LLM_API_KEY", "sk-env")
    server.reply_with_fields({"title": "t"})
    assert llm_from_env(timeout=5)("text") == {"title": "t"}
    [(headers, body)] = server.requests
    assert (headers["Authorization"], body["model"]) == ("Bearer sk-env", "env-model")
