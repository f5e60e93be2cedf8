"""Fixtures for the resilience tests: dependencies that are down, blackholed, or go away mid-run.

Never the session's PostgreSQL or Azurite (tests/conftest.py): a test that stops a service
starts a PRIVATE one first.

- ``closed_port``, ``blackhole``: tests/conftest.py's.
- ``private_azurite``  an Azurite of the test's own, stoppable and restartable on its port.
- ``private_cluster``  a PostgreSQL cluster of the test's own (tests.production.cluster), with a
                       docstatus database: ``private_cluster.docstatus_dsn``.
- ``run_docstatus``    ``run_docstatus(*args, env=..., timeout=...)`` -> Ran(code, stdout, stderr,
                       seconds): the installed CLI in a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from docstatus.dev.azurite import Azurite, connection_string

from ..production.cluster import Cluster, cluster_root, remove

REPO_ROOT = Path(__file__).resolve().parents[2]
# A generous bound on "fails fast": the wanted figures are ~5 s (see the README); a loaded CI
# machine must not turn them into a flaky test.
FAST = 15.0


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def private_azurite(tmp_path: Path) -> Iterator[Azurite]:
    with Azurite(tmp_path / "azurite") as running:
        yield running


@pytest.fixture
def private_cluster() -> Iterator[Cluster]:
    root = cluster_root()
    cluster = Cluster.primary(root)
    try:
        cluster.start()
        cluster.docstatus_dsn = cluster.create_database("docstatus_resilience")  # type: ignore[attr-defined]
        with psycopg.connect(cluster.docstatus_dsn, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0.2 seconds', "
                         "retry_max_delay = '1 second'")
        yield cluster
    finally:
        remove(root, cluster)


def blob_connection_string(port: int) -> str:
    """Azurite's development account, pointed at ``port`` (closed, blackholed, or an Azurite)."""
    return connection_string(port)


@pytest.fixture
def run_docstatus():
    def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> Ran:
        environment = {**os.environ,
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                       **(env or {})}
        command = [sys.executable, "-c", "import sys; from docstatus.cli import main; sys.exit(main())", *args]
        started = time.monotonic()
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
        return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    return _run
