"""The read-mostly operations commands: status, show, jobs, stuck, failures, reap, metrics.

``docstatus.cli`` loads these (and retry and watch, imported here from their modules) by name on
first use. Every one takes ``--dsn`` and, when it reads, ``--json``.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from docstatus.client import Client
from docstatus.models import DocumentStateInfo, JobStatus, TextExtractionStatus
from docstatus.ops import render
from docstatus.ops.db import DocumentNotFound, session
from docstatus.ops.render import Text
from docstatus.ops.retry import retry
from docstatus.ops.stopping import stop_signals
from docstatus.ops.watch import watch
from docstatus.options import dsn_option, json_option
from docstatus.textcells import escape_cell

_KIND_TITLES = {"text_extraction": "TEXT EXTRACTION", "processing": "PROCESSING", "job": "JOBS"}


# --- status ---------------------------------------------------------------------------------


@click.command()
@dsn_option
@json_option
def status(dsn: str, as_json: bool) -> None:
    """How many documents and jobs are in each status.

    Both status columns of the documents, the jobs, and how many documents are stuck.
    """
    with session(dsn) as conn:
        client = Client(conn)
        rows = client.status_counts()
        stuck = sum(client.stuck_counts_by_state().values())
        status_order = _status_order(client.document_states())
    counts: dict[str, dict[str, int]] = {kind: {} for kind in status_order}
    for row in rows:
        counts.setdefault(str(row.kind), {})[row.status] = row.count
    for kind, order in status_order.items():
        # Lifecycle order first; a status the database knows and this client does not, after.
        known = {status_name: counts[kind].get(status_name, 0) for status_name in order}
        counts[kind] = known | {name: value for name, value in counts[kind].items() if name not in known}
    if as_json:
        render.print_json({**counts, "stuck": stuck})
        return

    grid = render.table(*(header for kind in counts for header in (_KIND_TITLES.get(kind, kind.upper()), "COUNT")),
                        right=["COUNT"])
    columns = [list(by_status.items()) for by_status in counts.values()]
    for index in range(max(len(column) for column in columns)):
        cells: list[Any] = []
        for column in columns:
            if index < len(column):
                name, count = column[index]
                cells += [render.status_text(name), str(count)]
            else:
                cells += ["", ""]
        grid.add_row(*cells)
    render.print_renderable(grid)
    document_total = sum(counts["text_extraction"].values())
    job_total = sum(counts["job"].values())
    summary = f"{document_total} documents, {job_total} jobs, "
    render.print_renderable(Text(summary) + Text(
        f"{stuck} stuck" + (" (docstatus stuck)" if stuck else ""), style="bold red" if stuck else "green"))


def _status_order(states: list[DocumentStateInfo]) -> dict[str, list[str]]:
    """The rows of `status` in lifecycle order (document_states' display order), not alphabetical."""
    return {
        "text_extraction": list(dict.fromkeys(str(state.text_extraction_status) for state in states)),
        "processing": list(dict.fromkeys(str(state.processing_status) for state in states)),
        "job": [str(status) for status in JobStatus],
    }


# --- show -----------------------------------------------------------------------------------


# A negative id ("show -1") is an id that does not exist, not an option click does not know.
@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("document_id", metavar="DOC", type=int)
@dsn_option
@json_option
def show(document_id: int, dsn: str, as_json: bool) -> None:
    """One document: statuses, jobs and event timeline.

    Both statuses and for how long, the current job and last error, every job attempt with
    how long it waited and ran, and every status change with the time since the one before.
    """
    with session(dsn) as conn:
        client = Client(conn)
        overview = client.document_overview(document_id)
        if overview is None:
            raise DocumentNotFound(document_id)
        jobs = client.list_jobs(document_id)
        events = client.history(document_id)
    document = dataclasses.asdict(overview)
    job_rows = [_job_row(job) for job in jobs]
    event_rows = _timeline(events)
    if as_json:
        render.print_json({"document": document, "jobs": job_rows, "events": event_rows})
        return

    title = Text(f"Document {document_id}  ", style="bold") + Text(escape_cell(document["filename"]))
    render.print_renderable(title)
    facts = render.table("", "value")
    facts.show_header = False
    facts.add_row("state", render.status_text(document["state"])
                  + Text(f"  for {render.fmt_duration(document['in_status_for'])}"
                                f" (since {render.fmt_time(document['status_entered_at'])})"))
    facts.add_row("text extraction", render.status_text(document["text_extraction_status"]))
    facts.add_row("processing", render.status_text(document["processing_status"]))
    if document["job_id"] is not None:
        held = ""
        if document["worker_id"] and document["job_status"] == JobStatus.PENDING_EXTRACTION:
            held = f", held by {document['worker_id']} until {render.fmt_time(document['lease_expires_at'])}"
        facts.add_row("current job", f"{document['job_id']} (attempt {document['attempt']}, "
                                     f"{document['job_status']}{held})")
    if document["last_error"]:
        facts.add_row("last error", Text(document["last_error"], style="red"))
    if document["status_reason"] and document["status_reason"] != document["last_error"]:
        facts.add_row("reason", document["status_reason"])
    facts.add_row("blob", f"{document['blob_container']}/{document['blob_name']}")
    facts.add_row("type, size", ", ".join(filter(None, [document["mime_type"] or "type unknown",
                                                        render.fmt_bytes(document["size_bytes"])])))
    facts.add_row("created", render.fmt_time(document["created_at"]))
    render.print_renderable(facts)

    click.echo()
    render.heading(f"Jobs ({len(job_rows)})")
    if job_rows:
        grid = render.table("JOB", "ATTEMPT", "STATUS", "WORKER", "CREATED", "WAITED", "RAN", "ERROR",
                            right=["JOB", "ATTEMPT", "WAITED", "RAN"])
        for job in job_rows:
            grid.add_row(str(job["job_id"]), str(job["attempt"]), render.status_text(job["status"]),
                         render.cell(job["worker_id"]), render.fmt_time(job["created_at"]),
                         render.fmt_duration(job["waited"]), render.fmt_duration(job["ran"]),
                         Text(job["error_message"] or "", style="red")
                         + render.dim(" (released)" if job["released"] else ""))
        render.print_renderable(grid)
    else:
        click.echo("none: the document never had an extraction job")

    click.echo()
    render.heading(f"Timeline ({len(event_rows)} events)")
    grid = render.table("TIME", "AFTER", "KIND", "FROM", "TO", "JOB", "DETAIL", right=["AFTER", "JOB"])
    for event in event_rows:
        grid.add_row(render.fmt_time(event["occurred_at"]), render.fmt_duration(event["after"]),
                     event["kind"], render.status_text(event["from_status"]), render.status_text(event["to_status"]),
                     render.cell(event["job_id"]), render.cell(event["detail"]))
    render.print_renderable(grid)


def _job_row(job) -> dict[str, Any]:
    """A job with how long it waited to be claimed and how long it ran (so far, if running)."""
    now = datetime.now(UTC)
    waited = None if job.started_at is None else job.started_at - max(job.created_at, job.not_before)
    ran = None if job.started_at is None else (job.completed_at or now) - job.started_at
    return {
        "job_id": job.id, "attempt": job.attempt, "status": job.status, "worker_id": job.worker_id,
        "lease_expires_at": job.lease_expires_at, "created_at": job.created_at, "not_before": job.not_before,
        "started_at": job.started_at, "completed_at": job.completed_at, "waited": waited, "ran": ran,
        "error_message": job.error_message, "released": job.released, "idempotency_key": job.idempotency_key,
    }


def _timeline(events) -> list[dict[str, Any]]:
    """Events with the time since the previous one (how long the previous state lasted)."""
    rows = []
    previous = None
    for event in events:
        rows.append({
            "event_id": event.id, "occurred_at": event.occurred_at, "kind": event.kind, "job_id": event.job_id,
            "from_status": event.from_status, "to_status": event.to_status, "detail": event.detail,
            "after": None if previous is None else event.occurred_at - previous,
        })
        previous = event.occurred_at
    return rows


# --- jobs -----------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_SECONDS_OF_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class Since(click.ParamType):
    """A time: a duration ago (90s, 15m, 2h, 1d, 1w) or an ISO 8601 date/time (local if no offset)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value)
        if match := _DURATION.match(text):
            seconds = float(match.group(1)) * _SECONDS_OF_UNIT[match.group(2).lower()]
            return datetime.now(UTC) - timedelta(seconds=seconds)
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            self.fail(f"{text!r} is neither a duration ago (90s, 15m, 2h, 1d, 1w) nor an ISO 8601 time "
                      "(2024-05-01, 2024-05-01T12:30, 2024-05-01T12:30:00+02:00)", param, ctx)
        return moment if moment.tzinfo else moment.astimezone()


@click.command()
@click.option("--status", "job_status", type=click.Choice([str(s) for s in JobStatus], case_sensitive=False),
              help="Only jobs in this status (a job a worker holds is still 'pending extraction').")
@click.option("--since", type=Since(), help="Only jobs created or ended since then: 15m, 2h, 1d, or an ISO time.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="At most this many, newest first.")
@dsn_option
@json_option
def jobs(job_status: str | None, since: datetime | None, limit: int, dsn: str, as_json: bool) -> None:
    """Extraction jobs, newest first, with their errors.

    Attempt, holder and lease, how long each ran (so far), and the error of failed ones.
    """
    with session(dsn) as conn:
        rows = [dataclasses.asdict(job) for job in Client(conn).recent_jobs(
            job_status.lower() if job_status else None, since, limit)]
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        click.echo("no jobs" + (" match" if job_status or since else ""))
        return
    grid = render.table("JOB", "DOC", "ATTEMPT", "STATUS", "WORKER", "CREATED", "RAN", "ERROR",
                        right=["JOB", "DOC", "ATTEMPT", "RAN"])
    for row in rows:
        worker = render.cell(row["worker_id"])
        if row["worker_id"] and row["status"] == JobStatus.PENDING_EXTRACTION:
            worker += f" until {render.fmt_clock(row['lease_expires_at'], millis=False)}"
        grid.add_row(str(row["job_id"]), str(row["document_id"]), str(row["attempt"]),
                     render.status_text(row["status"]), worker, render.fmt_time(row["created_at"]),
                     render.fmt_duration(row["ran_for"]),
                     Text(row["error_message"] or "", style="red")
                     + render.dim(" (released)" if row["released"] else ""))
    render.print_renderable(grid)


# --- stuck ----------------------------------------------------------------------------------


@click.command()
@click.option("--check", is_flag=True,
              help="Run docstatus.check_stuck() first: it alerts (NOTIFY docstatus_alerts) on documents "
                   "newly stuck, once each, and folds the status counters (needs docstatus_worker).")
@dsn_option
@json_option
def stuck(check: bool, dsn: str, as_json: bool) -> None:
    """Documents in a state longer than its SLA.

    The SLAs are rows of docstatus.stage_slas (edit them there). Longest stuck first, with the
    active job and its holder, and when check_stuck alerted on it.
    """
    with session(dsn) as conn:
        client = Client(conn)
        newly_alerted = {row.document_id for row in client.check_stuck()} if check else set()
        stuck_now = client.stuck_documents()
        alerted_at = {(alert.document_id, alert.status_entered_at): alert.alerted_at for alert in client.stuck_alerts()}
    rows = [{**dataclasses.asdict(row), "alerted_at": alerted_at.get((row.document_id, row.status_entered_at)),
             "newly_alerted": row.document_id in newly_alerted} for row in stuck_now]
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        click.echo("no stuck documents")
        return
    grid = render.table("DOC", "STATE", "FOR", "SLA", "SINCE", "JOB", "ATTEMPT", "WORKER", "ALERTED", "REASON",
                        right=["DOC", "FOR", "SLA", "JOB", "ATTEMPT"])
    for row in rows:
        alerted = "now" if row["newly_alerted"] else render.fmt_time(row["alerted_at"]) or "not yet"
        grid.add_row(str(row["document_id"]), render.status_text(row["state"]),
                     Text(render.fmt_duration(row["in_state_for"]), style="red"),
                     render.fmt_duration(row["sla"]), render.fmt_time(row["status_entered_at"]),
                     render.cell(row["job_id"]), render.cell(row["attempt"]), render.cell(row["worker_id"]),
                     alerted, render.cell(row["status_reason"]))
    render.print_renderable(grid)
    if check:
        click.echo(f"{len(newly_alerted)} newly alerted")


# --- failures -------------------------------------------------------------------------------


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="At most this many patterns.")
@dsn_option
@json_option
def failures(limit: int, dsn: str, as_json: bool) -> None:
    """Failed jobs grouped by error pattern.

    Ids, times and numbers in the errors are made generic (docstatus.normalise_error), most
    failures first. A pattern shown here can be given to
    `docstatus retry --all-failed --error-like PATTERN`.
    """
    with session(dsn) as conn:
        rows = [dataclasses.asdict(pattern) for pattern in Client(conn).failure_summary(limit)]
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        click.echo("no failed jobs")
        return
    grid = render.table("FAILURES", "DOCS", "LAST", "FIRST", "PATTERN", "EXAMPLE DOCS",
                        right=["FAILURES", "DOCS"])
    for row in rows:
        grid.add_row(Text(str(row["failures"]), style="red"), str(row["documents"]),
                     render.fmt_time(row["last_seen"]), render.fmt_time(row["first_seen"]),
                     row["error_pattern"], " ".join(map(str, row["example_document_ids"])))
    render.print_renderable(grid)


# --- reap -----------------------------------------------------------------------------------


@click.command()
@dsn_option
@json_option
def reap(dsn: str, as_json: bool) -> None:
    """End jobs whose lease ran out (their worker died).

    Each such job fails 'lease expired'; its document is queued again while attempts remain.
    Workers run this periodically anyway; it needs the docstatus_worker role.
    """
    with session(dsn) as conn:
        client = Client(conn)
        reaped = client.reap_expired_jobs()
        documents = {job.document_id: client.get_document(job.document_id) for job in reaped}
    rows: list[dict[str, Any]] = []
    for job in reaped:
        document = documents[job.document_id]
        rows.append({"job_id": job.id, "document_id": job.document_id, "attempt": job.attempt,
                     "worker_id": job.worker_id, "lease_expires_at": job.lease_expires_at,
                     "error_message": job.error_message,
                     "document_status": None if document is None else document.text_extraction_status})
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        click.echo("no expired leases")
        return
    grid = render.table("JOB", "DOC", "ATTEMPT", "WORKER", "LEASE ENDED", "DOCUMENT NOW",
                        right=["JOB", "DOC", "ATTEMPT"])
    for row in rows:
        now = render.status_text(row["document_status"])
        if row["document_status"] == TextExtractionStatus.READY:
            now += render.dim(" (next attempt queued)")
        elif row["document_status"] == TextExtractionStatus.FAILED:
            now += render.dim(" (attempts used up)")
        grid.add_row(str(row["job_id"]), str(row["document_id"]), str(row["attempt"]), render.cell(row["worker_id"]),
                     render.fmt_time(row["lease_expires_at"]), now)
    render.print_renderable(grid)
    click.echo(f"{len(rows)} expired {'job' if len(rows) == 1 else 'jobs'} reaped")


# --- metrics --------------------------------------------------------------------------------


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, metavar="PORT",
              help="TCP port to serve /metrics on (0: any free port, printed on stderr).")
@click.option("--host", "--addr", "addr", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 (or ::) to be scraped from other hosts.")
@click.option("--failures-every", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
              help="Seconds between two reads of failure_summary (it normalises every failed job's error).")
@dsn_option
def metrics(port: int, addr: str, failures_every: float, dsn: str) -> None:
    """Serve Prometheus metrics on --port until Ctrl-C.

    On http://ADDR:PORT/metrics: documents and jobs by status, stuck documents by state, failed
    jobs by error pattern, and histograms of how long documents spend in 'ocr running' and
    'llm running'. The histograms start empty when the exporter starts: they count the stays
    that end after it (read from status_events), not the ones before.
    """
    from docstatus.ops.metrics import serve_metrics

    with session(dsn):
        pass  # reachable, or one clear line now rather than a silent docstatus_database_up 0
    try:
        server = serve_metrics(dsn, port, addr, failures_every=failures_every)
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from exc
    with server, stop_signals() as stop:
        click.echo(f"serving Prometheus metrics on {server.url} (Ctrl-C to stop)", err=True)
        while not stop.wait(0.5):
            pass


__all__ = ["failures", "jobs", "metrics", "reap", "retry", "show", "status", "stuck", "watch"]
