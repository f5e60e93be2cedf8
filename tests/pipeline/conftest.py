"""Fixtures for the pipeline tests: real PostgreSQL (tests/conftest.py), a real Azurite, real
processes. Retries are fast (0.2 s backoff) and the crash test's leases short (2 s), so crash
recovery takes seconds.

- ``azurite``       session: the Azurite blob service of tests/conftest.py.
- ``db_pool``       per test: an autocommit pool on ``db_dsn``.
- ``store``         per test: a DocumentStore on the test database and a fresh container.
- ``fast_retries``  per test, automatic: retry_base_delay 0.2 s, retry_max_delay 1 s.
- ``make_worker``   per test: ``make_worker(**options)`` -> a started in-process Worker, stopped
                    (and its jobs released) at teardown.
- ``upload``        per test: ``upload(path_or_bytes, filename=None)`` -> (document, job).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from docstatus.dev.azurite import Azurite
from docstatus.dms import DocumentStore
from docstatus.pipeline import Worker

DATA = Path(__file__).resolve().parents[1] / "data"
# Long enough that a loaded machine never loses a lease by accident; tests of expiry expire it.
LEASE = timedelta(seconds=10)

_containers = itertools.count(1)


@pytest.fixture
def db_pool(db_dsn: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(db_dsn, min_size=2, max_size=12, kwargs={"autocommit": True}, open=True) as pool:
        yield pool


@pytest.fixture
def container() -> str:
    return f"pipeline-{os.getpid()}-{next(_containers)}"


@pytest.fixture
def store(db_pool: ConnectionPool, azurite: Azurite, container: str) -> Iterator[DocumentStore]:
    with DocumentStore(db_pool, azurite.connection_string, container, retry_total=0) as document_store:
        yield document_store


@pytest.fixture(autouse=True)
def fast_retries(request: pytest.FixtureRequest) -> None:
    if "db_dsn" not in request.fixturenames:
        return
    conn = request.getfixturevalue("conn")
    conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0.2 seconds', retry_max_delay = '1 second'")


@pytest.fixture
def upload(store: DocumentStore):
    def _upload(source, filename: str | None = None):
        document, job = store.upload_and_validate(source, filename)
        return document, job

    return _upload


@pytest.fixture
def make_worker(db_pool: ConnectionPool, store: DocumentStore) -> Iterator:
    workers: list[Worker] = []

    def _make_worker(**options) -> Worker:
        options.setdefault("lease", LEASE)
        options.setdefault("poll_interval", 5.0)
        options.setdefault("grace_period", 5.0)
        worker = Worker(db_pool, store, **options)
        workers.append(worker)
        worker.start()
        return worker

    yield _make_worker
    for worker in workers:
        worker.stop(grace_period=0)
