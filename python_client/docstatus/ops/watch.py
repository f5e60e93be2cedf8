"""``docstatus watch``: status changes as they happen, until Ctrl-C.

Events come from ``docstatus.Subscriber``: the durable log (``status_events``), each event once,
in order, across reconnects. With ``--alerts`` only failures are shown, plus the stuck alerts of
``docstatus.check_stuck()``: those exist only as NOTIFYs on ``docstatus_alerts`` (the durable
record is ``stuck_alerts``), so they are read from a LISTEN of their own and labelled as hints:
one sent while this command was not connected is not shown.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import psycopg

from docstatus.listener import ALERTS_CHANNEL, EVENTS_CHANNEL, Listener
from docstatus.models import Cursor, EventKind, StatusEvent
from docstatus.ops import render
from docstatus.ops.db import one_line, session
from docstatus.ops.stopping import stop_signals
from docstatus.options import dsn_option, json_option
from docstatus.subscriber import Subscriber
from docstatus.textcells import escape_cell


class _Printer:
    """Writes events and hints from the subscriber's and the hint listener's threads, one line
    each, flushed; remembers when stdout went away (``watch ... | head``)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.broken = threading.Event()
        self._lock = threading.Lock()

    def event(self, event: StatusEvent) -> None:
        if self.as_json:
            self._json({"type": "event", "event_id": event.id, "cursor": event.cursor,
                        "document_id": event.document_id, "job_id": event.job_id, "kind": event.kind,
                        "from_status": event.from_status, "to_status": event.to_status, "detail": event.detail,
                        "occurred_at": event.occurred_at})
            return
        failed = event.to_status == "failed"
        parts = [
            click.style(render.fmt_clock(event.occurred_at), dim=True),
            click.style(f"doc {event.document_id}", bold=True),
            f"{event.kind:<15}",
            f"{_styled(event.from_status) if event.from_status else '(new)'} -> {_styled(event.to_status)}",
        ]
        if event.job_id is not None:
            parts.append(f"job {event.job_id}")
        if event.detail:
            detail = escape_cell(event.detail)
            parts.append(click.style(detail, fg="red") if failed else detail)
        self._line("  ".join(parts))

    def hint(self, payload: dict[str, Any]) -> None:
        sla = seconds_of(payload.get("sla"))
        if self.as_json:
            # Seconds, as every other duration of --json (the NOTIFY carries an SQL interval).
            self._json({"type": "hint", **payload, "sla": sla})
            return
        where = f" job {payload['job_id']}" if payload.get("job_id") is not None else ""
        self._line("  ".join([
            click.style(_clock_of(payload.get("at")), dim=True),
            click.style(f"doc {payload.get('document_id')}", bold=True),
            click.style("HINT stuck", fg="yellow", bold=True),
            f"in {escape_cell(payload.get('state'))!r} since {_time_of(payload.get('entered_at'))}, longer than "
            f"its SLA {render.fmt_duration(sla) if isinstance(sla, float) else escape_cell(sla)}{where} "
            "(check_stuck alert; docstatus stuck lists all)",
        ]))

    def _json(self, value: dict[str, Any]) -> None:
        self._write(json.dumps(render.to_jsonable(value), ensure_ascii=False, separators=(",", ":")))

    def _line(self, text: str) -> None:
        self._write(text, styled=True)

    def _write(self, text: str, styled: bool = False) -> None:
        with self._lock:
            if self.broken.is_set():
                return
            try:
                if styled:
                    click.echo(text)  # click drops the colours when stdout is not a terminal
                else:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # the reader went away, or stdout was closed
                self.broken.set()
                _silence_stdout()


def _clock_of(text: object) -> str:
    try:
        return render.fmt_clock(datetime.fromisoformat(str(text)))
    except ValueError:
        return str(text)


# An interval as PostgreSQL writes it to JSON: ISO 8601 ('PT10S', 'P1DT2H') or the default
# style ('00:00:10', '1 day 02:00:00', '3 days').
_ISO_DURATION = re.compile(r"^P(?:(?P<d>[\d.]+)D)?(?:T(?:(?P<h>[\d.]+)H)?(?:(?P<m>[\d.]+)M)?(?:(?P<s>[\d.]+)S)?)?$")
_PG_INTERVAL = re.compile(r"^(?:(?P<d>-?\d+) days? ?)?(?:(?P<h>-?\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d+)?))?$")


