"""Fixtures for the dashboard: the real server (uvicorn in a thread, on a free port) over the
test database, an HTTP helper, a server-sent-events reader and a headless Chromium.

- ``start_dashboard(**settings)`` per test: serves ``create_app`` and returns a ``Served``
  (its base URL, the Dashboard state); stopped at teardown.
- ``SseReader``: reads ``/events`` on a raw connection, message by message, with a timeout.
- ``browser`` per module: Selenium driving /usr/bin/chromium through /usr/bin/chromedriver.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from docstatus import Client
from docstatus.dashboard.app import create_app
from docstatus.dashboard.settings import DashboardSettings

TOKEN = "test-token-0123456789"
MALICIOUS = "<script>alert(1)</script>.pdf"


@dataclass
class Served:
    url: str
    port: int
    app: Any

    @property
    def dashboard(self):
        return self.app.state.dashboard

    def request(self, method: str, path: str, body: dict | None = None,
                headers: dict | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = None if body is None else urllib.parse.urlencode(body)
            all_headers = dict(headers or {})
            if data is not None:
                all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, path, body=data, headers=all_headers)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, **kwargs)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sign_in(self) -> tuple[str, str]:
        """(session cookie header, CSRF token) of a new signed-in session."""
        status, headers, _ = self.request("POST", "/login", {"token": TOKEN, "next": "/"},
                                          headers={"Origin": self.origin})
        assert status == 303, status
        cookie = headers["set-cookie"].split(";")[0]
        _, _, page = self.get("/", headers={"Cookie": cookie})
        marker = 'name="csrf" value="'
        assert marker in page, "signed in, yet no action form"
        csrf = page.split(marker, 1)[1].split('"', 1)[0]
        return cookie, csrf


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def start_dashboard(db_dsn: str) -> Iterator[Callable[..., Served]]:
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: Any) -> Served:
        settings.setdefault("dsn", db_dsn)
        settings.setdefault("poll_interval", 0.2)
        if settings.get("allow_actions"):
            settings.setdefault("action_token", TOKEN)
        app = create_app(DashboardSettings(**settings))
        sock = _free_socket()
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the dashboard did not start"
            assert time.monotonic() < deadline, "the dashboard did not start within 30 s"
            time.sleep(0.02)
        started.append((server, thread))
        port = sock.getsockname()[1]
        return Served(f"http://127.0.0.1:{port}", port, app)

    yield start
    for server, _thread in started:
        server.config.app.state.dashboard.hub.close_streams()
        server.should_exit = True
    for _server, thread in started:
        thread.join(15)
        assert not thread.is_alive(), "the dashboard did not stop"


class SseReader:
    """One /events stream on a raw socket (HTTP/1.0: the body is the stream itself, no chunks):
    ``next_message(timeout)`` -> (id, event, data dict), or None when nothing came in time."""

    def __init__(self, port: int, last_event_id: str | None = None, query: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        headers = f"GET /events{query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        if last_event_id:
            headers += f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall((headers + "\r\n").encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n", 30)
        assert head is not None, "no response headers"
        status_line, *header_lines = head.decode().split("\r\n")
        assert status_line.split()[1] == "200", status_line
        content_type = next(h for h in header_lines if h.lower().startswith("content-type:"))
        assert "text/event-stream" in content_type
        self.last_id: str | None = last_event_id

    def _until(self, separator: bytes, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while separator not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return None
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(separator)
        return head

    def next_message(self, timeout: float = 10.0) -> tuple[str | None, str | None, dict] | None:
        deadline = time.monotonic() + timeout
        while True:
            block = self._until(b"\n\n", max(deadline - time.monotonic(), 0))
            if block is None:
                return None
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
            if "data" in fields:
                self.last_id = fields.get("id", self.last_id)
                return fields.get("id"), fields.get("event"), json.loads(fields["data"])

    def messages(self, count: int, timeout: float = 15.0) -> list[dict]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            message = self.next_message(max(deadline - time.monotonic(), 0.1))
            if message is None:
                break
            got.append(message[2])
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(db_dsn: str) -> Iterator[Client]:
    with Client.connect(db_dsn) as c:
        yield c


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        pytest.fail("chromium and chromedriver are needed (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
