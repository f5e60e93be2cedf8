"""Shared fixtures: one throwaway PostgreSQL per session, one fresh database per test.

Fixture contract (other test folders rely on these names):

- ``pg_server``    session: the server (``host``, ``port``, ``user``, ``password``,
                   ``bindir`` for pg_dump/psql, ``dsn(dbname)``).
- ``db_dsn``       per test: conninfo of a fresh database cloned from a template
                   that has ``database/schemas/schema.sql`` applied; superuser.
- ``conn``         per test: an autocommit psycopg connection to ``db_dsn``.
- ``connect``      per test: ``connect(**kwargs)`` opens another connection to
                   ``db_dsn`` (kwargs go to ``psycopg.connect``); all are closed
                   at teardown.
- ``empty_db_dsn`` per test: conninfo of a fresh EMPTY database (no schema).
- ``azurite``      session: one real Azurite blob service (``docstatus.dev.azurite``) shared by
                   every folder, which keep apart by container names of their own. Nobody
                   stops it: a test that stops Azurite starts a private one.
- ``closed_port``  per test: a 127.0.0.1 port nothing listens on (connection refused at once).
- ``blackhole``    per test: a ``Blackhole``, a 127.0.0.1 port (``.port``) that accepts
                   connections and never answers a byte.

Databases are real and dropped after each test, never rolled back, because
NOTIFY only fires on commit and concurrency needs several connections.

By default the server is a new cluster started from the installed PostgreSQL
binaries (``pg_config --bindir`` or the newest ``/usr/lib/postgresql/*/bin``).
Set ``DOCSTATUS_TEST_DSN`` to a superuser conninfo to use an existing server
instead; its ``dbname`` (default ``postgres``) is used only to create and drop
the test databases.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import port_for
import psycopg
import psycopg.conninfo
import pytest
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from docstatus.dev.azurite import Azurite
from docstatus.dev.embedded import find_bindir
from docstatus.dev.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_SQL = REPO_ROOT / "database" / "schemas" / "schema.sql"

# Settings for a cluster whose data we throw away: durability buys nothing here.
# max_connections: concurrency tests open many connections, and a pool or two
# on top must not hit "too many clients".
THROWAWAY_SERVER_SETTINGS = (
    "-c listen_addresses=127.0.0.1 "
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200"
)


@dataclass(frozen=True)
class PgServer:
    """Where the test server listens and how to reach it as superuser."""

    host: str
    port: int
    user: str
    password: str | None
    maintenance_dbname: str  # database we connect to when creating/dropping others
    bindir: Path  # client programs (pg_dump, psql) matching the server's major version

    def dsn(self, dbname: str) -> str:
        """libpq conninfo string for ``dbname`` on this server."""
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )

    def janitor(self, dbname: str, template: str | None = None, as_template: bool = False) -> DatabaseJanitor:
        """A pytest-postgresql janitor that creates/drops ``dbname`` on this server."""
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=dbname,
            template_dbname=template,
            maintenance_dbname=self.maintenance_dbname,
            as_template=as_template,
        )


def find_pg_bindir() -> Path:
    """The newest installed PostgreSQL with server binaries (docstatus.dev.embedded's finder)."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries (pg_ctl) found in /usr/lib/postgresql/*/bin or via pg_config; "
            "install the server package, or set DOCSTATUS_TEST_DSN to use an existing server"
        )
    return bindir


def _make_root_pg_ctl_wrapper(real_pg_ctl: Path, wrapper_dir: Path) -> Path:
    """Write an executable that runs pg_ctl as the ``postgres`` user.

    initdb and postgres refuse to run as root, and pytest-postgresql runs
    pg_ctl (start, stop, status, initdb) as the current user. ``cd /`` because
    our working directory may be unreadable for postgres, which makes
    initdb/postgres print warnings or fail to resolve relative paths.
    """
    wrapper = wrapper_dir / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\ncd / && exec runuser -u postgres -- "{real_pg_ctl}" "$@"\n')
    wrapper.chmod(0o700)
    return wrapper


