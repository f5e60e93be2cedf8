"""How the operations commands print: aligned tables for people, JSON for scripts.

Colour only when stdout is a terminal (rich decides; NO_COLOR and FORCE_COLOR are honoured).
Piped, a table is plain text without trailing blanks, one row per line, never wrapped.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from docstatus.models import Cursor
from docstatus.textcells import escape_cell

# Wide enough that rich never wraps a row of a piped table.
_PIPED_WIDTH = 100_000

# One colour per meaning: finished well, finished badly, moving, waiting.
_STYLE_OF_STATUS = {
    "completed": "green", "done": "green",
    "failed": "bold red", "stuck": "bold red",
    "in progress": "yellow", "ocr running": "yellow", "llm running": "yellow",
    "ready": "cyan", "queued": "cyan", "pending extraction": "cyan",
    "not ready": "blue", "uploaded": "blue",
}


def console() -> Console:
    """A console on the current stdout (CliRunner swaps it), coloured only on a terminal."""
    probe = Console(highlight=False)
    if probe.is_terminal:
        return probe
    return Console(highlight=False, width=_PIPED_WIDTH, soft_wrap=False)


class _EscapingTable(Table):
    """A rich Table whose text cells have their control characters escaped (``textcells``), and
    whose plain strings are never read as rich markup: a filename ``[red]x`` prints as written."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(_safe_cell(cell) for cell in renderables), **kwargs)


def _safe_cell(cell: Any) -> Any:
    if isinstance(cell, str):
        return Text(escape_cell(cell))
    if isinstance(cell, Text) and not cell.plain.isprintable():
        return Text(escape_cell(cell.plain), style=cell.style)
    return cell


def table(*columns: str, right: Iterable[str] = ()) -> Table:
    """An aligned table without borders: bold headers, two blanks between columns.

    ``right``: columns aligned right (ids, counts, durations), never folded; on a terminal too
    narrow for a row, rich folds the widest of the others (the errors, usually) first.
    """
    right = set(right)
    result = _EscapingTable(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        result.add_column(column, justify="right" if column in right else "left", no_wrap=column in right,
                          overflow="fold")
    return result


def print_renderable(renderable: Any) -> None:
    """Prints a table or text: as rich renders it on a terminal, else plain lines, right-trimmed."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    click.echo("\n".join(lines))


def status_style(status: object) -> str:
    """The rich style of a status (or state) string: the one colour map of human output."""
    return _STYLE_OF_STATUS.get(str(status), "")


def status_text(status: object) -> Text:
    """A status (or state) string in its colour; empty for None."""
    if status is None:
        return Text("")
    return Text(str(status), style=status_style(status))


def heading(text: str) -> None:
    print_renderable(Text(text, style="bold underline"))


def dim(text: str) -> Text:
    return Text(text, style="dim")


def fmt_time(value: datetime | None) -> str:
    """Local time to the second, as people read it; '' for None."""
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_clock(value: datetime | None, *, millis: bool = True) -> str:
    """Local time of day, to the millisecond by default (for a live stream)."""
    if value is None:
        return ""
    return value.astimezone().strftime("%H:%M:%S.%f")[:-3 if millis else -7]


def fmt_duration(value: timedelta | float | None) -> str:
    """1.234s, 3m12s, 2h05m, 3d04h: two units at most; '' for None."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{sign}{seconds:.3f}s".replace(".000s", "s") if seconds else "0s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


def fmt_bytes(size: int | None) -> str:
    """2048 -> '2.0 KiB'; '' for None."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def cell(value: object) -> str:
    """A value for a table cell: '' for None, control characters escaped."""
    return escape_cell(value)


# --- JSON -----------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Rows as JSON: times in ISO 8601, durations in seconds, enums as their strings."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, Cursor):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(to_jsonable(value), ensure_ascii=False))
