"""PostgreSQL clusters of a test's own: a primary, a streaming standby of it, promotion, shutdown.

The session cluster of tests/conftest.py is shared, so a test that stops a primary, promotes a
standby or preloads pg_cron builds its own. initdb, pg_ctl and pg_basebackup run as the
``postgres`` user when we are root (the server refuses root), in a folder under /tmp it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import psycopg.conninfo

from docstatus.dev.ports import free_port

from ..conftest import SCHEMA_SQL, find_pg_bindir

# Durability off (no OS crash happens here) but replication on: a standby needs WAL senders,
# hot_standby answers reads, and wal_keep_size spares a slow standby a replication slot.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "'256MB'",
    "hot_standby": "on",
    "max_connections": "60",
}


def _as_postgres(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, cwd="/", check=True, capture_output=True, text=True, **kwargs)


class Cluster:
    """One data directory and its server on a free 127.0.0.1 port."""

    def __init__(self, root: Path, name: str) -> None:
        self.bindir = find_pg_bindir()
        self.datadir = root / name
        self.logfile = root / f"{name}.log"
        self.port = free_port()
        self.running = False

    @classmethod
    def primary(cls, root: Path, **settings: str) -> Cluster:
        cluster = cls(root, "primary")
        _as_postgres([str(cluster.bindir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync", "-D", str(cluster.datadir)])
        lines = [f"{key} = {value}" for key, value in {**SETTINGS, **settings}.items()]
        with open(cluster.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n".join(lines) + "\n")
        return cluster

    def standby(self, root: Path, name: str = "standby") -> Cluster:
        """A streaming standby of this running cluster (pg_basebackup -R), started."""
        standby = Cluster(root, name)
        _as_postgres([str(self.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      "-D", str(standby.datadir), "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        standby.start()
        return standby

    def start(self) -> None:
        _as_postgres([str(self.bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.datadir),
                      "-l", str(self.logfile), "-o", f"-p {self.port} -k {self.datadir}"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            _as_postgres([str(self.bindir / "pg_ctl"), "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.datadir)])
            self.running = False

    def promote(self) -> None:
        _as_postgres([str(self.bindir / "pg_ctl"), "promote", "-w", "-t", "60", "-D", str(self.datadir)])

    def dsn(self, dbname: str = "postgres", **params: object) -> str:
        return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                                              **params)

    def create_database(self, dbname: str, schema: bool = True) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
        if schema:
            with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
                conn.execute(SCHEMA_SQL.read_text())  # type: ignore[arg-type]  # a file, not a LiteralString
        return self.dsn(dbname)

    def log_tail(self, characters: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-characters:] if self.logfile.is_file() else "(no log)"


def make_synchronous(primary_dsn: str) -> None:
    """From now on a commit on the primary waits for the standby (synchronous_standby_names)."""
    with psycopg.connect(primary_dsn, autocommit=True) as primary:
        primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.execute("SELECT pg_reload_conf()")


def wait_replayed(primary_dsn: str) -> None:
    """Returns once the standby has replayed everything committed on the primary so far: a commit
    with synchronous_commit = remote_apply returns only then, and WAL is replayed in order."""
    with psycopg.connect(primary_dsn, autocommit=True, options="-c synchronous_commit=remote_apply") as primary:
        primary.execute("SELECT pg_current_xact_id()")  # a transaction id, hence a commit record


def cluster_root() -> Path:
    """A fresh folder the postgres user owns (as root, straight under /tmp: root's own is 0700)."""
    running_as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="docstatus-prod-", dir="/tmp" if running_as_root else None))
    if running_as_root:
        postgres = pwd.getpwnam("postgres")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
    root.chmod(stat.S_IRWXU)
    return root


def remove(root: Path, *clusters: Cluster) -> None:
    for cluster in clusters:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:
            pass
    shutil.rmtree(root, ignore_errors=True)
