"""The options and exit statuses every ``docstatus`` command shares.

A leaf module: the command modules (``ops``, ``dms.cli``, ``pipeline.cli``) import it, and
``docstatus.cli``, the composition root, imports them; no command imports ``docstatus.cli``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from docstatus.dms.config import CONNECTION_STRING_ENV, DSN_ENV

__all__ = [
    "EXIT_NOT_FOUND", "EXIT_SOME_NOT_DONE", "blob_connection_string_option", "blob_timeout_options", "dsn_option",
    "json_option",
]

# Exit statuses beside click's 1 (an error) and 2 (bad usage): an unknown document is a bad
# argument, so it shares 2; 3 is "ran, but not every document could be acted on" (upload, retry).
EXIT_NOT_FOUND = 2
EXIT_SOME_NOT_DONE = 3

# Every command that talks to PostgreSQL takes the same option.
dsn_option = click.option(
    "--dsn",
    envvar=DSN_ENV,
    default="",
    show_envvar=True,
    help="libpq connection string or postgresql:// URL (empty: libpq defaults, PGHOST etc.).",
)

JSON_HELP = "Print JSON for scripts (times in ISO 8601, durations in seconds)."
json_option = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)


def blob_connection_string_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--blob-connection-string`` (or the environment), passed as ``blob_connection_string``
    (None when unset: Azurite's development account). ``--connection-string``, its name in
    earlier releases of ``upload`` and ``retry``, still works, hidden from the help."""

    @functools.wraps(command)
    def merged(*args: Any, blob_connection_string: str | None, old_connection_string: str | None,
               **kwargs: Any) -> Any:
        return command(*args, blob_connection_string=old_connection_string or blob_connection_string or None,
                       **kwargs)

    merged = click.option("--connection-string", "old_connection_string", default=None, hidden=True)(merged)
    return click.option(
        "--blob-connection-string", envvar=CONNECTION_STRING_ENV, default=None, show_envvar=True,
        help="Azure Storage connection string (default: Azurite's development account on 127.0.0.1:10000).",
    )(merged)


def blob_timeout_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--blob-connect-timeout``, ``--blob-read-timeout``, ``--blob-seconds-per-mb`` (or their
    ``DOCSTATUS_BLOB_*`` variables), passed as one ``blob_timeouts`` (a ``BlobTimeouts``)."""

    @functools.wraps(command)
    def merged(*args: Any, blob_connect_timeout: float | None, blob_read_timeout: float | None,
               blob_seconds_per_mb: float | None, **kwargs: Any) -> Any:
        from docstatus.dms.blob_store import BlobTimeouts

        try:
            timeouts = BlobTimeouts.from_env(blob_connect_timeout, blob_read_timeout, blob_seconds_per_mb)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        return command(*args, blob_timeouts=timeouts, **kwargs)

    positive = click.FloatRange(min=0, min_open=True)
    merged = click.option(
        "--blob-seconds-per-mb", type=positive, default=None,
        help="Seconds each MiB of a download may add to its deadline [default: 2; env "
             "DOCSTATUS_BLOB_SECONDS_PER_MB].")(merged)
    merged = click.option(
        "--blob-read-timeout", type=positive, default=None,
        help="Seconds a blob store read may wait for bytes [default: 10; env DOCSTATUS_BLOB_READ_TIMEOUT].")(merged)
    return click.option(
        "--blob-connect-timeout", type=positive, default=None,
        help="Seconds to connect to the blob store; the start probe's whole budget too [default: 3; env "
             "DOCSTATUS_BLOB_CONNECT_TIMEOUT].")(merged)
