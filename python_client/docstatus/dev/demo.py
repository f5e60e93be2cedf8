"""``make demo``: docstatus end to end on this machine, with nothing configured and no Docker.

    python -m docstatus.dev.demo up      # make demo
    python -m docstatus.dev.demo env     # the services' variables as `export` lines (make notebook)
    python -m docstatus.dev.demo down    # make demo-down

``up`` starts a private PostgreSQL (``docstatus.dev.embedded``) and Azurite (npm, installed under
``.local/azurite`` if missing), migrates, uploads the sample documents of ``tests/data`` plus a
PDF without a text layer (a scan: its OCR fails, whatever is installed), runs the pipeline
worker until every document has ended, and prints the status table and one document's
timeline. The services keep running for you to explore; ``down`` stops what ``up`` started,
``down --purge`` (``make demo-clean``) also deletes their data (.local/pg, the cluster, the blobs).

A second ``up`` uploads the same bytes under the same names to the same container (``demo``):
docstatus answers with the documents of the first run, so it reuses them (and says so) rather
than adding a batch, and reports only the demo's own documents.
With ``DOCSTATUS_DSN`` or ``AZURE_STORAGE_CONNECTION_STRING`` set, it uses those instead (e.g.
the services of compose.yml) and never stops them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from docstatus import migrations
from docstatus.dev import azurite
from docstatus.dev.embedded import LocalPostgres

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "tests" / "data"
AZURITE_PORT = 10000  # Azurite's usual port, as compose.yml has it, when nobody else uses it
WAIT_FOR_DOCUMENTS = 180.0
# One container for every run: the same bytes under the same name are the same document, so a
# second run finds the first run's documents instead of uploading a new batch.
CONTAINER = "demo"


def pdf_without_text_layer() -> bytes:
    """A valid one-page PDF with no text objects: what a scanner sends, minus the picture."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length 0 >>\nstream\n\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- Azurite -----------------------------------------------------------------------------------

class LocalAzurite:
    """The demo's Azurite (``docstatus.dev.azurite``), left running in the background: its pid and
    port under ``.local/demo`` let ``demo down``, another process, stop it later."""

    def __init__(self, base: Path) -> None:
        self.prefix = base / "azurite"
        self.state = base / "demo"
        self.binary = azurite.binary_in(self.prefix)
        self.pid_file = self.state / "azurite.pid"
        self.port_file = self.state / "azurite.port"

    def install(self) -> None:
        if self.binary.is_file():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("demo: Azurite needs npm (Debian: apt-get install npm), or set "
                             "AZURE_STORAGE_CONNECTION_STRING to a blob store you have")
        print(f"  installing azurite@{azurite.AZURITE_VERSION} with npm into {self.prefix} ...")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(self.prefix),
                        f"azurite@{azurite.AZURITE_VERSION}"], check=True)

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"azurite" not in cmdline.read_bytes():
            return None  # the pid was reused by something else
        return pid

    def start(self) -> str:
        self.install()
        self.state.mkdir(parents=True, exist_ok=True)
        if self._pid() is not None and self.port_file.is_file():
            return azurite.connection_string(int(self.port_file.read_text()))
        port = AZURITE_PORT if azurite.port_is_free(AZURITE_PORT) else azurite.free_port()
        service = azurite.Azurite(self.state / "azurite", port=port, binary=self.binary,
                                  log_path=self.state / "azurite.log")
        try:
            service.start(detach=True)
        except azurite.AzuriteError as exc:
            raise SystemExit(f"demo: Azurite did not start; see {service.log_path}") from exc
        self.pid_file.write_text(f"{service.pid}\n")
        self.port_file.write_text(f"{port}\n")
        return service.connection_string

    def stop(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True


# --- the demo ----------------------------------------------------------------------------------

class _StatusPrinter(logging.Handler):
    """Prints the worker's status changes as they happen, one short line each."""

    def __init__(self, filenames: dict[int, str]) -> None:
        super().__init__(logging.INFO)
        self.filenames = filenames

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None) or {}
        if fields.get("event") != "status" or fields.get("status") == "claimed":
            return
        document_id = fields.get("document_id")
        error = f"  ({fields['error']})" if fields.get("error") else ""
        filename = self.filenames.get(document_id, "") if isinstance(document_id, int) else ""
        print(f"    document {document_id:>3} {filename:<22} -> {fields['status']}{error}")


