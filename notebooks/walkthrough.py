"""Helpers of the notebook 06_document_processing_status.ipynb: sample files, a scan-reading OCR
stage, and the timeline chart. The docstatus calls themselves stay in the notebook's cells.

Nothing here changes a status: the notebook does that through ``docstatus.Client``, the DMS and
the worker, so a reader sees each call.
"""

from __future__ import annotations

import io
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from docstatus import Client
from docstatus.pipeline.ocr import PdfTextLayer, TesseractOcr

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data"
STAGES = ("pending extraction", "ocr running", "llm running")
STAGE_COLOURS = {"pending extraction": "#b0b7c3", "ocr running": "#4c8bf5", "llm running": "#a259d9"}


def services() -> tuple[str, str | None]:
    """Where PostgreSQL and the blob store are, as every docstatus command reads them: the DSN
    (empty: libpq defaults) and the storage connection string (None: Azurite on 127.0.0.1:10000)."""
    return os.environ.get("DOCSTATUS_DSN", ""), os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None


def new_container_name() -> str:
    """A blob container of this run alone: what cleanup deletes, and how its documents are found."""
    return f"walkthrough-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def require_no_waiting_jobs(client: Client) -> None:
    """The claims take the longest-waiting job of ANY document: on a database where other jobs
    wait, the notebook would process documents that are not its own. Refuse to start there."""
    waiting = client.recent_jobs(status="pending extraction")
    if waiting:
        ids = ", ".join(str(job.document_id) for job in waiting[:10])
        raise RuntimeError(f"jobs of other documents wait ({ids}): run `docstatus worker --once` first, "
                           "or use a fresh `make demo` database")


def scanned_pdf(text: str) -> bytes:
    """A PDF as a scanner makes it: one page that is a picture of ``text``, with no text layer."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (1240, 500), color=255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=48)
    for number, line in enumerate(text.splitlines()):
        draw.text((60, 60 + number * 80), line, fill=0, font=font)
    buffer = io.BytesIO()
    page.save(buffer, format="PDF", resolution=150)
    return buffer.getvalue()


class PdfTextOrPictures:
    """The text layer of a PDF and, where a page has none, Tesseract on the page's pictures: the
    OCR a scanned PDF needs. (The shipped ``PdfTextLayer`` reads text layers only.)"""

    name = "pdf-text-or-pictures"

    def __init__(self) -> None:
        self.text_layer = PdfTextLayer()
        self.tesseract = TesseractOcr()

    def __call__(self, data: bytes, mime_type: str = "application/pdf") -> str:
        from pypdf import PdfReader

        text = self.text_layer(data, mime_type)
        if text.strip():
            return text
        pictures = [picture for page in PdfReader(io.BytesIO(data)).pages for picture in page.images]
        return "\n\n".join(self.tesseract(picture.data, "image/png") for picture in pictures)


@dataclass(frozen=True)
class StageStay:
    """A document's stay in one stage, from the event that entered it to the next one."""

    document: str
    stage: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def stage_stays(client: Client, documents: dict[int, str]) -> list[StageStay]:
    """The stays in the non-final stages of each document (id -> label), from its processing
    events in ``status_events``; a stay that has not ended yet is left out."""
    stays = []
    for document_id, label in documents.items():
        events = [event for event in client.history(document_id) if event.kind == "processing"]
        for entered, left in zip(events, events[1:], strict=False):
            if entered.to_status in STAGES:
                stays.append(StageStay(label, str(entered.to_status), entered.occurred_at, left.occurred_at))
    return stays


def plot_timeline(stays: list[StageStay]):
    """One row per document, one bar per stage stay, on a shared time axis (seconds)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = list(dict.fromkeys(stay.document for stay in stays))
    origin = min(stay.start for stay in stays)
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
    for row, label in enumerate(labels):
        for stay in (stay for stay in stays if stay.document == label):
            start = (stay.start - origin).total_seconds()
            axes.broken_barh([(start, max(stay.seconds, 0.02))], (row - 0.35, 0.7),
                             facecolors=STAGE_COLOURS[stay.stage])
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first upload")
    axes.legend(handles=[Patch(color=colour, label=stage) for stage, colour in STAGE_COLOURS.items()],
                loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.set_title("Each document's stages, from docstatus.status_events")
    figure.tight_layout()
    return figure


def stage_durations(stays: list[StageStay]) -> dict[str, tuple[int, float, float]]:
    """Per stage: how many stays, their median and their longest, in seconds."""
    by_stage: dict[str, list[float]] = defaultdict(list)
    for stay in stays:
        by_stage[stay.stage].append(stay.seconds)
    summary = {}
    for stage in STAGES:
        seconds = sorted(by_stage.get(stage, []))
        if seconds:
            summary[stage] = (len(seconds), seconds[len(seconds) // 2], seconds[-1])
    return summary


def ago(moment: datetime | None) -> str:
    """``moment`` as a short 'how long ago' (the database's clock and ours agree closely enough)."""
    if moment is None:
        return "-"
    return f"{(datetime.now(moment.tzinfo) - moment) / timedelta(seconds=1):.1f} s ago"
