"""Every command says "cannot reach X at WHERE: WHY" in one line when a dependency is down (issue 9).

Closed ports refuse at once; a blackholed port (accepts, never answers) must still fail within
seconds. Nothing is registered when the upload could not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docstatus.dev.azurite import ACCOUNT_KEY, connection_string

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "tests" / "data"
FAST = 15.0
PASSWORD = "s3cret-pw"


def run(*args: str, env: dict[str, str]) -> tuple[int, list[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "import sys; from docstatus.cli import main; sys.exit(main())",
                           *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()], time.monotonic() - started


def _documents(conn) -> int:
    return conn.execute("SELECT count(*) FROM docstatus.documents").fetchone()[0]


@pytest.mark.parametrize("where", ["closed", "blackholed"])
def test_upload_with_the_blob_store_down_fails_fast_and_registers_nothing(db_dsn, conn, closed_port,
                                                                         blackhole, where):
    port = closed_port if where == "closed" else blackhole.port
    env = {"DOCSTATUS_DSN": db_dsn, "AZURE_STORAGE_CONNECTION_STRING": connection_string(port)}
    code, lines, seconds = run("upload", str(DATA / "invoice.txt"), env=env)
    print(f"\nupload, blob store {where}: exit {code} after {seconds:.2f}s")
    assert code == 1
    assert lines == [f"Error: cannot reach the blob store at http://127.0.0.1:{port}/devstoreaccount1: "
                     + ("connection refused" if where == "closed" else "timed out")]
    assert not any(ACCOUNT_KEY in line for line in lines)
    assert seconds < FAST
    assert _documents(conn) == 0


@pytest.mark.parametrize("command", [["upload", str(DATA / "invoice.txt")], ["migrate"], ["status"],
                                     ["retry", "--all-failed"], ["worker", "--once"]])
def test_every_command_words_postgres_down_the_same_way(closed_port, command, azurite):
    dsn = f"postgresql://bob:{PASSWORD}@127.0.0.1:{closed_port}/docs"
    code, lines, seconds = run(*command, env={"DOCSTATUS_DSN": dsn,
                                              "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert code == 1
    assert lines == [f"Error: cannot connect to PostgreSQL at postgresql://bob@127.0.0.1:{closed_port}/docs: "
                     "connection refused"], lines
    assert seconds < FAST


def test_upload_creates_a_missing_container(db_dsn, azurite):
    code, lines, _ = run("upload", "--container", "created-on-upload", str(DATA / "invoice.txt"),
                         env={"DOCSTATUS_DSN": db_dsn, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert code == 0, lines