def seconds_of(value: object) -> object:
    """An SLA from a NOTIFY payload in seconds (a float); a value it cannot read, as it came."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value or "").strip()
    match = _ISO_DURATION.match(text) or _PG_INTERVAL.match(text)
    if not text or match is None:
        return value
    parts = {key: float(match[key] or 0) for key in ("d", "h", "m", "s")}
    return parts["d"] * 86_400 + parts["h"] * 3_600 + parts["m"] * 60 + parts["s"]


def _time_of(text: object) -> str:
    try:
        return render.fmt_time(datetime.fromisoformat(str(text)))
    except ValueError:
        return str(text)


def _styled(status: object) -> str:
    """The status in render's colour, as click styles a line (watch prints lines, not tables)."""
    style = render.status_style(status).split()
    colour = style[-1] if style else None
    return click.style(str(status), fg=colour, bold="bold" in style) if colour else str(status)


def _silence_stdout() -> None:
    # Python would complain about the broken pipe once more when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _StuckHints:
    """Stuck alerts from a ``docstatus.listener.Listener`` on docstatus_alerts, handed to ``on_hint``.

    Failure alerts on the same channel are left to the subscriber, which reads them durably.
    Hints sent while the listener's connection is down are lost, as hints are.
    """

    def __init__(self, dsn: str, document_ids: frozenset[int] | None,
                 on_hint: Callable[[dict[str, Any]], None]) -> None:
        self._document_ids = document_ids
        self._on_hint = on_hint
        self._listener = Listener(dsn, (ALERTS_CHANNEL,), self._handle, name="docstatus-watch-hints")
        self.listening = self._listener.listening

    def start(self) -> None:
        self._listener.start()

    def stop(self) -> None:
        self._listener.stop(5)

    def _handle(self, notification: psycopg.Notify) -> None:
        try:
            alert = json.loads(notification.payload)
        except ValueError:
            return
        if not isinstance(alert, dict) or alert.get("kind") != "stuck":
            return
        if self._document_ids is not None and alert.get("document_id") not in self._document_ids:
            return
        self._on_hint(alert)


class _CursorType(click.ParamType):
    name = "CURSOR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Cursor:
        if isinstance(value, Cursor):
            return value
        if str(value).strip().lower() in ("beginning", "start", "0"):
            return Cursor.beginning()
        try:
            return Cursor.parse(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a cursor: 'TX_ID:EVENT_ID' as --json prints it, or 'beginning'", param, ctx)


@click.command()
@click.option("--document", "document_ids", type=int, multiple=True, metavar="DOC",
              help="Only this document's events (repeat for several).")
@click.option("--kind", "kinds", type=click.Choice([str(kind) for kind in EventKind]), multiple=True,
              help="Only events of this kind (repeat for several).")
@click.option("--alerts", is_flag=True,
              help="Only alerts: failures, and stuck hints from check_stuck (NOTIFY only: one sent while "
                   "watch was not connected is not shown).")
@click.option("--since", type=_CursorType(), default=None,
              help="Replay from this cursor ('TX_ID:EVENT_ID' from --json, or 'beginning') [default: from now].")
@dsn_option
@json_option
def watch(document_ids: tuple[int, ...], kinds: tuple[str, ...], alerts: bool, since: Cursor | None,
          dsn: str, as_json: bool) -> None:
    """Follow status changes live until Ctrl-C.

    --json prints one object per line. Events come from the durable log: none is lost or
    repeated across reconnects, and a JSON event's cursor resumes after it (--since).
    """
    with session(dsn):
        pass  # reachable, or one clear line now: the subscriber would retry for ever
    printer = _Printer(as_json)
    documents = frozenset(document_ids) if document_ids else None
    subscriber = Subscriber(dsn, channels=(ALERTS_CHANNEL,) if alerts else (EVENTS_CHANNEL, ALERTS_CHANNEL),
                            since=since, document_ids=documents, kinds=kinds or None)
    hints = _StuckHints(dsn, documents, printer.hint) if alerts else None

    def running() -> bool:
        return thread.is_alive() and not printer.broken.is_set()

    with stop_signals() as stop:
        thread = subscriber.start(printer.event)
        if hints is not None:
            hints.start()
        while running() and not stop.is_set():
            if subscriber.wait_caught_up(0.2) and (hints is None or hints.listening.is_set()):
                what = "alerts" if alerts else "events"
                click.echo(f"watching {what} after cursor {subscriber.cursor} (Ctrl-C to stop)", err=True)
                break
        while running() and not stop.wait(0.2):
            pass
    subscriber.stop()
    if hints is not None:
        hints.stop()
    if subscriber.error is not None and not printer.broken.is_set():
        raise click.ClickException(f"watch stopped: {one_line(str(subscriber.error))}")
