"""``docstatus retry``: queue failed documents again.

A document that failed during processing had a job: ``docstatus.retry_document`` queues its
next attempt. A document that failed validation never had one, and the database refuses to
retry it: it is validated again instead (``DocumentStore.validate``), which reads its blob. When
the blob store cannot be reached, those documents are left as they are and reported, so an
outage of the store does not move them.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from typing import Any

import click
import psycopg

from docstatus.client import Client
from docstatus.connection_errors import blob_unreachable_at, service_endpoint
from docstatus.dms.config import CONNECTION_STRING_ENV
from docstatus.errors import InvalidTransition, NotFound
from docstatus.models import RetryCandidate, TextExtractionStatus
from docstatus.ops import render
from docstatus.ops.db import DocumentNotFound, one_line, session
from docstatus.ops.render import Text
from docstatus.options import EXIT_SOME_NOT_DONE, blob_connection_string_option, dsn_option, json_option

# A store that does not answer within this is reported as unreachable rather than waited for.
BLOB_STORE_TIMEOUT = 10


@click.command(context_settings={"ignore_unknown_options": True})  # "retry -1": an unknown id
@click.argument("document_ids", metavar="[DOC]...", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Every failed document (instead of DOC...).")
@click.option("--error-like", "error_like", metavar="PATTERN",
              help="With --all-failed: only documents whose error matches PATTERN, an SQL ILIKE pattern "
                   "('%timed out%') or a pattern exactly as `docstatus failures` prints it.")
@click.option("--dry-run", is_flag=True, help="Make the real calls in a transaction that is rolled back: the "
              "same counts as the real run, nothing changed.")
@blob_connection_string_option
@dsn_option
@json_option
def retry(document_ids: tuple[int, ...], all_failed: bool, error_like: str | None, dry_run: bool,
          blob_connection_string: str | None, dsn: str, as_json: bool) -> None:
    """Queue failed documents again (or validate them again).

    DOC... or --all-failed [--error-like PATTERN]. A document that failed during processing
    gets its next attempt, whatever max_attempts says. One that failed validation (it never had
    a job) is validated again instead: that reads its blob, so it needs the blob store. Exits
    with status 3 when some documents were not queued again (not failed, rejected again, blob
    store unreachable).
    """
    if document_ids and all_failed:
        raise click.UsageError("give DOC... or --all-failed, not both")
    if not document_ids and not all_failed:
        raise click.UsageError("give the documents to retry (DOC...) or --all-failed")
    if error_like is not None and not all_failed:
        raise click.UsageError("--error-like goes with --all-failed")

    # --dry-run makes the real calls in a transaction it rolls back: the database answers the
    # very question the real run asks (a document that fails validation again says so), and
    # nothing of it stays, NOTIFYs included (they are sent only at commit).
    with session(dsn) as conn, (conn.transaction(force_rollback=True) if dry_run else nullcontext()):
        client = Client(conn)
        if document_ids:
            candidates = [_row(candidate) for candidate in client.retry_candidates(sorted(set(document_ids)))]
            missing = set(document_ids) - {row["document_id"] for row in candidates}
            if missing:
                raise DocumentNotFound(sorted(missing))  # a typo in one id: act on none
        else:
            candidates = [_row(candidate) for candidate in client.failed_retry_candidates(error_like)]

        outcomes: dict[int, dict[str, Any]] = {}
        to_validate = []
        for row in candidates:
            document_id = row["document_id"]
            if row["text_extraction_status"] != TextExtractionStatus.FAILED:
                outcomes[document_id] = _outcome(row, "skipped", False, row["text_extraction_status"],
                                                 detail=f"not failed: it is {row['text_extraction_status']!r}")
            elif row["had_job"]:
                outcomes[document_id] = _retry(client, row)
            else:
                to_validate.append(row)
        if to_validate:
            for outcome in _validate_again(conn, to_validate, blob_connection_string):
                outcomes[outcome["document_id"]] = outcome

    rows = [outcomes[document_id] for document_id in sorted(outcomes)]
    if dry_run:
        for row in rows:
            row["action"] = _DRY_RUN_ACTIONS.get(row["action"], row["action"])
    if as_json:
        render.print_json(rows)
    elif not rows:
        click.echo("no failed documents" + (f" with an error like {error_like!r}" if error_like else ""))
    else:
        _print(rows, dry_run)
    if not dry_run and not all(row["ok"] for row in rows):
        sys.exit(EXIT_SOME_NOT_DONE)


# What the rolled-back run did, said as what a real run would do.
_DRY_RUN_ACTIONS = {"retried": "would retry", "validated again": "would validate again",
                    "rejected again": "would be rejected again"}


def _outcome(row: dict[str, Any], action: str, ok: bool, status: object, *, job_id: int | None = None,
             attempt: int | None = None, detail: str | None = None) -> dict[str, Any]:
    return {"document_id": row["document_id"], "action": action, "ok": ok,
            "text_extraction_status": str(status) if status is not None else None,
            "job_id": job_id, "attempt": attempt, "detail": detail}


def _retry(client: Client, row: dict[str, Any]) -> dict[str, Any]:
    try:
        job = client.retry_document(row["document_id"])
    except (InvalidTransition, NotFound) as exc:  # moved on since we looked: say so, go on
        return _outcome(row, "skipped", False, None, detail=one_line(str(exc)))
    return _outcome(row, "retried", True, TextExtractionStatus.READY, job_id=job.id, attempt=job.attempt,
                    detail=f"was: {row['status_reason']}" if row["status_reason"] else None)


def _row(candidate: RetryCandidate) -> dict[str, Any]:
    return {**dataclasses.asdict(candidate), "text_extraction_status": str(candidate.text_extraction_status)}


def _validate_again(conn: psycopg.Connection, rows: list[dict[str, Any]],
                    connection_string: str | None) -> list[dict[str, Any]]:
    """Validates documents that failed validation again, container by container, when the blob
    store answers; otherwise leaves them as they are and says why."""
    try:
        from azure.core.exceptions import AzureError

        from docstatus.dms.blob_store import BlobTimeouts, service_client
        from docstatus.dms.config import StoreConfig
        from docstatus.dms.store import DocumentStore

        connection_string = connection_string or StoreConfig.from_env().connection_string
        # The store validates; the probe, which never retries, finds out first whether it answers.
        store = DocumentStore(conn, connection_string, retry_total=1, timeout=BLOB_STORE_TIMEOUT)
        try:
            probe = service_client(connection_string,
                                   BlobTimeouts(connect=BLOB_STORE_TIMEOUT, read=BLOB_STORE_TIMEOUT), retry_total=0)
        except BaseException:
            store.close()
            raise
    except (ImportError, ValueError) as exc:
        why = f"no usable blob store ({one_line(str(exc))}); set {CONNECTION_STRING_ENV} or --blob-connection-string"
        return [_outcome(row, "not validated", False, "failed", detail=why) for row in rows]

    endpoint = service_endpoint(probe.url)
    unreachable: dict[str, str | None] = {}
    outcomes = []
    with probe, store:
        for row in rows:
            container = row["blob_container"]
            if container not in unreachable:
                try:
                    probe.get_container_client(container).exists()
                    unreachable[container] = None
                except AzureError as exc:
                    unreachable[container] = f"{blob_unreachable_at(endpoint, exc)}; the document is left failed"
            if unreachable[container]:
                outcomes.append(_outcome(row, "not validated", False, "failed", detail=unreachable[container]))
                continue
            try:
                document = store.validate(row["document_id"])
            except NotFound as exc:
                outcomes.append(_outcome(row, "skipped", False, None, detail=one_line(str(exc))))
                continue
            status = document.text_extraction_status
            if status == TextExtractionStatus.READY:
                jobs = store.client.list_jobs(document.id)
                outcomes.append(_outcome(row, "validated again", True, status, job_id=jobs[-1].id if jobs else None,
                                         attempt=jobs[-1].attempt if jobs else None))
            elif status == TextExtractionStatus.FAILED:
                outcomes.append(_outcome(row, "rejected again", False, status, detail=document.status_reason))
            else:  # 'not ready': the blob could not be read; the DMS validates it again later
                outcomes.append(_outcome(row, "blob not retrievable", False, status, detail=document.status_reason))
    return outcomes


def _print(rows: list[dict[str, Any]], dry_run: bool) -> None:
    grid = render.table("DOC", "ACTION", "STATUS NOW", "JOB", "ATTEMPT", "DETAIL", right=["DOC", "JOB", "ATTEMPT"])
    for row in rows:
        grid.add_row(str(row["document_id"]), Text(row["action"], style="" if row["ok"] else "red"),
                     render.status_text(row["text_extraction_status"]), render.cell(row["job_id"]),
                     render.cell(row["attempt"]), render.cell(row["detail"]))
    render.print_renderable(grid)
    done = sum(row["ok"] for row in rows)
    if dry_run:
        click.echo(f"dry run: {done} of {len(rows)} would be queued again; nothing changed")
    else:
        click.echo(f"{done} of {len(rows)} queued again")