@pytest.fixture(scope="session")
def _throwaway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """Start a private cluster on a free 127.0.0.1 port; stop and delete it at the end."""
    bindir = find_pg_bindir()
    pg_ctl = bindir / "pg_ctl"

    # Not pytest's tmp dir: as root that lives under a 0700 root-owned
    # /tmp/pytest-of-root, which the postgres user cannot enter. A fresh
    # directory, given to postgres when we are root, holds the data dir, the
    # log file and the Unix socket. As root it goes straight into /tmp, since
    # a $TMPDIR private to root would be just as unreachable.
    running_as_root = os.geteuid() == 0
    cluster_dir = Path(tempfile.mkdtemp(prefix="docstatus-pg-", dir="/tmp" if running_as_root else None))
    if running_as_root:
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root needs a 'postgres' system user to own the test cluster") from None
        os.chown(cluster_dir, postgres.pw_uid, postgres.pw_gid)
        # The wrapper stays in root's private tmp dir so postgres cannot edit what root executes.
        pg_ctl = _make_root_pg_ctl_wrapper(pg_ctl, tmp_path_factory.mktemp("pg_ctl-wrapper"))
    cluster_dir.chmod(stat.S_IRWXU)

    executor = PostgreSQLExecutor(
        executable=str(pg_ctl),
        host="127.0.0.1",
        port=port_for.select_random(),
        user="postgres",
        password=None,
        dbname="docstatus_unused",  # pytest-postgresql wants one; we name our own databases
        datadir=str(cluster_dir / "data"),
        unixsocketdir=str(cluster_dir),
        logfile=str(cluster_dir / "postgresql.log"),
        startparams="-w",
        postgres_options=THROWAWAY_SERVER_SETTINGS,
    )
    try:
        try:
            executor.start()
        except Exception as exc:
            log = Path(executor.logfile)
            detail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log file)"
            raise RuntimeError(f"test PostgreSQL did not start; tail of {log}:\n{detail}") from exc
        yield PgServer(
            host=executor.host,
            port=executor.port,
            user=executor.user,
            password=None,
            maintenance_dbname="postgres",
            bindir=bindir,
        )
    finally:
        if executor.running():
            executor.stop()
        shutil.rmtree(cluster_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """The PostgreSQL server every test database lives on."""
    if dsn := os.environ.get("DOCSTATUS_TEST_DSN"):
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        return PgServer(
            host=str(params.get("host", "127.0.0.1")),
            port=int(params.get("port", 5432)),
            user=str(params.get("user", "postgres")),
            password=params.get("password"),  # type: ignore[arg-type]  # a str when set; typed str | int
            maintenance_dbname=str(params.get("dbname", "postgres")),
            bindir=find_pg_bindir(),
        )
    return request.getfixturevalue("_throwaway_server")


# Test database names must not collide with another test session sharing a
# DOCSTATUS_TEST_DSN server, hence the pid; the counter keeps them short.
_SESSION_TAG = f"docstatus_{os.getpid()}"
_db_counter = itertools.count(1)


def _new_dbname(kind: str) -> str:
    return f"{_SESSION_TAG}_{kind}_{next(_db_counter)}"


@pytest.fixture(scope="session")
def _schema_template(pg_server: PgServer) -> Iterator[str]:
    """A database with schema.sql applied, created once and cloned by every test."""
    dbname = _new_dbname("template")
    janitor = pg_server.janitor(dbname, template="template0", as_template=True)
    janitor.init()
    try:
        # One execute of the whole file: psycopg sends it as a single simple
        # query, so dollar-quoted PL/pgSQL needs no statement splitting.
        with psycopg.connect(pg_server.dsn(dbname), autocommit=True) as schema_conn:
            schema_conn.execute(SCHEMA_SQL.read_text())
        yield dbname
    finally:
        janitor.drop()


@pytest.fixture
def db_dsn(pg_server: PgServer, _schema_template: str) -> Iterator[str]:
    """conninfo of a fresh database with the docstatus schema, dropped after the test."""
    dbname = _new_dbname("test")
    # The janitor terminates leftover backends before CREATE ... TEMPLATE and before DROP.
    with pg_server.janitor(dbname, template=_schema_template):
        yield pg_server.dsn(dbname)


@pytest.fixture
def empty_db_dsn(pg_server: PgServer) -> Iterator[str]:
    """conninfo of a fresh database with no docstatus objects (for migration tests)."""
    dbname = _new_dbname("empty")
    # template0, not template1: on a shared server template1 may carry local additions.
    with pg_server.janitor(dbname, template="template0"):
        yield pg_server.dsn(dbname)


@pytest.fixture
def connect(db_dsn: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Factory: ``connect(**kwargs)`` opens a psycopg connection to the test database.

    For tests that need several sessions (concurrency, LISTEN/NOTIFY); every
    connection it opened is closed at teardown, before the database is dropped.
    """
    opened: list[psycopg.Connection] = []

    def _connect(**kwargs: Any) -> psycopg.Connection:
        connection = psycopg.connect(db_dsn, **kwargs)
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        connection.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    """An autocommit connection to the test database: every statement commits, as callers' would."""
    return connect(autocommit=True)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The blob store of the session, stopped at the end."""
    with Azurite(tmp_path_factory.mktemp("azurite") / "data") as running:
        yield running


# --- dependencies that are down (tests/cli, tests/resilience) ---------------------------------


class Blackhole:
    """Accepts every connection and never sends a byte (a host that is up but hung)."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._socket.settimeout(0.2)
        while not self._closed.is_set():
            try:
                conn, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._socket.close()


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()
