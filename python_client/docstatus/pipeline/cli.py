"""``docstatus worker``: the pipeline worker as a command, logging JSON lines.

Registered on the ``docstatus`` click group by ``docstatus.cli``. Importing this module is
cheap: the worker and its engines load when the command runs.
"""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta
from typing import Any

import click

from docstatus.options import blob_connection_string_option, blob_timeout_options, dsn_option


def load_object(spec: str) -> Any:
    """'package.module:attribute' -> the attribute; a class is instantiated without arguments."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not module:attribute")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}") from exc
    return value() if isinstance(value, type) else value


@click.command()
@dsn_option
@blob_connection_string_option
@blob_timeout_options
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs processed at the same time (threads).")
@click.option("--once", is_flag=True,
              help="Process the jobs that can be claimed now, then exit: 0 when every claimed job ended, 1 when "
                   "PostgreSQL or the blob store could not be reached (at start: within seconds).")
@click.option("--lease", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds a claim lasts without a heartbeat (heartbeats every third of it).")
@click.option("--grace-period", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Seconds running jobs may take to finish after SIGTERM/SIGINT before they are released.")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between looks for work when no NOTIFY arrives.")
@click.option("--ocr", "ocr_spec", metavar="MODULE:ATTR", default=None,
              help="Your OCR engine, a callable (data: bytes, mime_type: str) -> str [default: built-in].")
@click.option("--llm", "llm_spec", metavar="MODULE:ATTR", default=None,
              help="Your field extractor, a callable (text: str) -> dict [default: chat completions when "
                   "DOCSTATUS_LLM_URL is set, else rule-based].")
@click.option("--worker-id", default=None, help="Name in leases and logs [default: host-pid-random].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Also serve the Prometheus metrics of `docstatus metrics` on this port (0: a free one).")
def worker(dsn: str, blob_connection_string: str | None, blob_timeouts, concurrency: int, once: bool, lease: float,
           grace_period: float, poll_interval: float, ocr_spec: str | None, llm_spec: str | None,
           worker_id: str | None, log_level: str, metrics_port: int | None) -> None:
    """Run the OCR -> LLM pipeline on queued documents until SIGTERM/SIGINT (or --once).

    Logs one JSON line per status change on stderr. On SIGTERM/SIGINT it stops claiming, lets
    running jobs finish within --grace-period, releases the others for an immediate retry, and
    exits 0; a second signal releases at once (within a few seconds, PostgreSQL down or not).

    When a dependency is down: at start, PostgreSQL and the blob store are probed; with --once
    one that does not answer is one line on stderr and exit status 1. A long-running worker logs
    one WARNING per outage and tries again with backoff; while the blob store is down it claims
    nothing. A download that cannot reach the store fails the attempt (retried after the backoff);
    a blob that is not there fails the document.
    """
    import threading

    import psycopg_pool

    from docstatus.dms.blob_store import probe as probe_blob_store
    from docstatus.dms.config import StoreConfig
    from docstatus.ops.db import connect, refuse_standby
    from docstatus.pipeline.health import BLOB_STORE, POSTGRES, Dependencies, probe_postgres, wait_for_dependencies
    from docstatus.pipeline.logjson import configure_json_logging
    from docstatus.pipeline.signals import stop_on_signals
    from docstatus.pipeline.worker import Worker

    connection_string = blob_connection_string or StoreConfig.from_env().connection_string
    probes = {POSTGRES: lambda: probe_postgres(dsn),
              BLOB_STORE: lambda: probe_blob_store(connection_string, blob_timeouts)}
    if once:
        postgres_problem = probes[POSTGRES]()
        if postgres_problem is None:
            # A standby is the first thing to say: whatever the blob store does, a worker only writes.
            with connect(dsn, application_name="docstatus-worker") as probe:
                refuse_standby(probe)
        problems = [problem for problem in (postgres_problem, probes[BLOB_STORE]()) if problem]
        if problems:
            raise click.ClickException("; ".join(problems))
    configure_json_logging(level=getattr(logging, log_level.upper()))
    # The pool logs each failed reconnection (two lines, every second or so); the worker says
    # it once per outage instead (docstatus.pipeline.health).
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    if not once:
        stopping = threading.Event()
        with stop_on_signals(lambda _name: stopping.set()):
            if not wait_for_dependencies(probes, stopping, Dependencies(worker_id or "")):
                return  # stopped before PostgreSQL and the blob store answered
    ocr = load_object(ocr_spec) if ocr_spec else None
    llm = load_object(llm_spec) if llm_spec else None
    if not once:  # --once refused a standby above already
        with connect(dsn, application_name="docstatus-worker") as probe:
            refuse_standby(probe)  # a worker only writes
    try:
        pipeline = Worker(dsn, connection_string, ocr=ocr, llm=llm, concurrency=concurrency,
                          worker_id=worker_id, lease=timedelta(seconds=lease), grace_period=grace_period,
                          poll_interval=poll_interval, blob_timeouts=blob_timeouts,
                          blob_probe=probes[BLOB_STORE])
    except psycopg_pool.PoolTimeout as exc:
        problem = probe_postgres(dsn) or f"PostgreSQL did not give the worker its connections: {exc}"
        raise click.ClickException(problem) from exc
    except ValueError as exc:
        raise click.ClickException(f"cannot start the worker: {exc}") from exc
    metrics = None
    if metrics_port is not None:
        from docstatus.ops.metrics import serve_metrics

        # Its own connection, not one of the worker's pool: a slow scrape never delays a job.
        try:
            metrics = serve_metrics(dsn, metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on port {metrics_port}: {exc}") from exc
        logging.getLogger("docstatus.worker").info("metrics on %s", metrics.url)
    try:
        pipeline.run(until_idle=once)
    finally:
        if metrics is not None:
            metrics.close()
    if once and pipeline.dependencies.failures:
        down = [reason for reason in (pipeline.dependencies.reason(name) for name in (POSTGRES, BLOB_STORE)) if reason]
        raise click.ClickException("; ".join(down) or "a dependency failed while the worker ran")


if __name__ == "__main__":  # python -m docstatus.pipeline.cli
    worker()
