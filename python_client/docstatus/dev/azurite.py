"""A real Azurite blob service (the Azure Blob Storage emulator): start, stop, start again.

    with Azurite(location=tmp_dir) as azurite:
        store = DocumentStore(client, connection_string=azurite.connection_string)
        azurite.stop()    # the blob store goes away ...
        azurite.start()   # ... and comes back on the same port with the same data

The tests, the benchmarks and ``make demo`` all start Azurite through this module. The binary
is the pinned npm package that ``make azurite`` and ``.ci/run`` install (``azurite@3.35.0``
under ``.local/azurite`` of the checkout); ``DOCSTATUS_AZURITE_BLOB`` may point at another
``azurite-blob``. Nothing here is a mock: the Azure SDK talks HTTP to a real Azurite process.

A started process is stopped when this Python exits, unless ``start(detach=True)`` leaves it
running for someone else to stop (``make demo`` keeps its pid for ``make demo-down``).
Standard library only.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from docstatus.dev.ports import free_port, port_is_free

REPO_ROOT = Path(__file__).resolve().parents[3]
AZURITE_VERSION = "3.35.0"
AZURITE_BLOB_ENV = "DOCSTATUS_AZURITE_BLOB"
PINNED_PREFIX = REPO_ROOT / ".local" / "azurite"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be found, started or stopped."""


def binary_in(prefix: Path) -> Path:
    """Where ``npm install --prefix PREFIX azurite`` puts the ``azurite-blob`` executable."""
    return prefix / "node_modules" / ".bin" / "azurite-blob"


def find_azurite_blob() -> Path:
    """The ``azurite-blob`` executable: $DOCSTATUS_AZURITE_BLOB, the pinned install, then PATH."""
    candidates = [os.environ.get(AZURITE_BLOB_ENV), binary_in(PINNED_PREFIX), shutil.which("azurite-blob")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AzuriteError(
        f"azurite-blob not found; install it with "
        f"`npm install --prefix {PINNED_PREFIX.relative_to(REPO_ROOT)} azurite@{AZURITE_VERSION}` "
        f"(as .ci/run does), or set {AZURITE_BLOB_ENV}"
    )


def connection_string(port: int, host: str = "127.0.0.1") -> str:
    """The development account's connection string for an Azurite on ``host:port``."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};")


class Azurite:
    """One ``azurite-blob`` process; keeps its port and data folder across stop/start."""

    def __init__(self, location: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1",
                 binary: str | os.PathLike[str] | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.location = Path(location)
        self.host = host
        self.port = port or free_port(host)
        self.binary = Path(binary) if binary else find_azurite_blob()
        self.log_path = Path(log_path) if log_path else self.location.parent / f"{self.location.name}.azurite.log"
        self._process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, self.host)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while this object has one started (running or not)."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0, detach: bool = False) -> None:
        """Start the process and return once it answers HTTP requests.

        ``detach``: once it answers, leave it running when this Python exits (its pid is
        ``self.pid``). Until then it is stopped at exit all the same, so a start that fails or
        is interrupted leaves no orphan behind.
        """
        if self.running:
            return
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "--blobHost", self.host, "--blobPort", str(self.port),
            "--location", str(self.location),
            # Newer SDKs send API versions this release does not know yet.
            "--skipApiVersionCheck",
            "--silent", "--disableTelemetry",
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            # Its own session, so a Ctrl-C meant for us (pytest, the demo) does not kill it.
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        # Its own session also means nobody else stops it: a caller that forgets stop() (or
        # dies of an exception) must not leave an orphan listening.
        stop_at_exit = functools.partial(_terminate, self._process)
        atexit.register(stop_at_exit)
        self._wait_until_answering(timeout)
        if detach:
            atexit.unregister(stop_at_exit)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, so it saves its metadata; SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        self._wait_until_port_closed(timeout)

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            # Unauthenticated: Azurite answers with an error status, which is all we need.
            connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._process is not None  # started just before
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AzuriteError(f"azurite-blob exited with {self._process.returncode}; "
                                   f"log {self.log_path}:\n{self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise AzuriteError(f"azurite-blob did not answer on {self.host}:{self.port} within {timeout}s; "
                           f"log {self.log_path}:\n{self._log_tail()}")

    def _wait_until_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not port_is_free(self.port, self.host):
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def _terminate(process: subprocess.Popen) -> None:
    """At exit: stop a process nobody stopped (SIGTERM, then SIGKILL after 10 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
