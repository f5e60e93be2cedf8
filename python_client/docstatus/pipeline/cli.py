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

from docstatus.options import blob_connection_string_option, dsn_option


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
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs processed at the same time (threads).")
@click.option("--once", is_flag=True, help="Process the jobs that can be claimed now, then exit.")
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
def worker(dsn: str, blob_connection_string: str | None, concurrency: int, once: bool, lease: float,
           grace_period: float, poll_interval: float, ocr_spec: str | None, llm_spec: str | None,
           worker_id: str | None, log_level: str, metrics_port: int | None) -> None:
    """Run the OCR -> LLM pipeline on queued documents until SIGTERM/SIGINT (or --once).

    Logs one JSON line per status change on stderr. On SIGTERM/SIGINT it stops claiming, lets
    running jobs finish within --grace-period, releases the others for an immediate retry, and
    exits 0; a second signal releases at once.
    """
    import psycopg
    import psycopg_pool

    from docstatus.ops.db import refuse_standby
    from docstatus.pipeline.logjson import configure_json_logging
    from docstatus.pipeline.worker import Worker

    configure_json_logging(level=getattr(logging, log_level.upper()))
    ocr = load_object(ocr_spec) if ocr_spec else None
    llm = load_object(llm_spec) if llm_spec else None
    try:
        with psycopg.connect(dsn) as probe:
            refuse_standby(probe)  # a worker only writes
        pipeline = Worker(dsn, blob_connection_string, ocr=ocr, llm=llm, concurrency=concurrency,
                          worker_id=worker_id, lease=timedelta(seconds=lease), grace_period=grace_period,
                          poll_interval=poll_interval)
    except (psycopg.Error, psycopg_pool.PoolTimeout, ValueError) as exc:
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


if __name__ == "__main__":  # python -m docstatus.pipeline.cli
    worker()
