"""Charts as inline SVG, drawn on the server: no charting library, nothing to load.

Each function returns markup (``markupsafe.Markup``); every text it puts in is escaped, and it
uses presentation attributes only (the CSP forbids inline style).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from docstatus.models import DocumentsMinute, EventKind, StatusEvent

ENTERED_COLOUR = "#3b6fb6"
ENDED_COLOUR = "#3a9a5b"
STAGE_COLOURS = {
    "pending extraction": "#9aa5b1", "ocr running": "#3b6fb6", "llm running": "#7b5cb8",
    "done": "#3a9a5b", "failed": "#c0392b",
}


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}" role="img" aria-label="{escape(label)}">{"".join(body)}</svg>')


def per_minute_chart(minutes: Sequence[DocumentsMinute], width: int = 720, height: int = 140) -> Markup:
    """Two bars per minute: documents registered (entered) and finished (ended)."""
    top, bottom, left = 12, 20, 36
    plot_h = height - top - bottom
    peak = max([1, *(m.entered for m in minutes), *(m.ended for m in minutes)])
    slot = (width - left) / max(len(minutes), 1)
    bar = max(slot / 2 - 1, 1)
    body = [f'<text x="2" y="{top + 8}" font-size="10" fill="#555">{peak}</text>',
            f'<text x="2" y="{height - bottom}" font-size="10" fill="#555">0</text>',
            f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#bbb"/>']
    for i, minute in enumerate(minutes):
        x = left + i * slot
        for offset, value, colour, what in ((0, minute.entered, ENTERED_COLOUR, "entered"),
                                            (bar, minute.ended, ENDED_COLOUR, "ended")):
            h = plot_h * value / peak
            body.append(f'<rect x="{x + offset:.1f}" y="{height - bottom - h:.1f}" width="{bar:.1f}" '
                        f'height="{h:.1f}" fill="{colour}"><title>{minute.minute:%H:%M} {what}: {value}'
                        f'</title></rect>')
    if minutes:
        body.append(f'<text x="{left}" y="{height - 4}" font-size="10" fill="#555">{minutes[0].minute:%H:%M}</text>')
        body.append(f'<text x="{width - 30}" y="{height - 4}" font-size="10" fill="#555">'
                    f'{minutes[-1].minute:%H:%M}</text>')
    return _svg(width, height, body, "documents entered and ended per minute")


@dataclass(frozen=True)
class Stage:
    """One stay of a document in a processing stage: from its event to the next (or now)."""

    status: str
    started: datetime
    ended: datetime | None

    @property
    def duration(self) -> timedelta | None:
        return None if self.ended is None else self.ended - self.started


def stages(history: Sequence[StatusEvent]) -> list[Stage]:
    """The document's processing stages in order, each until the next one began."""
    moves = [event for event in history if event.kind == EventKind.PROCESSING]
    result = []
    for i, event in enumerate(moves):
        ended = moves[i + 1].occurred_at if i + 1 < len(moves) else None
        result.append(Stage(str(event.to_status), event.occurred_at, ended))
    return result


def timeline_chart(timeline: Sequence[Stage], now: datetime, final: Collection[str], width: int = 720) -> Markup:
    """One bar per stage on a shared time axis; a final stage (a status in ``final``: the
    processing statuses of final document states, done and failed) is a tick."""
    if not timeline:
        return Markup("")
    row, label_w = 22, 130
    height = row * len(timeline) + 24
    start = timeline[0].started
    end = max(now, *(s.started for s in timeline))
    span = max((end - start).total_seconds(), 0.001)
    scale = (width - label_w - 10) / span
    body = []
    for i, stage in enumerate(timeline):
        y = i * row + 4
        x = label_w + (stage.started - start).total_seconds() * scale
        stop = stage.ended or (stage.started if stage.status in final else now)
        w = max((stop - stage.started).total_seconds() * scale, 3)
        colour = STAGE_COLOURS.get(stage.status, "#888")
        took = "" if stage.duration is None else f" for {_seconds(stage.duration)}"
        body.append(f'<text x="0" y="{y + 13}" font-size="11" fill="#222">{escape(stage.status)}</text>')
        body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 8}" fill="{colour}">'
                    f'<title>{escape(stage.status)} from {stage.started:%H:%M:%S}{took}</title></rect>')
    body.append(f'<text x="{label_w}" y="{height - 4}" font-size="10" fill="#555">{start:%H:%M:%S}</text>')
    body.append(f'<text x="{width - 60}" y="{height - 4}" font-size="10" fill="#555">+{_seconds(end - start)}</text>')
    return _svg(width, height, body, "processing stages over time")


def _seconds(duration: timedelta) -> str:
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def state_diagram(states: Sequence[tuple[str, bool]], edges: Sequence[tuple[str, str]],
                  counts: dict[str, int], width: int = 760, height: int = 300) -> Markup:
    """The states as boxes with their counts, edges as arrows. ``states``: (name, final) in
    display order; all but the last on the top row, the last (the state every other one can
    fall into) centred below. Each edge bends a little to its right, so the two directions of a
    pair are two arrows."""
    box_w, box_h = 110, 46
    top = states[:-1] or states
    positions: dict[str, tuple[float, float]] = {}
    gap = (width - len(top) * box_w) / (len(top) + 1)
    for i, (name, _) in enumerate(top):
        positions[name] = (gap + i * (box_w + gap) + box_w / 2, 50)
    if len(states) > 1:
        positions[states[-1][0]] = (width / 2, height - 50)
    body = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for source, target in edges:
        if source not in positions or target not in positions:
            continue
        (x1, y1), (x2, y2) = positions[source], positions[target]
        x1, y1 = _border(x1, y1, x2, y2, box_w, box_h)
        x2, y2 = _border(x2, y2, x1, y1, box_w, box_h)
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1
        bend = 18
        cx, cy = (x1 + x2) / 2 + dy / length * bend, (y1 + y2) / 2 - dx / length * bend
        body.append(f'<path class="edge" d="M {x1:.1f} {y1:.1f} Q {cx:.1f} {cy:.1f} {x2:.1f} {y2:.1f}" fill="none" '
                    f'stroke="#555" stroke-width="1.3" marker-end="url(#arrow)"><title>{escape(source)} → '
                    f'{escape(target)}</title></path>')
    for name, final in states:
        x, y = positions[name]
        body.append(f'<g class="state" data-state="{escape(name)}">'
                    f'<rect x="{x - box_w / 2:.1f}" y="{y - box_h / 2:.1f}" width="{box_w}" height="{box_h}" rx="8" '
                    f'fill="{"#eef5ee" if final else "#eef2fa"}" stroke="#345" stroke-width="{2 if final else 1}"/>'
                    f'<text x="{x:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="13" fill="#123">{escape(name)}'
                    f'</text><text class="count" x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle" font-size="13" '
                    f'font-weight="bold" fill="#123">{counts.get(name, 0)}</text></g>')
    return _svg(width, height, body, "the document state machine with the count in each state")


def _border(x: float, y: float, towards_x: float, towards_y: float, box_w: float, box_h: float) -> tuple[float, float]:
    """Where the line from a box's centre towards a point leaves the box."""
    dx, dy = towards_x - x, towards_y - y
    if dx == 0 and dy == 0:
        return x, y
    scale = min((box_w / 2) / abs(dx) if dx else math.inf, (box_h / 2) / abs(dy) if dy else math.inf)
    return x + dx * scale, y + dy * scale
