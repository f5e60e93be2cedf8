"""Fixtures for the DMS tests: a real Azurite, stores over it, the committed sample files.

- ``azurite``            session: the Azurite blob service of tests/conftest.py.
- ``stoppable_azurite``  per test: a private Azurite the test may ``stop()`` and ``start()``
                         (same port, same data), so stopping it cannot disturb other tests.
- ``container``          per test: a fresh container name (created by the store on first upload).
- ``db_pool``            per test: a small autocommit pool on ``db_dsn`` (tests/conftest.py).
- ``make_store``         per test: ``make_store(azurite=..., **options)`` -> DocumentStore on the
                         test database and ``container``; all are closed at teardown.
- ``store``              per test: ``make_store()`` on the session Azurite.
- ``blob_service``       per test: a plain BlobServiceClient on the session Azurite, to look at
                         or tamper with blobs behind the store's back.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from psycopg_pool import ConnectionPool

from docstatus.dev.azurite import Azurite
from docstatus.dms import DocumentStore

DATA = Path(__file__).resolve().parents[1] / "data"

_container_counter = itertools.count(1)


@pytest.fixture
def stoppable_azurite(tmp_path: Path) -> Iterator[Azurite]:
    with Azurite(tmp_path / "azurite") as running:
        yield running


@pytest.fixture
def container() -> str:
    return f"test-{os.getpid()}-{next(_container_counter)}"


@pytest.fixture
def db_pool(db_dsn: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(db_dsn, min_size=1, max_size=10, kwargs={"autocommit": True}, open=True) as pool:
        yield pool


@pytest.fixture
def make_store(db_pool: ConnectionPool, azurite: Azurite, container: str) -> Iterator:
    with ExitStack() as stores:  # closes every store it made at teardown
        def _make_store(on: Azurite | None = None, **options) -> DocumentStore:
            options.setdefault("retry_total", 0)  # a test that stops Azurite wants the answer now
            connection_string = (on or azurite).connection_string
            return stores.enter_context(DocumentStore(db_pool, connection_string, container, **options))

        yield _make_store


@pytest.fixture
def store(make_store) -> DocumentStore:
    return make_store()


@pytest.fixture
def blob_service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service
