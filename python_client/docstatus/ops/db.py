"""PostgreSQL for the operations commands: one connection per command, errors as one line.

The commands query through ``docstatus.Client`` over this connection; nothing here holds SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg
import psycopg.conninfo

from docstatus.connection_errors import one_line, pg_cause, postgres_unreachable_message, redact_dsn
from docstatus.connection_errors import password_of as _password_of
from docstatus.errors import DocStatusError, NotFound, translate
from docstatus.options import EXIT_NOT_FOUND

# libpq waits forever for a host that drops packets; a command should say so within seconds.
CONNECT_TIMEOUT = 5

READ_ONLY_STANDBY = "read-only standby: use the primary's DSN"


class DocumentNotFound(click.ClickException):
    """``document 42 not found``, exit status 2."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, document_ids: list[int] | int) -> None:
        ids = [document_ids] if isinstance(document_ids, int) else sorted(document_ids)
        noun = "document" if len(ids) == 1 else "documents"
        super().__init__(f"{noun} {', '.join(map(str, ids))} not found")


def connect(dsn: str, *, application_name: str = "docstatus-cli") -> psycopg.Connection:
    """An autocommit connection, or a ClickException naming where it tried (no password)."""
    given = set()
    try:
        given = set(psycopg.conninfo.conninfo_to_dict(dsn))
    except psycopg.Error as exc:
        raise click.ClickException(f"invalid DSN {redact_dsn(dsn)}: {one_line(str(exc), _password_of(dsn))}") from exc
    options: dict[str, Any] = {}
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in given:
        options["application_name"] = application_name
    try:
        return psycopg.connect(dsn, autocommit=True, **options)
    except psycopg.Error as exc:
        raise click.ClickException(postgres_unreachable_message(dsn, exc)) from exc


@contextmanager
def database_errors(dsn: str) -> Iterator[None]:
    """Turns what the database says into one line on stderr and a non-zero exit."""
    secret = _password_of(dsn)
    try:
        yield
    except click.ClickException:
        raise
    except NotFound as exc:
        document_id = exc.document_id
        if document_id is not None:
            raise DocumentNotFound(document_id) from exc
        raise click.ClickException(one_line(str(exc), secret)) from exc
    except DocStatusError as exc:
        raise click.ClickException(one_line(str(exc), secret)) from exc
    except psycopg.OperationalError as exc:
        raise click.ClickException(
            f"lost the connection to PostgreSQL at {redact_dsn(dsn)}: {one_line(pg_cause(exc), secret)}") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        # A hot standby (or default_transaction_read_only): reads work there, writes never will.
        raise click.ClickException(READ_ONLY_STANDBY) from exc
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction,
            psycopg.errors.InvalidSchemaName) as exc:
        raise click.ClickException(
            f"{one_line(str(exc), secret)}: is the docstatus schema installed? (docstatus migrate)") from exc
    except psycopg.Error as exc:
        error = translate(exc)
        raise click.ClickException(one_line(str(error or exc), secret)) from exc


def refuse_standby(conn: psycopg.Connection) -> None:
    """A writing command stops at once on a hot standby, in one line, instead of failing on
    every write it tries."""
    from docstatus.client import Client

    if Client(conn).in_recovery():
        raise click.ClickException(READ_ONLY_STANDBY)


@contextmanager
def session(dsn: str) -> Iterator[psycopg.Connection]:
    """``with session(dsn) as conn:`` one connection for one command, errors as one line."""
    with database_errors(dsn):
        conn = connect(dsn)
        try:
            yield conn
        finally:
            conn.close()
