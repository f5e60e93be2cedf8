"""A private PostgreSQL for the demo: a cluster under ``.local/pg``, started and stopped on demand.

    cluster = LocalPostgres(Path(".local"))
    dsn = cluster.start()      # initdb the first time; returns a DSN for database 'docstatus'
    cluster.stop()

From the installed server binaries (``/usr/lib/postgresql/*/bin``, or ``pg_config --bindir``).
PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user (through
``runuser``) in a folder that user owns; if it cannot reach ``.local/pg`` (a parent folder it may
not enter, like a 0700 home), the cluster goes to ``/var/tmp/docstatus-demo-<uid>-<hash>``
instead, and ``.local/pg/location`` says where. It listens on 127.0.0.1 only, on a free port,
with a generated password (``.local/pg/password``, readable by its owner only).

Where no server binaries are installed, the ``pgserver`` wheel from PyPI (which bundles them) is
installed into the running Python and used instead: ``.local/pg/pgserver``, Unix socket only.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from docstatus.dev.ports import free_port, port_is_free

DATABASE = "docstatus"
SERVER_USER = "postgres"  # the OS user that runs the cluster when we are root


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL with server binaries (initdb, pg_ctl), or None."""
    def major(bindir: str) -> list[int]:
        return [int(part) for part in Path(bindir).parent.name.split(".") if part.isdigit()]

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(result.stdout.strip())
    for bindir in map(Path, filter(None, candidates)):
        if (bindir / "pg_ctl").is_file() and (bindir / "initdb").is_file():
            return bindir
    return None


class LocalPostgres:
    """The demo's cluster. ``base`` is the ``.local`` folder of the checkout."""

    def __init__(self, base: Path) -> None:
        self.home = base.resolve() / "pg"
        self.as_root = os.geteuid() == 0
        self.bindir = find_bindir()

    # --- where things are ----------------------------------------------------------------------

    @property
    def _location_file(self) -> Path:
        return self.home / "location"

    @property
    def cluster_dir(self) -> Path:
        """The folder the server user owns: data/, the log and the socket."""
        if self._location_file.is_file():
            return Path(self._location_file.read_text().strip())
        return self.home / "cluster"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgresql.log"

    # --- commands ------------------------------------------------------------------------------

    def start(self) -> str:
        """Starts the cluster (creating it the first time) and returns the DSN of its database."""
        if self.bindir is None:
            return self._start_pgserver()
        self.home.mkdir(parents=True, exist_ok=True)
        password = self._password()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(password)
        port = self._port()
        if not self._running():
            if not port_is_free(port):
                port = free_port()
                (self.home / "port").write_text(f"{port}\n")
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o",
                         f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{self.cluster_dir}'")
        dsn = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{port}/{DATABASE}"
        _create_database(dsn.rsplit("/", 1)[0] + "/postgres", DATABASE)
        return dsn

    def stop(self) -> bool:
        """Stops the cluster; False when it was not running."""
        if self.bindir is None:
            return self._stop_pgserver()
        if not (self.data_dir / "PG_VERSION").is_file() or not self._running():
            return False
        self._pg_ctl("stop", "-w", "-m", "fast")
        return True

    # --- the installed binaries ----------------------------------------------------------------

    def _binary(self, name: str) -> str:
        assert self.bindir is not None  # only a cluster of installed binaries runs them
        return str(self.bindir / name)

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            command = ("runuser", "-u", SERVER_USER, "--", *command)
        # cwd /: the server user may not be able to enter ours.
        return subprocess.run(command, cwd="/", capture_output=True, text=True, check=check)

    def _pg_ctl(self, action: str, *options: str) -> None:
        result = self._run(self._binary("pg_ctl"), action, "-D", str(self.data_dir), *options, check=False)
        if result.returncode != 0:
            log_tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.is_file() else ""
            raise RuntimeError(f"pg_ctl {action} failed: {result.stderr.strip()}\n{log_tail}")

    def _running(self) -> bool:
        return self._run(self._binary("pg_ctl"), "status", "-D", str(self.data_dir), check=False).returncode == 0

    def _initdb(self, password: str) -> None:
        self._prepare_cluster_dir()
        password_file = self.cluster_dir / ".initdb-password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        self._give_to_server_user(password_file)
        try:
            result = self._run(self._binary("initdb"), "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8",
                               "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}",
                               "--no-instructions", check=False)
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()}")

    def _prepare_cluster_dir(self) -> None:
        cluster = self.home / "cluster"
        cluster.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(cluster)
        cluster.chmod(0o700)
        if self.as_root and self._run("test", "-w", str(cluster), check=False).returncode != 0:
            # The server user cannot reach .local (e.g. a 0700 home): use a folder it can.
            cluster.rmdir()
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
            cluster = Path("/var/tmp") / f"docstatus-demo-{os.geteuid()}-{digest}"
            cluster.mkdir(mode=0o700, exist_ok=True)
            self._give_to_server_user(cluster)
            self._location_file.write_text(f"{cluster}\n")

    def _give_to_server_user(self, path: Path) -> None:
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _password(self) -> str:
        path = self.home / "password"
        if not path.is_file():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(18))
        return path.read_text().strip()

    def _port(self) -> int:
        path = self.home / "port"
        if not path.is_file():
            path.write_text(f"{free_port()}\n")
        return int(path.read_text())

    # --- no binaries: the pgserver wheel -------------------------------------------------------

    def _pgserver(self, cleanup_mode: str | None):
        try:
            import pgserver
        except ImportError:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pgserver"], check=True)
            import pgserver
        self.home.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(self.home / "pgserver", cleanup_mode=cleanup_mode)

    def _start_pgserver(self) -> str:
        server = self._pgserver(cleanup_mode=None)  # None: keeps running after we exit
        _create_database(server.get_uri("postgres"), DATABASE)
        return server.get_uri(DATABASE)

    def _stop_pgserver(self) -> bool:
        if not (self.home / "pgserver" / "PG_VERSION").is_file():
            return False
        self._pgserver(cleanup_mode="stop").cleanup()
        return True


def _create_database(maintenance_dsn: str, name: str) -> None:
    with psycopg.connect(maintenance_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


__all__ = ["LocalPostgres", "find_bindir"]