@contextmanager
def _printing_status_changes(filenames: dict[int, str]) -> Iterator[None]:
    worker_log = logging.getLogger("docstatus.worker")
    printer = _StatusPrinter(filenames)
    saved = worker_log.level, worker_log.propagate
    worker_log.addHandler(printer)
    worker_log.setLevel(logging.INFO)
    worker_log.propagate = False  # the table below says the rest
    try:
        yield
    finally:
        worker_log.removeHandler(printer)
        worker_log.level, worker_log.propagate = saved


def start_services(base: Path, say: Callable[[str], object] = print) -> tuple[str, str]:
    """Steps 1 to 3 of ``up``: PostgreSQL and Azurite running (started unless already, or taken
    from the environment), the schema migrated. Returns the DSN and the storage connection string."""
    state = base / "demo"
    state.mkdir(parents=True, exist_ok=True)
    started = _read_started(state)

    say("1. PostgreSQL")
    dsn = os.environ.get("DOCSTATUS_DSN")
    if dsn:
        say("   using DOCSTATUS_DSN")
    else:
        cluster = LocalPostgres(base)
        dsn = cluster.start()
        started["postgres"] = True
        where = "the pgserver wheel" if cluster.bindir is None else f"{cluster.bindir} in {cluster.cluster_dir}"
        say(f"   embedded cluster running ({where})")
    say("2. Azurite (blob storage)")
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        say("   using AZURE_STORAGE_CONNECTION_STRING")
    else:
        connection_string = LocalAzurite(base).start()
        started["azurite"] = True
        say(f"   running on {connection_string.split('BlobEndpoint=')[1].rstrip(';')}")
    _write_started(state, started)

    say("3. Migrations")
    applied = migrations.apply(dsn)
    say(f"   applied {', '.join(applied)}" if applied else "   already up to date")
    return dsn, connection_string


def up(base: Path) -> None:
    from docstatus.client import Client
    from docstatus.dms import DocumentStore
    from docstatus.pipeline import Worker, get_result

    dsn, connection_string = start_services(base)
    state = base / "demo"
    started = _read_started(state)
    container = CONTAINER
    print(f"4. Upload and validate (container {container})")
    samples = sorted(path for path in SAMPLES.glob("*") if path.is_file() and path.suffix != ".py")
    with ConnectionPool(dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True) as pool, \
            DocumentStore(pool, connection_string, container) as store:
        client = Client(pool)
        documents = []
        sources = [(path.read_bytes(), path.name) for path in samples]
        sources.append((pdf_without_text_layer(), "scanned-letter.pdf"))
        for data, filename in sources:
            document, job = store.upload_and_validate(data, filename)
            documents.append(document)
            verdict = "queued" if job is not None else f"rejected: {document.status_reason}"
            print(f"   document {document.id:>3} {filename:<22} {verdict} ({document.mime_type or 'type unknown'})")

        ids = [document.id for document in documents]
        if ids == started.get("documents"):
            print(f"   these are the {len(ids)} documents of an earlier run (same bytes, same names): reused, "
                  "not uploaded again")
        started["documents"] = ids
        _write_started(state, started)

        queued = [document.id for document in documents if document.text_extraction_status == "ready"]
        filenames = {document.id: document.filename for document in documents}
        if not queued:
            print("5. Worker: none of the demo's documents is queued; the worker is not started")
        else:
            print(f"5. Worker: {len(queued)} documents through OCR -> fields")
            if os.environ.get("DOCSTATUS_DSN"):
                # The queue is the database's: a worker cannot take only some documents.
                print("   (it may also take other documents queued in this database; only the demo's are shown)")
            with _printing_status_changes(filenames), \
                    Worker(pool, store, concurrency=2, lease=timedelta(seconds=30),
                           check_stuck_interval=None) as worker:
                worker.start()
                _wait_until_ended(client, queued)

        print("\n6. Status")
        _print_table(client, documents, lambda document_id: get_result(pool, store, document_id))
        shown = next((document for name in ("invoice.png", "invoice.pdf") for document in documents
                      if document.filename == name), documents[0])
        print(f"\n7. Timeline of document {shown.id} ({shown.filename})")
        _print_timeline(client, shown.id)

    print("\nExplore:")
    if started.get("postgres"):
        print(f"   export DOCSTATUS_DSN='{dsn}'")
    if started.get("azurite"):
        print(f"   export AZURE_STORAGE_CONNECTION_STRING='{connection_string}'")
    print("   psql \"$DOCSTATUS_DSN\" -c 'SELECT * FROM docstatus.document_overview'")
    command = _docstatus_command()
    print(f"   {command} upload FILE...  and  {command} worker")
    print("   make demo-down    # stops what the demo started")
    print("   make demo-clean   # stops it and deletes its data (.local/pg, the blobs)")


