"""A small local HTTP server that speaks OpenAI's chat-completions format, for the LLM tests.

    with ChatServer() as server:                      # 127.0.0.1, a free port
        server.reply_with_content('{"title": "x"}')   # what the next requests get
        ChatCompletionsExtractor(server.url, "test-model")("some text")
        server.requests                               # [(headers, json body), ...]

Behaviours: ``reply_with_content`` (a normal reply), ``reply_with_body`` (any JSON or raw bytes,
e.g. a malformed reply), ``reply_with_status`` (an HTTP error), ``hang`` (answer nothing until
the server closes, for client timeouts). No sleeping: a hung request waits on an Event.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self._respond = self._content_response('{"title": null}')
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = body
                server.requests.append((dict(self.headers), parsed))
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                status, payload = server._respond(parsed)
                if status is None:  # hang
                    server._closing.wait()
                    return
                self._send(status, payload)

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _content_response(content: str):
        def respond(request: Any) -> tuple[int, bytes]:
            model = request.get("model") if isinstance(request, dict) else None
            return 200, json.dumps({
                "id": "chatcmpl-test", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
            }).encode()
        return respond

    def reply_with_content(self, content: str) -> None:
        """The assistant message's content of every following reply."""
        self._respond = self._content_response(content)

    def reply_with_fields(self, fields: dict[str, Any]) -> None:
        self.reply_with_content(json.dumps(fields))

    def reply_with_body(self, body: Any) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._respond = lambda request: (200, payload)

    def reply_with_status(self, status: int, message: str = "error") -> None:
        payload = json.dumps({"error": {"message": message}}).encode()
        self._respond = lambda request: (status, payload)

    def hang(self) -> None:
        """Accept requests and never answer them (until the server closes)."""
        self._respond = lambda request: (None, b"")
