"""``docstatus upload FILE...``: upload, validate, and show what the database decided.

Registered on the ``docstatus`` group by ``docstatus.cli``. Heavy imports (Azure SDK,
libmagic) happen when the command runs, not when the CLI starts.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import click

from docstatus.dms.config import CONTAINER_ENV, DEFAULT_CONTAINER
from docstatus.options import EXIT_SOME_NOT_DONE, blob_connection_string_option, blob_timeout_options, dsn_option
from docstatus.textcells import escape_cell

# Exit status when a file failed, so a script tells "some documents failed" from "could not run".
EXIT_SOME_FAILED = EXIT_SOME_NOT_DONE
# Rejected, not retrievable (still 'not ready' after validation), or an error before the database
# decided. A re-uploaded document that is already further along ('ready', 'in progress',
# 'completed') is fine.
FAILED_STATUSES = ("failed", "not ready", "error")


@click.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--container", envvar=CONTAINER_ENV, default=DEFAULT_CONTAINER, show_default=True,
              show_envvar=True, help="Blob container the documents go to (created if missing).")
@dsn_option
@blob_connection_string_option
@blob_timeout_options
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Files uploaded at the same time.")
def upload(files: tuple[Path, ...], container: str, dsn: str, blob_connection_string: str | None,
           blob_timeouts, jobs: int) -> None:
    """Upload FILES, validate them, and print each document's id, status and reason.

    PostgreSQL and the blob store are probed first: one that does not answer is one line on
    stderr and exit status 1 within seconds, and nothing is registered. Exits with status 3
    when any file failed: rejected, still 'not ready' (blob store unreachable), or an error.
    """
    from psycopg_pool import ConnectionPool

    from docstatus.dms.blob_store import probe as probe_blob_store
    from docstatus.dms.config import StoreConfig
    from docstatus.dms.store import DocumentStore
    from docstatus.ops.db import connect, refuse_standby

    # One plain connection first: a pool would keep retrying, and hide libpq's reason.
    with connect(dsn, application_name="docstatus-upload") as probe:
        refuse_standby(probe)
    connection_string = blob_connection_string or StoreConfig.from_env().connection_string
    problem = probe_blob_store(connection_string, blob_timeouts)
    if problem:
        raise click.ClickException(problem)
    pool = ConnectionPool(dsn, min_size=1, max_size=jobs, kwargs={"autocommit": True}, open=True)
    try:
        try:
            store = DocumentStore(pool, connection_string, container, timeouts=blob_timeouts)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        with store:
            rows = _upload_all(store, files, jobs)
    finally:
        pool.close()

    _print_table(rows)
    if any(status in FAILED_STATUSES for _, _, status, _ in rows):
        sys.exit(EXIT_SOME_FAILED)


def _upload_all(store, files: tuple[Path, ...], jobs: int) -> list[tuple[Path, str, str, str]]:
    """(file, document id, status, reason) for each file, in the order given."""
    results: dict[int, tuple[Path, str, str, str]] = {}
    with ThreadPoolExecutor(jobs) as pool, click.progressbar(
            length=len(files), label="Uploading", file=sys.stderr, show_pos=True) as bar:
        futures = {pool.submit(store.upload_and_validate, path): index for index, path in enumerate(files)}
        for future in as_completed(futures):
            index = futures[future]
            path = files[index]
            try:
                document, _job = future.result()
            except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others' outcome
                results[index] = (path, "-", "error", _reason(store, exc))
            else:
                results[index] = (path, str(document.id), str(document.text_extraction_status),
                                  document.status_reason or "")
            bar.update(1)
    return [results[index] for index in range(len(files))]


def _reason(store, exc: Exception) -> str:
    """One sentence for a file that could not be uploaded (never the Azure SDK's XML)."""
    from azure.core.exceptions import AzureError

    from docstatus.connection_errors import blob_cause, service_endpoint

    if isinstance(exc, AzureError):
        return f"blob store at {service_endpoint(store.blob_service.url)}: {blob_cause(exc)}"
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]


def _print_table(rows: list[tuple[Path, str, str, str]]) -> None:
    header = ("ID", "STATUS", "REASON", "FILE")
    # Escaped: a filename with a newline (or an escape sequence) must not break its row.
    table = [header] + [tuple(escape_cell(cell) for cell in (doc_id, status, reason, str(path)))
                        for path, doc_id, status, reason in rows]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for row in table:
        cells = [row[column].ljust(widths[column]) for column in range(3)] + [row[3]]
        click.echo("  ".join(cells).rstrip())