def _docstatus_command() -> str:
    """How to run ``docstatus`` from a new shell in this folder: the venv's script, which a new
    shell does not have on its PATH (``.venv/bin/docstatus``), else ``python -m docstatus``."""
    script = Path(sys.executable).parent / "docstatus"
    if not script.is_file():
        return f"{sys.executable} -m docstatus"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _wait_until_ended(client, document_ids: list[int]) -> None:
    deadline = time.monotonic() + WAIT_FOR_DOCUMENTS
    while True:
        ended = [client.get_document(document_id).text_extraction_status in ("completed", "failed")
                 for document_id in document_ids]
        if all(ended):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: documents still running after {WAIT_FOR_DOCUMENTS:g}s")
        time.sleep(0.2)


def _print_table(client, documents, result_of) -> None:
    print(f"   {'id':>3}  {'file':<22} {'status':<10} {'tries':>5}  result or reason")
    for document in documents:
        current = client.get_document(document.id)
        jobs = client.list_jobs(document.id)
        if current.text_extraction_status == "completed":
            result = result_of(document.id)
            fields = result.fields if result else {}
            amounts = ", ".join(f"{a['value']} {a['currency']}" for a in fields.get("amounts", []))
            detail = f"title {fields.get('title')!r}; dates {fields.get('dates')}; amounts [{amounts}]; " \
                     f"emails {fields.get('emails')}"
        else:
            detail = current.status_reason or ""
        print(f"   {document.id:>3}  {document.filename:<22} {current.text_extraction_status:<10} "
              f"{len(jobs):>5}  {detail[:110]}")


def _print_timeline(client, document_id: int) -> None:
    events = client.history(document_id)
    if not events:
        return
    first = events[0].occurred_at
    for event in events:
        offset = (event.occurred_at - first).total_seconds() * 1000
        moved = f"{event.from_status or '(new)'} -> {event.to_status}"
        subject = f"job {event.job_id}" if event.job_id else event.kind.value
        detail = f"  {event.detail}" if event.detail else ""
        print(f"   +{offset:8.1f} ms  {subject:<16} {moved}{detail}")


def env(base: Path) -> None:
    """Prints the demo services' variables as shell ``export`` lines (starting the services if
    they are not running), for ``eval "$(python -m docstatus.dev.demo env)"``: ``make notebook``."""
    # stdout is for `eval`: the steps, and whatever a migration prints, go to stderr.
    with redirect_stdout(sys.stderr):
        dsn, connection_string = start_services(base)
    print(f"export DOCSTATUS_DSN={shlex.quote(dsn)}")
    print(f"export AZURE_STORAGE_CONNECTION_STRING={shlex.quote(connection_string)}")


def down(base: Path, purge: bool) -> None:
    state = base / "demo"
    started = _read_started(state)
    stopped = []
    if started.get("azurite") and LocalAzurite(base).stop():
        stopped.append("Azurite")
    if started.get("postgres") and LocalPostgres(base).stop():
        stopped.append("PostgreSQL")
    # The services are gone, the documents stay (unless purged): a next run still knows them.
    _write_started(state, {} if purge else {"documents": started.get("documents")})
    print(f"demo: stopped {' and '.join(stopped)}" if stopped else "demo: nothing running")
    if purge:
        # As root the cluster lives where the postgres user can reach it: .local/pg says where.
        cluster_dir = LocalPostgres(base).cluster_dir
        for path in (cluster_dir, base / "demo", base / "pg"):
            shutil.rmtree(path, ignore_errors=True)
        print(f"demo: removed its data ({base / 'pg'}, {cluster_dir}, {base / 'demo'} with the blobs)")


def _read_started(state: Path) -> dict:
    try:
        return json.loads((state / "started.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_started(state: Path, started: dict) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "started.json").write_text(json.dumps(started))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docstatus.dev.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "env", "down"])
    parser.add_argument("--base", type=Path, default=Path.cwd() / ".local",
                        help="where the demo keeps its services and data (default: ./.local)")
    parser.add_argument("--purge", action="store_true", help="down: also delete the demo's data")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.base)
        elif args.command == "env":
            env(args.base)
        else:
            down(args.base, args.purge)
    except (psycopg.Error, RuntimeError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"demo: {exc}") from exc


if __name__ == "__main__":
    main()
