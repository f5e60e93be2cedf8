"""docstatus as a new user gets it: built like a release, installed into a fresh venv outside
the repository, used with no checkout and no environment variable.

One sdist and one wheel are built per session (``python -m build``: the wheel is built from
the sdist, so both must carry the SQL). A venv with the core install (no extras) and one with
``[all]`` are made from that wheel; pip takes the dependencies from its cache or the index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import docstatus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# What a clean clone does not have: copying the rest builds the release from tracked content.
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", ".local", "build", "dist", "*.egg-info", "__pycache__",
                                        ".pytest_cache", ".hypothesis", "node_modules")
OPTIONAL_MODULES = ["azure", "magic", "pypdf", "PIL", "pytesseract", "rich", "prometheus_client"]


@dataclass(frozen=True)
class Release:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    workdir: Path  # outside the repository: nothing there to import docstatus from

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # No PYTHONPATH or DOCSTATUS_* from the test run: only what is installed counts.
        env = {key: value for key, value in os.environ.items()
               if key != "PYTHONPATH" and not key.startswith("DOCSTATUS_")}
        return subprocess.run(args, cwd=self.workdir, env=env, input=stdin, capture_output=True, text=True,
                              timeout=300)

    def docstatus(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.root / "bin" / "docstatus"), *args)

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.root / "bin" / "python"), "-c", code)


def _check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    source = tmp_path_factory.mktemp("clone") / "docstatus"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_IN_A_CLONE)
    dist = tmp_path_factory.mktemp("dist")
    _check(subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                          capture_output=True, text=True, timeout=600))
    [wheel] = dist.glob("docstatus-*.whl")
    [sdist] = dist.glob("docstatus-*.tar.gz")
    return Release(wheel, sdist)


def _venv(tmp_path_factory: pytest.TempPathFactory, release: Release, requirement: str) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    # No pip inside: the test run's own pip installs into it (--python), which saves a copy.
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], capture_output=True, text=True))
    _check(subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
                           "--quiet", requirement.format(wheel=release.wheel)],
                          capture_output=True, text=True, timeout=600))
    return Venv(root, tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="session")
def core(tmp_path_factory: pytest.TempPathFactory, release: Release) -> Venv:
    return _venv(tmp_path_factory, release, "{wheel}")


@pytest.fixture(scope="session")
def everything(tmp_path_factory: pytest.TempPathFactory, release: Release) -> Venv:
    return _venv(tmp_path_factory, release, "docstatus[all] @ file://{wheel}")


def test_the_sdist_and_the_wheel_carry_the_sql(release):
    sql = sorted(str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "database").rglob("*.sql"))
    assert "database/schemas/schema.sql" in sql and "database/migrations/0001_core.sql" in sql
    with tarfile.open(release.sdist) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert set(sql) <= in_sdist
    with zipfile.ZipFile(release.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    assert {f"docstatus/_{name}" for name in sql} <= in_wheel
    assert {"docstatus/py.typed", "docstatus/__main__.py"} <= in_wheel
    dashboard = REPO_ROOT / "python_client/docstatus/dashboard"
    assets = {f"docstatus/dashboard/{path.relative_to(dashboard)}" for folder in ("templates", "static")
              for path in (dashboard / folder).iterdir()}
    assert assets and assets <= in_wheel


def test_core_install_imports_without_the_extras(core):
    found = _check(core.python(f"""
import importlib.util, docstatus
from docstatus import Client
print(docstatus.__file__)
print([name for name in {OPTIONAL_MODULES!r} if importlib.util.find_spec(name)])
"""))
    location, optional_found = found.stdout.splitlines()
    assert location.startswith(str(core.root)), location
    assert optional_found == "[]", "the core install has modules of the extras"


def test_core_install_migrates_and_runs_a_lifecycle(core, empty_db_dsn):
    migrated = _check(core.docstatus("migrate", "--dsn", empty_db_dsn))
    assert "applied 0001_core" in migrated.stdout
    listed = _check(core.docstatus("schema", "--migrations", "--dsn", empty_db_dsn)).stdout.splitlines()
    assert listed and all(line.startswith("applied  ") for line in listed), listed
    diagram = _check(core.docstatus("diagram", "--dsn", empty_db_dsn)).stdout
    assert diagram.startswith("stateDiagram-v2\n") and "document_queued --> document_ocr_running" in diagram

    lifecycle = _check(core.python(f"""
from docstatus import Client
with Client.connect({empty_db_dsn!r}) as client:
    document = client.register_document("docs", "a.pdf", "a.pdf", "application/pdf", 100)
    client.validate_document(document.id, True, "application/pdf")
    job = client.claim_extraction_job("w1")
    client.mark_ocr_running(document.id, "w1")
    client.mark_llm_running(document.id, "w1")
    done = client.mark_processing_done(document.id, "w1")
    print(job.document_id == document.id, done.text_extraction_status, "/", done.processing_status)
"""))
    assert lifecycle.stdout.strip() == "True completed / done"


def test_core_install_prints_schema_sql_and_its_version(core):
    assert _check(core.docstatus("schema")).stdout == (REPO_ROOT / "database/schemas/schema.sql").read_text()
    version = _check(core.run(str(core.root / "bin" / "python"), "-m", "docstatus", "--version"))
    assert version.stdout == f"docstatus, version {docstatus.__version__}\n"


@pytest.mark.parametrize(("args", "extra"), [
    (["upload", "--help"], "dms"), (["upload", "a.pdf"], "dms"), (["worker", "--once"], "worker"),
    (["status", "--json"], "ops"), (["metrics", "--port", "0"], "ops"),
    (["dashboard", "--port", "0"], "dashboard"),
])
def test_core_install_names_the_missing_extra_in_one_line(core, args, extra):
    result = core.docstatus(*args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"docstatus {args[0]} needs the {extra} extra: pip install 'docstatus[{extra}]'\n"


def test_all_extra_runs_the_worker_and_upload(everything):
    for command in ("worker", "upload", "status"):
        shown = _check(everything.docstatus(command, "--help"))
        assert f"Usage: docstatus {command} [OPTIONS]" in shown.stdout
    _check(everything.python("import docstatus.pipeline, docstatus.dms.store, docstatus.ops.metrics"))
