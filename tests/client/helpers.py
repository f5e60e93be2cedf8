"""Shared by the client tests: pipelines that write events, a collector that waits for them,
and a TCP proxy that can cut or freeze a connection the way a network does."""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

import psycopg
import psycopg.conninfo

from docstatus import Client, StatusEvent

_blob_numbers = itertools.count(1)


def new_blob() -> str:
    return f"blob-{next(_blob_numbers)}"


def claim_any(client: Client, worker_id: str, timeout: float = 10.0):
    """Claims a job; with several writers the oldest free job may be somebody else's."""
    deadline = time.monotonic() + timeout
    while (job := client.claim_extraction_job(worker_id)) is None:
        assert time.monotonic() < deadline, "no job to claim"
    return job


def run_lifecycle(client: Client, worker_id: str, fail_once: bool = False) -> int:
    """Register, validate, claim, ocr, llm, done (each its own transaction). With fail_once,
    the first attempt fails during llm and the operator retries it. Returns the document id
    of the job this worker drove (with concurrent writers, not necessarily the one it registered)."""
    document = client.register_document("docs", new_blob(), "scan.pdf", "application/pdf", 1234)
    client.validate_document(document.id, True, "application/pdf")
    job = claim_any(client, worker_id)
    client.mark_ocr_running(job.document_id, worker_id)
    client.mark_llm_running(job.document_id, worker_id)
    if fail_once:
        client.mark_processing_failed(job.document_id, "llm timed out", worker_id)
        client.retry_document(job.document_id)
        job = claim_any(client, worker_id)
        client.mark_ocr_running(job.document_id, worker_id)
        client.mark_llm_running(job.document_id, worker_id)
    client.mark_processing_done(job.document_id, worker_id)
    return job.document_id


def committed_event_ids(conn: psycopg.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM docstatus.status_events ORDER BY id")]


class Collector:
    """A subscriber callback that keeps what it gets and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: StatusEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    @property
    def ids(self) -> list[int]:
        with self._cond:
            return [event.id for event in self.events]

    def wait_for(self, predicate: Callable[[list[StatusEvent]], bool], timeout: float = 20.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.events), timeout)

    def wait_for_ids(self, ids, timeout: float = 20.0) -> bool:
        wanted = set(ids)
        return self.wait_for(lambda events: wanted <= {event.id for event in events}, timeout)

    def wait_for_count(self, count: int, timeout: float = 20.0) -> bool:
        return self.wait_for(lambda events: len(events) >= count, timeout)


def wait_until(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.01):
    """Polls condition until it is truthy; returns its value, or fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {condition}"
        pause.wait(interval)
    return value


def dsn_via(dsn: str, port: int) -> str:
    return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server, one thread per connection.

    ``freeze()`` stops moving bytes on the connections open now while their sockets stay open:
    to the client, a half-open connection (writes are accepted, nothing ever comes back).
    ``cut()`` resets them, as a dropped network link does. New connections work normally.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=link.forward, daemon=True).start()

    def freeze(self) -> None:
        with self._lock:
            for link in self._links:
                link.frozen.set()

    def cut(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.reset()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut()


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.frozen = threading.Event()
        self.done = threading.Event()

    def forward(self) -> None:
        peers = {self.client: self.server, self.server: self.client}
        try:
            while not self.done.is_set():
                if self.frozen.is_set():
                    self.done.wait(0.05)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    if self.frozen.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            self.reset()

    def reset(self) -> None:
        self.done.set()
        for sock in (self.client, self.server):
            try:
                # Linger 0: close with a RST, as a broken link looks to the other end.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass
