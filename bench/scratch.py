"""The throwaway database every benchmark runs in: created fresh with the whole current schema,
dropped afterwards even when the run fails or is interrupted."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

SCHEMA_SQL = Path(__file__).resolve().parents[1] / "database" / "schemas" / "schema.sql"
DEFAULT_DSN = os.environ.get("DOCSTATUS_BENCH_DSN", "host=127.0.0.1 user=postgres dbname=postgres")


def dsn_argument(parser: argparse.ArgumentParser) -> None:
    """``--dsn``: a server where the bench may create and drop its own database."""
    parser.add_argument("--dsn", default=DEFAULT_DSN)


@contextmanager
def scratch_database(admin_dsn: str, name: str, template: str | None = None) -> Iterator[str]:
    """Creates database ``name`` (dropping a leftover one first) with schema.sql loaded and
    yields its DSN; drops it on the way out, disconnecting anyone still in it.

    ``template``: the database to copy, e.g. "template0" for one untouched by local
    additions to template1; by default the server's (template1).
    """
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(create)
    try:
        dsn = conninfo.make_conninfo(admin_dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL.read_text())
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(drop)
