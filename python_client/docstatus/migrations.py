"""Apply or roll back the yoyo SQL migrations in ``database/migrations``.

The SQL files are the product and stay where the SQL author keeps them
(``database/migrations`` at the repository root); a wheel ships them inside the
package (``docstatus.database_files``), so the default folder is the one that
came with this docstatus. ``DOCSTATUS_MIGRATIONS_DIR`` (or the
``migrations_dir`` argument) points elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import psycopg.conninfo
import yoyo  # type: ignore[import-untyped]  # yoyo-migrations ships no types

from docstatus import database_files
from docstatus.migrations_folder import private_copy

MIGRATIONS_DIR_ENV = "DOCSTATUS_MIGRATIONS_DIR"

# yoyo's record of applied migrations (yoyo.migrations.default_migration_table).
_MIGRATION_TABLE = yoyo.migrations.default_migration_table


def find_migrations_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the migrations folder: argument, then env var, then the one shipped with docstatus."""
    candidate = override or os.environ.get(MIGRATIONS_DIR_ENV)
    if not candidate:
        return database_files.migrations_dir()
    path = Path(candidate)
    if not path.is_dir():
        raise FileNotFoundError(
            f"migrations folder {path} not found; unset {MIGRATIONS_DIR_ENV} to use the "
            "migrations shipped with docstatus"
        )
    return path


def yoyo_url(dsn: str) -> str:
    """Turn a libpq DSN (``key=value`` or ``postgresql://`` URL) into a yoyo URL.

    Every libpq parameter goes into the query string: yoyo's psycopg backend
    passes query arguments straight to ``psycopg.connect``, so Unix-socket
    hosts, ``sslmode`` and friends survive, and nothing needs URL-escaping
    rules that yoyo does not undo (it does not unquote the database path).
    An empty DSN means "libpq defaults" (PGHOST, PGDATABASE, ...).
    """
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return "postgresql+psycopg:///?" + urlencode({k: str(v) for k, v in params.items()})


def _backend(dsn: str):
    return yoyo.get_backend(yoyo_url(dsn))


@contextmanager
def _read_migrations(migrations_dir: str | os.PathLike[str] | None) -> Iterator[yoyo.migrations.MigrationList]:
    """yoyo's migrations from a private copy of the folder's SQL migrations
    (``docstatus.migrations_folder``): yoyo never sees, let alone runs, a Python file."""
    with private_copy(find_migrations_dir(migrations_dir)) as folder:
        yield yoyo.read_migrations(str(folder))


def _run(dsn: str, migrations_dir: str | os.PathLike[str] | None, rollback: bool) -> list[str]:
    """Apply the pending migrations (or roll back the applied ones) under yoyo's lock."""
    with _read_migrations(migrations_dir) as migrations:
        return _run_migrations(dsn, migrations, rollback)


def _run_migrations(dsn: str, migrations: yoyo.migrations.MigrationList, rollback: bool) -> list[str]:
    backend = _backend(dsn)
    try:
        with backend.lock():
            if rollback:
                chosen = backend.to_rollback(migrations)
                backend.rollback_migrations(chosen)
            else:
                chosen = backend.to_apply(migrations)
                backend.apply_migrations(chosen)
        return [m.id for m in chosen]
    finally:
        backend.connection.close()


def apply(dsn: str, migrations_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied, in order."""
    return _run(dsn, migrations_dir, rollback=False)


def rollback_all(dsn: str, migrations_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Roll back every applied migration, newest first; return the ids rolled back."""
    return _run(dsn, migrations_dir, rollback=True)


def applied_status(
    dsn: str, migrations_dir: str | os.PathLike[str] | None = None
) -> tuple[list[tuple[str, bool]], int]:
    """Each migration of the folder, in order, with whether ``dsn`` has it applied; and how many
    applied migrations the folder does not have (the database was migrated by a newer docstatus).

    Read-only: a database that yoyo never touched has nothing applied, and gets no yoyo tables.
    """
    with _read_migrations(migrations_dir) as migrations:
        ids_and_hashes = [(m.id, m.hash) for m in migrations]
    backend = _backend(dsn)
    try:
        if _MIGRATION_TABLE not in backend.list_tables():
            return [(id_, False) for id_, _ in ids_and_hashes], 0
        applied = set(backend.get_applied_migration_hashes())
    finally:
        backend.connection.close()
    known = {hash_ for _, hash_ in ids_and_hashes}
    return [(id_, hash_ in applied) for id_, hash_ in ids_and_hashes], len(applied - known)
