"""The walk-through notebook runs from a clean kernel against real PostgreSQL and Azurite, and
says what the seed says happens: statuses after each step, the failure, the retry's attempt 2."""

import os
import re
import shutil
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="the notebook extra: pip install -e '.[notebook]'")
import nbformat  # noqa: E402 - after the skip: both come with the notebook extra

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "06_document_processing_status.ipynb"

# What the cells print, in this order (each a regular expression on one line of output).
EXPECTED_IN_ORDER = [
    r"^uploaded     = not ready    / pending extraction$",
    r"^completed    = completed    / done\s+final$",
    r"^job:$", r"^    pending extraction -> done$",
    r"^after upload: not ready / pending extraction$",
    r"^after validation: ready / pending extraction \(detected application/pdf\)$",
    r"^job \d+: attempt 1, pending extraction, held by None, completed_at None$",
    r"^state: queued  \(ready / pending extraction\)$",
    r"^after mark_ocr_running: in progress / ocr running$",
    r"^heartbeat extends the lease: True$",
    r"^after mark_llm_running: in progress / llm running$",
    r"^LeaseLost \(DS004\): ",
    r"^InvalidTransition \(DS001\): llm running -> ocr running is not allowed$",
    r"^after mark_processing_done: completed / done$",
    r"^job \d+: done, completed_at stamped by the database: True",
    r"^state: completed$",
    r"^worker's document: completed / done$",
    r"^\[docstatus.worker\] document \d+ -> failed$",
    r"^after the worker: failed / failed$",
    r"^job \d+: attempt 1, failed, completed_at set: True$",
    r"^error_message: NoTextFound: no text found in the application/pdf document",
    r"^alert received: job pending extraction -> failed: NoTextFound",
    r"^retry: job \d+, attempt 2, pending extraction$",
    r"^after the retry: completed / done$",
    r"^  attempt 1: failed, NoTextFound", r"^  attempt 2: done, no error$",
    r"^MIME not allowed: failed / failed; job: None$",
    r"^blob missing: not ready / pending extraction$",
    r"^  reason: blob not retrievable: blob not found$",
    r"^stuck: document \d+ in ocr running for \d+\.\d s \(SLA 1 s\), worker worker-killed-mid-ocr",
    r"^reaped: job \d+, attempt 1: failed, lease expired: worker worker-killed-mid-ocr",
    r"^queued again: queued, attempt 2$",
    r"^  3 failures, 3 documents: NoTextFound: no text found",
    r"^refused \(23514\): .*extraction_jobs_completed_at",
    r"^ended jobs without completed_at: 0$",
    r"^ocr running\s+\d+\s+\d+\.\d{3}\s+\d+\.\d{3}$",
    r"^8 documents of walkthrough-[0-9a-f-]+ ended, its container deleted$",
    r"^their states now: \['completed', 'failed'\]$",
    r"^deleting a document is refused \(DS006\)",
]


def printed_lines(notebook) -> list[str]:
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += output["text"].splitlines()
    return lines


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="the notebook's retry reads a scan with Tesseract "
                           "(Debian: tesseract-ocr, which .ci/run installs)")
def test_notebook_runs_top_to_bottom_and_prints_the_seeds_facts(db_dsn, azurite, conn, tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DOCSTATUS_LLM")}
    environment.pop("MPLBACKEND", None)  # the kernel's inline backend puts the chart in the output
    environment.update(DOCSTATUS_DSN=db_dsn, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None  # a clean run, whatever is committed
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=environment)  # the kernel's environment; CellExecutionError on a cell that raises
    nbformat.write(notebook, tmp_path / NOTEBOOK.name)  # to read when an expectation fails

    lines = printed_lines(notebook)
    position = 0
    for pattern in EXPECTED_IN_ORDER:
        found = next((index for index in range(position, len(lines)) if re.search(pattern, lines[index])), None)
        assert found is not None, f"no line matching {pattern!r} after line {position}:\n" + "\n".join(lines)
        position = found + 1

    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error" or "Traceback" in output.get("text", "")]
    assert errors == []
    pictures = [output for cell in notebook.cells for output in cell.get("outputs", [])
                if "image/png" in output.get("data", {})]
    assert len(pictures) == 1  # the timeline chart

    # Cleanup left nothing running and put the SLA it shortened back.
    assert conn.execute("SELECT count(*) FROM docstatus.extraction_jobs WHERE status = 'pending extraction'"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT max_duration FROM docstatus.stage_slas WHERE state = 'ocr running'"
                        ).fetchone()[0].total_seconds() > 1


def test_committed_notebook_has_its_outputs_and_no_errors():
    """It reads well on a code host: every code cell ran, in order, without an error."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    assert not [output for cell in code_cells for output in cell.outputs if output.output_type == "error"]
    assert any("after the retry: completed / done" in line for line in printed_lines(notebook))
